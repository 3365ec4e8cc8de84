"""Bad entries between good ones: each is dead-lettered with its reason, the good neighbours are written."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from homeiq.local.services import InfluxServer
from homeiq.shared.events import NormalisedEvent
from homeiq.shared.health import Readiness
from homeiq.shared.influx.batch import BatchWriter, Handled
from homeiq.shared.influx.lineprotocol import LineEncoder
from homeiq.shared.influx.metrics import WriterMetrics
from homeiq.shared.influx.sink import v1_sink
from homeiq.shared.stream import (
    DEAD_DETAIL,
    DEAD_ORIGINAL_ID,
    DEAD_REASON,
    DEFAULT_NAMES,
    FIELD_EVENT,
    FIELD_VERSION,
    ensure_group,
    entry_fields,
    read_group,
)
from tests.events import state_payload
from tests.helpers import value


def event(n: int, **changes: object) -> bytes:
    return state_payload(n, entity_id=f"sensor.s{n}", attributes=b"{}", **changes)


async def test_poison_is_dead_lettered_and_good_neighbours_written(
    redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str
) -> None:
    names = DEFAULT_NAMES
    await ensure_group(redis_client, names)
    good = [event(n) for n in range(100)]
    bad = {
        "undecodable": {FIELD_VERSION: b"1", FIELD_EVENT: b'{"event_type": 42'},
        "unknown_version": {FIELD_VERSION: b"9", FIELD_EVENT: event(1000)},
        # A timestamp InfluxDB cannot store: the batch is refused, bisected, and only this entry fails.
        "rejected": entry_fields(event(1001, time_ns=2**64)),
    }
    for n, payload in enumerate(good):
        await redis_client.xadd(names.stream, entry_fields(payload))
        if n in (10, 50, 90):
            await redis_client.xadd(names.stream, bad[("undecodable", "unknown_version", "rejected")[n // 40]])
    trimmed = await redis_client.xadd(names.stream, entry_fields(event(2000)))
    entries = await read_group(redis_client, names, "w1", b">", 1000)
    await redis_client.xdel(names.stream, trimmed)  # pending, its payload gone
    entries = [(entry_id, [] if entry_id == trimmed else fields) for entry_id, fields in entries]
    metrics = WriterMetrics(CollectorRegistry())
    sink = v1_sink(influx.url, influx_db, "", "", "", 10)
    try:
        writer = BatchWriter(redis_client, names, sink, metrics, Readiness(), "w1")
        handled = await writer.handle(entries, asyncio.Event())
    finally:
        await sink.close()

    # What the write path did, said by its one entry point rather than counted by its caller.
    assert handled == Handled(written=100, dead_lettered={"undecodable": 1, "unknown_version": 1, "rejected": 1},
                              lost=1, given_up=False)

    assert influx.count(influx_db) == 100
    dead = await redis_client.xrange(names.dead)
    reasons = sorted(fields[DEAD_REASON].decode() for _, fields in dead)
    assert reasons == ["payload_trimmed", "rejected", "undecodable", "unknown_version"]
    for _, fields in (d for d in dead if d[1][DEAD_REASON] != b"payload_trimmed"):
        assert fields[FIELD_EVENT] == bad[fields[DEAD_REASON].decode()][FIELD_EVENT]  # the original payload is kept
        assert fields[DEAD_DETAIL] and fields[DEAD_ORIGINAL_ID]
    assert (await redis_client.xpending(names.stream, names.group))["pending"] == 0
    assert value(metrics.points_written) == 100
    assert value(metrics.dead_lettered, reason="rejected") == 1
    assert value(metrics.batches, outcome="bad_data") >= 1


async def test_an_entry_whose_encoding_raises_is_dead_lettered_and_its_neighbours_written(
    redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug in our own code that one entry triggers (not a decode error): its own fault, every time.
    encoder = LineEncoder()
    encode = encoder.encode

    def encode_or_fail(event: NormalisedEvent) -> str | None:
        if event.entity_id == "sensor.s5":
            raise KeyError("a key the encoder did not expect")
        return encode(event)

    monkeypatch.setattr(encoder, "encode", encode_or_fail)
    names = DEFAULT_NAMES
    await ensure_group(redis_client, names)
    ids = [await redis_client.xadd(names.stream, entry_fields(event(n))) for n in range(10)]
    entries = await read_group(redis_client, names, "w1", b">", 100)
    metrics = WriterMetrics(CollectorRegistry())
    sink = v1_sink(influx.url, influx_db, "", "", "", 10)
    try:
        writer = BatchWriter(redis_client, names, sink, metrics, Readiness(), "w1", encoder=encoder)
        assert not (await writer.handle(entries, asyncio.Event())).given_up
    finally:
        await sink.close()
    assert influx.count(influx_db) == 9
    (dead,) = await redis_client.xrange(names.dead)
    assert dead[1][DEAD_REASON] == b"reader_error" and dead[1][DEAD_ORIGINAL_ID] == ids[5]
    assert b"KeyError" in dead[1][DEAD_DETAIL] and dead[1][FIELD_EVENT] == event(5)
    assert (await redis_client.xpending(names.stream, names.group))["pending"] == 0
    assert value(metrics.dead_lettered, reason="reader_error") == 1
