"""`all-in-one run` on real processes: the collector, a writer and the replayer in one interpreter deliver as the
separate processes do (every event once, after a SIGKILL too), each serving its own metrics; a wrong setting of any
of them is named (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import redis.asyncio as aioredis

from homeiq.ha_sim.hub import Hub
from homeiq.ha_sim.runner import SimServer
from homeiq.local.processes import scrape
from homeiq.local.services import InfluxServer, RedisServer, free_port
from tests.helpers import Service, wait_for
from tests.test_pipeline_e2e import TOKEN, assert_points_match, pipeline_env

SCRIPT = str(Path(sys.executable).parent / "all-in-one")


def metrics_ports() -> dict[str, str]:
    return {f"{name}_METRICS_PORT": str(free_port()) for name in ("COLLECTOR", "WRITER", "REPLAYER")}


def metric(ports: dict[str, str], service: str, name: str, **labels: str) -> float:
    return scrape(f"http://127.0.0.1:{ports[f'{service.upper()}_METRICS_PORT']}/metrics", name, **labels)


async def test_one_process_writes_every_event_once_and_each_service_serves_its_metrics(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str, log_dir: Path
) -> None:
    hub = Hub.create(entity_count=80, token=TOKEN)
    sim = SimServer(hub)
    ports = metrics_ports()
    env = {**pipeline_env(redis_server, influx.url, influx_db), "HA_URL": await sim.start(), **ports,
           "REPLAYER_INTERVAL_S": "1"}
    process = Service("all-in-one", env, log_dir)
    try:
        await wait_for(lambda: hub.subscribed, 30, "the collector to subscribe")
        await hub.emit(500, rate_per_s=500)
        hub.send_raw(b'{"id": 1, "type": "event", "event": {broken')
        await hub.emit(1000, rate_per_s=500)
        await wait_for(lambda: influx.count(influx_db) >= len(hub.sent), 60, "all points in InfluxDB")
        assert_points_match(hub, influx.points(influx_db))
        assert await redis_client.xpending("homeiq:events", "writers") == {
            "pending": 0, "min": None, "max": None, "consumers": []}
        # Each service's own registry on its own port, as in a process of its own.
        assert metric(ports, "collector", "homeiq_events_received_total") == 1500
        assert metric(ports, "collector", "homeiq_frames_rejected_total", reason="malformed_json") == 1
        assert metric(ports, "writer", "homeiq_points_written_total") == 1500
        assert metric(ports, "writer", "homeiq_events_received_total") == 0
        await wait_for(lambda: metric(ports, "replayer", "homeiq_stream_length") > 0, 30, "the replayer's gauges")
        assert metric(ports, "replayer", "homeiq_points_written_total") == 0
    finally:
        code = process.terminate()
        await sim.stop()
    logs = process.logs()
    assert code == 0, logs
    for stopped in ('"collector_stopped"', '"writer_stopped"', '"replayer_stopped"'):
        assert stopped in logs
    assert TOKEN not in logs


async def test_killed_and_started_again_it_loses_and_repeats_nothing(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str, log_dir: Path
) -> None:
    """SIGKILL with batches in the collector, in Redis and in the writer's hands; events keep coming while it is
    down (HA's recorder keeps them); the next start backfills them, writes what was pending, and nothing twice."""
    hub = Hub.create(entity_count=80, token=TOKEN, commit_interval_s=1.0)
    sim = SimServer(hub)
    env = {**pipeline_env(redis_server, influx.url, influx_db), "HA_URL": await sim.start(), **metrics_ports(),
           "REPLAYER_MIN_IDLE_MS": "2000", "REPLAYER_INTERVAL_S": "1"}
    first = Service("all-in-one", env, log_dir, name="first")
    await wait_for(lambda: hub.subscribed, 30, "the collector to subscribe")
    await hub.emit(1500, rate_per_s=1000)
    first.kill()
    down_from = len(hub.sent)
    await hub.emit(500, rate_per_s=500)  # while nothing listens
    while_down = {(sent.entity_id, sent.last_updated_us * 1000) for sent in hub.sent[down_from:]}
    second = Service("all-in-one", env, log_dir, name="second")
    context_of = {(sent.entity_id, sent.last_updated_us * 1000): sent.context_id for sent in hub.sent}
    try:
        await wait_for(lambda: hub.subscribed, 30, "the collector to subscribe again")
        await hub.emit(500, rate_per_s=500)
        await wait_for(lambda: influx.count(influx_db) >= len(hub.sent), 90, "all points in InfluxDB")
        points = influx.points(influx_db)
        backfilled = {(p["entity_id"], p["time"]) for p in points if p["source"] == "backfill"}
        assert while_down <= backfilled  # read back from HA's recorder: no context, marked as such
        assert_points_match(hub, [{**p, "source": "live", "context_id": context_of[p["entity_id"], p["time"]]}
                                  if (p["entity_id"], p["time"]) in backfilled else p for p in points])

        async def nothing_pending() -> bool:
            return (await redis_client.xpending("homeiq:events", "writers"))["pending"] == 0

        await wait_for(nothing_pending, 30, "the pending list to drain")
    finally:
        code = second.terminate()
        await sim.stop()
    assert code == 0, second.logs()
    assert len(hub.sent) == 2500


def test_a_wrong_setting_of_any_service_is_named_and_nothing_starts(tmp_path: Path) -> None:
    base = {"PATH": "/usr/bin:/bin", "HA_TOKEN": TOKEN, "COLLECTOR_SPOOL_DIR": str(tmp_path / "spool"),
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "INFLUXDB_API": "v1"}
    for wrong, named in (({"WRITER_BATCH_SIZE": "0"}, "WRITER_BATCH_SIZE"),
                         ({"WRITER_BATCH_SIZE": "many"}, "WRITER_BATCH_SIZE"),
                         ({"REPLAYER_MIN_IDLE_MS": "0"}, "REPLAYER_MIN_IDLE_MS"),
                         ({"HA_URL": "ftp://ha:8123"}, "HA_URL"),
                         ({"WRITER_METRICS_PORT": "70000"}, "WRITER_METRICS_PORT"),
                         ({"HOMEIQ_EVENT_LOOP": "trio"}, "HOMEIQ_EVENT_LOOP")):
        done = subprocess.run([SCRIPT, "run"], env={**base, **wrong}, capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == 2, (wrong, done.stderr)
        assert named in done.stderr, (wrong, done.stderr)
        assert "Traceback" not in done.stderr and TOKEN not in done.stderr + done.stdout
