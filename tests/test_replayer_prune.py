"""Pruning idle consumers against a real redis-server: never one that has, or is just given, an entry."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from homeiq.local.services import RedisServer
from homeiq.replayer import operations
from homeiq.shared.stream import DEFAULT_NAMES, FIELD_EVENT, FIELD_VERSION, connect, ensure_group
from tests.helpers import wait_for

STREAM, GROUP = DEFAULT_NAMES.stream, DEFAULT_NAMES.group


async def idle_ms(client: aioredis.Redis, consumer: str) -> int:
    infos: Any = await client.xinfo_consumers(STREAM, GROUP)
    return next((int(i["idle"]) for i in infos if i["name"] == consumer.encode()), -1)


async def consumers(client: aioredis.Redis) -> set[str]:
    return {i["name"].decode() for i in await client.xinfo_consumers(STREAM, GROUP)}


async def test_idle_empty_consumers_are_pruned_and_busy_or_live_ones_kept(redis_client: aioredis.Redis) -> None:
    await ensure_group(redis_client, DEFAULT_NAMES)
    first = await redis_client.xadd(STREAM, {FIELD_VERSION: b"1", FIELD_EVENT: b"{}"})
    await redis_client.xreadgroup(GROUP, "gone", {STREAM: ">"}, count=1)
    await redis_client.xack(STREAM, GROUP, first)  # a writer that wrote its last entry and went away
    await redis_client.xadd(STREAM, {FIELD_VERSION: b"1", FIELD_EVENT: b"{}"})
    await redis_client.xreadgroup(GROUP, "stuck", {STREAM: ">"}, count=1)  # died holding an entry

    async def both_idle() -> bool:
        return min(await idle_ms(redis_client, "gone"), await idle_ms(redis_client, "stuck")) > 300

    await wait_for(both_idle, 10, "two consumers idle for 0.3 s")
    # A live writer that has just written and acked what it read: nothing pending, but not idle.
    last = await redis_client.xadd(STREAM, {FIELD_VERSION: b"1", FIELD_EVENT: b"{}"})
    await redis_client.xreadgroup(GROUP, "live", {STREAM: ">"}, count=1)
    await redis_client.xack(STREAM, GROUP, last)

    assert await operations.prune_consumers(redis_client, DEFAULT_NAMES, idle_s=0.3) == ["gone"]
    assert await consumers(redis_client) == {"stuck", "live"}
    assert (await redis_client.xpending(STREAM, GROUP))["pending"] == 1


async def test_a_consumer_given_an_entry_while_pruning_is_never_pruned(
    redis_client: aioredis.Redis, redis_server: RedisServer
) -> None:
    await ensure_group(redis_client, DEFAULT_NAMES)
    first = await redis_client.xadd(STREAM, {FIELD_VERSION: b"1", FIELD_EVENT: b"{}"})
    await redis_client.xreadgroup(GROUP, "w1", {STREAM: ">"}, count=1)
    await redis_client.xack(STREAM, GROUP, first)  # w1 has nothing pending
    await wait_for(lambda: _idle_over(redis_client, "w1", 300), 10, "w1 idle for 0.3 s")
    entry_id = await redis_client.xadd(STREAM, {FIELD_VERSION: b"1", FIELD_EVENT: b"{}"})

    # The race, made deterministic: w1 reads the new entry just before the pruner's deleting command
    # reaches Redis (whatever form it takes), after every check the pruner made before it.
    writer = connect(redis_server.url)
    original = redis_client.execute_command
    raced: list[str] = []

    async def racing(*args: Any, **options: Any) -> Any:
        command = (args[0] if isinstance(args[0], str) else args[0].decode()).split()[0].upper()
        if not raced and command in ("XGROUP", "EVALSHA", "EVAL"):
            raced.append(command)
            await writer.xreadgroup(GROUP, "w1", {STREAM: ">"}, count=1)
        return await original(*args, **options)

    redis_client.execute_command = racing  # type: ignore[method-assign]
    try:
        pruned = await operations.prune_consumers(redis_client, DEFAULT_NAMES, idle_s=0.3)
    finally:
        redis_client.execute_command = original  # type: ignore[method-assign]
        await writer.aclose()
    assert raced, "the pruner never tried to delete w1"
    assert pruned == [] and "w1" in await consumers(redis_client)
    rows: Any = await redis_client.xpending_range(STREAM, GROUP, "-", "+", 10)
    assert [(r["message_id"], r["consumer"]) for r in rows] == [(entry_id, b"w1")]  # still pending, still w1's


async def _idle_over(client: aioredis.Redis, consumer: str, threshold_ms: int) -> bool:
    return await idle_ms(client, consumer) > threshold_ms
