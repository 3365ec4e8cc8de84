"""A restarted collector backfills the time it was down, whatever it was doing when it stopped, and never
publishes a second entry for a state that is already in the stream."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import redis.asyncio as aioredis

from homeiq_hasim.hub import Hub
from homeiq_local.services import RedisServer
from homeiq_shared.stream import DEFAULT_NAMES
from tests.collector_harness import TOKEN, running_collector, simulator, stream_events
from tests.helpers import Service, wait_for

WATERMARK_KEY = DEFAULT_NAMES.watermark


def sent_keys(hub: Hub) -> set[tuple[str, int]]:
    return {(sent.entity_id, sent.last_updated_us * 1000) for sent in hub.sent}


async def stream_state_keys(client: aioredis.Redis) -> Counter[tuple[str, int]]:
    return Counter((e.entity_id or "", e.time_ns) for e in await stream_events(client)
                   if e.event_type == "state_changed" and e.new_state is not None)


async def every_change_once(client: aioredis.Redis, hub: Hub) -> None:
    """Wait until the stream holds every state change the simulator fired; then none may be there twice."""

    async def complete() -> bool:
        return set(await stream_state_keys(client)) >= sent_keys(hub)

    await wait_for(complete, 30, "every state change in the stream")
    counts = await stream_state_keys(client)
    assert set(counts) == sent_keys(hub)
    twice = [key for key, n in counts.items() if n > 1]
    assert not twice, f"{len(twice)} states published twice, e.g. {twice[:3]}"


async def test_a_restart_while_a_backfill_waits_still_backfills_the_gap(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with simulator() as sim:
        sim.hub.recorder.commit_interval_s = 3600  # a recorder that has not committed yet: the backfill waits
        async with running_collector(sim, redis_server.url, tmp_path) as first:
            await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
            await sim.hub.emit(100, rate_per_s=500)
            await wait_for(lambda: first.metric("homeiq_events_published_total") == 100, 10, "the first 100")
            sim.hub.faults.refuse_connections = True
            sim.drop_connections()
            await sim.hub.emit(30, rate_per_s=100)  # recorded by HA, received by nobody
            sim.hub.faults.refuse_connections = False
            await wait_for(lambda: sim.hub.subscribes == 2 and sim.hub.subscribed, 10, "the reconnect")
            await sim.hub.emit(300, rate_per_s=100)  # 3 s of live events: the watermark is saved meanwhile
            await wait_for(lambda: first.metric("homeiq_events_published_total") == 400, 10, "the live 300")
            assert first.collector.gap.pending_start_ns is not None  # the backfill still waits
        sim.hub.recorder.commit_interval_s = 0
        async with running_collector(sim, redis_server.url, tmp_path):
            await every_change_once(redis_client, sim.hub)


async def test_redis_down_when_the_collector_starts_still_backfills_its_downtime(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis", None).start()
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        async with simulator() as sim:
            async with running_collector(sim, redis_server.url, tmp_path / "spool") as first:
                await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
                await sim.hub.emit(100, rate_per_s=500)
                await wait_for(lambda: first.metric("homeiq_events_published_total") == 100, 10, "the first 100")
            await sim.hub.emit(30, rate_per_s=100)  # no collector runs
            redis_server.stop()
            async with running_collector(sim, redis_server.url, tmp_path / "spool") as second:
                await wait_for(lambda: sim.hub.subscribed, 10, "the second collector")
                await sim.hub.emit(100, rate_per_s=100)  # spooled: Redis is still down
                assert second.metric("homeiq_events_spooled_total") > 0
                redis_server.start()
                await sim.hub.emit(50, rate_per_s=100)
                await every_change_once(client, sim.hub)
    finally:
        await client.aclose()
        redis_server.stop()


async def test_a_killed_collector_backfills_without_republishing_what_is_in_the_stream(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path, log_dir: Path
) -> None:
    """After a SIGKILL the saved watermark can be seconds old. The states after it are already in the
    stream, enriched with the registry of their time; publishing them again after a registry change would
    put them in a second series."""
    async with simulator() as sim:
        env = {"HA_URL": sim.url, "HA_TOKEN": TOKEN, "REDIS_URL": redis_server.url, "HA_RECORDER_WAIT_S": "30"}
        moved = sim.hub.population.entities[0]
        emitting = asyncio.Event()

        async def steady_changes() -> None:
            await wait_for(lambda: sim.hub.subscribed, 20, "a subscription")
            while not emitting.is_set():
                await sim.hub.emit(10, rate_per_s=200)
                sim.hub.fire_state_change(moved)

        first = Service("collector", env, log_dir, name="collector-1")
        changes = asyncio.create_task(steady_changes())
        try:

            async def watermark_behind_the_stream() -> bool:
                saved = int(await redis_client.get(WATERMARK_KEY) or 0)
                keys = await stream_state_keys(redis_client)
                return 0 < saved < max((ns for entity_id, ns in keys if entity_id == moved.entity_id), default=0)

            await wait_for(watermark_behind_the_stream, 15, "states of the moved entity newer than the watermark")
        finally:
            first.kill()
            emitting.set()
            await changes
        sim.hub.move_entity(moved, "office")  # while no collector runs
        await sim.hub.emit(30, rate_per_s=100)
        second = Service("collector", env, log_dir, name="collector-2")
        try:
            await every_change_once(redis_client, sim.hub)
        finally:
            assert second.terminate() == 0
