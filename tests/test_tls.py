"""TLS to InfluxDB (verify_ssl, a CA file) and wss:// to Home Assistant with the same options.

A CA and a certificate for 127.0.0.1 are made with the openssl command; the servers are an HTTPS recorder in the
shape of InfluxDB's /write and ha-sim behind TLS.
"""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from homeiq_collector.settings import CollectorSettings
from homeiq_hasim.hub import Hub
from homeiq_hasim.runner import SimServer
from homeiq_local.services import RedisServer
from homeiq_shared.stream import DEFAULT_NAMES
from homeiq_writer.influx import Outcome
from homeiq_writer.settings import InfluxSettings
from tests.collector_harness import TOKEN, running_collector
from tests.helpers import wait_for


class Certs:
    def __init__(self, folder: Path) -> None:
        self.ca = folder / "ca.pem"
        self.cert, self.key = folder / "server.pem", folder / "server.key"

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Certs]:
    folder = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=homeiq test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    yield Certs(folder)


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
        sink = settings.validate().make_sink()
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
    sink = settings.make_sink()
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
