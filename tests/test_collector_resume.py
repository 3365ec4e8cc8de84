"""A restarted collector backfills the time it was down, whatever it was doing when it stopped, and never
publishes a second entry for a state that is already in the stream."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from homeiq.collector.gap import GapTracker
from homeiq.collector.resume import ResumePoint
from homeiq.local.services import RedisServer
from homeiq.shared.stream import DEFAULT_NAMES
from tests.collector_harness import TOKEN, every_state_once, running_collector, simulator, stream_state_keys
from tests.helpers import Service, wait_for

WATERMARK_KEY = DEFAULT_NAMES.watermark





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
            await every_state_once(redis_client, sim.hub)


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
                await every_state_once(client, sim.hub)
    finally:
        await client.aclose()
        redis_server.stop()


@pytest.mark.parametrize("ha_ahead_s", [0, 45])
async def test_a_killed_collector_backfills_without_republishing_what_is_in_the_stream(
    ha_ahead_s: float, redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path, log_dir: Path
) -> None:
    """After a SIGKILL the saved watermark can be seconds old. The states after it are already in the
    stream, enriched with the registry of their time; publishing them again after a registry change would
    put them in a second series. HA's clock (the states' times) and Redis's (the stream's ids) may differ."""
    async with simulator(commit_interval_s=0) as sim:
        sim.hub.clock_offset_s = ha_ahead_s
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
            await every_state_once(redis_client, sim.hub)
        finally:
            assert second.terminate() == 0


async def test_after_redis_forgot_the_backfill_starts_where_our_losses_start_whatever_was_saved_since(
    redis_client: aioredis.Redis,
) -> None:
    """Redis went back to an older AOF: our entries after `kept` are gone. Before this collector reads the
    watermark again, the other collector (whose copies were skipped as ours, so it lost nothing of its own and
    noticed nothing) saves a later one. The backfill must start at the last watermark we reached at or before
    `kept`, and read the stream back from its id, not from the other collector's (found by
    test_two_collectors_review: which of the two got there first was luck)."""

    async def nothing_held() -> list[tuple[str, int]]:
        return []

    names = DEFAULT_NAMES
    ids = [await redis_client.xadd(names.stream, {"x": "1"}) for _ in range(4)]
    gap = GapTracker()
    resume = ResumePoint(redis_client, names, gap, True, nothing_held)
    for watermark_ns, reached_after in ((1_000, ids[0]), (2_000, ids[2])):  # what we saved (read back here)
        await redis_client.mset({names.watermark: watermark_ns, names.resume_from: reached_after})
        await resume.read()
    await redis_client.mset({names.watermark: 3_000, names.resume_from: ids[3]})  # the other collector's save

    resume.forgot(ids[1])  # Redis kept ours up to ids[1]: the watermark at 2_000 was reached after ids[2]
    gap.unknown()  # as the collector does when it finds Redis forgot
    await resume.read()
    assert (resume.watermark.durable_ns, resume.tail_or_read(None)) == (1_000, ids[0])
    assert gap.pending_start_ns == 1_000 + 1_000  # the backfill from the next microsecond

    added_since = await redis_client.xadd(names.stream, {"x": "1"})  # after the backfill: ours, saved
    await redis_client.mset({names.watermark: 2_500, names.resume_from: added_since})
    await resume.read()
    resume.forgot(added_since)  # lost again, only what came after our last save
    gap.unknown()
    await redis_client.mset({names.watermark: 4_000, names.resume_from: added_since})  # the other's again
    await resume.read()
    assert resume.watermark.durable_ns == 2_500

    resume.forgot(None)  # Redis came back empty: no watermark at all, ours from the start is where to go back to
    gap.unknown()
    await redis_client.delete(names.watermark, names.resume_from)
    await resume.read(fallback_ns=9_000)  # not this process's first live state: states before it were ours too
    assert resume.watermark.durable_ns == 1_000


async def test_a_loss_older_than_every_watermark_goes_back_to_the_first_live_state_only_if_it_is_remembered(
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis came back empty. A process that still remembers its first watermark backfills from its first live
    state (before that watermark); one that ran longer than its history holds (weeks, in a busy home) goes back
    only to the oldest it remembers: back to its first live state would publish the recorder's whole retention
    again (the review of the first form of this fallback)."""

    async def nothing_held() -> list[tuple[str, int]]:
        return []

    names = DEFAULT_NAMES
    monkeypatch.setattr("homeiq.collector.resume.HISTORY", 3)
    for saves, expected_ns in ((2, 1_500 - 1_000), (5, 4_000)):  # 5 saves: 2_000 and 3_000 forgotten
        await redis_client.flushall()
        ids = [await redis_client.xadd(names.stream, {"x": "1"}) for _ in range(saves)]
        gap = GapTracker()
        resume = ResumePoint(redis_client, names, gap, True, nothing_held)
        for n, reached_after in enumerate(ids, start=1):
            await redis_client.mset({names.watermark: n * 1_000 + 1_000, names.resume_from: reached_after})
            await resume.read()
        resume.forgot(None)
        gap.unknown()
        await redis_client.flushall()
        await resume.read(fallback_ns=1_500)  # the first live state, before the first watermark (2_000)
        assert resume.watermark.durable_ns == expected_ns
