"""Safe trimming against a real redis-server: never an entry any group has pending or not yet delivered."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from redis.exceptions import ResponseError

from homeiq.local.services import RedisServer
from homeiq.local.waiting import wait_for
from homeiq.replayer import operations
from homeiq.replayer.service import BUSY_GRACE_S, Replayer
from homeiq.replayer.settings import ReplayerSettings
from homeiq.shared.influx.settings import InfluxSettings
from homeiq.shared.stream import (
    DEFAULT_NAMES,
    connect,
    ensure_group,
    entry_fields,
)

STREAM, GROUP = DEFAULT_NAMES.stream, DEFAULT_NAMES.group


async def add(client: aioredis.Redis, n: int) -> list[bytes]:
    return [await client.xadd(STREAM, entry_fields(str(i).encode())) for i in range(n)]


async def stream_ids(client: aioredis.Redis) -> list[bytes]:
    return [entry_id for entry_id, _ in await client.xrange(STREAM)]


async def test_trim_keeps_the_one_entry_in_flight(redis_client: aioredis.Redis) -> None:
    # The normal case at low rates: the group's last-delivered entry is also its oldest pending one.
    await ensure_group(redis_client, DEFAULT_NAMES)
    ids = await add(redis_client, 3)
    await redis_client.xreadgroup(GROUP, "w1", {STREAM: ">"}, count=2)
    await redis_client.xack(STREAM, GROUP, *ids[:2])
    await redis_client.xreadgroup(GROUP, "w1", {STREAM: ">"}, count=1)  # ids[2]: in flight, InfluxDB down

    plan = await operations.trim_plan(redis_client, DEFAULT_NAMES)
    assert plan.min_id == ids[2].decode() and plan.entries_before == 2 and "pending" in plan.reason
    assert await stream_ids(redis_client) == ids  # a dry run changes nothing

    plan, removed = await operations.trim(redis_client, DEFAULT_NAMES)
    assert removed == 2 and plan.min_id == ids[2].decode()
    assert await stream_ids(redis_client) == [ids[2]]
    _, removed = await operations.trim(redis_client, DEFAULT_NAMES)  # the next pass removes nothing either
    assert removed == 0 and await stream_ids(redis_client) == [ids[2]]


async def test_trim_keeps_what_a_restarted_collector_reads_back(redis_client: aioredis.Redis) -> None:
    """Written and acked, but after the id the collector reads back from: a restarted collector must see these
    in the stream, or it publishes them again (with a newer registry: a second series)."""
    await ensure_group(redis_client, DEFAULT_NAMES)
    old = [await redis_client.xadd(STREAM, entry_fields(b"{}"), id=f"{ms}-0") for ms in (1000, 2000)]
    recent = [await redis_client.xadd(STREAM, entry_fields(b"{}"), id=f"{ms}-0") for ms in (40_000, 41_000, 50_000)]
    await redis_client.xreadgroup(GROUP, "w1", {STREAM: ">"}, count=10)
    await redis_client.xack(STREAM, GROUP, *old, *recent)  # every entry written
    await redis_client.set(DEFAULT_NAMES.resume_from, recent[0])

    plan, removed = await operations.trim(redis_client, DEFAULT_NAMES)
    assert removed == 3 and plan.min_id == "40000-1" and "restarted collector" in plan.reason
    assert await stream_ids(redis_client) == recent[1:]
    await redis_client.delete(DEFAULT_NAMES.resume_from)  # no collector ever ran: only the groups decide
    _, removed = await operations.trim(redis_client, DEFAULT_NAMES)
    assert removed == 2 and await stream_ids(redis_client) == []


async def test_trim_keeps_what_every_group_still_needs(redis_client: aioredis.Redis) -> None:
    await ensure_group(redis_client, DEFAULT_NAMES)
    await redis_client.xgroup_create(STREAM, "ha", id="0")
    ids = await add(redis_client, 10)
    await redis_client.xreadgroup(GROUP, "w1", {STREAM: ">"}, count=10)
    await redis_client.xack(STREAM, GROUP, *ids)  # `writers` is done with everything
    await redis_client.xreadgroup("ha", "h1", {STREAM: ">"}, count=5)
    await redis_client.xack(STREAM, "ha", *ids[:4])  # `ha`: ids[4] in flight, ids[5:] not yet delivered

    plan, removed = await operations.trim(redis_client, DEFAULT_NAMES)
    assert removed == 4 and plan.min_id == ids[4].decode() and "group ha" in plan.reason
    assert await stream_ids(redis_client) == ids[4:]


async def test_trim_keeps_everything_for_a_group_created_at_0(redis_client: aioredis.Redis) -> None:
    await ensure_group(redis_client, DEFAULT_NAMES)
    ids = await add(redis_client, 10)
    await redis_client.xreadgroup(GROUP, "w1", {STREAM: ">"}, count=10)
    await redis_client.xack(STREAM, GROUP, *ids)
    await redis_client.xgroup_create(STREAM, "replay", id="0")  # a replay of the whole stream starts

    plan, removed = await operations.trim(redis_client, DEFAULT_NAMES)
    assert removed == 0 and "group replay" in plan.reason
    assert await stream_ids(redis_client) == ids


async def test_trim_never_touches_a_stream_without_a_group(redis_client: aioredis.Redis) -> None:
    ids = await add(redis_client, 5)
    plan, removed = await operations.trim(redis_client, DEFAULT_NAMES)
    assert removed == 0 and plan.min_id is None and "no consumer group" in plan.reason
    assert await stream_ids(redis_client) == ids
    plan, removed = await operations.trim(redis_client, DEFAULT_NAMES.__class__(stream="no:such:stream"))
    assert removed == 0 and plan.min_id is None


# The fuzz: random interleavings of what writers, replayers and operators do, a trim among them.
GROUPS = ("writers", "ha")
CONSUMERS = ("c1", "c2", "c3")
OPERATION = st.one_of(
    st.tuples(st.just("xadd"), st.integers(1, 3)),
    st.tuples(st.just("read"), st.sampled_from(GROUPS), st.sampled_from(CONSUMERS), st.integers(1, 3)),
    st.tuples(st.just("ack"), st.sampled_from(GROUPS), st.integers(0, 20)),
    st.tuples(st.just("claim"), st.sampled_from(GROUPS), st.sampled_from(CONSUMERS)),
    st.tuples(st.just("delconsumer"), st.sampled_from(GROUPS), st.sampled_from(CONSUMERS)),
    st.tuples(st.just("create"), st.sampled_from(GROUPS), st.sampled_from(("0", "$"))),
    st.tuples(st.just("trim")),
)


def _key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq)


async def _needed(client: aioredis.Redis) -> tuple[set[bytes], bytes | None]:
    """Ids some group still has pending or not yet delivered; the lowest id any group needs."""
    if not await client.exists(STREAM):
        return set(), None
    present = await stream_ids(client)
    needed: set[bytes] = set()
    lowest: tuple[int, int] | None = None
    groups: Any = await client.xinfo_groups(STREAM)
    for group in groups:
        last = _key(group["last-delivered-id"])
        rows: Any = await client.xpending_range(STREAM, group["name"], "-", "+", 10_000)
        pending = {row["message_id"] for row in rows}
        needed |= pending | {i for i in present if _key(i) > last}
        first_needed = min([_key(i) for i in pending] + [(last[0], last[1] + 1)])
        lowest = first_needed if lowest is None else min(lowest, first_needed)
    return needed, None if lowest is None else f"{lowest[0]}-{lowest[1]}".encode()


async def _apply(client: aioredis.Redis, operation: tuple[Any, ...]) -> None:
    kind, *args = operation
    try:
        if kind == "xadd":
            await add(client, args[0])
        elif kind == "read":
            await client.xreadgroup(args[0], args[1], {STREAM: ">"}, count=args[2])
        elif kind == "ack":
            rows: Any = await client.xpending_range(STREAM, args[0], "-", "+", 100)
            if rows:
                await client.xack(STREAM, args[0], rows[args[1] % len(rows)]["message_id"])
        elif kind == "claim":
            await client.execute_command("XAUTOCLAIM", STREAM, args[0], args[1], 0, "0-0", "COUNT", 2)
        elif kind == "delconsumer":
            await client.xgroup_delconsumer(STREAM, args[0], args[1])
        elif kind == "create":
            await client.xgroup_create(STREAM, args[0], id=args[1], mkstream=True)
    except ResponseError as exc:  # no such stream or group, or the group exists: a no-op in this interleaving
        assert any(word in str(exc) for word in ("NOGROUP", "BUSYGROUP", "requires the key to exist")), exc


async def _interleave(url: str, operations_: list[tuple[Any, ...]]) -> None:
    client = connect(url)
    try:
        await client.flushall()
        for operation in operations_:
            if operation[0] != "trim":
                await _apply(client, operation)
                continue
            before = set(await stream_ids(client)) if await client.exists(STREAM) else set()
            needed, lowest = await _needed(client)
            plan, removed = await operations.trim(client, DEFAULT_NAMES)
            after = set(await stream_ids(client)) if await client.exists(STREAM) else set()
            assert needed <= after, f"trim removed {sorted(needed - after)} still needed ({plan.reason})"
            # And it trims what no group needs: everything below the lowest needed id.
            expected = before if lowest is None else {i for i in before if _key(i) >= _key(lowest)}
            assert after == expected and removed == len(before) - len(after), plan.reason
    finally:
        await client.aclose()


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPERATION, max_size=40))
def test_trim_never_removes_a_pending_or_undelivered_entry(redis_server: RedisServer,
                                                           steps: list[tuple[Any, ...]]) -> None:
    asyncio.run(_interleave(redis_server.url, [*steps, ("trim",)]))


async def _acked(client: aioredis.Redis, n: int) -> None:
    """`n` entries added, delivered and acked, as writers leave them."""
    async with client.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.xadd(STREAM, entry_fields(str(i).encode()))
        ids = await pipe.execute()
    await client.xreadgroup(GROUP, "w1", {STREAM: ">"}, count=n)
    await client.xack(STREAM, GROUP, *ids)


async def test_the_daemon_trims_a_busy_stream_every_second_and_a_quiet_one_every_interval(
    redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    """A stream acked at thousands of entries a second keeps only a second of them (Redis's AOF rewrites copy
    what it holds: trimmed every second, redis-server took 9-24 % less CPU an event at 5,000-10,000/s); a home's
    few a second wait for the next pass as before."""
    settings = ReplayerSettings(redis_url=redis_server.url, names=DEFAULT_NAMES, metrics_host="127.0.0.1",
                                metrics_port=0, influx=InfluxSettings(url="http://127.0.0.1:9", api="v1"),
                                interval_s=6.0).validate()
    await ensure_group(redis_client, DEFAULT_NAMES)
    replayer = Replayer(settings, CollectorRegistry())
    stop = asyncio.Event()
    task = asyncio.create_task(replayer.run(stop))

    async def trimmed() -> bool:
        return int(await redis_client.xlen(STREAM)) == 0

    try:
        await _acked(redis_client, 7000)  # found by a pass of the interval
        await wait_for(lambda: task.done() or trimmed(), 10, "the busy stream's first trim")
        for _ in range(3):  # 7,000 more in under a second, each time: the passes now come every second
            await _acked(redis_client, 7000)
            await wait_for(lambda: task.done() or trimmed(), 2.5, "a busy stream trimmed within about a second")
        await asyncio.sleep(BUSY_GRACE_S + 1.5)  # passes that find nothing for that long: back to the interval
        await _acked(redis_client, 20)
        await asyncio.sleep(3)
        assert not task.done() and await redis_client.xlen(STREAM) == 20
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
