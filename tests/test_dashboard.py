"""Every panel of the shipped Grafana dashboards (the operator's `homeiq-ingest.json` and the home's
`homeiq-home.json`) runs: its Prometheus queries against a real Prometheus scraping every metric our processes
export, its InfluxQL queries (tests/test_home_dashboard.py) against a real influxd holding points the writer wrote."""

from __future__ import annotations

import itertools
import json
import re
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from homeiq.collector.metrics import CollectorMetrics
from homeiq.local.services import RedisServer
from homeiq.replayer.audit_loop import PeriodicAudit
from homeiq.replayer.settings import AuditSettings
from homeiq.replayer.stream_metrics import StreamMetrics
from homeiq.shared.broker import PersistenceCheck
from homeiq.shared.health import Readiness
from homeiq.shared.influx.metrics import WriterMetrics
from homeiq.shared.influx.reader import reader_for
from homeiq.shared.influx.settings import InfluxSettings
from homeiq.shared.stream import DEFAULT_NAMES
from tests.dashboards import DASHBOARDS, HOME, OPERATOR, every_panel, panels, targets
from tests.helpers import wait_for
from tests.monitoring import OPS, Prometheus


def test_both_dashboards_are_shipped_and_provisioned() -> None:
    assert HOME in DASHBOARDS and OPERATOR in DASHBOARDS
    provider = (OPS / "grafana" / "provisioning" / "dashboards" / "homeiq.yml").read_text()
    assert "path: /var/lib/grafana/dashboards" in provider  # compose mounts ops/grafana/dashboards there
    uids = [json.loads(path.read_text())["uid"] for path in DASHBOARDS]
    assert len(set(uids)) == len(uids)
    for path in DASHBOARDS:  # each links to the other
        own = json.loads(path.read_text())
        links = {link["url"] for link in own.get("links", [])}
        assert links == {f"/d/{uid}" for uid in uids if uid != own["uid"]}, path.name


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda path: path.name)
def test_every_panel_states_one_unit_and_its_data_source_is_provisioned(dashboard: Path) -> None:
    provisioned = (OPS / "grafana" / "provisioning" / "datasources" / "datasources.yml").read_text()
    ids = [panel["id"] for panel in every_panel(dashboard)]
    assert len(set(ids)) == len(ids), "panel ids are unique"
    for panel in panels(dashboard):
        assert f"uid: {panel['datasource']['uid']}" in provisioned, panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]  # one unit per panel, stated
        assert not panel["fieldConfig"]["overrides"], f"{panel['title']}: a second unit by override"
        assert panel["targets"], panel["title"]
    for variable in json.loads(dashboard.read_text())["templating"]["list"]:
        assert f"uid: {variable['datasource']['uid']}" in provisioned, variable["name"]


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda path: path.name)
def test_no_two_panels_overlap(dashboard: Path) -> None:
    """Grafana cannot be run here to look: at least every panel has a place of its own on the 24-column grid."""
    taken: dict[tuple[int, int], str] = {}
    for panel in every_panel(dashboard):  # a collapsed row's panels are placed below it, as when it is open
        place = panel["gridPos"]
        assert place["x"] + place["w"] <= 24 and min(place.values()) >= 0, panel["title"]
        for cell in itertools.product(range(place["x"], place["x"] + place["w"]),
                                      range(place["y"], place["y"] + place["h"])):
            assert cell not in taken, (panel["title"], "over", taken[cell])
            taken[cell] = panel["title"]


def yes_no_gauges(registry: CollectorRegistry) -> set[str]:
    """The gauges whose help says they are 1 while (or when) something holds, else 0."""
    return {family.name for family in registry.collect()
            if family.type == "gauge" and re.match(r"1 (while|when)\b", family.documentation)}


def test_a_gauge_of_0_or_1_is_shown_as_words_not_drawn_as_a_line() -> None:
    registry = every_metric(CollectorRegistry())
    flags = yes_no_gauges(registry)
    assert {"homeiq_ha_connected", "homeiq_redis_persistent"} <= flags
    shown = set()
    for dashboard in DASHBOARDS:
        for panel, expr in targets(dashboard, "prometheus"):
            used = {name for name in flags if re.search(rf"\b{name}\b", expr)}
            if not used:
                continue
            shown |= used
            assert panel["type"] in ("stat", "state-timeline"), (dashboard.name, panel["title"], "a 0/1 line")
            assert len(panel["targets"]) == 1, (panel["title"], "one flag per panel: its words are its own")
            mapped = {key for mapping in panel["fieldConfig"]["defaults"]["mappings"] if mapping["type"] == "value"
                      for key in mapping["options"]}
            assert {"0", "1"} <= mapped, (panel["title"], "both values named")
    assert {"homeiq_ha_connected", "homeiq_ha_auth_rejected", "homeiq_redis_persistent"} <= shown


def every_metric(registry: CollectorRegistry) -> CollectorRegistry:
    """Every metric whose families any of our processes exports, registered in `registry` with no values yet."""
    CollectorMetrics(registry)
    WriterMetrics(registry)
    StreamMetrics(registry)
    PersistenceCheck("redis://127.0.0.1:1", True, Readiness("redis_persistence"), registry)
    return registry


async def serve_metrics(registry: CollectorRegistry) -> web.AppRunner:
    app = web.Application()

    async def scrape(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


# What the home's status tiles show for the values the test sets (the title names the tile).
HOME_TILES = {"Home Assistant": 1.0, "States missing in InfluxDB (last audit)": 0.0,
              "Last complete audit": 90.0, "Delay to InfluxDB (stream lag)": 0.0}


async def test_every_prometheus_query_of_the_dashboards_returns_data(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    registry = CollectorRegistry()  # every metric any of our processes exports, in one place
    collector, writer = CollectorMetrics(registry), WriterMetrics(registry)
    PersistenceCheck(redis_server.url, True, Readiness("redis_persistence"), registry)
    audit = PeriodicAudit(AuditSettings(interval_s=3600, ha_url="http://127.0.0.1:1"), "token",
                          reader_for(InfluxSettings(url="http://127.0.0.1:1", api="v1", bucket="b")), redis_client,
                          DEFAULT_NAMES, None, registry)
    await redis_client.config_set("maxmemory", str(256 * 1024 * 1024))
    try:
        await StreamMetrics(registry).refresh(redis_client, DEFAULT_NAMES)
    finally:
        await redis_client.config_set("maxmemory", "0")
    collector.received.inc(5)
    collector.connected.set(1)
    audit.missing.set(0)
    audit.completed.set(time.time() - 90)
    writer.event_age.observe(0.3)
    writer.write_seconds.observe(0.02)
    runner = await serve_metrics(registry)
    port = runner.addresses[0][1]
    prometheus = Prometheus(tmp_path, {"all": [port]}, "groups: []\n", alertmanager_port=1)
    try:
        queries = [(dashboard, panel, expr)
                   for dashboard in DASHBOARDS for panel, expr in targets(dashboard, "prometheus")]
        assert len(queries) >= 24
        tiles = {}
        for dashboard, panel, query in queries:
            expr = query.replace("$__rate_interval", "10s")
            result = await wait_for(lambda: prometheus.query(expr), 30, f"{panel['title']}: {expr}")  # noqa: B023
            assert result, (dashboard.name, panel["title"], expr)
            if dashboard == HOME:
                tiles[panel["title"]] = float(result[0]["value"][1])
        assert tiles.keys() == HOME_TILES.keys()
        for title, expected in HOME_TILES.items():
            assert tiles[title] == pytest.approx(expected, abs=10), title
    finally:
        prometheus.stop()
        await runner.cleanup()
        await audit.close()


@pytest.mark.parametrize("path", sorted((OPS / "grafana").rglob("*.yml")))
def test_provisioning_reads_secrets_from_files_only(path: Path) -> None:
    text = path.read_text()
    assert not re.search(r"(token|password)\s*:\s*\S", text, re.IGNORECASE) or "$__file{" in text


def test_the_readme_lists_every_row_and_panel_of_the_home_dashboard() -> None:
    readme = (OPS.parent / "README.md").read_text()
    for panel in every_panel(HOME):
        assert panel["title"].split(" (")[0] in readme, panel["title"]
