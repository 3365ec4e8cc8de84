"""A Redis that persists nothing is refused: the collector keeps events on its own disk and every process
says why it is not ready, until Redis writes an append-only file or the operator opts out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from homeiq.local.services import InfluxServer, RedisServer
from homeiq.shared.stream import DEFAULT_NAMES
from tests.collector_harness import running_collector, simulator, stream_payloads
from tests.events import state_payload
from tests.helpers import wait_for
from tests.writer_harness import fill, metric, running_writer, writer_settings


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server with `appendonly no`, as Debian's default configuration starts it."""
    server = RedisServer(tmp_path / "volatile-redis", None, appendonly=False).start()
    yield server
    server.stop()


async def test_the_collector_refuses_a_redis_without_persistence_until_its_aof_is_on(
    volatile_redis: RedisServer, tmp_path: Path
) -> None:
    client = aioredis.Redis.from_url(volatile_redis.url)
    try:
        async with simulator() as sim, running_collector(sim, volatile_redis.url, tmp_path / "spool") as run:
            await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
            await sim.hub.emit(50, rate_per_s=500)
            await wait_for(lambda: run.metric("homeiq_events_spooled_total") == 50, 10, "50 events kept on disk")
            assert run.metric("homeiq_redis_persistent") == 0
            assert "appendonly no" in (run.collector.readiness.reason or "")
            assert await client.xlen(DEFAULT_NAMES.stream) == 0  # nothing trusted to a Redis that may forget it
            await client.config_set("appendonly", "yes")
            await wait_for(lambda: run.metric("homeiq_events_published_total") == 50, 15, "the spool published")
            assert run.metric("homeiq_redis_persistent") == 1
            assert "appendonly" not in (run.collector.readiness.reason or "")
        assert len(await stream_payloads(client)) == 50
    finally:
        await client.aclose()


async def test_an_operator_who_opts_out_gets_a_volatile_redis_used(volatile_redis: RedisServer, tmp_path: Path) -> None:
    async with simulator() as sim, running_collector(sim, volatile_redis.url, tmp_path / "spool",
                                                     require_aof=False) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        await sim.hub.emit(20, rate_per_s=500)
        await wait_for(lambda: run.metric("homeiq_events_published_total") == 20, 10, "20 events published")
        assert run.metric("homeiq_events_spooled_total") == 0
        assert run.collector.readiness.reason is None


async def test_a_writer_on_a_redis_without_persistence_says_why_it_is_not_ready_and_still_drains(
    volatile_redis: RedisServer, influx: InfluxServer, influx_db: str
) -> None:
    client = aioredis.Redis.from_url(volatile_redis.url)
    try:
        await fill(client, [state_payload(n) for n in range(100)])
        async with running_writer(writer_settings(volatile_redis.url, influx.url, influx_db)) as writer:
            await wait_for(lambda: metric(writer, "homeiq_points_written_total") == 100, 10, "100 points")
            assert "appendonly no" in (writer.readiness.reason or "")
            assert metric(writer, "homeiq_redis_persistent") == 0
    finally:
        await client.aclose()


def test_the_local_redis_takes_a_memory_cap_and_never_evicts(tmp_path: Path) -> None:
    """scripts/start and the add-on run this Redis: with REDIS_MAXMEMORY it stops at the cap (refusing XADD, so
    the collector spools) instead of growing through a long InfluxDB outage, and it never evicts the stream."""
    import redis  # noqa: PLC0415

    server = RedisServer(tmp_path / "capped", None, maxmemory="64mb").start()
    try:
        client = redis.Redis.from_url(server.url)
        assert client.config_get("maxmemory") == {"maxmemory": str(64 * 1024 * 1024)}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.close()
    finally:
        server.stop()
