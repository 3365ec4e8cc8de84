"""Decode → encode → write → classify → ack: the one write path, shared by the writer and the replayer."""

from __future__ import annotations

import asyncio
import contextlib
import time
import typing
from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis
from prometheus_client import Counter

from homeiq.shared.backoff import Backoff
from homeiq.shared.events import NormalisedEvent, decode_event
from homeiq.shared.health import Readiness
from homeiq.shared.influx.metrics import WriterMetrics
from homeiq.shared.influx.schemas import Encoder, make_encoder
from homeiq.shared.influx.settings import InfluxSettings
from homeiq.shared.influx.sink import InfluxSink, Outcome, WriteResult, beyond_retention, sink_for
from homeiq.shared.lifecycle import wait_or_stop
from homeiq.shared.logs import Log, SampledLog
from homeiq.shared.packing import BadEntry, event_id, payload_in, single_fields, split
from homeiq.shared.scripts import DEAD_LETTER_SCRIPT
from homeiq.shared.stream import (
    DeadReason,
    Entry,
    LostReason,
    PoisonReason,
    StreamNames,
    dead_letter_fields,
)

log = Log(__name__)

READY_INFLUX = "influxdb"
INLINE_PREPARE_BYTES = 64 * 1024  # smaller bodies are compressed on the event loop (at most ~60 µs)


class Encoded(msgspec.Struct, gc=False):
    """An event ready to write: its entry's id, its position in that entry (None: the entry's one event, version 1),
    its entry's payload (what a dead letter keeps of it: for a packed entry, the array it is found in by position;
    `event_payload`), its line (empty when the schema has no point for it: it is acked
    with its batch), and the event time of a live event for the latency metric (None for a backfilled or snapshot
    state: it is as old as the gap it fills, not late).
    Not tracked by the cyclic GC (it can be in no cycle): thousands live for a batch's lifetime."""

    entry_id: bytes
    index: int | None
    payload: bytes
    line: bytes
    live_time_ns: int | None


class Handled(msgspec.Struct):
    """What the write path did with the entries it was given."""

    written: int = 0  # written (or with no point in the schema) and acked
    dead_lettered: dict[str, int] = msgspec.field(default_factory=dict)  # poison, by reason
    lost: int = 0  # pending entries whose payload was gone (kept in the dead-letter stream as payload_trimmed)
    given_up: bool = False  # a stop cut the retries short: what was not written stays pending

    def add(self, other: Handled) -> Handled:
        """Both together."""
        dead = dict(self.dead_lettered)
        for reason, count in other.dead_lettered.items():
            dead[reason] = dead.get(reason, 0) + count
        return Handled(self.written + other.written, dead, self.lost + other.lost,
                       self.given_up or other.given_up)

    def dead(self, reason: PoisonReason) -> None:
        """Count one entry dead-lettered for `reason`."""
        self.dead_lettered[reason] = self.dead_lettered.get(reason, 0) + 1


class Poison(msgspec.Struct):
    """An entry, or one event of a packed entry (`index`), that can never be written, and why; `fields` are what its
    dead letter keeps (the entry's own, or the event's as a version-1 entry)."""

    entry_id: bytes
    fields: list[bytes]
    reason: PoisonReason
    detail: str
    index: int | None = None


class Ledger:
    """Which entries of what was read are settled. An entry is acked once each of its events is written or poisoned
    (a packed entry's events may be written by different halves of a bisected batch); its poisoned events go to the
    dead-letter stream in the same step as its ack (DEAD_LETTER_SCRIPT), so none is dead-lettered twice."""

    def __init__(self) -> None:
        self._open: dict[bytes, int] = {}  # entry id → its events not settled yet
        self._poisoned: dict[bytes, list[Poison]] = {}
        self.late = Handled()  # dead letters added with a later ack (`BatchWriter.handle` reports them)

    def expect(self, entry_id: bytes, events: int) -> None:
        self._open[entry_id] = events

    def settle(self, items: list[Encoded]) -> tuple[list[bytes], list[tuple[bytes, list[Poison]]]]:
        """These events are written: the entries now settled, those to ack and those to ack with their poison."""
        acked: list[bytes] = []
        poisoned: list[tuple[bytes, list[Poison]]] = []
        for item in items:
            entry_id = item.entry_id
            if item.index is None:  # one event, one entry
                acked.append(entry_id)
                continue
            left = self._open[entry_id] - 1
            if left:
                self._open[entry_id] = left
                continue
            del self._open[entry_id]
            if entry_id in self._poisoned:
                poisoned.append((entry_id, self._poisoned.pop(entry_id)))
            else:
                acked.append(entry_id)
        return acked, poisoned

    def poison(self, bad: Poison) -> list[Poison] | None:
        """One event can never be written: its entry's poison when that settles the entry, else None (kept)."""
        self._poisoned.setdefault(bad.entry_id, []).append(bad)
        left = self._open.get(bad.entry_id, 1) - 1
        if left:
            self._open[bad.entry_id] = left
            return None
        self._open.pop(bad.entry_id, None)
        return self._poisoned.pop(bad.entry_id)


class Batch:
    """Encoded events and their request body; the first attempt's body is compressed ahead of time."""

    def __init__(self, items: list[Encoded], handled: Handled | None = None, ledger: Ledger | None = None) -> None:
        # Grouped by series: where a batch holds several points of a series (a backlog's full batches, a home's
        # chatty sensors), influxd spends about a quarter less CPU on them side by side than spread through it
        # (benchmarks/influx_digest.py: 35.0 → 25.9 µs a point over 100 entities; nothing either way at one point
        # a series). Stable, so a series' points keep their order (the later of two at one time still wins).
        self.items = sorted(items, key=_series)
        self.handled = handled or Handled()  # what preparing it did already (dead letters, lost payloads)
        self.ledger = ledger or Ledger()  # shared by the halves of a bisected batch
        self.body = b"\n".join(item.line for item in self.items if item.line)
        self.prepared: bytes | None = None  # the request body, as the sink sends it

    def points(self) -> int:
        """How many of the entries have a line."""
        return sum(1 for item in self.items if item.line)

    def __len__(self) -> int:
        return len(self.items)


def _series(item: Encoded) -> bytes:
    """The line up to its first space: measurement and tags, or a part of them when a name holds an escaped space;
    either way the same text for every point of one series, which is all the grouping needs."""
    return item.line[:item.line.find(b" ")]


def event_payload(item: Encoded) -> bytes:
    """The encoded event itself (cut from its packed entry's array only when needed: a dead letter)."""
    return item.payload if item.index is None else split(item.payload)[item.index]


def encode_entries(entries: list[Entry], encoder: Encoder | None = None, ledger: Ledger | None = None
                   ) -> tuple[list[Encoded], list[Poison]]:
    """Split entries into encoded events and poison; a pure function of the entries (and the schema's rules). The
    ledger, when given, learns how many events each packed entry holds.

    Any exception while decoding or encoding one event is that event's poison, never the batch's: the
    result depends on the event alone, so a retry would raise it again. Only MemoryError passes through
    (it says as much about the process as about the entry); an entry that kills its reader outright is
    what the replayer's crash ledger catches. An entry whose events cannot be read at all is poison whole."""
    encode = (encoder or _homeiq).encode
    good: list[Encoded] = []
    poison: list[Poison] = []
    for entry_id, fields in entries:
        try:
            packed, payload = payload_in(fields)
            # A packed entry's events in one call (as cheap an event as one decoded alone); one that is no event makes
            # it fail, and then each is decoded alone, the bad one its own poison.
            decoded: Sequence[NormalisedEvent | bytes] = _events_of(payload) if packed else [payload]
        except BadEntry as exc:
            poison.append(Poison(entry_id, fields, typing.cast(PoisonReason, exc.reason), exc.detail))
            continue
        if packed and ledger is not None:
            ledger.expect(entry_id, len(decoded))
        for n, one in enumerate(decoded):
            index = n if packed else None
            try:
                event = decode_event(one) if isinstance(one, bytes) else one
                text = encode(event)
                line = b"" if text is None else text.encode()
            except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError) as exc:
                poison.append(_poison(entry_id, fields, index, payload, "undecodable",
                                      f"{type(exc).__name__}: {exc}"[:300]))
                continue
            except MemoryError:
                raise
            except Exception as exc:  # a bug of ours this event triggers: it must not stop its neighbours
                log.error("reader_error", entry_id=event_id(entry_id, index).decode(), exc_info=True)
                poison.append(_poison(entry_id, fields, index, payload, "reader_error",
                                      f"{type(exc).__name__}: {exc}"[:300]))
                continue
            live_ns = event.time_ns - event.ha_clock_skew_ns if event.source == "live" else None  # on our clock
            good.append(Encoded(entry_id, index, payload, line, live_ns))
    return good, poison


_event_list = msgspec.json.Decoder(list[NormalisedEvent])


def _events_of(array: bytes) -> Sequence[NormalisedEvent | bytes]:
    """A packed entry's events, decoded; when one of them is no event, each one's own JSON (BadEntry: the array is
    no JSON array)."""
    try:
        events = _event_list.decode(array)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return split(array)
    return events or split(array)  # none: BadEntry (an entry nothing would ever settle)


def _poison(entry_id: bytes, fields: list[bytes], index: int | None, payload: bytes, reason: PoisonReason,
            detail: str) -> Poison:
    """A poisoned event: a version-1 entry's letter keeps the entry's fields, a packed entry's the event alone."""
    return Poison(entry_id, fields if index is None else single_fields(split(payload)[index]), reason, detail, index)


_homeiq = make_encoder("homeiq")


def _move(counts: dict[str, int], counter: Counter) -> dict[str, int]:
    """Add `counts` to `counter` by reason and zero them; the counts that were not zero."""
    moved = {reason: count for reason, count in counts.items() if count}
    for reason, count in moved.items():
        counter.labels(reason).inc(count)
        counts[reason] = 0
    return moved


class BatchWriter:
    """Writes decoded batches to InfluxDB and acks exactly what InfluxDB accepted."""

    def __init__(
        self,
        client: aioredis.Redis,
        names: StreamNames,
        sink: InfluxSink,
        metrics: WriterMetrics,
        readiness: Readiness,
        consumer: str,
        backoff: Backoff | None = None,
        encoder: Encoder | None = None,
    ) -> None:
        self._redis, self._names, self.sink = client, names, sink
        self.encoder = encoder or make_encoder("homeiq")
        self._metrics, self._readiness, self._consumer = metrics, readiness, consumer
        self._backoff = backoff or Backoff(base_s=0.5, cap_s=10.0)
        self.healthy = True  # the last answer was 2xx (or a rejection): safe to read ahead
        self._dead_letter = client.register_script(DEAD_LETTER_SCRIPT)
        self._acking: asyncio.Task[None] | None = None
        self._overwrites_log = SampledLog(log)

    async def handle(self, entries: list[Entry], stop: asyncio.Event,
                     reading: contextlib.AbstractAsyncContextManager[object] | None = None) -> Handled:
        """The write path's one entry point: prepare (inside `reading`, the crash ledger's marker, when given),
        write, and wait for the acks; what happened to the entries' events."""
        async with reading or contextlib.nullcontext():
            batch = await self.prepare(entries)
        handled = await self.write(batch, stop)
        await self.acked()
        return handled.add(batch.ledger.late)

    async def prepare(self, entries: list[Entry]) -> Batch:
        """Dead-letter what can never be written (trimmed, undecodable); encode and compress the rest."""
        self._metrics.entries_read.inc(len(entries))
        handled = Handled()
        lost = [(eid, f) for eid, f in entries if not f]
        if lost:
            entries = [(eid, f) for eid, f in entries if f]
            for eid, _ in lost:
                if await self.dead_letter(eid, [], "payload_trimmed", "entry pending but its payload was trimmed"):
                    handled.lost += 1
                self.count_lost("payload_trimmed")
        ledger = Ledger()
        good, poison = encode_entries(entries, self.encoder, ledger)
        self._count_left_out()
        for bad in poison:
            await self._poisoned(bad, ledger, handled)
        batch = Batch(good, handled, ledger)
        if batch.body:
            batch.prepared = await self._prepare(batch.body)
        return batch

    async def _prepare(self, body: bytes) -> bytes:
        """The body compressed: a large one in a thread (ISA-L frees the GIL), a small one here (a thread's round
        trip costs ~160 µs of CPU, compressing a few lines ~6: at a home's rate a writer sends small batches)."""
        if len(body) < INLINE_PREPARE_BYTES:
            return self.sink.prepare(body)
        return await asyncio.to_thread(self.sink.prepare, body)

    def _count_left_out(self) -> None:
        """Move the encoder's counts to the metrics: what the schema and the filters left out, and the points that
        replace another state's point (logged, sampled)."""
        _move(self.encoder.skipped, self._metrics.skipped)
        _move(self.encoder.attributes_dropped, self._metrics.attributes_dropped)
        for reason, count in _move(self.encoder.overwritten, self._metrics.points_overwritten).items():
            self._overwrites_log.warning(reason, "points_overwritten", count=count,
                                         example=self.encoder.overwrite_example)

    async def write(self, batch: Batch, stop: asyncio.Event) -> Handled:
        """Write and ack an encoded batch, bisecting what InfluxDB rejects; what happened (with what preparing
        it did). Returns once InfluxDB has the points; their ack may still be on its way, so that the next
        write starts at once. `acked()` waits for it; every caller awaits it before it reports or stops."""
        done = batch.handled
        while batch:
            if not batch.body:  # nothing the schema writes: done, acked like any other
                await self._ack_soon(batch)
                return done.add(Handled(written=len(batch)))
            result = await self._send(batch)
            self.healthy = result.outcome in (Outcome.OK, Outcome.BAD_DATA)
            if result.outcome is Outcome.OK:
                self._readiness.ok(READY_INFLUX)
                self._backoff.reset()
                await self._ack_soon(batch)
                return done.add(Handled(written=len(batch)))
            if result.outcome is Outcome.BAD_DATA:
                self._readiness.ok(READY_INFLUX)
                items = batch.items
                if len(items) == 1:
                    rejected, item = Handled(), items[0]
                    why: PoisonReason = "beyond_retention" if beyond_retention(result) else "rejected"
                    fields = single_fields(event_payload(item))
                    await self._poisoned(Poison(item.entry_id, fields, why, result.detail, item.index), batch.ledger,
                                         rejected)
                    return done.add(rejected)
                middle = len(items) // 2
                first = await self.write(Batch(items[:middle], ledger=batch.ledger), stop)
                if first.given_up:
                    return done.add(first)
                return done.add(first).add(await self.write(Batch(items[middle:], ledger=batch.ledger), stop))
            reason = f"InfluxDB at {self.sink.url} answered {result.status or 'nothing'}: {result.detail}"
            self._readiness.fail(READY_INFLUX, reason[:300])
            delay_s = max(result.retry_after_s or 0.0, self._backoff.next_delay_s())
            log.warning("write_retry", outcome=result.outcome.value, status=result.status,
                        detail=result.detail[:200], retry_in_s=round(delay_s, 2), batch=len(batch))
            if await wait_or_stop(stop, delay_s):
                return done.add(Handled(given_up=True))
        return done

    async def _ack_soon(self, batch: Batch) -> None:
        """Start the batch's ack; wait for the one before it (one earlier ack on its way at most)."""
        previous, self._acking = self._acking, asyncio.create_task(self._ack(batch), name="ack")
        if previous is not None:
            await asyncio.shield(previous)

    async def check(self) -> None:
        """Ask InfluxDB whether it takes our credentials and has our database; sets readiness."""
        result = await self.sink.check()
        self._saw_certificate()
        if result.outcome is Outcome.OK:
            self._readiness.ok(READY_INFLUX)
        else:
            reason = f"InfluxDB at {self.sink.url} answered {result.status or 'nothing'}: {result.detail}"
            self._readiness.fail(READY_INFLUX, reason[:300])

    def _saw_certificate(self) -> None:
        expiry: float | None = getattr(self.sink, "cert_expiry_s", None)
        if expiry is not None:
            self._metrics.tls_cert_expiry.labels("influxdb").set(expiry)

    async def _send(self, batch: Batch) -> WriteResult:
        started = time.perf_counter()
        if batch.prepared is None:  # a half of a bisected batch
            batch.prepared = await self._prepare(batch.body)
        result = await self.sink.write(batch.prepared)
        self._metrics.write_seconds.observe(time.perf_counter() - started)
        self._metrics.batches.labels(result.outcome.value).inc()
        self._saw_certificate()
        return result

    async def acked(self) -> None:
        """Wait for the ack of the last written batch; raises what the ack raised (a RedisError)."""
        acking, self._acking = self._acking, None
        if acking is not None:
            await asyncio.shield(acking)  # a cancelled caller must not cut an ack: InfluxDB has the points

    async def _poisoned(self, bad: Poison, ledger: Ledger, handled: Handled) -> None:
        """An entry, or an event, that can never be written: dead-lettered now when that settles its entry (a
        packed entry's once its other events are written too)."""
        if bad.index is None:
            if await self.dead_letter(bad.entry_id, bad.fields, bad.reason, bad.detail):
                handled.dead(bad.reason)
            return
        settled = ledger.poison(bad)
        if settled is not None:
            await self._dead_letter_events(bad.entry_id, settled, handled)

    async def _dead_letter_events(self, entry_id: bytes, poison: list[Poison], handled: Handled) -> None:
        """Ack a packed entry and add its poisoned events to the dead-letter stream, each alone, in one step."""
        letters = [dead_letter_fields(bad.fields, bad.reason, bad.detail, event_id(entry_id, bad.index),
                                      self._consumer) for bad in poison]
        args = [self._names.group.encode(), entry_id, b"0", str(len(letters[0])).encode(),
                *(part for letter in letters for part in letter)]
        done = await asyncio.shield(self._dead_letter(keys=[self._names.stream, self._names.dead], args=args))
        if not done:
            log.info("already_handled", entry_id=entry_id.decode(), reason=poison[0].reason)
            return
        for bad in poison:
            handled.dead(bad.reason)
            self._metrics.dead_lettered.labels(bad.reason).inc()
            log.warning("dead_lettered", entry_id=event_id(entry_id, bad.index).decode(), reason=bad.reason,
                        detail=bad.detail[:200])

    async def _ack(self, batch: Batch) -> None:
        ids, poisoned = batch.ledger.settle(batch.items)
        if ids:
            await self._redis.xack(self._names.stream, self._names.group, *ids)
        for entry_id, poison in poisoned:
            await self._dead_letter_events(entry_id, poison, batch.ledger.late)
        self._metrics.points_written.inc(batch.points())
        now_ns = time.time_ns()
        self._metrics.event_age.observe_many(max(0.0, (now_ns - item.live_time_ns) / 1e9) for item in batch.items
                                             if item.live_time_ns is not None)

    def count_lost(self, reason: LostReason) -> None:
        """Count one entry whose payload is gone (never silently acked: it is also dead-lettered)."""
        self._metrics.lost.labels(reason).inc()

    async def dead_letter(
        self, entry_id: bytes, fields: list[bytes], reason: DeadReason, detail: str
    ) -> bool:
        """Ack the entry and copy it to the dead-letter stream with its reason, atomically (once only);
        False when it was not pending any more (someone else wrote or dead-lettered it)."""
        dead = dead_letter_fields(fields, reason, detail, entry_id, self._consumer)
        force = b"1" if reason == "payload_trimmed" else b"0"
        args = [self._names.group.encode(), entry_id, force, str(len(dead)).encode(), *dead]
        done = await asyncio.shield(self._dead_letter(keys=[self._names.stream, self._names.dead], args=args))
        if not done:
            log.info("already_handled", entry_id=entry_id.decode(), reason=reason)
            return False
        if reason == "payload_trimmed":
            log.error("entry_lost", entry_id=entry_id.decode(), reason=reason)
        else:
            self._metrics.dead_lettered.labels(reason).inc()
            log.warning("dead_lettered", entry_id=entry_id.decode(), reason=reason, detail=detail[:200])
        return True


def batch_writer_for(settings: InfluxSettings, client: aioredis.Redis, names: StreamNames, consumer: str,
                     metrics: WriterMetrics, readiness: Readiness) -> BatchWriter:
    """The write path as the writer, the replayer daemon and `replayer reclaim` use it: the sink and encoder these
    settings describe; its owner closes `.sink`."""
    return BatchWriter(client, names, sink_for(settings), metrics, readiness, consumer,
                       encoder=make_encoder(settings.schema, settings.config))
