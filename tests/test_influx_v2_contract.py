"""The exact InfluxDB 2 write request the v2 sink sends, and how it reads each answer.

No InfluxDB 2 binary exists on these machines and no Docker engine runs here, so this is a contract test
against a recording HTTP server; the v1 path is tested against the real influxd.
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from homeiq_writer.influx import Outcome, V2Sink

LINES = b'home_assistant_events,entity_id=sensor.a state_value="1",source="live" 1700000000000000000'


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, str], bytes]] = []
        self.answer: tuple[int, dict[str, str], str] = (204, {}, "")
        self.buckets = '{"buckets":[{"id":"1","name":"home_assistant_events","orgID":"2"}]}'

    async def buckets_list(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.query), dict(request.headers), b""))
        if request.headers.get("Authorization") != "Token good":
            return web.json_response({"code": "unauthorized", "message": "unauthorized access"}, status=401)
        return web.Response(text=self.buckets, content_type="application/json")

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.query), dict(request.headers), await request.read()))
        status, headers, body = self.answer
        return web.Response(status=status, headers=headers, text=body, content_type="application/json")


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    rec = Recorder()
    app = web.Application()
    app.router.add_post("/api/v2/write", rec.handle)
    app.router.add_get("/api/v2/buckets", rec.buckets_list)
    runner = web.AppRunner(app, access_log=None, auto_decompress=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield rec, f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_request_has_org_bucket_precision_token_and_gzip(recorder: tuple[Recorder, str]) -> None:
    rec, url = recorder
    sink = V2Sink(url, "homeiq", "home_assistant_events", "s3cret-token", timeout_s=5)
    try:
        result = await sink.write(LINES)
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
    sink = V2Sink(url, "homeiq", "home_assistant_events", "t", timeout_s=5)
    try:
        result = await sink.write(LINES)
    finally:
        await sink.close()
    assert (result.outcome, result.status, result.retry_after_s) == (outcome, status, retry_after)


async def test_connection_refused_is_retried() -> None:
    sink = V2Sink("http://127.0.0.1:9", "o", "b", "t", timeout_s=2)
    try:
        result = await sink.write(LINES)
    finally:
        await sink.close()
    assert result.outcome is Outcome.RETRY and "127.0.0.1:9" in result.detail


async def test_readiness_check_asks_for_the_bucket_with_the_token(recorder: tuple[Recorder, str]) -> None:
    rec, url = recorder
    for token, buckets, outcome, status in (
        ("good", rec.buckets, Outcome.OK, 200),
        ("bad", rec.buckets, Outcome.REFUSED, 401),
        ("good", '{"buckets":[]}', Outcome.REFUSED, 404),
    ):
        rec.buckets = buckets
        sink = V2Sink(url, "homeiq", "home_assistant_events", token, timeout_s=5)
        try:
            result = await sink.check()
        finally:
            await sink.close()
        assert (result.outcome, result.status) == (outcome, status)
    path, query, _, _ = rec.requests[0]
    assert path == "/api/v2/buckets" and query == {"org": "homeiq", "name": "home_assistant_events"}
