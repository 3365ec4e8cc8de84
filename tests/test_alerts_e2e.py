"""Alerts proven end to end: the real Prometheus and Alertmanager watch the running pipeline.

The rules are ops/alerts.yml itself, with its windows and thresholds shortened so a test can wait for them.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from homeiq.ha_sim.hub import Hub
from homeiq.ha_sim.runner import SimServer
from homeiq.local.services import InfluxServer, RedisServer, free_port
from tests.helpers import FaultyHttp, Service, wait_for
from tests.monitoring import OPS, Alertmanager, Prometheus, Webhook, get_json

# Prometheus and Alertmanager evaluate on their own clocks: ~40 s on a 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

TOKEN = "alerts-e2e-token"


def short_rules() -> str:
    """ops/alerts.yml with every window at 30 s (longer than Alertmanager's group_wait), no `for`, and
    10 minutes of idle as 3 s."""
    rules = (OPS / "alerts.yml").read_text()
    rules = re.sub(r"\[\d+m\]", "[30s]", rules)
    rules = re.sub(r"for: \d+m", "for: 0s", rules)
    idle = "homeiq_stream_oldest_pending_idle_seconds"
    assert f"{idle}) > 600" in rules
    return rules.replace(f"{idle}) > 600", f"{idle}) > 3")


async def test_a_drop_a_stuck_entry_and_a_dead_stage_reach_alertmanager_and_resolve(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    hub = Hub.create(30, TOKEN)
    sim = SimServer(hub)
    proxy = FaultyHttp(influx.url)
    await proxy.start()
    env = {"REDIS_URL": redis_server.url, "INFLUXDB_URL": proxy.url, "INFLUXDB_API": "v1",
           "INFLUXDB_BUCKET": influx_db, "HA_TOKEN": TOKEN, "HA_URL": await sim.start(),
           "REPLAYER_INTERVAL_S": "1"}
    services = {name: Service(name, env, tmp_path) for name in ("writer", "replayer", "collector")}
    webhook = Webhook()
    alertmanager = Alertmanager(tmp_path, await webhook.start())
    prometheus = Prometheus(tmp_path, {name: [s.metrics_port] for name, s in services.items()}, short_rules(),
                            alertmanager.port)

    async def resolved(name: str) -> bool:
        return not await alertmanager.firing(name)

    try:
        await wait_for(lambda: hub.subscribed, 30, "the collector to subscribe")
        await wait_for(lambda: prometheus.query("homeiq_events_dropped_total"), 30, "a scrape of the collector")
        await wait_for(lambda: prometheus.query("homeiq_stream_pending"), 30, "a scrape of the replayer")
        # A counted drop: an event HA sends that cannot be normalised.
        hub.send_raw(b'{"id":6,"type":"event","event":{"event_type":"state_changed","time_fired":'
                     b'"2026-01-01T00:00:00+00:00","data":{"entity_id":"sensor.x","new_state":{"state":1}}}}')
        await wait_for(lambda: alertmanager.firing("HomeiqEventsDropped"), 60, "HomeiqEventsDropped at Alertmanager")
        await wait_for(lambda: ("HomeiqEventsDropped", "firing") in webhook.notified, 60, "the drop notified")

        # A stuck pending entry: InfluxDB answers 503 to everything for a while.
        proxy.faults = [(503, None)] * 10_000
        await hub.emit(20, rate_per_s=100)
        await wait_for(lambda: alertmanager.firing("HomeiqWritesFailing"), 60, "HomeiqWritesFailing at Alertmanager")
        await wait_for(lambda: ("HomeiqWritesFailing", "firing") in webhook.notified, 60, "the outage notified")
        await wait_for(lambda: prometheus.query('ALERTS{alertname="HomeiqPendingStuck",alertstate="firing"}'), 60,
                       "HomeiqPendingStuck firing in Prometheus")
        # It reached Alertmanager, which holds it silenced: the outage already paged.
        assert not await alertmanager.firing("HomeiqPendingStuck")
        assert ("HomeiqPendingStuck", "firing") not in webhook.notified

        proxy.faults = []  # the cause is fixed: the writer's retry lands, the entry is acked
        await wait_for(lambda: influx.count(influx_db) >= 20, 60, "the retried batch in InfluxDB")
        await wait_for(lambda: resolved("HomeiqWritesFailing"), 60, "HomeiqWritesFailing to resolve")
        await wait_for(lambda: resolved("HomeiqEventsDropped"), 60, "HomeiqEventsDropped to resolve")
        await wait_for(lambda: ("HomeiqWritesFailing", "resolved") in webhook.notified, 90, "the resolution notified")

        # A dead stage: the only writer is gone. Its target is down, and the stage page says so (once).
        services["writer"].kill()
        await wait_for(lambda: alertmanager.firing("HomeiqStageDown"), 60, "HomeiqStageDown at Alertmanager")
        await wait_for(lambda: ("HomeiqStageDown", "firing") in webhook.notified, 60, "the dead stage notified")
        stage = [a for a in await alertmanager.alerts() if a["labels"]["alertname"] == "HomeiqStageDown"]
        assert [a["labels"]["job"] for a in stage] == ["homeiq-writer"]
        services["writer"] = Service("writer", env, tmp_path, name="writer-2",
                                     metrics_port=services["writer"].metrics_port)
        await wait_for(lambda: resolved("HomeiqStageDown"), 90, "HomeiqStageDown to resolve")
        await wait_for(lambda: ("HomeiqStageDown", "resolved") in webhook.notified, 90, "the stage's return notified")
    finally:
        prometheus.stop()
        alertmanager.stop()
        await webhook.stop()
        for service in reversed(services.values()):
            service.terminate()
        await proxy.stop()
        await sim.stop()


async def test_prometheus_watches_itself_and_alertmanager_and_a_failed_notification_fires(tmp_path: Path) -> None:
    """ops/prometheus.yml as shipped (its hosts on loopback): Prometheus scrapes itself and Alertmanager; the
    Watchdog reaches Alertmanager, whose webhook cannot be reached (as `alert-webhook` could not: "no such
    host"), and the failed notifications fire HomeiqNotificationsFailing."""
    alertmanager = Alertmanager(tmp_path, f"http://127.0.0.1:{free_port()}/api/webhook/homeiq-alerts")
    port = free_port()
    config = ((OPS / "prometheus.yml").read_text().replace("localhost:9090", f"127.0.0.1:{port}")
              .replace("alertmanager:9093", f"127.0.0.1:{alertmanager.port}")
              .replace("/etc/prometheus/alerts.yml", str(tmp_path / "alerts.yml"))
              .replace("scrape_interval: 15s", "scrape_interval: 1s")
              .replace("evaluation_interval: 15s", "evaluation_interval: 1s"))
    (tmp_path / "alerts.yml").write_text(short_rules())
    (tmp_path / "prometheus.yml").write_text(config)
    prometheus = start_prometheus(tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    try:
        for job in ("prometheus", "alertmanager"):
            await wait_for(lambda job=job: query(url, f'up{{job="{job}"}} == 1'), 60, f"{job} scraped")
        await wait_for(lambda: alertmanager.firing("Watchdog"), 60, "the Watchdog at Alertmanager")
        await wait_for(lambda: query(url, 'ALERTS{alertname="HomeiqNotificationsFailing",alertstate="firing"}'), 90,
                       "HomeiqNotificationsFailing firing")
    finally:
        prometheus.terminate()
        prometheus.wait(10)
        alertmanager.stop()


def start_prometheus(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'prom'}",
         f"--web.listen-address=127.0.0.1:{port}", "--rules.alert.resend-delay=1s"],
        stdout=(tmp_path / "prometheus.log").open("wb"), stderr=subprocess.STDOUT)


async def query(url: str, expr: str) -> list[dict[str, object]]:
    try:
        answer = await get_json(f"{url}/api/v1/query", query=expr)
    except aiohttp.ClientError:
        return []
    result: list[dict[str, object]] = answer.get("data", {}).get("result", [])
    return result
