"""The metrics the alerts read, measured against a real Redis and InfluxDB: lag as an age, Redis memory against its
limit, the spool against its cap, and end-to-end latency of live events only."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from homeiq.local.services import InfluxServer, RedisServer
from homeiq.replayer.stream_metrics import StreamMetrics
from homeiq.shared.options import disk_paths
from homeiq.shared.settings import ConfigError
from homeiq.shared.stream import DEFAULT_NAMES, ensure_group, entry_fields
from tests.collector_harness import running_collector, simulator
from tests.events import state_payload
from tests.helpers import wait_for
from tests.writer_harness import metric, running_writer, writer_settings


async def test_lag_is_the_age_of_the_oldest_undelivered_entry(
    redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    registry = CollectorRegistry()
    gauges = StreamMetrics(registry)
    await ensure_group(redis_client, DEFAULT_NAMES)
    now_ms = int(time.time() * 1000)
    for age_s in (120, 60, 5):
        await redis_client.xadd(DEFAULT_NAMES.stream, entry_fields(state_payload(age_s)),
                                id=f"{now_ms - age_s * 1000}-0")
    await gauges.refresh(redis_client, DEFAULT_NAMES)
    assert 119 <= (registry.get_sample_value("homeiq_stream_lag_seconds") or 0) <= 125
    await redis_client.xreadgroup(DEFAULT_NAMES.group, "w", {DEFAULT_NAMES.stream: ">"}, count=1)
    await gauges.refresh(redis_client, DEFAULT_NAMES)
    assert 59 <= (registry.get_sample_value("homeiq_stream_lag_seconds") or 0) <= 65
    await redis_client.xreadgroup(DEFAULT_NAMES.group, "w", {DEFAULT_NAMES.stream: ">"}, count=2)
    await gauges.refresh(redis_client, DEFAULT_NAMES)
    assert registry.get_sample_value("homeiq_stream_lag_seconds") == 0


async def test_redis_memory_and_its_limit_are_exported(redis_server: RedisServer, redis_client: aioredis.Redis) -> None:
    registry = CollectorRegistry()
    gauges = StreamMetrics(registry)
    await redis_client.config_set("maxmemory", str(512 * 1024 * 1024))
    try:
        await gauges.refresh(redis_client, DEFAULT_NAMES)
    finally:
        await redis_client.config_set("maxmemory", "0")
    assert registry.get_sample_value("homeiq_redis_maxmemory_bytes") == 512 * 1024 * 1024
    assert (registry.get_sample_value("homeiq_redis_used_memory_bytes") or 0) > 100_000
    assert registry.get_sample_value("homeiq_redis_noeviction") == 1


async def test_the_spool_cap_is_exported(redis_server: RedisServer, redis_client: aioredis.Redis,
                                         tmp_path: Path) -> None:
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path, spool_max_mb=3) as run:
        assert run.metric("homeiq_spool_max_bytes") == 3 * 1024 * 1024


async def test_latency_counts_live_events_only_a_backfilled_state_is_as_old_as_its_gap(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str
) -> None:
    await ensure_group(redis_client, DEFAULT_NAMES)
    hour_ago_ns = time.time_ns() - 3600 * 10**9
    for n, source in enumerate(("live", "backfill", "snapshot", "live")):
        payload = state_payload(n, time_ns=hour_ago_ns + n * 1000, source=source)
        await redis_client.xadd(DEFAULT_NAMES.stream, entry_fields(payload))
    async with running_writer(writer_settings(redis_server.url, influx.url, influx_db)) as writer:
        await wait_for(lambda: metric(writer, "homeiq_points_written_total") == 4, 10, "4 points written")
        assert metric(writer, "homeiq_event_age_at_ack_seconds_count") == 2


async def _ages_under_skew(redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer,
                           influx_db: str, tmp_path: Path, skew_s: float, wait_s: float) -> dict[str, float]:
    """HA's clock `skew_s` off ours: 20 live states wait `wait_s` in the stream before a writer takes them.
    The collector's skew gauge, and the writer's latency histogram of those 20 (and of the first, warming up)."""
    await ensure_group(redis_client, DEFAULT_NAMES)
    async with simulator(commit_interval_s=0) as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        sim.hub.clock_offset_s = skew_s
        await wait_for(lambda: sim.hub.subscribed and not run.metric("homeiq_backfill_gap_open"), 10, "a subscription")
        await sim.hub.emit(10, rate_per_s=100)  # five agreeing states make a step ahead the offset
        await wait_for(lambda: abs(run.metric("homeiq_ha_clock_skew_seconds") - skew_s) < 1, 10, "the skew measured")
        skew = run.metric("homeiq_ha_clock_skew_seconds")
        await sim.hub.emit(20, rate_per_s=100)
        await wait_for(lambda: run.metric("homeiq_events_published_total") >= 30, 10, "30 states published")
    await asyncio.sleep(wait_s)
    async with running_writer(writer_settings(redis_server.url, influx.url, influx_db)) as writer:
        await wait_for(lambda: metric(writer, "homeiq_points_written_total") >= 30, 10, "30 points written")
        return {"skew": skew, "count": metric(writer, "homeiq_event_age_at_ack_seconds_count"),
                "under_60s": metric(writer, "homeiq_event_age_at_ack_seconds_bucket", le="60.0"),
                "under_1s": metric(writer, "homeiq_event_age_at_ack_seconds_bucket", le="1.0")}


async def test_a_slow_ha_clock_does_not_make_latency_look_slow(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    ages = await _ages_under_skew(redis_server, redis_client, influx, influx_db, tmp_path, -300.0, 0)
    assert -300.5 < ages["skew"] < -299  # HA's clock behind ours, less the latency
    assert ages["count"] >= 30 and ages["under_60s"] == ages["count"]  # before: all ~300 s: LatencySlow fired


async def test_a_fast_ha_clock_does_not_hide_latency(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    ages = await _ages_under_skew(redis_server, redis_client, influx, influx_db, tmp_path, 300.0, 2.5)
    assert 299 < ages["skew"] < 300.5
    # The 20 after the skew was known waited 2.5 s in the stream: over 1 s each (before: clamped at 0).
    assert ages["count"] - ages["under_1s"] >= 20


async def test_the_spools_disk_and_the_disks_named_in_disk_paths_report_their_free_space(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    aof = Path(redis_server.workdir)
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path,
                                                     disk_paths=f"redis={aof}, influxdb=/nonexistent") as run:
        disk = os.statvfs(tmp_path)
        free = run.metric("homeiq_disk_free_bytes", use="spool", path=str(tmp_path))
        assert abs(free - disk.f_bavail * disk.f_frsize) < 64 * 1024 * 1024  # others write meanwhile
        assert run.metric("homeiq_disk_size_bytes", use="spool", path=str(tmp_path)) == disk.f_blocks * disk.f_frsize
        assert run.metric("homeiq_disk_free_bytes", use="redis", path=str(aof)) > 0
        # A path this process cannot see is left out, not reported as a full disk.
        assert run.collector.metrics_registry.get_sample_value(
            "homeiq_disk_free_bytes", {"use": "influxdb", "path": "/nonexistent"}) is None


def test_disk_paths_must_be_names_and_absolute_paths() -> None:
    with pytest.raises(ConfigError, match="DISK_PATHS: 'var/lib/redis'"):
        writer_settings("redis://127.0.0.1:1/0", "http://127.0.0.1:1", "db", disk_paths="var/lib/redis")
    assert disk_paths(" redis=/var/lib/redis,influxdb=/var/lib/influxdb ") == {
        "redis": "/var/lib/redis", "influxdb": "/var/lib/influxdb"}
