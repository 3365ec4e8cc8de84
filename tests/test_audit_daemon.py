"""The replayer daemon's periodic audit fails without taking reclaim, trim and the gauges with it: each failure is
logged once (what failed, never a secret), counted, and the daemon goes on. Real Redis, influxd and ha-sim."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry

from homeiq.ha_sim.runner import SimServer
from homeiq.local.services import InfluxServer, RedisServer
from homeiq.replayer.service import Replayer
from homeiq.replayer.settings import AuditSettings, ReclaimSettings, ReplayerSettings
from homeiq.shared.influx.settings import InfluxSettings
from homeiq.shared.stream import DEFAULT_NAMES
from tests.collector_harness import TOKEN, simulator
from tests.events import state_payload
from tests.helpers import FaultyHttp, wait_for
from tests.writer_harness import fill

HTML_PAGE = b"<html><body>Sign in to the proxy</body></html>"


class ProxyAnsweringQueriesWithHtml(FaultyHttp):
    """A reverse proxy in front of a real influxd that passes writes through and answers every `/query` with a
    200 HTML page (a login or maintenance page), as a misconfigured proxy does."""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/query":
            self.requests.append((request.path_qs, dict(request.headers), await request.read()))
            return web.Response(status=200, body=HTML_PAGE, content_type="text/html")
        return await super()._handle(request)


@dataclass
class Daemon:
    """A running `replayer run` with the periodic audit on."""

    replayer: Replayer
    task: asyncio.Task[None]

    def sample(self, name: str, **labels: str) -> float:
        return self.replayer.metrics_registry.get_sample_value(name, labels or None) or 0.0


@pytest.fixture
async def proxy(influx: InfluxServer) -> AsyncIterator[ProxyAnsweringQueriesWithHtml]:
    proxy = ProxyAnsweringQueriesWithHtml(influx.url)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with simulator(entity_count=5) as running:
        yield running


@contextlib.asynccontextmanager
async def running_daemon(redis_url: str, influx_url: str, database: str, ha_url: str) -> AsyncIterator[Daemon]:
    """The daemon audits once (an hour's interval) and reclaims every 0.2 s; HA_TOKEN must be set."""
    settings = ReplayerSettings(
        redis_url=redis_url, names=DEFAULT_NAMES, metrics_host="127.0.0.1", metrics_port=0,
        influx=InfluxSettings(url=influx_url, api="v1", bucket=database, timeout_s=5),
        reclaim=ReclaimSettings(min_idle_ms=1), interval_s=0.2,
        audit=AuditSettings(interval_s=3600, ha_url=ha_url, settle_s=0.5)).validate()
    replayer = Replayer(settings, CollectorRegistry())
    stop = asyncio.Event()
    task = asyncio.create_task(replayer.run(stop))
    try:
        yield Daemon(replayer, task)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def daemon(redis_server: RedisServer, redis_client: aioredis.Redis, influx_db: str, sim: SimServer,
                 proxy: ProxyAnsweringQueriesWithHtml, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Daemon]:
    monkeypatch.setenv("HA_TOKEN", TOKEN)
    async with running_daemon(redis_server.url, proxy.url, influx_db, sim.url) as running:
        yield running


async def _reclaims_and_writes(daemon: Daemon, client: aioredis.Redis, influx: InfluxServer, database: str) -> None:
    """An entry a dead writer left pending is reclaimed and written: reclaim still runs."""
    await fill(client, [state_payload(1)])
    await client.xreadgroup(DEFAULT_NAMES.group, "dead-writer", {DEFAULT_NAMES.stream: ">"}, count=1)
    await wait_for(lambda: daemon.task.done() or influx.count(database) == 1, 20, "the pending entry written")
    assert not daemon.task.done(), daemon.task.exception()
    assert influx.count(database) == 1


def _audit_logs(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == event]


async def test_an_influxdb_answer_that_is_not_json_fails_the_audit_not_the_daemon(
    daemon: Daemon, proxy: ProxyAnsweringQueriesWithHtml, redis_client: aioredis.Redis, influx: InfluxServer,
    influx_db: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    await wait_for(lambda: daemon.task.done() or daemon.sample("homeiq_audit_runs_total", outcome="failed") == 1,
                   30, "the audit counted as failed")
    assert not daemon.task.done(), daemon.task.exception()
    await _reclaims_and_writes(daemon, redis_client, influx, influx_db)
    failed = _audit_logs(caplog, "audit_failed")
    assert len(failed) == 1  # once per failure
    error = str(failed[0].__dict__["error"])
    assert proxy.url in error and "not JSON" in error and TOKEN not in error
    assert daemon.sample("homeiq_audit_last_failure_timestamp_seconds") > 0
    assert daemon.sample("homeiq_audit_last_complete_timestamp_seconds") == 0
    assert daemon.sample("homeiq_audit_runs_total", outcome="crashed") == 0


async def test_an_error_of_ours_in_the_audit_is_logged_with_its_traceback_and_the_daemon_goes_on(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str, sim: SimServer,
    proxy: ProxyAnsweringQueriesWithHtml, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    import homeiq.replayer.audit_loop  # noqa: PLC0415

    async def broken_audit(*_args: object, **_kwargs: object) -> None:
        raise ZeroDivisionError(f"a bug of ours, next to the token {TOKEN}")

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(homeiq.replayer.audit_loop, "audit", broken_audit)
    monkeypatch.setenv("HA_TOKEN", TOKEN)
    async with running_daemon(redis_server.url, proxy.url, influx_db, sim.url) as daemon:
        await wait_for(lambda: daemon.task.done() or daemon.sample("homeiq_audit_runs_total", outcome="crashed") == 1,
                       30, "the audit counted as crashed")
        assert not daemon.task.done(), daemon.task.exception()
        await _reclaims_and_writes(daemon, redis_client, influx, influx_db)
        crashed = _audit_logs(caplog, "audit_crashed")
        assert len(crashed) == 1 and crashed[0].levelno == logging.ERROR
        logged = str(crashed[0].__dict__)
        assert "ZeroDivisionError" in logged and "broken_audit" in logged  # the traceback, where it happened
        assert TOKEN not in logged
        assert daemon.sample("homeiq_audit_runs_total", outcome="failed") == 0
