"""Each Outcome of an InfluxDB answer (homeiq.shared.influx.sink), against a real influxd (faults injected in front
of it)."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as aioredis

from homeiq.local.services import InfluxServer, free_port
from homeiq.shared.influx.sink import Outcome, classify
from homeiq.shared.stream import DEAD_DETAIL, DEAD_REASON, DEFAULT_NAMES, FIELD_EVENT
from tests.events import state_payload
from tests.helpers import FaultyHttp, wait_for
from tests.writer_harness import fill, group_state, metric, running_writer, writer_settings


async def test_one_bad_line_in_5000_costs_only_that_entry(
    redis_client: aioredis.Redis, redis_server: object, influx: InfluxServer, influx_db: str
) -> None:
    payloads = [state_payload(n) for n in range(5000)]
    payloads[2500] = state_payload(2500, time_ns=2**64)  # a timestamp InfluxDB refuses
    await fill(redis_client, payloads)
    async with running_writer(writer_settings(redis_server.url, influx.url, influx_db)) as writer:  # type: ignore[attr-defined]
        await wait_for(lambda: metric(writer, "homeiq_points_written_total") == 4999, 30, "4999 points acked")
        assert (await group_state(redis_client))["pending"] == 0
        assert metric(writer, "homeiq_dead_lettered_total", reason="rejected") == 1
    assert influx.count(influx_db) == 4999
    (dead,) = await redis_client.xrange(DEFAULT_NAMES.dead)
    assert dead[1][FIELD_EVENT] == payloads[2500] and dead[1][DEAD_REASON] == b"rejected"


async def test_rejected_entry_whose_data_mentions_bucket_precision_gzip_is_dead_lettered_not_retried(
    redis_client: aioredis.Redis, redis_server: object, influx: InfluxServer, influx_db: str
) -> None:
    # influxd repeats a rejected line in its answer: what the line says must not make the answer a request problem.
    words = "bucket precision gzip database is required"
    payloads = [state_payload(n) for n in range(300)]
    payloads[150] = state_payload(150, words, msgspec.json.encode({"note": words}), time_ns=2**64)  # unparsable
    await fill(redis_client, payloads)
    async with running_writer(writer_settings(redis_server.url, influx.url, influx_db)) as writer:  # type: ignore[attr-defined]
        await wait_for(lambda: metric(writer, "homeiq_dead_lettered_total", reason="rejected") == 1, 20,
                       "the rejected entry dead-lettered")
        await wait_for(lambda: metric(writer, "homeiq_points_written_total") == 299, 20, "its neighbours written")
        assert metric(writer, "homeiq_write_batches_total", outcome="refused") == 0
        assert (await group_state(redis_client))["pending"] == 0
    assert influx.count(influx_db) == 299
    (dead,) = await redis_client.xrange(DEFAULT_NAMES.dead)
    assert dead[1][FIELD_EVENT] == payloads[150] and dead[1][DEAD_REASON] == b"rejected"
    assert words.encode() in dead[1][DEAD_DETAIL]


# What influxd 1.6.7 answered to each (tried here), and what InfluxDB 2.x answers (its http/write_handler.go,
# http/points/parser.go and tenant errors): about the request, never about a line.
@pytest.mark.parametrize("body", [
    '{"error":"database is required"}\n',  # no db parameter (or an empty one)
    '{"error":"gzip: invalid header"}\n',  # Content-Encoding: gzip, body not gzip
    '{"error":"gzip: invalid checksum"}\n',
    '{"error":"flate: corrupt input before offset 1"}\n',
    '{"error":"unexpected EOF"}\n',  # a truncated gzip body
    '{"error":"invalid consistency level"}\n',
    '{"code":"invalid","message":"invalid precision; valid precision units are ns, us, ms, and s"}',
    '{"code":"invalid","message":"unable to read data: gzip: invalid checksum"}',
    '{"code":"invalid","message":"writing requires points"}',
    '{"code":"invalid","message":"Please provide either orgID or org"}',
    "<html><body><h1>400 Bad Request</h1></body></html>",  # not InfluxDB's answer: a proxy's
])
def test_request_problems_are_refused_not_bisected(body: str) -> None:
    assert classify(400, body, None).outcome is Outcome.REFUSED


@pytest.mark.parametrize(("status", "body"), [
    (400, '{"error":"unable to parse \'home_assistant_events,domain=sensor state_value=\\"bucket precision gzip '
          'database is required\\" 18446744073709551616\': strconv.ParseInt: parsing \\"18446744073709551616\\": '
          'value out of range"}\n'),
    (400, '{"error":"partial write: unable to parse \'home_assistant_events,domain=sensor state_value=\\"gzip: '
          'bucket\\" 18446744073709551616\': strconv.ParseInt: parsing \\"18446744073709551616\\": value out of '
          'range dropped=0"}\n'),
    (400, '{"error":"field type conflict"}\n'),  # lines of one batch disagree on a field's type
    (400, '{"error":"partial write: field type conflict: input field \\"gzip\\" on measurement \\"bucket\\" is '
          'type string, already exists as type float dropped=1"}\n'),
    (400, '{"code":"invalid","message":"unable to parse \'m f=\\"invalid precision; database is required\\" x\': '
          'bad timestamp"}'),
    (422, '{"code":"unprocessable entity","message":"failure writing points to database: partial write: field type '
          'conflict: input field \\"precision\\" on measurement \\"gzip\\" is type float, already exists as type '
          'string dropped=1"}'),
    (413, '{"code":"request too large","message":"unable to read data: points batch is too large"}'),
])
def test_rejected_lines_are_bad_data_whatever_the_answer_repeats(status: int, body: str) -> None:
    assert classify(status, body, None).outcome is Outcome.BAD_DATA


async def test_field_types_never_conflict(
    redis_client: aioredis.Redis, redis_server: object, influx: InfluxServer, influx_db: str
) -> None:
    # An attribute that is a number, then a string, then a list; a state numeric, then not.
    payloads = [state_payload(0, "21.5", b'{"battery":87}'), state_payload(1, "unavailable", b'{"battery":"low"}'),
                state_payload(2, "on", b'{"battery":[1,2]}'), state_payload(3, "22", b'{}')]
    await fill(redis_client, payloads)
    async with running_writer(writer_settings(redis_server.url, influx.url, influx_db)) as writer:  # type: ignore[attr-defined]
        await wait_for(lambda: metric(writer, "homeiq_points_written_total") == 4, 30, "4 points")
        assert metric(writer, "homeiq_dead_lettered_total", reason="rejected") == 0
    points = sorted(influx.points(influx_db), key=lambda p: p["time"])
    assert [p["value"] for p in points] == [21.5, None, None, 22.0]
    assert [p["attributes"] for p in points] == ['{"battery":87}', '{"battery":"low"}', '{"battery":[1,2]}', None]


async def test_missing_database_is_not_ready_and_nothing_is_acked_or_dead_lettered(
    redis_client: aioredis.Redis, redis_server: object, influx: InfluxServer
) -> None:
    await fill(redis_client, [state_payload(n) for n in range(100)])
    async with running_writer(writer_settings(redis_server.url, influx.url, "no_such_db")) as writer:  # type: ignore[attr-defined]
        await wait_for(lambda: metric(writer, "homeiq_write_batches_total", outcome="refused") >= 2, 10,
                       "refused writes")
        assert "404" in (writer.readiness.reason or "") and "no_such_db" in (writer.readiness.reason or "")
        assert (await group_state(redis_client))["pending"] == 100
        assert await redis_client.xlen(DEFAULT_NAMES.dead) == 0
        influx.create_database("no_such_db")  # the operator fixes it: the same batch goes through
        await wait_for(lambda: metric(writer, "homeiq_points_written_total") == 100, 30, "the retried batch")
        assert writer.readiness.reason is None
    assert influx.count("no_such_db") == 100


async def test_wrong_credentials_are_not_ready_and_nothing_is_lost(
    redis_client: aioredis.Redis, redis_server: object, tmp_path: Path, monkeypatch: object
) -> None:
    secured = InfluxServer(tmp_path / "influxd-auth", None, admin_password="right").start()
    try:
        secured.create_database("db")
        await fill(redis_client, [state_payload(n) for n in range(50)])
        monkeypatch.setenv("INFLUXDB_PASSWORD", "wrong")  # type: ignore[attr-defined]
        settings = writer_settings(redis_server.url, secured.url, "db")  # type: ignore[attr-defined]
        settings = type(settings)(**{**{f: getattr(settings, f) for f in settings.__struct_fields__},
                                     "influx": type(settings.influx)(url=secured.url, api="v1", bucket="db",
                                                                     username="admin", timeout_s=2)})
        async with running_writer(settings) as writer:
            await wait_for(lambda: metric(writer, "homeiq_write_batches_total", outcome="refused") >= 1, 10,
                           "a refused write")
            assert "401" in (writer.readiness.reason or "")
            assert "wrong" not in (writer.readiness.reason or "")
            assert (await group_state(redis_client))["pending"] == 50
            assert await redis_client.xlen(DEFAULT_NAMES.dead) == 0
    finally:
        secured.stop()


async def test_429_and_503_honour_retry_after_then_the_same_batch_lands(
    redis_client: aioredis.Redis, redis_server: object, influx: InfluxServer, influx_db: str
) -> None:
    proxy = FaultyHttp(influx.url)
    await proxy.start()
    proxy.faults = [(429, "1"), (503, "1")]
    # Packed, 60 an entry: a writer's first read asks for WRITER_BATCH_SIZE / 64 entries (78 single ones would be
    # a first batch of 78), so the 300 are one batch.
    await fill(redis_client, [state_payload(n) for n in range(300)], events_per_entry=60)
    started = time.monotonic()
    try:
        async with running_writer(writer_settings(redis_server.url, proxy.url, influx_db)) as writer:  # type: ignore[attr-defined]
            await wait_for(lambda: metric(writer, "homeiq_points_written_total") == 300, 30, "the batch")
            assert metric(writer, "homeiq_write_batches_total", outcome="retry") == 2
    finally:
        await proxy.stop()
    assert time.monotonic() - started >= 2.0  # two Retry-After: 1 answers were honoured
    bodies = [body for path, _, body in proxy.requests if path.startswith("/write") and body]  # not readiness
    assert len(bodies) == 3 and bodies[0] == bodies[1] == bodies[2]  # the same batch, retried
    assert influx.count(influx_db) == 300


async def test_timeouts_and_refused_connections_retry_one_batch_and_read_nothing_more(
    redis_client: aioredis.Redis, redis_server: object, influx: InfluxServer, influx_db: str
) -> None:
    await fill(redis_client, [state_payload(n) for n in range(3000)])
    port = free_port()  # nothing listens here yet: connection refused
    settings = writer_settings(redis_server.url, f"http://127.0.0.1:{port}", influx_db, batch_size=500)  # type: ignore[attr-defined]
    async with running_writer(settings) as writer:
        await wait_for(lambda: metric(writer, "homeiq_write_batches_total", outcome="retry") >= 3, 20, "retries")
        held = await group_state(redis_client)
        assert held["read"] <= 1000 and held["pending"] == held["read"]  # one batch, at most one read ahead
        proxy = FaultyHttp(influx.url, hang_s=3.0)
        proxy.faults = [("hang", None)]  # then a write that times out (writer timeout 2 s)
        await proxy.start(port)
        try:
            await wait_for(lambda: metric(writer, "homeiq_points_written_total") == 3000, 60, "everything")
        finally:
            await proxy.stop()
        assert metric(writer, "homeiq_dead_lettered_total", reason="rejected") == 0
    assert influx.count(influx_db) == 3000
