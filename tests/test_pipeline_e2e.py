"""End to end on real processes: ha-sim → collector → redis-server → writer → influxd."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from homeiq.ha_sim.hub import Hub, SentEvent
from homeiq.ha_sim.runner import SimServer
from homeiq.local.services import InfluxServer, RedisServer
from tests.helpers import DelayProxy, Service, wait_for

TOKEN = "test-token-e2e-0123456789"


def pipeline_env(redis: RedisServer, influx_url: str, database: str) -> dict[str, str]:
    """The environment every service of a test pipeline shares."""
    return {"REDIS_URL": redis.url, "INFLUXDB_URL": influx_url, "INFLUXDB_API": "v1",
            "INFLUXDB_BUCKET": database, "HA_TOKEN": TOKEN}


def expected_point(hub: Hub, sent: SentEvent) -> dict[str, Any]:
    """What InfluxDB must hold for one sent state change, from the simulator's own population."""
    entity = hub.entities[sent.entity_id]
    device = next(d for d in hub.population.devices if d.id == entity.device_id)
    number: float | None
    try:
        number = float(sent.state)
    except ValueError:
        number = None
    return {
        "time": sent.last_updated_us * 1000,
        "entity_id": sent.entity_id,
        "domain": entity.domain,
        "event_type": "state_changed",
        "device_id": entity.device_id,
        "area_id": entity.area_id or device.area_id,
        "device_class": sent.attributes.get("device_class"),
        "platform": entity.platform,
        "state_value": sent.state,
        "previous_state": sent.old_state,
        "value": number if number is not None and math.isfinite(number) else None,
        "context_id": sent.context_id,
        "manufacturer": device.manufacturer,
        "source": "live",
    }


def assert_points_match(hub: Hub, points: list[dict[str, Any]]) -> None:
    """InfluxDB holds exactly one point per sent event, equal to the ground truth field by field."""
    by_key = {(p["entity_id"], p["time"]): p for p in points}
    assert len(by_key) == len(points), "two points share entity_id and time"
    expected = {(s.entity_id, s.last_updated_us * 1000): expected_point(hub, s) for s in hub.sent}
    missing = expected.keys() - by_key.keys()
    extra = by_key.keys() - expected.keys()
    assert not missing and not extra, f"{len(missing)} missing, {len(extra)} unexpected points"
    for key, want in expected.items():
        got = {column: by_key[key].get(column) for column in want}
        assert got == want, key


async def test_every_event_reaches_influxdb_exactly_once(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str, log_dir: Path
) -> None:
    hub = Hub.create(entity_count=90, token=TOKEN)
    sim = SimServer(hub)
    env = {**pipeline_env(redis_server, influx.url, influx_db), "HA_URL": await sim.start()}
    writer = Service("writer", env, log_dir)
    collector = Service("collector", env, log_dir)
    try:
        await wait_for(lambda: hub.subscribed, 30, "the collector to subscribe")
        # A malformed frame and an unknown message type between good events: counted, nothing lost.
        await hub.emit(300, rate_per_s=1000)
        hub.send_raw(b'{"id": 1, "type": "event", "event": {broken')
        hub.send_raw(b'{"type": "surprise", "id": 99}')
        await hub.emit(1700, rate_per_s=1000)
        await wait_for(lambda: influx.count(influx_db) >= len(hub.sent), 60, "all points in InfluxDB")
        assert_points_match(hub, influx.points(influx_db))
        assert await redis_client.xpending("homeiq:events", "writers") == {
            "pending": 0, "min": None, "max": None, "consumers": []}
    finally:
        assert collector.terminate() == 0, collector.logs()
        assert writer.terminate() == 0, writer.logs()
        await sim.stop()
    assert len(hub.sent) == 2000
    logs = collector.logs()
    assert '"reason": "malformed_json"' in logs and '"reason": "unknown_type"' in logs
    assert TOKEN not in logs


async def test_replayer_restores_what_a_killed_writer_held(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str, log_dir: Path
) -> None:
    hub = Hub.create(entity_count=60, token=TOKEN)
    sim = SimServer(hub)
    # Writer A talks to InfluxDB through a proxy that holds each answer 2 s, so it always has a batch in flight.
    proxy = DelayProxy(influx.port, delay_s=2.0)
    env = {**pipeline_env(redis_server, influx.url, influx_db), "HA_URL": await sim.start()}
    slow_env = {**env, "INFLUXDB_URL": f"http://127.0.0.1:{await proxy.start()}", "WRITER_CONSUMER": "writer-a",
                "WRITER_BATCH_SIZE": "200"}
    collector = Service("collector", env, log_dir)
    writer_a = Service("writer", slow_env, log_dir, name="writer-a")
    services = [collector]
    try:
        await wait_for(lambda: hub.subscribed, 30, "the collector to subscribe")
        await hub.emit(1000, rate_per_s=500)

        async def a_holds_entries() -> bool:
            summary = await redis_client.xpending("homeiq:events", "writers")
            return any(c["name"] == b"writer-a" and c["pending"] > 0 for c in summary["consumers"])

        await wait_for(a_holds_entries, 30, "writer A to hold pending entries")
        writer_a.kill()
        held = (await redis_client.xpending("homeiq:events", "writers"))["pending"]
        assert held > 0
        writer_b = Service("writer", {**env, "WRITER_CONSUMER": "writer-b"}, log_dir, name="writer-b")
        services.append(writer_b)
        await hub.emit(1000, rate_per_s=500)
        replayer = Service("replayer", {**env, "REPLAYER_MIN_IDLE_MS": "3000", "REPLAYER_INTERVAL_S": "1"}, log_dir)
        services.append(replayer)
        await wait_for(lambda: influx.count(influx_db) >= len(hub.sent), 90, "all points in InfluxDB")
        assert_points_match(hub, influx.points(influx_db))

        async def nothing_pending() -> bool:
            return (await redis_client.xpending("homeiq:events", "writers"))["pending"] == 0

        await wait_for(nothing_pending, 30, "the pending list to drain")
        assert '"event": "reclaim_pass"' in replayer.logs()
    finally:
        for service in reversed(services):
            assert service.terminate() == 0, service.logs()
        await proxy.stop()
        await sim.stop()
    assert len(hub.sent) == 2000
