"""Every panel of the shipped Grafana dashboard runs: its Prometheus queries against a real Prometheus scraping
every metric our processes export, its InfluxQL queries against a real influxd holding points the writer wrote."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from homeiq.collector.metrics import CollectorMetrics
from homeiq.local.services import InfluxServer, RedisServer
from homeiq.replayer.stream_metrics import StreamMetrics
from homeiq.shared.broker import PersistenceCheck
from homeiq.shared.health import Readiness
from homeiq.shared.influx.metrics import WriterMetrics
from homeiq.shared.stream import DEFAULT_NAMES
from tests.events import state_payload
from tests.helpers import wait_for
from tests.monitoring import OPS, Prometheus
from tests.writer_harness import fill, metric, running_writer, writer_settings

DASHBOARD = OPS / "grafana" / "dashboards" / "homeiq-ingest.json"


def targets(kind: str) -> Iterator[tuple[str, str]]:
    """(panel title, query) of every target whose data source is `kind`."""
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        if panel["datasource"]["type"] == kind:
            for target in panel["targets"]:
                yield panel["title"], target["expr" if kind == "prometheus" else "query"]


def test_every_panel_states_one_unit_and_its_data_source_is_provisioned() -> None:
    provisioned = (OPS / "grafana" / "provisioning" / "datasources" / "datasources.yml").read_text()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        assert f"uid: {panel['datasource']['uid']}" in provisioned, panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]  # one unit per panel, stated
        assert not panel["fieldConfig"]["overrides"], f"{panel['title']}: a second unit by override"


async def serve_metrics(registry: CollectorRegistry) -> web.AppRunner:
    app = web.Application()

    async def scrape(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


async def test_every_prometheus_query_of_the_dashboard_returns_data(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    registry = CollectorRegistry()  # every metric any of our processes exports, in one place
    collector, writer = CollectorMetrics(registry), WriterMetrics(registry)
    PersistenceCheck(redis_server.url, True, Readiness("redis_persistence"), registry)
    await redis_client.config_set("maxmemory", str(256 * 1024 * 1024))
    try:
        await StreamMetrics(registry).refresh(redis_client, DEFAULT_NAMES)
    finally:
        await redis_client.config_set("maxmemory", "0")
    collector.received.inc(5)
    writer.event_age.observe(0.3)
    writer.write_seconds.observe(0.02)
    runner = await serve_metrics(registry)
    port = runner.addresses[0][1]
    prometheus = Prometheus(tmp_path, {"all": [port]}, "groups: []\n", alertmanager_port=1)
    try:
        queries = list(targets("prometheus"))
        assert len(queries) >= 20
        for title, query in queries:
            expr = query.replace("$__rate_interval", "10s")
            result = await wait_for(lambda: prometheus.query(expr), 30, f"{title}: {expr}")  # noqa: B023
            assert result, (title, expr)
    finally:
        prometheus.stop()
        await runner.cleanup()


async def test_every_influxql_query_of_the_dashboard_returns_the_home_assistant_data(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str
) -> None:
    await fill(redis_client, [state_payload(n) for n in range(30)])
    async with running_writer(writer_settings(redis_server.url, influx.url, influx_db)) as running:
        await wait_for(lambda: metric(running, "homeiq_points_written_total") == 30, 10, "30 points written")
    for title, query in targets("influxdb"):
        # What Grafana puts in for a time range around the payloads' (fixed) times.
        statement = query.replace("$timeFilter", "time >= '2023-11-14T21:00:00Z' AND time <= '2023-11-14T23:00:00Z'")
        answer: dict[str, Any] = influx.query(statement.replace("$__interval", "1m"), influx_db)["results"][0]
        assert "error" not in answer and answer.get("series"), (title, statement, answer)
        entities = {s["tags"]["entity_id"] for s in answer["series"]}
        assert "sensor.s0" in entities and len(entities) == (20 if "SLIMIT 20" in query else 30), title


@pytest.mark.parametrize("path", sorted((OPS / "grafana").rglob("*.yml")))
def test_provisioning_reads_secrets_from_files_only(path: Path) -> None:
    text = path.read_text()
    assert not re.search(r"(token|password)\s*:\s*\S", text, re.IGNORECASE) or "$__file{" in text
