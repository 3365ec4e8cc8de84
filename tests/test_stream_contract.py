"""Reading entries as Redis sends them: field lists in any order, trimmed entries, the RESP3 reply."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from homeiq.local.services import RedisServer
from homeiq.shared.stream import (
    DEFAULT_NAMES,
    FIELD_EVENT,
    FIELD_VERSION,
    connect,
    ensure_group,
    entries_of,
    entry_fields,
    read_group,
    read_pending,
)


def test_a_trimmed_entry_has_no_fields() -> None:
    assert entries_of([[b"1-0", [FIELD_VERSION, b"1"]], [b"2-0", None]]) == [
        (b"1-0", [FIELD_VERSION, b"1"]), (b"2-0", [])]
    assert entries_of(None) == []


async def test_read_group_returns_ids_and_field_lists_in_stream_order(redis_client: aioredis.Redis) -> None:
    await ensure_group(redis_client, DEFAULT_NAMES)
    ids = [await redis_client.xadd(DEFAULT_NAMES.stream, entry_fields(str(n).encode())) for n in range(3)]
    entries = await read_group(redis_client, DEFAULT_NAMES, "w1", b">", 10)
    assert entries == [(entry_id, [FIELD_VERSION, b"1", FIELD_EVENT, str(n).encode()])
                       for n, entry_id in enumerate(ids)]
    assert await read_group(redis_client, DEFAULT_NAMES, "w1", b">", 10, block_ms=10) == []
    assert [e[0] for e in await read_group(redis_client, DEFAULT_NAMES, "w1", b"0", 10)] == ids  # own pending


async def test_read_pending_returns_own_entries_without_delivering_them_again(redis_client: aioredis.Redis) -> None:
    await ensure_group(redis_client, DEFAULT_NAMES)
    ids = [await redis_client.xadd(DEFAULT_NAMES.stream, entry_fields(str(n).encode())) for n in range(4)]
    await read_group(redis_client, DEFAULT_NAMES, "w1", b">", 3)
    await read_group(redis_client, DEFAULT_NAMES, "w2", b">", 1)
    await redis_client.xdel(DEFAULT_NAMES.stream, ids[1])  # pending, payload gone
    assert await read_pending(redis_client, DEFAULT_NAMES, "w1", b"0", 10) == [
        (ids[0], [FIELD_VERSION, b"1", FIELD_EVENT, b"0"]), (ids[1], []),
        (ids[2], [FIELD_VERSION, b"1", FIELD_EVENT, b"2"])]
    assert [e[0] for e in await read_pending(redis_client, DEFAULT_NAMES, "w1", ids[0], 1)] == [ids[1]]
    assert await read_pending(redis_client, DEFAULT_NAMES, "w1", ids[2], 10) == []
    rows = await redis_client.xpending_range(DEFAULT_NAMES.stream, DEFAULT_NAMES.group, "-", "+", 10)
    assert [r["times_delivered"] for r in rows] == [1, 1, 1, 1]


async def test_a_task_cancelled_in_the_middle_of_a_command_stops(redis_server: RedisServer) -> None:
    """redis-py alone swallows some of these cancellations (the task then runs on, and a shutdown waiting
    for it hangs); every cancel must end the task."""
    client = connect(redis_server.url)
    await client.ping()
    swallowed = 0
    try:
        for attempt in range(200):
            async def poll() -> None:
                while True:
                    await client.get("k")
                    await asyncio.sleep(5)

            task = asyncio.create_task(poll())
            await asyncio.sleep((attempt % 30) / 10_000)  # at every moment of a command
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=1)
            if not done:
                swallowed += 1
                task.cancel()
        assert swallowed == 0
        assert await client.ping()  # the connection pool is still fine
    finally:
        await client.aclose()
