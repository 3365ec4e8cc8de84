"""ops/: alert rules pass promtool (and its unit tests), configs load, every /metrics passes promtool."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from homeiq.collector.metrics import CollectorMetrics
from homeiq.local.services import InfluxServer, RedisServer, free_port
from homeiq.replayer.service import Replayer
from homeiq.replayer.settings import ReclaimSettings, ReplayerSettings
from homeiq.replayer.stream_metrics import StreamMetrics
from homeiq.shared.influx.metrics import WriterMetrics
from homeiq.shared.influx.settings import InfluxSettings
from homeiq.shared.stream import DEFAULT_NAMES
from tests.events import state_payload
from tests.helpers import wait_for
from tests.writer_harness import fill, running_writer, writer_settings

OPS = Path(__file__).resolve().parents[1] / "ops"


def run(*args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(args, input=stdin, capture_output=True, check=False, timeout=60)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    return done.stdout.decode() + done.stderr.decode()


def test_alert_rules_check_and_their_unit_tests_pass() -> None:
    rules = alert_rules()
    assert f"{len(rules)} rules found" in run("promtool", "check", "rules", str(OPS / "alerts.yml"))
    assert "SUCCESS" in run("promtool", "test", "rules", str(OPS / "tests" / "alerts_test.yml"))


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = yaml.safe_load((OPS / "alerts.yml").read_text())["groups"][0]["rules"]
    return rules


def test_every_alert_has_a_severity_a_runbook_and_tests_of_both_sides() -> None:
    """Both sides: a promtool case where it fires and one (a near miss) where it must not."""
    cases = [case for group in yaml.safe_load((OPS / "tests" / "alerts_test.yml").read_text())["tests"]
             for case in group["alert_rule_test"]]
    for rule in alert_rules():
        name, job = rule["alert"], rule["labels"].get("job")
        assert rule["annotations"]["summary"] and rule["annotations"]["runbook"], name
        fires = [c for c in cases if c["alertname"] == name
                 and any(job in (None, a["exp_labels"].get("job")) for a in c["exp_alerts"])]
        quiet = [c for c in cases if c["alertname"] == name and not c["exp_alerts"]]
        if name == "Watchdog":  # always firing, on purpose: it has no near miss, and pages nobody by itself
            assert rule["expr"] == "vector(1)" and rule["labels"]["severity"] == "none" and fires and not quiet
            continue
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert fires and quiet, f"{name} {job or ''} needs a case that fires and a near miss that does not"


def test_every_runbook_gives_each_deployments_command() -> None:
    """A replayer command in three words: local (scripts/start's settings), compose (the container's), systemd
    (the installed environment); readiness as the metric or `status`, never /readyz (compose publishes none)."""
    for rule in alert_rules():
        runbook = rule["annotations"]["runbook"]
        assert "/readyz" not in runbook and "curl" not in runbook, rule["alert"]
        commands = re.findall(r"`(?:\./scripts/replayer|docker-compose exec replayer replayer|homeiqctl) ([^`]+)`",
                              runbook)
        for command in set(commands):
            for form in (f"`./scripts/replayer {command}`", f"`docker-compose exec replayer replayer {command}`",
                         f"`homeiqctl {command}`"):
                assert form in runbook, f"{rule['alert']}: {form} missing"
        assert not re.search(r"(?<![\w/-])`replayer ", runbook), f"{rule['alert']}: a bare `replayer …`"


def test_prometheus_and_alertmanager_configs_load(tmp_path: Path) -> None:
    config = (OPS / "prometheus.yml").read_text().replace("/etc/prometheus/alerts.yml", str(OPS / "alerts.yml"))
    (tmp_path / "prometheus.yml").write_text(config)
    run("promtool", "check", "config", str(tmp_path / "prometheus.yml"))
    run("amtool", "check-config", str(OPS / "alertmanager.yml"))


@pytest.mark.parametrize("build", [CollectorMetrics, WriterMetrics, StreamMetrics])
def test_each_process_metrics_pass_promtool(build: type) -> None:
    registry = CollectorRegistry()
    build(registry)
    output = run("promtool", "check", "metrics", stdin=generate_latest(registry))
    assert "problem" not in output.lower(), output


async def test_a_running_writer_serves_metrics_health_and_readiness(
    redis_server: RedisServer, redis_client: object, influx: InfluxServer, influx_db: str
) -> None:
    async with running_writer(writer_settings(redis_server.url, influx.url, influx_db)) as writer:
        port = await wait_for(lambda: writer.runtime.health.port, 10, "the health server")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                body = await resp.read()
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
            await wait_for(lambda: writer.readiness.reason is None, 10, "readiness")
            async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                assert resp.status == 200 and (await resp.json()) == {"status": "ready"}
    assert b"homeiq_points_written_total" in body
    run("promtool", "check", "metrics", stdin=body)


async def test_readyz_says_why_not_ready(redis_server: RedisServer, redis_client: object, influx: InfluxServer) -> None:
    async with running_writer(writer_settings(redis_server.url, influx.url, "missing_db")) as writer:
        port = await wait_for(lambda: writer.runtime.health.port, 10, "the health server")
        await wait_for(lambda: "missing_db" in (writer.readiness.reason or ""), 10, "the first InfluxDB check")
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/readyz") as resp:
            assert resp.status == 503
            body = await resp.json()
    assert body["status"] == "not_ready" and 'database not found: \\"missing_db\\"' in body["reason"]  # influxd's words


async def test_the_metrics_say_which_condition_keeps_a_process_out_of_ready(
    redis_server: RedisServer, redis_client: object, influx: InfluxServer
) -> None:
    async with running_writer(writer_settings(redis_server.url, influx.url, "missing_db")) as writer:
        port = await wait_for(lambda: writer.runtime.health.port, 10, "the health server")
        await wait_for(lambda: "missing_db" in (writer.readiness.reason or ""), 10, "the first InfluxDB check")
        await wait_for(lambda: writer.readiness.holding().get("redis"), 10, "Redis checked")
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as resp:
            body = await resp.read()
    assert b'homeiq_ready{condition="influxdb"} 0.0' in body and b'homeiq_ready{condition="redis"} 1.0' in body
    run("promtool", "check", "metrics", stdin=body)


async def test_stream_gauges_stay_fresh_while_a_reclaimed_batch_waits_for_influxdb(
    redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    await fill(redis_client, [state_payload(n) for n in range(20)])
    await redis_client.xreadgroup(DEFAULT_NAMES.group, "dead-writer", {DEFAULT_NAMES.stream: ">"}, count=20)
    settings = ReplayerSettings(
        redis_url=redis_server.url, names=DEFAULT_NAMES, metrics_host="127.0.0.1", metrics_port=0,
        influx=InfluxSettings(url=f"http://127.0.0.1:{free_port()}", api="v1", bucket="db", timeout_s=1),
        reclaim=ReclaimSettings(min_idle_ms=1), interval_s=0.2,
    ).validate()
    replayer = Replayer(settings, CollectorRegistry())
    stop = asyncio.Event()
    task = asyncio.create_task(replayer.run(stop))
    try:  # the reclaimed batch is retried against a closed port; new entries still show in the gauges
        retries = {"outcome": "retry"}
        await wait_for(lambda: replayer.metrics_registry.get_sample_value("homeiq_write_batches_total", retries), 10,
                       "a failed write")
        await fill(redis_client, [state_payload(n) for n in range(20, 50)])
        gauges = ("homeiq_stream_length", "homeiq_stream_group_lag", "homeiq_stream_pending")
        await wait_for(lambda: [replayer.metrics_registry.get_sample_value(name) for name in gauges] == [50, 30, 20],
                       10, "length 50, lag 30 and the 20 reclaimed entries pending")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
