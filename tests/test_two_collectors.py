"""Two collectors subscribed to one Home Assistant (COLLECTOR_DEDUP_WINDOW_S): every event reaches the stream once,
whichever collector adds it, also when one of them stops; the broker's memory of identities is bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from homeiq.collector.dedup import identity
from homeiq.local.services import RedisServer
from homeiq.shared.events import encode_event
from homeiq.shared.packing import xadd_batch_args
from homeiq.shared.scripts import XADD_BATCH_SCRIPT
from homeiq.shared.stream import DEFAULT_NAMES
from tests.collector_harness import Running, running_collector, simulator, stream_payloads
from tests.helpers import wait_for
from tests.unit.test_dedup_identity import call, state_change

WINDOW_S = 600


async def xadd(client: aioredis.Redis, payloads: list[bytes], window_s: int = WINDOW_S) -> list[Any]:
    script = client.register_script(XADD_BATCH_SCRIPT)
    keys = [DEFAULT_NAMES.stream, DEFAULT_NAMES.collector_tail, DEFAULT_NAMES.collector_seen]
    args = xadd_batch_args(b"", payloads, window_s, [identity(p) for p in payloads] if window_s else None)
    return list(await script(keys=keys if window_s else keys[:2], args=args))[:3]


async def test_the_script_adds_each_identity_once_and_forgets_it_after_the_window(
    redis_client: aioredis.Redis,
) -> None:
    first, second, third = (encode_event(e) for e in (state_change(), call(), state_change(updated_ns=1)))
    _, last_id, skipped = await xadd(redis_client, [first, second, first])  # a duplicate inside one batch
    assert skipped == [3] and last_id is not None
    found, none_added, skipped = await xadd(redis_client, [second, first])  # every one added before
    assert (found, none_added, skipped) == (last_id, None, [1, 2])
    assert (await xadd(redis_client, [third, second]))[2] == [2]
    assert await redis_client.xlen(DEFAULT_NAMES.stream) == 3
    assert await redis_client.get(DEFAULT_NAMES.collector_tail) != last_id  # the tail moved with the third
    buckets = await redis_client.keys(DEFAULT_NAMES.collector_seen + "*")
    assert len(buckets) == 2  # `third` is of another second
    ttls = [await redis_client.ttl(bucket) for bucket in buckets]
    assert all(0 < ttl <= WINDOW_S for ttl in ttls), ttls
    await redis_client.expire(buckets[0], 1)
    await xadd(redis_client, [first, second, third])  # a bucket's life is not renewed by what it gets later
    assert await redis_client.ttl(buckets[0]) <= 1
    for bucket in buckets:
        await redis_client.delete(bucket)  # forgotten: added again
    assert (await xadd(redis_client, [first]))[2] == []
    assert await redis_client.xlen(DEFAULT_NAMES.stream) == 4


async def test_without_a_window_nothing_is_remembered_and_every_copy_is_added(redis_client: aioredis.Redis) -> None:
    payload = encode_event(state_change())
    assert (await xadd(redis_client, [payload, payload], window_s=0))[2] == []
    assert await redis_client.xlen(DEFAULT_NAMES.stream) == 2
    assert not await redis_client.keys(DEFAULT_NAMES.collector_seen + "*")


@contextlib.asynccontextmanager
async def two_collectors(sim: Any, redis_url: str, tmp_path: Path) -> AsyncIterator[tuple[Running, Running]]:
    async with running_collector(sim, redis_url, tmp_path / "a", dedup_window_s=WINDOW_S) as a, \
            running_collector(sim, redis_url, tmp_path / "b", dedup_window_s=WINDOW_S) as b:
        await wait_for(lambda: sim.hub.subscribed == 2, 10, "both collectors subscribed")
        yield a, b


def settled(run: Running) -> float:
    return run.metric("homeiq_events_published_total") + run.metric("homeiq_events_deduplicated_total")


async def identities_in_stream(client: aioredis.Redis) -> Counter[tuple[bytes, bytes]]:
    return Counter(identity(payload) for payload in await stream_payloads(client))


async def test_two_collectors_add_every_event_of_every_type_once(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path,
) -> None:
    async with simulator(entity_count=40) as sim, two_collectors(sim, redis_server.url, tmp_path) as (a, b):
        await asyncio.sleep(1)  # what a collector publishes on its own at a start (states of a first run) is out
        before = len(await stream_payloads(redis_client))
        base_a, base_b = settled(a), settled(b)
        for n in range(300):
            sim.hub.fire_state_change()
            sim.hub.fire_service_call(n)
            sim.hub.fire_event("my_custom_event", {"n": n % 7, "call_service": "not a service call"})
            if n % 50 == 0:
                await asyncio.sleep(0.01)
        await wait_for(lambda: settled(a) - base_a >= 900 and settled(b) - base_b >= 900, 20, "900 events each")
        counts = await identities_in_stream(redis_client)
        assert max(counts.values()) == 1, [key for key, n in counts.items() if n > 1][:3]
        in_stream = len(await stream_payloads(redis_client))
        assert in_stream - before == 900
        published = sum(r.metric("homeiq_events_published_total") for r in (a, b))
        deduplicated = sum(r.metric("homeiq_events_deduplicated_total") for r in (a, b))
        assert published == in_stream
        assert deduplicated >= 900  # each event the other had added first
        assert all(r.metric("homeiq_events_dropped_total", reason=reason) == 0 for r in (a, b)
                   for reason in ("buffer_full", "spool_full"))


async def test_one_collector_stopping_loses_nothing_the_other_adds_it(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path,
) -> None:
    async with simulator(entity_count=40) as sim, two_collectors(sim, redis_server.url, tmp_path) as (a, b):
        emitting = asyncio.create_task(sim.hub.emit(1500, 300))
        await asyncio.sleep(2)
        await a.finish()  # stopped for good halfway
        assert sim.hub.subscribed == 1
        await emitting
        await wait_for(lambda: b.metric("homeiq_events_received_total") >= 1500, 20, "b received all")
        await wait_for(lambda: b.collector.publisher.pending == 0, 10, "b's buffer empty")
        counts = await identities_in_stream(redis_client)
        assert max(counts.values()) == 1
        sent = {identity(encode_event(state_change(s.entity_id, s.last_updated_us * 1000))) for s in sim.hub.sent}
        assert sent <= set(counts), f"{len(sent - set(counts))} of {len(sent)} states missing"
