"""TLS to InfluxDB (verify_ssl, a CA file) and wss:// to Home Assistant with the same options.

A CA and a certificate for 127.0.0.1 are made with the openssl command; the servers are an HTTPS recorder in the
shape of InfluxDB's /write and ha-sim behind TLS.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry

from homeiq.collector.settings import CollectorSettings
from homeiq.ha_sim.hub import Hub
from homeiq.ha_sim.runner import SimServer
from homeiq.local.services import InfluxServer, RedisServer
from homeiq.replayer.service import Replayer
from homeiq.replayer.settings import AuditSettings, ReplayerSettings
from homeiq.shared.influx.settings import InfluxSettings
from homeiq.shared.influx.sink import Outcome, sink_for
from homeiq.shared.stream import DEFAULT_NAMES
from tests.collector_harness import TOKEN, running_collector
from tests.helpers import Certs, make_certs, wait_for


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Certs]:
    yield make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def https_influx(certs: Certs) -> AsyncIterator[tuple[str, list[bytes]]]:
    """An HTTPS server answering /write and /api/v2/write as InfluxDB does when it takes the lines."""
    bodies: list[bytes] = []

    async def write(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/write", write)
    app.router.add_post("/api/v2/write", write)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=certs.server_context()).start()
    yield f"https://127.0.0.1:{runner.addresses[0][1]}", bodies
    await runner.cleanup()


@pytest.mark.parametrize("api", ["v1", "v2"])
async def test_influxdb_over_tls_with_a_ca_file_with_the_system_cas_and_unverified(
    certs: Certs, https_influx: tuple[str, list[bytes]], api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, bodies = https_influx
    monkeypatch.setenv("INFLUXDB_TOKEN", "t")
    for verify, ca, outcome in ((True, str(certs.ca), Outcome.OK), (True, "", Outcome.RETRY),
                                (False, "", Outcome.OK)):
        settings = InfluxSettings.layered({"url": url, "api": api, "verify_ssl": verify, "ssl_ca_cert": ca})
        sink = sink_for(settings.validate())
        try:
            check, write = await sink.check(), await sink.write(sink.prepare(b"m x=1 1"))
        finally:
            await sink.close()
        assert (check.outcome, write.outcome) == (outcome, outcome), (verify, ca, write.detail)
        if outcome is Outcome.RETRY:
            assert "CERTIFICATE_VERIFY_FAILED" in write.detail  # says why, not just "refused"
    assert len(bodies) == 4  # two checks and two writes got through


async def test_the_configuration_file_words_verify_ssl_and_ssl_ca_cert(
    certs: Certs, https_influx: tuple[str, list[bytes]], tmp_path: Path
) -> None:
    url, _ = https_influx
    port = url.rsplit(":", 1)[1]
    config = tmp_path / "config.yaml"
    config.write_text(f"influxdb:\n  host: 127.0.0.1\n  port: {port}\n  ssl: true\n  ssl_ca_cert: {certs.ca}\n")
    settings = InfluxSettings.layered({"config_path": str(config)}).validate()
    assert (settings.url, settings.api, settings.ssl_ca_cert) == (url, "v1", str(certs.ca))
    sink = sink_for(settings)
    try:
        assert (await sink.write(sink.prepare(b"m x=1 1"))).outcome is Outcome.OK
    finally:
        await sink.close()


async def test_collector_over_wss_with_a_ca_file_and_refusing_an_unknown_certificate(
    certs: Certs, redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    sim = SimServer(Hub.create(5, TOKEN), tls=certs.server_context())
    await sim.start()
    try:
        assert sim.url.startswith("wss://")
        async with running_collector(sim, redis_server.url, tmp_path / "a", ssl_ca_cert=str(certs.ca)) as run:
            await wait_for(lambda: run.metric("homeiq_ha_connected") == 1, 10, "connected with the CA file")
        await redis_client.delete(DEFAULT_NAMES.stream)
        async with running_collector(sim, redis_server.url, tmp_path / "b") as run:  # the system's CAs only
            await wait_for(lambda: run.metric("homeiq_ha_disconnects_total", reason="error") >= 1, 10,
                           "a refused certificate")
            assert run.metric("homeiq_ha_connected") == 0
            assert "CERTIFICATE_VERIFY_FAILED" in (run.collector.readiness.reason or "")
        async with running_collector(sim, redis_server.url, tmp_path / "c", verify_ssl=False) as run:
            await wait_for(lambda: run.metric("homeiq_ha_connected") == 1, 10, "connected unverified")
    finally:
        await sim.stop()


def test_a_ca_file_that_is_not_there_is_an_error_naming_the_setting() -> None:
    with pytest.raises(Exception, match="HA_SSL_CA_CERT"):
        CollectorSettings(ha_url="wss://h:1", redis_url="redis://r", names=DEFAULT_NAMES,
                          ssl_ca_cert="/nonexistent/ca.pem").validate()
    with pytest.raises(Exception, match="INFLUXDB_SSL_CA_CERT"):
        InfluxSettings.layered({"url": "https://h", "ssl_ca_cert": "/nonexistent/ca.pem"}).validate()


@pytest.fixture
async def wss_sim(certs: Certs) -> AsyncIterator[SimServer]:
    """ha-sim behind TLS with a certificate of the test CA."""
    sim = SimServer(Hub.create(5, TOKEN), tls=certs.server_context())
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def _audit_over_wss(sim: SimServer, influx: InfluxServer, database: str, redis_url: str,
                          **tls: str) -> tuple[int, str, str]:
    """`replayer audit --json` from now, as an operator runs it, with these HA_* TLS variables; (exit code,
    stdout, stderr)."""
    since = datetime.fromtimestamp(time.time(), UTC).isoformat()
    env = {**os.environ, "HA_URL": sim.url, "HA_TOKEN": TOKEN, "REDIS_URL": redis_url, "INFLUXDB_URL": influx.url,
           "INFLUXDB_API": "v1", "INFLUXDB_BUCKET": database, **tls}
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "replayer"), "audit", "--since", since, "--json",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_the_audit_over_wss_takes_the_collectors_tls_settings(
    certs: Certs, wss_sim: SimServer, redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer,
    influx_db: str,
) -> None:
    for tls in ({"HA_SSL_CA_CERT": str(certs.ca)}, {"HA_VERIFY_SSL": "false"}):
        code, stdout, stderr = await _audit_over_wss(wss_sim, influx, influx_db, redis_server.url, **tls)
        assert code == 0 and stdout, (tls, stderr)  # an empty window: complete
        entities = {e["entity_id"] for e in json.loads(stdout)["entities"]}
        assert entities == set(wss_sim.hub.entities), tls  # HA's states and history, read over TLS
    code, stdout, stderr = await _audit_over_wss(wss_sim, influx, influx_db, redis_server.url)  # system CAs only
    assert code == 1 and not stdout and "CERTIFICATE_VERIFY_FAILED" in stderr and TOKEN not in stderr


async def test_the_periodic_audit_over_wss_takes_the_collectors_tls_settings(
    certs: Certs, wss_sim: SimServer, redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer,
    influx_db: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HA_TOKEN", TOKEN)
    audit = AuditSettings.layered({"interval_s": 3600, "ha_url": wss_sim.url, "ssl_ca_cert": str(certs.ca),
                                   "settle_s": 0.0})
    settings = ReplayerSettings(redis_url=redis_server.url, names=DEFAULT_NAMES, metrics_host="127.0.0.1",
                                metrics_port=0, influx=InfluxSettings(url=influx.url, api="v1", bucket=influx_db),
                                audit=audit).validate()
    replayer = Replayer(settings, CollectorRegistry())
    stop = asyncio.Event()
    task = asyncio.create_task(replayer.run(stop))

    def sample(name: str) -> float:
        return replayer.metrics_registry.get_sample_value(name) or 0.0

    try:
        await wait_for(lambda: sample("homeiq_audit_last_complete_timestamp_seconds")
                       or sample("homeiq_audit_last_failure_timestamp_seconds"), 30, "one audit")
        assert sample("homeiq_audit_last_complete_timestamp_seconds") > 0  # HA's certificate checked with the CA
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
