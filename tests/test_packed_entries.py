"""Entries of several events (version 2) through the write path, the publish script and the replayer's redrive:
a poisoned event goes to the dead-letter stream alone, its entry is acked once, its neighbours are written."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError

from homeiq.collector.dedup import identity
from homeiq.collector.metrics import CollectorMetrics
from homeiq.collector.publisher import Publisher
from homeiq.collector.spool import Spool
from homeiq.collector.unrecoverable import marked
from homeiq.local.services import InfluxServer, RedisServer
from homeiq.replayer.crashes import CrashLedger
from homeiq.replayer.operations import redrive
from homeiq.shared.health import Readiness
from homeiq.shared.influx.batch import BatchWriter, Handled
from homeiq.shared.influx.metrics import WriterMetrics
from homeiq.shared.influx.sink import v1_sink
from homeiq.shared.packing import FIELD_PACKED, PACKED_VERSION, events_or_none, pack, xadd_batch_args
from homeiq.shared.scripts import XADD_BATCH_SCRIPT
from homeiq.shared.stream import (
    DEAD_DETAIL,
    DEAD_ORIGINAL_ID,
    DEAD_REASON,
    DEFAULT_NAMES,
    FIELD_EVENT,
    FIELD_VERSION,
    Entry,
    ensure_group,
    entry_fields,
    read_group,
)
from homeiq.writer.service import Writer
from tests.events import other_payload, state_payload
from tests.helpers import value, wait_for
from tests.writer_harness import fill, running_writer, writer_settings


def event(n: int, **changes: object) -> bytes:
    return state_payload(n, entity_id=f"sensor.s{n}", attributes=b"{}", **changes)


def packed(payloads: list[bytes]) -> dict[bytes, bytes]:
    return {FIELD_VERSION: PACKED_VERSION, FIELD_PACKED: pack(payloads)}


async def write_all(client: aioredis.Redis, influx: InfluxServer, database: str, entries: list[Entry]
                    ) -> tuple[Handled, WriterMetrics]:
    metrics = WriterMetrics(CollectorRegistry())
    sink = v1_sink(influx.url, database, "", "", "", 10)
    try:
        handled = await BatchWriter(client, DEFAULT_NAMES, sink, metrics, Readiness(), "w1").handle(
            entries, asyncio.Event())
    finally:
        await sink.close()
    return handled, metrics


async def test_one_poisoned_event_among_64_is_dead_lettered_alone_and_its_entry_acked_once(
    redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str
) -> None:
    names = DEFAULT_NAMES
    await ensure_group(redis_client, names)
    # Two entries of 64: in the first, event 17 has a time InfluxDB cannot store (refused, bisected down to it);
    # in the second, event 40 is JSON but no event. A version-1 entry between them, as a stream being upgraded holds.
    first = [event(n, time_ns=2**64) if n == 17 else event(n) for n in range(64)]
    second = [b'{"event_type": 42}' if n == 40 else event(100 + n) for n in range(64)]
    ids = [await redis_client.xadd(names.stream, packed(first)),
           await redis_client.xadd(names.stream, entry_fields(event(500))),
           await redis_client.xadd(names.stream, packed(second))]
    entries = await read_group(redis_client, names, "w1", b">", 100)

    handled, metrics = await write_all(redis_client, influx, influx_db, entries)

    assert influx.count(influx_db) == 127
    assert handled == Handled(written=63 + 1 + 63, dead_lettered={"rejected": 1, "undecodable": 1})
    dead = {fields[DEAD_ORIGINAL_ID]: fields for _, fields in await redis_client.xrange(names.dead)}
    assert sorted(dead) == [ids[0] + b"#17", ids[2] + b"#40"]
    assert dead[ids[0] + b"#17"][DEAD_REASON] == b"rejected"
    assert dead[ids[0] + b"#17"][FIELD_EVENT] == first[17]  # the event alone, as a version-1 entry: redrivable
    assert dead[ids[0] + b"#17"][FIELD_VERSION] == b"1"
    assert dead[ids[2] + b"#40"][DEAD_REASON] == b"undecodable"
    assert (await redis_client.xpending(names.stream, names.group))["pending"] == 0
    assert value(metrics.dead_lettered, reason="rejected") == 1
    assert value(metrics.dead_lettered, reason="undecodable") == 1

    # Read again (a writer that died before its ack, then claimed): written again, dead-lettered no second time.
    again, _ = await write_all(redis_client, influx, influx_db, entries)
    assert again == Handled(written=127) and influx.count(influx_db) == 127
    assert len(await redis_client.xrange(names.dead)) == 2


async def test_a_packed_entry_that_cannot_be_read_is_dead_lettered_whole_and_redriven_whole(
    redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str
) -> None:
    names = DEFAULT_NAMES
    await ensure_group(redis_client, names)
    good = pack([event(n) for n in range(5)])
    cut = await redis_client.xadd(names.stream, {FIELD_VERSION: PACKED_VERSION, FIELD_PACKED: good[:-3]})
    whole = await redis_client.xadd(names.stream, {FIELD_VERSION: PACKED_VERSION, FIELD_PACKED: good})
    entries = await read_group(redis_client, names, "w1", b">", 100)

    handled, _ = await write_all(redis_client, influx, influx_db, entries)

    assert handled == Handled(written=5, dead_lettered={"undecodable": 1})
    ((dead_id, fields),) = await redis_client.xrange(names.dead)
    assert fields[DEAD_ORIGINAL_ID] == cut and fields[FIELD_PACKED] == good[:-3]
    assert whole not in {fields[DEAD_ORIGINAL_ID]}
    ((_, new_id),) = await redrive(redis_client, names, [dead_id.decode()])
    assert new_id is not None
    back = await redis_client.xrange(names.stream, new_id, new_id)
    assert back[0][1] == {FIELD_VERSION: PACKED_VERSION, FIELD_PACKED: good[:-3]}


async def test_the_script_adds_a_burst_seen_whole_once_and_stops_before_one_seen_in_part(
    redis_client: aioredis.Redis,
) -> None:
    names = DEFAULT_NAMES
    script = redis_client.register_script(XADD_BATCH_SCRIPT)
    keys = [names.stream, f"{names.collector_tail}:a", names.collector_seen]
    events = [event(n) for n in range(6)]

    async def add(payloads: list[bytes]) -> list[object]:
        args = xadd_batch_args(b"", payloads, 600, [identity(p) for p in payloads], events_per_entry=3)
        return list(await script(keys=keys, args=args))

    _, added, skipped, done = await add(events[:3])  # one entry of three
    assert added is not None and skipped == [] and done == 3
    _, none_added, skipped, done = await add(events[:3])  # the same burst again: skipped whole
    assert none_added is None and skipped == [1, 2, 3] and done == 3
    # [2, 3, 4] then [5]: the first entry holds one event added before, so the script stops before it, says which,
    # and adds nothing after it (order is kept: the caller packs 3, 4 and 5 again).
    _, none_added, skipped, done = await add(events[2:])
    assert none_added is None and skipped == [1] and done == 0
    _, added, skipped, done = await add(events[3:])
    assert added is not None and skipped == [] and done == 3
    stream = [p for _, fields in await redis_client.xrange(names.stream) for p in events_or_none(fields)]
    assert stream == events


async def test_two_collectors_publishing_overlapping_bursts_add_each_event_once_in_order(tmp_path: Path) -> None:
    primary = RedisServer(tmp_path / "primary", None).start()
    replica = RedisServer(tmp_path / "replica", None, replica_of=primary.port).start()
    client = aioredis.Redis.from_url(primary.url)

    def publisher(name: str) -> tuple[Publisher, CollectorMetrics]:
        metrics = CollectorMetrics(CollectorRegistry())
        return Publisher(client, primary.url, DEFAULT_NAMES, metrics, Readiness(), Spool(tmp_path / name, 10**6),
                         "block", replicas=(1, 2000), dedup_window_s=600, collector_id=name,
                         events_per_entry=64), metrics

    calls = [other_payload("call_service", n, b'{"n":%d}' % n) for n in range(10)]
    try:
        await wait_for(lambda: replica_synced(client), 20, "the replica in sync")
        (a, a_metrics), (b, b_metrics) = publisher("a"), publisher("b")
        assert await a._xadd(calls[:6])  # one entry of six
        # b's burst overlaps a's in part (3, 4, 5) and holds one of its own twice: the first try stops before its
        # entry, the second adds 6 to 9 in one entry, once; both confirmed by the replica.
        assert await b._xadd([*calls[3:], calls[7]])
        assert value(b_metrics.published) == 4 and value(b_metrics.deduplicated) == 4
        assert value(a_metrics.published) == 6
        stream = await client.xrange(DEFAULT_NAMES.stream)
        assert len(stream) == 2 and [p for _, f in stream for p in events_or_none(f)] == calls
    finally:
        await client.aclose()
        replica.stop()
        primary.stop()


async def replica_synced(client: aioredis.Redis) -> bool:
    info = await client.info("replication")
    return bool(info.get("connected_slaves")) and info.get("slave0", {}).get("state") == "online"


async def test_a_packed_entry_of_no_events_is_dead_lettered_not_left_pending_for_ever(
    redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str
) -> None:
    await ensure_group(redis_client, DEFAULT_NAMES)
    empty = await redis_client.xadd(DEFAULT_NAMES.stream, packed([]))
    await redis_client.xadd(DEFAULT_NAMES.stream, packed([event(1)]))
    entries = await read_group(redis_client, DEFAULT_NAMES, "w1", b">", 10)
    handled, _ = await write_all(redis_client, influx, influx_db, entries)
    assert handled == Handled(written=1, dead_lettered={"undecodable": 1})
    ((_, dead),) = await redis_client.xrange(DEFAULT_NAMES.dead)
    assert dead[DEAD_ORIGINAL_ID] == empty and b"no events" in dead[DEAD_DETAIL]
    assert (await redis_client.xpending(DEFAULT_NAMES.stream, DEFAULT_NAMES.group))["pending"] == 0


async def test_a_writers_first_read_of_packed_entries_is_about_writer_batch_size_events(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str
) -> None:
    await fill(redis_client, [event(n) for n in range(64 * 100)], events_per_entry=64)
    writer = Writer(writer_settings(redis_server.url, influx.url, influx_db, batch_size=500), CollectorRegistry())
    try:
        for _ in range(3):
            _, batch = await writer._read_and_prepare(b">")
            assert 400 <= len(batch.items) <= 500
    finally:
        await writer.redis.aclose()
        await writer.sink.close()


async def test_a_packed_entry_dead_lettered_whole_is_redriven_an_event_an_entry(
    redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str
) -> None:
    names = DEFAULT_NAMES
    await ensure_group(redis_client, names)
    events = [event(n) for n in range(64)]
    entry = await redis_client.xadd(names.stream, packed(events))
    await read_group(redis_client, names, "r1", b">", 10)
    sink = v1_sink(influx.url, influx_db, "", "", "", 10)
    try:
        writer = BatchWriter(redis_client, names, sink, WriterMetrics(CollectorRegistry()), Readiness(), "r1")
        assert await CrashLedger(redis_client, names, "r1").dead_letter(writer, entry, 2) == 1
    finally:
        await sink.close()
    ((dead_id, dead),) = await redis_client.xrange(names.dead)
    assert dead[DEAD_REASON] == b"crashed_reader" and dead[FIELD_PACKED] == packed(events)[FIELD_PACKED]
    # Which of its events crashed the readers is not known: each goes back alone, so that one is alone next time.
    ((_, last),) = await redrive(redis_client, names, [dead_id.decode()])
    back = await redis_client.xrange(names.stream, "(" + entry.decode(), "+")
    assert [fields for _, fields in back] == [{FIELD_VERSION: b"1", FIELD_EVENT: e} for e in events]
    assert last == back[-1][0].decode() and await redis_client.xlen(names.dead) == 0


@contextlib.asynccontextmanager
async def publisher_of(url: str, tmp_path: Path, metrics: CollectorMetrics) -> AsyncIterator[Publisher]:
    """Collector c1's publisher, two collectors' window, three events an entry."""
    client = aioredis.Redis.from_url(url)
    try:
        yield Publisher(client, url, DEFAULT_NAMES, metrics, Readiness(), Spool(tmp_path / "spool", 10**6), "block",
                        dedup_window_s=600, collector_id="c1", events_per_entry=3)
    finally:
        await client.aclose()


async def overlapping_burst(client: aioredis.Redis) -> tuple[list[bytes], CollectorMetrics]:
    """Six service calls as the collector hands them to its publisher (marked no backfill can bring them back), the
    fifth of which the other collector added already; and fresh metrics."""
    batch = marked([other_payload("call_service", n, b'{"n":%d}' % n) for n in range(6)])
    script = client.register_script(XADD_BATCH_SCRIPT)
    keys = [DEFAULT_NAMES.stream, f"{DEFAULT_NAMES.collector_tail}:c2", DEFAULT_NAMES.collector_seen]
    await script(keys=keys, args=xadd_batch_args(b"", batch[4:5], 600, [identity(batch[4])], 3))
    return batch, CollectorMetrics(CollectorRegistry())


async def test_redis_forgetting_a_batchs_second_call_counts_only_its_events_lost(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    # The first call adds [0, 1, 2]; [3, 4, 5] holds 4 (the other collector's), so a second call adds [3, 5]. Redis
    # keeps the first and forgets the second (a replica that had only the first): 2 service calls lost, not 5.
    batch, metrics = await overlapping_burst(redis_client)
    async with publisher_of(redis_server.url, tmp_path, metrics) as publisher:
        assert await publisher._xadd(batch)
        entries = await redis_client.xrange(DEFAULT_NAMES.stream)
        assert sorted(p for _, f in entries for p in events_or_none(f)) == sorted(batch)  # each once
        assert events_or_none(entries[1][1]) == batch[:3]
        await redis_client.set(f"{DEFAULT_NAMES.collector_tail}:c1", entries[1][0])  # Redis kept the first only
        await publisher.check_tail_now()
    assert value(metrics.dropped, reason="redis_forgot") == 2


async def test_a_batch_whose_second_call_fails_counts_its_first_calls_events_as_ours(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    # The first call commits, the second fails (a connection reset): the batch goes to the spool; drained, the first
    # call's events are found added before, and are still ours: counted published once, and lost when Redis forgets.
    batch, metrics = await overlapping_burst(redis_client)
    async with publisher_of(redis_server.url, tmp_path, metrics) as publisher:
        script = publisher._xadd_batch
        calls = 0

        async def failing_second(**kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise RedisConnectionError("Connection reset by peer")
            return await script(**kwargs)

        publisher._xadd_batch = failing_second  # type: ignore[assignment]
        assert await publisher._xadd(batch) is False  # spooled
        assert await publisher._xadd(batch) is True  # the spool's drain
        stream = [p for _, f in await redis_client.xrange(DEFAULT_NAMES.stream) for p in events_or_none(f)]
        assert sorted(stream) == sorted(batch)
        published = value(metrics.published)
        await redis_client.set(f"{DEFAULT_NAMES.collector_tail}:c1", b"0-1")  # Redis forgets all of c1's entries
        await publisher.check_tail_now()
    assert (published, value(metrics.dropped, reason="redis_forgot")) == (5, 5)


async def test_a_backlog_of_packed_entries_is_written_back_to_back_not_paced(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str
) -> None:
    # 63 events an entry: after the first read the writer asks for 79 entries, not 78; a full read must still
    # count as full (a backlog), or each batch waits WRITER_INTERVAL_MS as if the writer kept up.
    await fill(redis_client, [event(n) for n in range(63 * 240)], events_per_entry=63)
    settings = writer_settings(redis_server.url, influx.url, influx_db, write_interval_ms=10_000)
    async with running_writer(settings):
        await wait_for(lambda: influx.count(influx_db) == 63 * 240, 8, "the backlog written, batches back to back")


async def test_service_calls_that_waited_in_the_spool_are_counted_when_redis_forgets_them(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    # On disk they are plain bytes: drained, they are marked again from their bytes, or a Redis that then forgot them
    # would lose them uncounted (the states among them come back by backfill).
    metrics = CollectorMetrics(CollectorRegistry())
    batch = marked([other_payload("call_service", n, b'{"n":%d}' % n) for n in range(4)] + [state_payload(1, "on")])
    async with publisher_of(redis_server.url, tmp_path, metrics) as publisher:
        await publisher._spool.keep(batch)  # as while Redis was away
        drain = asyncio.create_task(publisher._spool.drain_forever())
        try:
            await wait_for(lambda: value(metrics.published) == 5, 10, "the spool drained into the stream")
        finally:
            drain.cancel()
        await redis_client.set(f"{DEFAULT_NAMES.collector_tail}:c1", b"0-1")  # Redis forgets all of c1's entries
        await publisher.check_tail_now()
    assert value(metrics.dropped, reason="redis_forgot") == 4


async def test_a_batch_whose_answer_was_lost_counts_as_ours_when_redis_forgets_it(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    # The script ran but its answer never came (the connection reset after it): spooled; drained, every event is found
    # added before, by whom the identities cannot say. Counted as ours when Redis forgets (an upper bound, as every
    # such count), not lost uncounted.
    metrics = CollectorMetrics(CollectorRegistry())
    first = marked([other_payload("call_service", n, b'{"n":%d}' % n) for n in range(2)])
    lost_answer = marked([other_payload("call_service", n, b'{"n":%d}' % n) for n in range(2, 7)])
    async with publisher_of(redis_server.url, tmp_path, metrics) as publisher:
        assert await publisher._xadd(first)
        kept = publisher.tail_id
        script = publisher._xadd_batch

        async def answer_lost(**kwargs: Any) -> Any:
            await script(**kwargs)
            raise RedisConnectionError("Connection reset by peer")

        publisher._xadd_batch = answer_lost  # type: ignore[assignment]
        assert await publisher._xadd(lost_answer) is False  # spooled
        publisher._xadd_batch = script
        assert await publisher._xadd(lost_answer) is True  # the spool's drain: each found added before
        assert value(metrics.published) == 2 and value(metrics.deduplicated) == 5
        assert kept is not None
        await redis_client.set(f"{DEFAULT_NAMES.collector_tail}:c1", kept)  # Redis forgets what followed `first`
        await publisher.check_tail_now()
    assert value(metrics.dropped, reason="redis_forgot") == 5
