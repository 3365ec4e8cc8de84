"""Certificate expiry of the peers we talk TLS to: HA over wss:// (the collector) and InfluxDB over https:// (the
writers), as the notAfter of the certificate each shows, verified or not; no sample where there is no TLS."""

from __future__ import annotations

import ssl
import subprocess
from datetime import datetime
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as aioredis

from homeiq.ha_sim.hub import Hub
from homeiq.ha_sim.runner import SimServer
from homeiq.local.services import RedisServer
from homeiq.shared.certs import not_after
from homeiq.shared.influx.settings import InfluxSettings
from homeiq.shared.influx.sink import Outcome, sink_for
from tests.collector_harness import TOKEN, running_collector, simulator
from tests.helpers import wait_for
from tests.test_tls import Certs, certs, https_influx  # noqa: F401 - fixtures
from tests.writer_harness import metric, running_writer, writer_settings

EXPIRY = "homeiq_tls_cert_expiry_timestamp_seconds"


def openssl_end_date(cert: Path) -> float:
    """notAfter as `openssl x509 -enddate` says it."""
    out = subprocess.run(["openssl", "x509", "-enddate", "-noout", "-in", str(cert)], capture_output=True,
                         text=True, check=True).stdout
    return datetime.strptime(out.strip().removeprefix("notAfter=") + " +0000", "%b %d %H:%M:%S %Y GMT %z").timestamp()


def test_not_after_reads_the_der_certificate(certs: Certs) -> None:  # noqa: F811
    der = ssl.PEM_cert_to_DER_cert(certs.cert.read_text())
    assert not_after(der) == openssl_end_date(certs.cert)
    with pytest.raises(ValueError, match="not a DER certificate"):
        not_after(der[:40])


@pytest.mark.parametrize(("verify", "ca"), [(True, True), (False, False)])
async def test_a_writer_reports_when_influxdbs_certificate_expires(
    certs: Certs, https_influx: tuple[str, list[bytes]], redis_server: RedisServer,  # noqa: F811
    redis_client: aioredis.Redis, verify: bool, ca: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _ = https_influx
    monkeypatch.setenv("INFLUXDB_TOKEN", "t")
    influx = InfluxSettings.layered({"url": url, "api": "v1", "bucket": "db", "verify_ssl": verify,
                                     "ssl_ca_cert": str(certs.ca) if ca else "", "timeout_s": 2})
    sink = sink_for(influx.validate())
    try:
        assert (await sink.check()).outcome is Outcome.OK
        assert getattr(sink, "cert_expiry_s", None) == openssl_end_date(certs.cert)
    finally:
        await sink.close()
    settings = msgspec.structs.replace(writer_settings(redis_server.url, url, "db"), influx=influx).validate()
    async with running_writer(settings) as writer:
        await wait_for(lambda: metric(writer, EXPIRY, peer="influxdb"), 10, "the certificate's expiry")
        assert metric(writer, EXPIRY, peer="influxdb") == openssl_end_date(certs.cert)


async def test_the_collector_reports_when_has_wss_certificate_expires_and_nothing_over_ws(
    certs: Certs, redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path,  # noqa: F811
) -> None:
    sim = SimServer(Hub.create(5, TOKEN), tls=certs.server_context())
    await sim.start()
    try:
        async with running_collector(sim, redis_server.url, tmp_path / "a", ssl_ca_cert=str(certs.ca)) as run:
            await wait_for(lambda: run.metric("homeiq_ha_connected") == 1, 10, "connected over wss://")
            assert run.metric(EXPIRY, peer="home_assistant") == openssl_end_date(certs.cert)
    finally:
        await sim.stop()
    async with simulator() as plain, running_collector(plain, redis_server.url, tmp_path / "b") as run:
        await wait_for(lambda: run.metric("homeiq_ha_connected") == 1, 10, "connected over ws://")
        assert run.collector.metrics_registry.get_sample_value(EXPIRY, {"peer": "home_assistant"}) is None
