"""ops/: alert rules pass promtool (and its unit tests), configs load, every /metrics passes promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from homeiq_collector.metrics import CollectorMetrics
from homeiq_local.services import InfluxServer, RedisServer
from homeiq_replayer.stream_metrics import StreamMetrics
from homeiq_writer.metrics import WriterMetrics
from tests.helpers import wait_for
from tests.writer_harness import running_writer, writer_settings

OPS = Path(__file__).resolve().parents[1] / "ops"


def run(*args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(args, input=stdin, capture_output=True, check=False, timeout=60)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    return done.stdout.decode() + done.stderr.decode()


def test_alert_rules_check_and_their_unit_tests_pass() -> None:
    assert "9 rules found" in run("promtool", "check", "rules", str(OPS / "alerts.yml"))
    assert "SUCCESS" in run("promtool", "test", "rules", str(OPS / "tests" / "alerts_test.yml"))


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
        port = await wait_for(lambda: writer.health.port, 10, "the health server")
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
        port = await wait_for(lambda: writer.health.port, 10, "the health server")
        await wait_for(lambda: "missing_db" in (writer.readiness.reason or ""), 10, "the first InfluxDB check")
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/readyz") as resp:
            assert resp.status == 503
            body = await resp.json()
    assert body["status"] == "not_ready" and 'database "missing_db" not found' in body["reason"]
