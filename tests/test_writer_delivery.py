"""Idempotency, start and stop, scale-out: the writer's delivery contract on real processes."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import redis.asyncio as aioredis

from homeiq.local.services import InfluxServer, RedisServer
from homeiq.shared.influx.batch import BatchWriter
from homeiq.shared.influx.sink import v1_sink
from homeiq.shared.stream import DEFAULT_NAMES, StreamNames, connect, read_group
from tests.events import state_payload
from tests.helpers import DelayProxy, FaultyHttp, Service, wait_for
from tests.writer_harness import (
    fill,
    group_state,
    metric,
    restart_during_outage,
    running_writer,
    writer_settings,
)


def writer_env(redis: RedisServer, influx_url: str, database: str, consumer: str) -> dict[str, str]:
    return {"REDIS_URL": redis.url, "INFLUXDB_URL": influx_url, "INFLUXDB_API": "v1", "INFLUXDB_BUCKET": database,
            "WRITER_CONSUMER": consumer, "WRITER_BATCH_SIZE": "500"}


async def test_the_same_entries_delivered_twice_leave_the_same_points(
    redis_client: aioredis.Redis, redis_server: RedisServer, influx: InfluxServer, influx_db: str
) -> None:
    await fill(redis_client, [state_payload(n) for n in range(1000)])
    async with running_writer(writer_settings(redis_server.url, influx.url, influx_db)) as writer:
        await wait_for(lambda: metric(writer, "homeiq_points_written_total") == 1000, 30, "the first delivery")
    first = sorted(influx.points(influx_db), key=lambda p: (p["entity_id"], p["time"]))
    # A whole replay: a second group reads the stream from the start and writes it all again.
    await redis_client.xgroup_create(DEFAULT_NAMES.stream, "replay", id="0")
    entries = await read_group(redis_client, StreamNames(group="replay"), "r1", b">", 2000)
    sink = v1_sink(influx.url, influx_db, "", "", "", 10)
    replay = BatchWriter(redis_client, StreamNames(group="replay"), sink, writer.metrics, writer.readiness, "r1")
    try:
        assert not (await replay.handle(entries, asyncio.Event())).given_up
    finally:
        await sink.close()
    second = sorted(influx.points(influx_db), key=lambda p: (p["entity_id"], p["time"]))
    assert second == first and len(second) == 1000
    assert (await redis_client.xpending(DEFAULT_NAMES.stream, "replay"))["pending"] == 0


async def test_sigterm_mid_write_exits_0_and_never_half_acks(
    redis_client: aioredis.Redis, redis_server: RedisServer, influx: InfluxServer, influx_db: str, log_dir: Path
) -> None:
    await fill(redis_client, [state_payload(n) for n in range(2000)])
    proxy = DelayProxy(influx.port, delay_s=1.5)  # each write answers after 1.5 s
    env = writer_env(redis_server, f"http://127.0.0.1:{await proxy.start()}", influx_db, "w-term")
    writer = Service("writer", env, log_dir)
    try:
        await wait_for(lambda: _pending_of(redis_client, "w-term"), 20, "a batch in flight")
        await asyncio.sleep(0.3)  # SIGTERM lands while the write is in flight
        writer.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(writer.process.wait, 20) == 0
    finally:
        writer.terminate()
        await proxy.stop()
    state = await group_state(redis_client)
    written = influx.count(influx_db)
    acked = state["read"] - state["pending"]
    assert acked == written  # every acked entry is in InfluxDB, and nothing written stayed half-acked
    assert state["pending"] % 500 == 0  # whole batches only: in flight then abandoned, or read ahead
    assert '"event": "writer_stopped"' in writer.logs()


async def _pending_of(client: aioredis.Redis, consumer: str) -> bool:
    summary = await client.xpending(DEFAULT_NAMES.stream, DEFAULT_NAMES.group)
    return any(c["name"] == consumer.encode() and c["pending"] > 0 for c in summary["consumers"])


async def test_a_restarted_writer_takes_its_own_pending_entries_first(
    redis_client: aioredis.Redis, redis_server: RedisServer, influx: InfluxServer, influx_db: str
) -> None:
    await fill(redis_client, [state_payload(n) for n in range(300)])
    await redis_client.xreadgroup(DEFAULT_NAMES.group, "w1", {DEFAULT_NAMES.stream: ">"}, count=120)  # then "died"
    async with running_writer(writer_settings(redis_server.url, influx.url, influx_db)) as writer:
        await wait_for(lambda: metric(writer, "homeiq_points_written_total") == 300, 30, "all 300")
    assert (await group_state(redis_client))["pending"] == 0
    assert influx.count(influx_db) == 300


async def test_a_redis_outage_mid_stream_loses_nothing_and_needs_no_replayer(
    redis_client: aioredis.Redis, redis_server: RedisServer, influx: InfluxServer, influx_db: str
) -> None:
    await fill(redis_client, [state_payload(n) for n in range(3000)])
    proxy = DelayProxy(influx.port, delay_s=0.3)  # slow writes: Redis goes away with a batch in flight
    settings = writer_settings(redis_server.url, f"http://127.0.0.1:{await proxy.start()}", influx_db,
                               batch_size=500)
    try:
        async with running_writer(settings) as writer:
            await wait_for(lambda: metric(writer, "homeiq_points_written_total") >= 500, 20, "the first batch")
            await asyncio.to_thread(redis_server.stop)
            await wait_for(lambda: "Redis" in (writer.readiness.reason or ""), 20, "readiness naming Redis")
            await asyncio.to_thread(redis_server.start)  # same data directory: the AOF brings the stream back
            await wait_for(lambda: influx.count(influx_db) == 3000, 60, "every point")
            client = connect(redis_server.url)
            try:
                async def drained() -> bool:
                    return (await group_state(client))["pending"] == 0

                # Entries whose ack the outage cut are re-read from the writer's own pending list at once.
                await wait_for(drained, 30, "every ack, without a replayer")
                assert (await group_state(client))["read"] == 3000
            finally:
                await client.aclose()
    finally:
        await proxy.stop()


async def test_three_writers_share_the_load_without_double_writes(
    redis_client: aioredis.Redis, redis_server: RedisServer, influx: InfluxServer, influx_db: str, log_dir: Path
) -> None:
    await fill(redis_client, [state_payload(n) for n in range(30_000)])
    writers = [Service("writer", writer_env(redis_server, influx.url, influx_db, f"w{i}"), log_dir, f"w{i}")
               for i in range(3)]
    try:
        await wait_for(lambda: influx.count(influx_db) >= 30_000, 120, "every point")

        async def drained() -> bool:
            return (await group_state(redis_client))["pending"] == 0

        await wait_for(drained, 30, "every ack")
        shares = [w.scrape("homeiq_points_written_total") for w in writers]
        entries_read = [w.scrape("homeiq_writer_entries_read_total") for w in writers]
    finally:
        codes = [w.terminate() for w in writers]
    assert codes == [0, 0, 0]
    assert all(share > 0 for share in shares), shares
    assert sum(shares) == sum(entries_read) == 30_000  # each entry was written by exactly one writer
    keys = Counter((p["entity_id"], p["time"]) for p in influx.points(influx_db))
    assert len(keys) == 30_000 and max(keys.values()) == 1


async def test_a_restarted_writer_does_not_raise_the_delivery_count_of_its_own_pending_entries(
    redis_client: aioredis.Redis, redis_server: RedisServer, influx: InfluxServer, influx_db: str
) -> None:
    await fill(redis_client, [state_payload(n) for n in range(3)])
    await redis_client.xreadgroup(DEFAULT_NAMES.group, "w1", {DEFAULT_NAMES.stream: ">"}, count=3)  # then died
    proxy = FaultyHttp(influx.url)
    proxy.faults = [(503, None)] * 1000  # InfluxDB down throughout
    await proxy.start()
    try:
        await restart_during_outage(redis_server.url, proxy, influx_db, times=3)
        rows = await redis_client.xpending_range(DEFAULT_NAMES.stream, DEFAULT_NAMES.group, "-", "+", 10)
        assert [(r["consumer"], r["times_delivered"]) for r in rows] == [(b"w1", 1)] * 3
        proxy.faults = []  # InfluxDB is back
        async with running_writer(writer_settings(redis_server.url, proxy.url, influx_db)) as writer:
            await wait_for(lambda: metric(writer, "homeiq_points_written_total") == 3, 20, "the 3 entries")
    finally:
        await proxy.stop()
    assert (await group_state(redis_client))["pending"] == 0 and influx.count(influx_db) == 3
