"""Alerts proven end to end: the real Prometheus and Alertmanager watch the running pipeline.

The rules are ops/alerts.yml itself, with its windows and thresholds shortened so a test can wait for them.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from homeiq_hasim.hub import Hub
from homeiq_hasim.runner import SimServer
from homeiq_local.services import InfluxServer, RedisServer, free_port
from tests.helpers import FaultyHttp, Service, wait_for

OPS = Path(__file__).resolve().parents[1] / "ops"
TOKEN = "alerts-e2e-token"


def short_rules() -> str:
    """ops/alerts.yml with every window at 30 s (longer than Alertmanager's group_wait), no `for`, and
    5 minutes of idle as 3 s."""
    rules = (OPS / "alerts.yml").read_text()
    rules = re.sub(r"\[\d+m\]", "[30s]", rules)
    rules = re.sub(r"for: \d+m", "for: 0s", rules)
    idle = "homeiq_stream_oldest_pending_idle_seconds"
    return rules.replace(f"{idle} > 300", f"{idle} > 3")


class Monitoring:
    """prometheus and prometheus-alertmanager from the Debian packages, on free loopback ports."""

    def __init__(self, workdir: Path, targets: dict[str, int], webhook_url: str) -> None:
        self.am_port, self.prom_port = free_port(), free_port()
        (workdir / "alertmanager.yml").write_text(
            (OPS / "alertmanager.yml").read_text().replace("http://alert-webhook:8080/homeiq", webhook_url))
        (workdir / "alerts.yml").write_text(short_rules())
        scrape = "\n".join(
            f"  - job_name: homeiq-{name}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']"
            for name, port in targets.items())
        (workdir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files: ['{workdir / 'alerts.yml'}']\n"
            f"alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{self.am_port}']\n"
            f"scrape_configs:\n{scrape}\n")
        self.processes = [
            subprocess.Popen(["prometheus-alertmanager", f"--config.file={workdir / 'alertmanager.yml'}",
                              f"--storage.path={workdir / 'am'}", f"--web.listen-address=127.0.0.1:{self.am_port}",
                              "--cluster.listen-address="],
                             stdout=(workdir / "am.log").open("wb"), stderr=subprocess.STDOUT),
            subprocess.Popen(["prometheus", f"--config.file={workdir / 'prometheus.yml'}",
                              f"--storage.tsdb.path={workdir / 'prom'}",
                              f"--web.listen-address=127.0.0.1:{self.prom_port}", "--rules.alert.resend-delay=1s"],
                             stdout=(workdir / "prometheus.log").open("wb"), stderr=subprocess.STDOUT),
        ]

    async def scraped(self, metric: str) -> bool:
        """Prometheus holds at least one sample of `metric` (so a later increase is seen as one)."""
        try:
            async with aiohttp.ClientSession() as session, session.get(
                    f"http://127.0.0.1:{self.prom_port}/api/v1/query", params={"query": metric}) as resp:
                answer = await resp.json()
        except aiohttp.ClientError:
            return False
        return bool(answer.get("data", {}).get("result"))

    async def active_alerts(self) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds as active."""
        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{self.am_port}/api/v2/alerts", params={"active": "true"}) as resp:
            alerts: list[dict[str, Any]] = await resp.json()
        return [a for a in alerts if a["status"]["state"] == "active"]

    async def firing(self, name: str) -> bool:
        try:
            alerts = await self.active_alerts()
        except aiohttp.ClientError:
            return False
        return any(a["labels"]["alertname"] == name for a in alerts)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(10)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


class Webhook:
    """The receiver Alertmanager notifies: records every alert it was told about."""

    def __init__(self) -> None:
        self.notified: list[tuple[str, str]] = []
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/homeiq", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}/homeiq"

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.notified.extend((a["labels"]["alertname"], a["status"]) for a in body["alerts"])
        return web.Response()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def test_a_drop_and_a_stuck_entry_reach_alertmanager_and_resolve(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str, workdir: Path
) -> None:
    hub = Hub.create(30, TOKEN)
    sim = SimServer(hub)
    proxy = FaultyHttp(influx.url)
    await proxy.start()
    env = {"REDIS_URL": redis_server.url, "INFLUXDB_URL": proxy.url, "INFLUXDB_API": "v1",
           "INFLUXDB_BUCKET": influx_db, "HA_TOKEN": TOKEN, "HA_URL": await sim.start(),
           "REPLAYER_INTERVAL_S": "1"}
    services = [Service(name, env, workdir) for name in ("writer", "replayer", "collector")]
    webhook = Webhook()
    monitoring = Monitoring(workdir, {s.name: s.metrics_port for s in services}, await webhook.start())
    try:
        await wait_for(lambda: hub.subscribed, 30, "the collector to subscribe")
        await wait_for(lambda: monitoring.scraped("homeiq_events_dropped_total"), 30, "a scrape of the collector")
        await wait_for(lambda: monitoring.scraped("homeiq_stream_pending"), 30, "a scrape of the replayer")
        # A counted drop: an event HA sends that cannot be normalised.
        hub.send_raw(b'{"id":6,"type":"event","event":{"event_type":"state_changed","time_fired":'
                     b'"2026-01-01T00:00:00+00:00","data":{"entity_id":"sensor.x","new_state":{"state":1}}}}')
        await wait_for(lambda: monitoring.firing("HomeiqEventsDropped"), 60, "HomeiqEventsDropped at Alertmanager")
        await wait_for(lambda: ("HomeiqEventsDropped", "firing") in webhook.notified, 60, "the drop notified")

        # A stuck pending entry: InfluxDB answers 503 to everything for a while.
        proxy.faults = [(503, None)] * 10_000
        await hub.emit(20, rate_per_s=100)
        await wait_for(lambda: monitoring.firing("HomeiqPendingStuck"), 60, "HomeiqPendingStuck at Alertmanager")
        await wait_for(lambda: ("HomeiqPendingStuck", "firing") in webhook.notified, 60, "the stuck entry notified")

        proxy.faults = []  # the cause is fixed: the writer's retry lands, the entry is acked
        await wait_for(lambda: influx.count(influx_db) >= 20, 60, "the retried batch in InfluxDB")

        async def resolved(name: str) -> bool:
            return not await monitoring.firing(name)

        await wait_for(lambda: resolved("HomeiqPendingStuck"), 60, "HomeiqPendingStuck to resolve")
        await wait_for(lambda: resolved("HomeiqEventsDropped"), 60, "HomeiqEventsDropped to resolve")
        await wait_for(lambda: ("HomeiqPendingStuck", "resolved") in webhook.notified, 90, "the resolution notified")
    finally:
        monitoring.stop()
        await webhook.stop()
        for service in reversed(services):
            service.terminate()
        await proxy.stop()
        await sim.stop()
