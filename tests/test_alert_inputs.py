"""The metrics the alerts read, measured against a real Redis and InfluxDB: lag as an age, Redis memory against its
limit, the spool against its cap, and end-to-end latency of live events only."""

from __future__ import annotations

import time
from pathlib import Path

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from homeiq.local.services import InfluxServer, RedisServer
from homeiq.replayer.stream_metrics import StreamMetrics
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
