"""Nothing lost across reconnects, HA outages and Redis outages; exactly one stream entry per change."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from homeiq.local.services import InfluxServer, RedisServer
from tests.collector_harness import running_collector, sent_keys, simulator, stream_events, stream_state_keys
from tests.helpers import wait_for
from tests.writer_harness import running_writer, writer_settings

# Outages of 10-20 s, each backfilled: up to ~25 s a test on a 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]




async def test_exactly_one_entry_per_state_change_across_reconnects(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        for connection in range(1, 5):
            await wait_for(lambda n=connection: sim.hub.subscribes == n and sim.hub.subscribed, 10, "a subscription")
            await sim.hub.emit(200, rate_per_s=2000)
            sim.drop_connections()
        await wait_for(lambda: sim.hub.subscribes == 5 and sim.hub.subscribed, 10, "the last subscription")
        await sim.hub.emit(200, rate_per_s=2000)
        expected = sent_keys(sim.hub)

        async def all_published() -> bool:
            return set(await stream_state_keys(redis_client)) >= expected

        await wait_for(all_published, 20, "every state change in the stream")
        await wait_for(lambda: run.collector.gap.pending_start_ns is None, 10, "the last backfill")
    counts = await stream_state_keys(redis_client)
    assert set(counts) == expected
    assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1][:5]
    assert sim.hub.subscribes == 5 and run.collector.sessions == 5


async def test_ha_unreachable_for_10_s_is_backfilled_exactly_once(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    async with simulator() as sim, running_writer(writer_settings(redis_server.url, influx.url, influx_db)), \
            running_collector(
            sim, redis_server.url, tmp_path, backoff_max_s=1.0) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        await sim.hub.emit(300, rate_per_s=100)
        sim.hub.faults.refuse_connections = True
        sim.drop_connections()
        while_down = await sim.hub.emit(1000, rate_per_s=100)  # 10 s of changes HA records, nobody receives
        sim.hub.faults.refuse_connections = False
        await wait_for(lambda: sim.hub.subscribed, 10, "the reconnect")
        await sim.hub.emit(300, rate_per_s=100)
        await wait_for(lambda: influx.count(influx_db) >= len(sim.hub.sent), 30, "every change in InfluxDB")
        assert run.metric("homeiq_events_backfilled_total") >= while_down
    points = influx.points(influx_db)
    keys = Counter((p["entity_id"], p["time"]) for p in points)
    assert set(keys) == sent_keys(sim.hub) and max(keys.values()) == 1
    backfilled = [p for p in points if p["source"] == "backfill"]
    assert len(backfilled) >= while_down
    by_key = {(s.entity_id, s.last_updated_us * 1000): s for s in sim.hub.sent}
    for point in backfilled:
        assert point["state_value"] == by_key[(point["entity_id"], point["time"])].state
        assert point["device_id"]  # enriched like live events


async def test_redis_down_for_20_s_loses_nothing(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis", None).start()
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path / "spool") as run:
            await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
            await sim.hub.emit(500, rate_per_s=500)
            redis_server.stop()
            await sim.hub.emit(10_000, rate_per_s=500)  # 20 s at 500 events/s
            assert run.metric("homeiq_events_spooled_total") > 9000
            redis_server.start()
            await sim.hub.emit(500, rate_per_s=500)
            await wait_for(lambda: run.metric("homeiq_events_published_total") >= len(sim.hub.sent), 60,
                           "the spool to drain")
            assert run.metric("homeiq_events_dropped_total", reason="spool_full") == 0
        events = await stream_events(client)
        assert [(e.entity_id, e.time_ns) for e in events if e.event_type == "state_changed"] == [
            (s.entity_id, s.last_updated_us * 1000) for s in sim.hub.sent]  # all of them, in order
        assert not list((tmp_path / "spool").glob("spool-*.log"))
    finally:
        await client.aclose()
        redis_server.stop()


async def test_a_collector_restarted_mid_outage_replays_its_spool(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis", None).start()
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        async with simulator() as sim:
            async with running_collector(sim, redis_server.url, tmp_path / "spool", backfill=False):
                await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
                redis_server.stop()
                await sim.hub.emit(2000, rate_per_s=1000)
            assert list((tmp_path / "spool").glob("spool-*.log"))  # the first collector left its spool
            redis_server.start()
            async with running_collector(sim, redis_server.url, tmp_path / "spool", backfill=False) as second:
                await wait_for(lambda: second.metric("homeiq_events_published_total") >= 2000, 30,
                               "the spool to be replayed")
        keys = [(e.entity_id, e.time_ns) for e in await stream_events(client)]
        assert keys == [(s.entity_id, s.last_updated_us * 1000) for s in sim.hub.sent]
    finally:
        await client.aclose()
        redis_server.stop()


async def test_a_restarted_collector_backfills_the_time_it_was_down(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with simulator() as sim:
        async with running_collector(sim, redis_server.url, tmp_path / "spool") as first:
            await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
            await sim.hub.emit(300, rate_per_s=1000)
            await wait_for(lambda: first.metric("homeiq_events_published_total") == 300, 10, "the first 300")
        down = await sim.hub.emit(500, rate_per_s=1000)  # no collector runs: HA records, nobody receives
        async with running_collector(sim, redis_server.url, tmp_path / "spool") as second:
            await wait_for(lambda: sim.hub.subscribed, 10, "the second collector")
            await wait_for(lambda: second.metric("homeiq_events_backfilled_total") >= down, 20, "the backfill")
    counts = await stream_state_keys(redis_client)
    assert set(counts) == sent_keys(sim.hub) and max(counts.values()) == 1


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB file system for the spool (a full disk), where this machine lets a test mount one."""
    path = tmp_path / "small-disk"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def test_a_full_disk_under_the_spool_is_counted_and_the_collector_goes_on(
    small_disk: Path, tmp_path: Path
) -> None:
    redis_server = RedisServer(tmp_path / "redis", None).start()
    try:
        async with simulator() as sim, running_collector(sim, redis_server.url, small_disk, spool_max_mb=64,
                                                         backfill=False) as run:
            await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
            redis_server.stop()
            await sim.hub.emit(3000, rate_per_s=1000)  # ~1.5 MB of events onto a 256 KiB disk

            def settled() -> bool:
                return run.metric("homeiq_events_spooled_total") + run.metric(
                    "homeiq_events_dropped_total", reason="spool_write_failed") == run.metric(
                    "homeiq_events_received_total")

            await wait_for(settled, 20, "every event spooled or counted as lost to the full disk")
            assert run.metric("homeiq_events_dropped_total", reason="spool_write_failed") > 0
            assert not run.task.done()
            redis_server.start()

            # Every event published or counted: what was spooled, and what the publisher still held when the spool
            # settled above (a batch it had not yet handed to the spool: published from memory, never spooled).
            def accounted() -> bool:
                published, spooled = run.metric("homeiq_events_published_total"), run.metric(
                    "homeiq_events_spooled_total")
                return published >= spooled and published + run.metric(
                    "homeiq_events_dropped_total", reason="spool_write_failed") == 3000

            await wait_for(accounted, 30, "the spool drained, every event published or counted as lost")
            before = run.metric("homeiq_events_published_total")
            sim.hub.fire_state_change()
            await wait_for(lambda: run.metric("homeiq_events_published_total") == before + 1, 10,
                           "a new event published")
    finally:
        redis_server.stop()
