"""The exact InfluxDB 2 write request the v2 sink sends, and how it reads each answer.

No InfluxDB 2 binary exists on these machines and no Docker engine runs here, so this is a contract test
against a recording HTTP server; the v1 path is tested against the real influxd.
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from homeiq.shared.influx.sink import Outcome, v2_sink

LINES = b'home_assistant_events,entity_id=sensor.a state_value="1",source="live" 1700000000000000000'


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, str], bytes]] = []
        self.answer: tuple[int, dict[str, str], str] = (204, {}, "")

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.query), dict(request.headers), await request.read()))
        status, headers, body = self.answer
        return web.Response(status=status, headers=headers, text=body, content_type="application/json")


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    rec = Recorder()
    app = web.Application()
    app.router.add_post("/api/v2/write", rec.handle)
    runner = web.AppRunner(app, access_log=None, auto_decompress=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield rec, f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_request_has_org_bucket_precision_token_and_gzip(recorder: tuple[Recorder, str]) -> None:
    rec, url = recorder
    sink = v2_sink(url, "homeiq", "home_assistant_events", "s3cret-token", timeout_s=5)
    try:
        result = await sink.write(sink.prepare(LINES))
    finally:
        await sink.close()
    assert result.outcome is Outcome.OK
    ((path, query, headers, body),) = rec.requests
    assert path == "/api/v2/write"
    assert query == {"org": "homeiq", "bucket": "home_assistant_events", "precision": "ns"}
    assert headers["Authorization"] == "Token s3cret-token"
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == LINES


@pytest.mark.parametrize(("status", "headers", "body", "outcome", "retry_after"), [
    (400, {}, '{"code":"invalid","message":"unable to parse"}', Outcome.BAD_DATA, None),
    (422, {}, '{"code":"unprocessable entity","message":"partial write: field type conflict"}', Outcome.BAD_DATA,
     None),
    (413, {}, '{"code":"request too large"}', Outcome.BAD_DATA, None),
    (401, {}, '{"code":"unauthorized","message":"unauthorized access"}', Outcome.REFUSED, None),
    (404, {}, '{"code":"not found","message":"bucket \\"x\\" not found"}', Outcome.REFUSED, None),
    (429, {"Retry-After": "7"}, '{"code":"too many requests"}', Outcome.RETRY, 7.0),
    (503, {"Retry-After": "3"}, '{"code":"unavailable"}', Outcome.RETRY, 3.0),
    (500, {}, '{"code":"internal error"}', Outcome.RETRY, None),
])
async def test_each_answer_is_classified(recorder: tuple[Recorder, str], status: int, headers: dict[str, str],
                                         body: str, outcome: Outcome, retry_after: float | None) -> None:
    rec, url = recorder
    rec.answer = (status, headers, body)
    sink = v2_sink(url, "homeiq", "home_assistant_events", "t", timeout_s=5)
    try:
        result = await sink.write(sink.prepare(LINES))
    finally:
        await sink.close()
    assert (result.outcome, result.status, result.retry_after_s) == (outcome, status, retry_after)


async def test_connection_refused_is_retried() -> None:
    sink = v2_sink("http://127.0.0.1:9", "o", "b", "t", timeout_s=2)
    try:
        result = await sink.write(sink.prepare(LINES))
    finally:
        await sink.close()
    assert result.outcome is Outcome.RETRY and "127.0.0.1:9" in result.detail


@pytest.mark.parametrize(("answer", "outcome"), [
    ((204, {}, ""), Outcome.OK),  # 2.x since 2.0.9, Cloud: an empty write is fine with a write-only token
    ((400, {}, '{"code":"invalid","message":"writing requires points"}'), Outcome.OK),  # 2.0.0 to 2.0.8
    ((400, {}, '{"error":"no lines to parse"}'), Outcome.OK),  # past auth and bucket: only the lines were wrong
    ((401, {}, '{"code":"unauthorized","message":"unauthorized access"}'), Outcome.REFUSED),
    ((403, {}, '{"code":"forbidden","message":"insufficient permissions for write"}'), Outcome.REFUSED),
    ((404, {}, '{"code":"not found","message":"bucket \\"home_assistant_events\\" not found"}'), Outcome.REFUSED),
    ((400, {}, '{"code":"invalid","message":"Please provide either orgID or org"}'), Outcome.REFUSED),
    ((503, {"Retry-After": "2"}, '{"code":"unavailable"}'), Outcome.RETRY),
])
async def test_readiness_is_an_empty_write_never_the_buckets_api(
    recorder: tuple[Recorder, str], answer: tuple[int, dict[str, str], str], outcome: Outcome
) -> None:
    # InfluxDB 3 serves no /api/v2/buckets, and a write-only token may not read it: readiness is a write of no
    # points, which needs exactly the permission the writer needs.
    rec, url = recorder
    rec.answer = answer
    sink = v2_sink(url, "homeiq", "home_assistant_events", "write-only", timeout_s=5)
    try:
        result = await sink.check()
    finally:
        await sink.close()
    assert result.outcome is outcome
    ((path, query, headers, body),) = rec.requests
    assert path == "/api/v2/write" and body == b""
    assert query == {"org": "homeiq", "bucket": "home_assistant_events", "precision": "ns"}
    assert headers["Authorization"] == "Token write-only"
