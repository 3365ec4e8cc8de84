"""The disk spool's keeper: batches Redis cannot take (down, or not persisting) go to disk under the spool policy, and
one task drains them back into the stream, in order, once Redis takes them again."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterable

from homeiq.collector.gap import Key, state_keys
from homeiq.collector.metrics import CollectorMetrics
from homeiq.collector.spool import Policy, Segment, Spool, record_bytes
from homeiq.collector.unrecoverable import marked
from homeiq.shared.backoff import Backoff
from homeiq.shared.health import Readiness
from homeiq.shared.logs import Log

log = Log(__name__)

READY_SPOOL = "spool"
REDIS_RECHECK_S = 0.5


class SpoolKeeper:
    """`keep` puts a batch on disk (or counts it dropped, by the policy); `drain_forever` XADDs what is on disk with
    `xadd` while `durable()` holds, and calls `drained()` each time the spool is found empty."""

    def __init__(self, spool: Spool, policy: Policy, metrics: CollectorMetrics, readiness: Readiness,
                 xadd: Callable[[list[bytes]], Awaitable[bool]], durable: Callable[[], bool], batch_max: int,
                 drained: Callable[[], None]) -> None:
        self._spool, self._policy, self._metrics, self._readiness = spool, policy, metrics, readiness
        self._xadd, self._durable, self._batch_max, self._drained = xadd, durable, batch_max, drained
        self._spool_lock = asyncio.Lock()
        self._spool_ready = asyncio.Event()
        self._draining: Segment | None = None  # the spool segment whose records are being XADDed
        self._backoff = Backoff(base_s=0.1, cap_s=2.0)
        self.closing = False  # a stopping collector: a full spool under `block` no longer waits
        # How many of the first records on disk Redis may hold already: an XADD of them was sent and never answered
        # (Redis went away after carrying it out), or its replicas did not confirm it. The drainer adds them again
        # (the same points); drop_oldest must not count them dropped. A spool left by an earlier process: its first
        # chunk may have been on its way when that process stopped.
        self._unanswered = min(spool.records, batch_max)
        if spool:
            self._spool_ready.set()
            log.info("spool_found", records=spool.records, bytes=spool.size_bytes, torn_records=spool.torn_records)

    def __bool__(self) -> bool:
        return bool(self._spool)

    @property
    def records(self) -> int:
        """Events on disk, not yet drained."""
        return self._spool.records

    async def held_states(self, in_memory: Iterable[bytes]) -> list[Key]:
        """The state changes on disk and in `in_memory` (decoded in a thread, the spool a record at a time)."""
        async with self._spool_lock:
            return await asyncio.to_thread(state_keys, itertools.chain(self._spool.undrained(), in_memory))

    async def keep(self, batch: list[bytes], tried: bool = False) -> None:
        """Keep `batch` on disk, or count it dropped by the policy; never waits once `closing`. A batch
        larger than a segment goes in parts (one larger than the whole spool would never fit). `tried`: its XADD was
        sent and failed, so Redis may hold it (the publisher tries only while the spool is empty: it goes first)."""
        if len(batch) > 1 and record_bytes(batch) > self._spool.segment_bytes:
            middle = len(batch) // 2
            await self.keep(batch[:middle], tried)
            await self.keep(batch[middle:], tried)
            return
        if record_bytes(batch) > self._spool.max_bytes:  # one event larger than the spool: nowhere to keep it
            self._drop(len(batch), "spool_full", "an event larger than the whole spool")
            return
        async with self._spool_lock:
            while not self._spool.fits(batch):
                if self._policy == "drop_oldest":
                    # Never the segment the drainer is publishing: its events are not ours to count as dropped.
                    freed = self._spool.drop_oldest(keep=self._draining, keep_first=self._unanswered)
                    if freed:
                        self._drop(freed, "spool_full", "the oldest spool segment")
                        continue
                if self._policy != "block":  # drop_newest, or nothing older that can go
                    self._drop(len(batch), "spool_full", "the newest batch")
                    return
                if self.closing:
                    self._drop(len(batch), "shutdown_spool_full", "a batch the full spool could not take at exit")
                    return
                # block: wait for the drainer to make room; the reader backs up behind the buffer.
                await self._unlocked_sleep(0.1)
            first = self._spool.records == self._unanswered  # nothing on disk but what Redis may hold
            while True:
                try:
                    await asyncio.to_thread(self._spool.append, batch)
                    self._readiness.ok(READY_SPOOL)
                    if tried and first:
                        self._unanswered += len(batch)
                    break
                except OSError as exc:  # a full disk, a read-only one, permissions: not the events' fault
                    self._spool_failed(exc)
                    if self._policy != "block" or self.closing:
                        self._drop(len(batch), "spool_write_failed", "a batch the spool's disk refused")
                        return
                    await self._unlocked_sleep(self._backoff.next_delay_s())
            self._metrics.spooled.inc(len(batch))
            self._metrics.spool_bytes.set(self._spool.size_bytes)
        self._spool_ready.set()

    async def _unlocked_sleep(self, delay_s: float) -> None:
        """Sleep without holding the spool lock (the drainer needs it to make room)."""
        self._spool_lock.release()
        try:
            await asyncio.sleep(delay_s)
        finally:
            await self._spool_lock.acquire()

    def _spool_failed(self, exc: OSError) -> None:
        self._readiness.fail(READY_SPOOL, f"spool at {self._spool.directory} failed: {exc}")
        log.error("spool_failed", directory=str(self._spool.directory), error=str(exc), policy=self._policy)

    def _drop(self, events: int, reason: str, what: str) -> None:
        self._metrics.dropped.labels(reason).inc(events)
        self._metrics.log_sampled(reason, "events dropped", dropped=events, what=what,
                                  policy=self._policy, max_bytes=self._spool.max_bytes)

    async def drain_forever(self) -> None:
        """Drain the spool into the stream whenever it holds something and Redis persists."""
        while True:
            await self._spool_ready.wait()
            if not self._durable():
                await asyncio.sleep(REDIS_RECHECK_S)
                continue
            try:
                async with self._spool_lock:
                    chunk = await asyncio.to_thread(self._spool.read, self._batch_max)
                    self._draining = chunk.segment if chunk else None
            except OSError as exc:
                self._spool_failed(exc)
                await asyncio.sleep(self._backoff.next_delay_s())
                continue
            if chunk is None:
                self._spool_ready.clear()
                self._drained()
                continue
            published = await self._xadd(marked(chunk.records))
            async with self._spool_lock:
                self._draining = None
                if published:
                    self._spool.consumed(chunk)
                    self._unanswered = max(0, self._unanswered - len(chunk.records))
                    self._metrics.spool_bytes.set(self._spool.size_bytes)
                else:  # sent: Redis may hold it
                    self._unanswered = max(self._unanswered, len(chunk.records))
            if not published:
                await asyncio.sleep(self._backoff.next_delay_s())
                continue
            self._backoff.reset()
            self._readiness.ok(READY_SPOOL)
            if not self._spool:
                log.info("spool_drained")
