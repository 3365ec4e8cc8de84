"""The collector's disk spool: order, torn tails, and each policy when it is full (with Redis down)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from homeiq.collector.metrics import CollectorMetrics
from homeiq.collector.publisher import Publisher
from homeiq.collector.spool import Policy, Spool
from homeiq.local.services import RedisServer, free_port
from homeiq.shared.health import Readiness
from homeiq.shared.stream import FIELD_EVENT, StreamNames
from tests.helpers import DelayProxy, value, wait_for


def payload(n: int) -> bytes:
    return b'{"n":%d,"pad":"%s"}' % (n, b"x" * 80)


def drain(spool: Spool) -> list[bytes]:
    """Every record left in `spool`, in order (consumed)."""
    records: list[bytes] = []
    while chunk := spool.read(100):
        records.extend(chunk.records)
        spool.consumed(chunk)
    return records


def test_records_come_back_in_order_across_segments_and_restarts(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1_000_000, segment_bytes=500)
    for first in range(0, 40, 4):
        spool.append([payload(n) for n in range(first, first + 4)])
    assert len(list(tmp_path.glob("spool-*.log"))) > 3
    got: list[bytes] = []
    while chunk := spool.read(7):
        got.extend(chunk.records)
        spool.consumed(chunk)
        if len(got) == 14:  # a restart: the remaining segments are found again
            spool = Spool(tmp_path, max_bytes=1_000_000, segment_bytes=500)
    # After the restart the partly drained segment is read from its start: duplicates, never a gap.
    assert sorted(set(got)) == sorted(payload(n) for n in range(40))
    assert got[-1] == payload(39) and not spool and not list(tmp_path.glob("spool-*.log"))


def test_a_torn_tail_is_cut_off_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1_000_000)
    spool.append([payload(1), payload(2)])
    with (tmp_path / "spool-1.log").open("ab") as handle:
        handle.write(b"\x00\x00\x01\x00partial")  # a crash in the middle of a write
    recovered = Spool(tmp_path, max_bytes=1_000_000)
    assert recovered.torn_records == 1
    assert drain(recovered) == [payload(1), payload(2)]


def start_publisher(tmp_path: Path, policy: Policy) -> tuple[Publisher, CollectorMetrics, asyncio.Task[None]]:
    """A running publisher whose Redis is unreachable and whose spool holds about ten events."""
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    metrics = CollectorMetrics(CollectorRegistry())
    publisher = Publisher(client, "redis://down", StreamNames(stream="s"), metrics, Readiness(),
                          Spool(tmp_path, max_bytes=1100), policy, capacity=5, batch_max=2)
    return publisher, metrics, asyncio.create_task(publisher.run())


async def run_full_spool(tmp_path: Path, policy: Policy, events: int) -> tuple[CollectorMetrics, asyncio.Task[None]]:
    """Put `events` through a publisher that can only spool."""
    publisher, metrics, task = start_publisher(tmp_path, policy)
    for n in range(events):
        await asyncio.wait_for(publisher.put(payload(n)), 10)
    return metrics, task


@contextlib.asynccontextmanager
async def proxied_publisher(tmp_path: Path, spool: Spool, delay_s: float, **options: Any) -> AsyncIterator[
        tuple[Publisher, CollectorMetrics, DelayProxy, aioredis.Redis, asyncio.Task[None]]]:
    """A running drop_oldest publisher whose Redis (a private redis-server) it reaches through a `DelayProxy`, and a
    client that reaches Redis directly."""
    redis_server = RedisServer(tmp_path / "redis", None).start()
    proxy = DelayProxy(redis_server.port, delay_s=delay_s)
    await proxy.start()
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{proxy.port}/0", socket_connect_timeout=1)
    reader = aioredis.Redis.from_url(redis_server.url)
    metrics = CollectorMetrics(CollectorRegistry())
    publisher = Publisher(client, "redis://proxied", StreamNames(stream="s"), metrics, Readiness(), spool,
                          "drop_oldest", **options)
    task = asyncio.create_task(publisher.run())
    try:
        yield publisher, metrics, proxy, reader, task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await client.aclose()
        await reader.aclose()
        await proxy.stop()
        redis_server.stop()


def dropped(metrics: CollectorMetrics) -> float:
    return value(metrics.dropped, reason="spool_full")


async def test_drop_newest_keeps_the_oldest_and_counts_every_drop(tmp_path: Path) -> None:
    metrics, task = await run_full_spool(tmp_path, "drop_newest", 30)
    try:
        await wait_for(lambda: dropped(metrics) + value(metrics.spooled) >= 30, 20, "all 30 handled")
        assert dropped(metrics) > 0 and value(metrics.spooled) + dropped(metrics) == 30
        kept = drain(Spool(tmp_path, max_bytes=1100))
        assert kept[0] == payload(0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_drop_oldest_keeps_the_newest_and_counts_every_drop(tmp_path: Path) -> None:
    metrics, task = await run_full_spool(tmp_path, "drop_oldest", 30)
    try:
        await wait_for(lambda: value(metrics.spooled) == 30, 20, "all 30 spooled")
        kept = drain(Spool(tmp_path, max_bytes=1100))
        # The first batch (0, 1) was offered to Redis, which may hold it (unknown): kept, not counted dropped.
        assert kept[:2] == [payload(0), payload(1)] and kept[-1] == payload(29) and payload(2) not in kept
        assert dropped(metrics) == 30 - len(kept)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_block_stops_taking_events_and_drops_nothing(tmp_path: Path) -> None:
    publisher, metrics, task = start_publisher(tmp_path, "block")
    puts = 0
    try:
        for n in range(40):
            try:
                await asyncio.wait_for(publisher.put(payload(n)), 2)
            except TimeoutError:
                break
            puts += 1
        assert puts < 40  # the buffer filled up behind the full spool: the reader would now wait
        assert dropped(metrics) == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_drop_oldest_never_drops_what_the_drainer_is_publishing(tmp_path: Path) -> None:
    """A slow Redis: the drainer's XADD of the oldest segment takes a while, and the full spool must make
    room meanwhile. Every event ends up in the stream exactly once or counted as dropped; nothing else."""
    spool = Spool(tmp_path / "spool", max_bytes=3000, segment_bytes=600)
    spool.append([payload(n) for n in range(30)])  # left by an outage: the drainer starts on it at once
    async with proxied_publisher(tmp_path, spool, delay_s=0.1, capacity=5, batch_max=4) as (
            publisher, metrics, _, reader, task):
        for n in range(30, 330):
            await asyncio.wait_for(publisher.put(payload(n)), 10)
            await asyncio.sleep(0.002)
        await wait_for(lambda: publisher.pending == 0 or task.done(), 60, "the spool drained")
        assert not task.done(), task.exception()
        entries = [fields[FIELD_EVENT] for _, fields in await reader.xrange("s")]
        assert set(entries) <= {payload(n) for n in range(330)}  # no garbage from a misaligned read
        assert len(entries) == len(set(entries))  # nothing published twice
        assert dropped(metrics) > 0  # the spool really was full
        assert len(entries) + dropped(metrics) == 330  # published or counted as dropped, exactly
        assert value(metrics.published) == len(entries)


async def test_a_batch_redis_took_but_never_answered_is_not_counted_dropped_when_the_full_spool_makes_room(
    tmp_path: Path,
) -> None:
    """Redis carries out the XADD of a batch and goes away before its answer: the batch goes to the spool, though it is
    in the stream. A full spool under drop_oldest must not push it out and count it dropped (seen in the fault suite:
    89 events, one batch, counted dropped and found in InfluxDB). Every event is in the stream or counted, not both."""
    spool = Spool(tmp_path / "spool", max_bytes=3000, segment_bytes=600)
    async with proxied_publisher(tmp_path, spool, delay_s=0, capacity=100, batch_max=4, linger_s=0.2) as (
            publisher, metrics, proxy, reader, task):
        for n in range(4):
            publisher.offer(payload(n))
        await wait_for(lambda: value(metrics.published) == 4, 10, "the first batch published")
        proxy.cut()  # the next batch is carried out, its answer lost; then Redis is away
        for n in range(4, 8):
            publisher.offer(payload(n))
        await wait_for(lambda: proxy.swallowed > 0 and value(metrics.spooled) >= 4, 10, "the answer lost")
        for n in range(8, 80):  # ~7,500 bytes into a spool of 3,000: drop_oldest makes room
            await asyncio.wait_for(publisher.put(payload(n)), 10)
            await asyncio.sleep(0.005)
        await wait_for(lambda: value(metrics.spooled) == 76, 10, "every event after the first batch spooled")
        assert dropped(metrics) > 0  # the spool really was full
        proxy.restore()
        await wait_for(lambda: publisher.pending == 0 or task.done(), 30, "the spool drained")
        assert not task.done(), task.exception()
        entries = {fields[FIELD_EVENT] for _, fields in await reader.xrange("s")}
        assert {payload(n) for n in range(8)} <= entries  # the batch whose answer was lost is in the stream
        assert len(entries) + dropped(metrics) == 80  # in the stream or counted as dropped; never both


async def test_block_with_a_full_spool_and_redis_down_closes_within_its_bound_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    publisher, metrics, task = start_publisher(tmp_path, "block")
    puts = 0
    try:
        for n in range(40):
            try:
                await asyncio.wait_for(publisher.put(payload(n)), 1)
            except TimeoutError:
                break
            puts += 1
        started = time.monotonic()
        unpublished = await asyncio.wait_for(publisher.close(1.0), 5)
        assert time.monotonic() - started < 3
        kept = Spool(tmp_path, max_bytes=1100).records
        shutdown_drops = value(metrics.dropped, reason="shutdown_spool_full")
        assert kept + shutdown_drops + unpublished == puts  # every event kept or counted
        assert shutdown_drops + unpublished > 0 and dropped(metrics) == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("policy", ["block", "drop_oldest", "drop_newest"])
async def test_a_batch_larger_than_the_whole_spool_is_kept_in_parts(policy: Policy, tmp_path: Path) -> None:
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    metrics = CollectorMetrics(CollectorRegistry())
    publisher = Publisher(client, "redis://down", StreamNames(stream="s"), metrics, Readiness(),
                          Spool(tmp_path, max_bytes=1100), policy, capacity=50, batch_max=20)
    task = asyncio.create_task(publisher.run())
    try:
        for n in range(15):  # ~1,560 bytes, taken as one batch: more than the spool holds
            publisher.offer(payload(n))
        await wait_for(lambda: value(metrics.spooled) + dropped(metrics) >= 10, 10, "the batch spooled in parts")
        assert value(metrics.spooled) >= 10
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
