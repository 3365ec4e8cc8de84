"""The first-run mark (`replayer audit` files what is missing from before it as `before_first_run`, not missing)
must never be later than a state the pipeline took, or real losses hide: it was set to "now" whenever Redis held no
mark, no watermark and an empty stream, so after Redis came back empty (its append-only file lost or restored from
an older copy, a replaced volume) under a running collector or before a restart, at a first start while Redis was
unreachable (the events spooled), and with HA's clock behind ours, the audit called a window with losses complete."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import redis.asyncio as aioredis

from homeiq.local.services import RedisServer
from homeiq.replayer.audit import EntityAudit, _set_apart
from homeiq.shared.stream import DEFAULT_NAMES, connect
from tests.collector_harness import running_collector, simulator, stream_events
from tests.helpers import wait_for

FIRST_RUN = DEFAULT_NAMES.first_run


async def _mark(client: aioredis.Redis) -> int | None:
    raw = await client.get(FIRST_RUN)
    return None if raw is None else int(raw)


def _hidden(missing_ns: int, mark_ns: int) -> bool:
    entity = EntityAudit("sensor.x", "differs", missing=[missing_ns])
    _set_apart([entity], mark_ns)
    return entity.before_first_run == [missing_ns] and entity.status == "complete"


async def _back_empty(redis: RedisServer, client: aioredis.Redis) -> aioredis.Redis:
    """Restart `redis` without what it held (its append-only file lost, or an older copy restored); a new client."""
    redis.stop()
    shutil.rmtree(redis.workdir)
    redis.workdir.mkdir()
    redis.start()
    await client.aclose()
    return connect(redis.url)


async def test_redis_back_empty_under_a_running_collector(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis", None).start()
    client = connect(redis.url)
    try:
        async with simulator(entity_count=10, commit_interval_s=0) as sim:
            async with running_collector(sim, redis.url, tmp_path / "spool") as run:
                await wait_for(lambda: sim.hub.subscribed and not run.metric("homeiq_backfill_gap_open"), 20, "up")
                first_state_ns = int(sim.hub.now() * 1e9)
                await sim.hub.emit(20, rate_per_s=100)
                await wait_for(lambda: run.metric("homeiq_events_published_total") >= 20, 10, "published")
                first_mark = await _mark(client)
                assert first_mark is not None and first_mark <= first_state_ns
                client = await _back_empty(redis, client)

                async def remarked() -> bool:
                    return await _mark(client) is not None
                await wait_for(remarked, 15, "the collector marks the first run again")
            mark = await _mark(client)
            assert mark is not None
            assert mark == first_mark, "the mark moved past states this collector published"
    finally:
        await client.aclose()
        redis.stop()


async def test_first_start_while_redis_is_unreachable(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis", None)  # a port, no process yet
    client = connect(redis.url)
    try:
        async with simulator(entity_count=10, commit_interval_s=0) as sim:
            async with running_collector(sim, redis.url, tmp_path / "spool"):
                await wait_for(lambda: sim.hub.subscribed, 20, "subscribed")
                first_state_ns = int(sim.hub.now() * 1e9)
                await sim.hub.emit(20, rate_per_s=100)  # spooled: Redis is not there
                await asyncio.sleep(3)
                redis.start()

                async def marked() -> bool:
                    return await _mark(client) is not None
                await wait_for(marked, 15, "the mark")
            mark = await _mark(client)
            assert mark is not None
            assert 0 < mark <= first_state_ns, "states the pipeline took are before its first-run mark"
    finally:
        await client.aclose()
        redis.stop()


async def test_ha_clock_behind_ours(redis_client: aioredis.Redis, redis_server: RedisServer, tmp_path: Path) -> None:
    """The mark is on the collector's clock, the audit compares it with HA's times: HA two minutes slow puts the
    first two minutes of states the pipeline was responsible for before the mark."""
    async with simulator(entity_count=10, commit_interval_s=0) as sim:
        sim.hub.clock_offset_s = -120.0
        async with running_collector(sim, redis_server.url, tmp_path / "spool") as run:
            await wait_for(lambda: sim.hub.subscribed and not run.metric("homeiq_backfill_gap_open"), 20, "up")
            await sim.hub.emit(10, rate_per_s=100)
            await wait_for(lambda: run.metric("homeiq_events_published_total") >= 10, 10, "published")
        mark = await _mark(redis_client)
        published = [e.time_ns for e in await stream_events(redis_client) if e.source == "live"]
        before = [t for t in published if mark is not None and t < mark]
        assert published, "nothing published"
        assert not before


async def test_a_restart_on_an_emptied_redis_keeps_the_mark(tmp_path: Path) -> None:
    """Host reboot with Redis's volume lost (or its AOF restored from before the first run): the states in the stream
    the writers had not written are lost and nothing backfills them; the collector's copy of the mark keeps them
    missing, not filed before_first_run."""
    redis = RedisServer(tmp_path / "redis", None).start()
    client = connect(redis.url)
    try:
        async with simulator(entity_count=10, commit_interval_s=0) as sim:
            async with running_collector(sim, redis.url, tmp_path / "spool") as run:
                await wait_for(lambda: sim.hub.subscribed and not run.metric("homeiq_backfill_gap_open"), 20, "up")
                await sim.hub.emit(20, rate_per_s=100)
                await wait_for(lambda: run.metric("homeiq_events_published_total") >= 20, 10, "published")
                await asyncio.sleep(2.5)  # the watermark saved
            lost = {(e.entity_id, e.time_ns) for e in await stream_events(client) if e.event_type == "state_changed"}
            client = await _back_empty(redis, client)
            async with running_collector(sim, redis.url, tmp_path / "spool") as run:
                await wait_for(lambda: sim.hub.subscribed and not run.metric("homeiq_backfill_gap_open"), 20, "up")
                await sim.hub.emit(5, rate_per_s=100)
                await wait_for(lambda: run.metric("homeiq_events_published_total") >= 5, 10, "published")
                await asyncio.sleep(3)
            again = {(e.entity_id, e.time_ns) for e in await stream_events(client) if e.event_type == "state_changed"}
            mark = await _mark(client)
            assert mark is not None
            gone = sorted(t for key in lost - again for t in [key[1]])
            hidden = [t for t in gone if _hidden(t, mark)]
            assert gone, "the test lost nothing"
            assert not hidden, "states the pipeline lost are reported as recorded before it first ran"
    finally:
        await client.aclose()
        redis.stop()
