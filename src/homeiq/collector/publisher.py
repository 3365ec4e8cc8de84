"""A bounded in-memory buffer flushed by one task, one publish script call (XADDs and the stream's tail) per batch;
the disk spool for Redis outages is kept beside it (`spool_keeper`).

Order is kept: once a batch goes to the spool, every later batch follows it there until the spool has
drained back into the stream.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from homeiq.collector.dedup import identity
from homeiq.collector.gap import Key
from homeiq.collector.metrics import CollectorMetrics
from homeiq.collector.spool import Policy, Spool
from homeiq.collector.spool_keeper import SpoolKeeper
from homeiq.collector.unrecoverable import UnrecoverableLog
from homeiq.shared.health import READY_REDIS, Readiness
from homeiq.shared.logs import Log
from homeiq.shared.packing import xadd_batch_args
from homeiq.shared.scripts import XADD_BATCH_SCRIPT
from homeiq.shared.stream import (
    RedisPlace,
    StreamNames,
    describe_redis_error,
    id_key,
    uncancelled,
)

log = Log(__name__)

_STOP = b"\x00"  # queued by close(); an event payload is a JSON object, never this
UNCONFIRMED_MAX = 200_000  # identities added while replicas did not confirm, waiting for the spool's drain


@dataclass
class Rounds:
    """What the publish script did with one batch, call by call: the tail it found first, the entries added (each
    call's last id and the batch positions it added), the positions skipped as added before, and how many replicas
    confirmed every call (the lowest)."""

    batch: list[bytes]
    identities: list[tuple[bytes, bytes]] | None  # (bucket, identity) of each event, with two collectors
    answered: bool = False  # the script answered once at least (`found` is the tail Redis had)
    found: bytes | None = None
    added: list[tuple[bytes, list[int]]] = field(default_factory=list)
    skipped: set[int] = field(default_factory=set)
    replicated: int = sys.maxsize


class Buffer:
    """A bounded FIFO of encoded events: `offer` never waits, `put` waits for room, `take` for a first event.

    A deque and two events: asyncio.Queue's bookkeeping (unfinished tasks, waiter lists) costs half a
    microsecond an event, a twentieth of everything the collector does with one.
    """

    def __init__(self, capacity: int) -> None:
        self._items: collections.deque[bytes] = collections.deque()
        self._capacity = capacity
        self._filled = asyncio.Event()  # set while there is an item
        self._room = asyncio.Event()  # set while there is room
        self._room.set()

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, item: bytes) -> bool:
        """Append `item` if there is room; False when full."""
        if len(self._items) >= self._capacity:
            return False
        self._items.append(item)
        self._filled.set()
        return True

    def unbound(self) -> None:
        """Take every item from now on, and wake whoever waits for room."""
        self._capacity = sys.maxsize
        self._room.set()

    async def put(self, item: bytes) -> None:
        """Append `item`, waiting for room."""
        while not self.offer(item):
            self._room.clear()
            await self._room.wait()

    async def take(self, most: int) -> list[bytes]:
        """The oldest items, at least one (waiting for it) and at most `most`; `_STOP` ends a batch."""
        while not self._items:
            self._filled.clear()
            await self._filled.wait()
        return self.take_ready(most)

    def items(self) -> list[bytes]:
        """What is buffered, oldest first (the stop marker left out)."""
        return [item for item in self._items if item is not _STOP]

    def take_ready(self, most: int) -> list[bytes]:
        """The oldest items there are, at most `most`, without waiting; `_STOP` ends a batch."""
        items, batch = self._items, []
        for _ in range(min(most, len(items))):
            batch.append(item := items.popleft())
            if item is _STOP:
                break
        self._room.set()
        return batch


class Publisher:
    """`put()` never touches Redis; `run()` XADDs what is buffered, or spools it while Redis is away."""

    def __init__(
        self, client: aioredis.Redis, redis_url: str | RedisPlace, names: StreamNames, metrics: CollectorMetrics,
        readiness: Readiness, spool: Spool, policy: Policy, capacity: int = 2_000, batch_max: int = 1_000,
        linger_s: float = 0.05, durable: Callable[[], bool] = lambda: True,
        forgotten: Callable[[bytes | None], None] = lambda kept: None, replicas: tuple[int, int] = (0, 0),
        dedup_window_s: int = 0,
        collector_id: str = "", read_resting: asyncio.Event | None = None, events_per_entry: int = 1,
    ) -> None:
        self._redis, self._redis_url = client, redis_url
        self._keys = [names.stream.encode(), f"{names.collector_tail}:{collector_id}".encode()]  # our own tail
        # Two collectors on one HA: the broker adds an event only once within this many seconds (0: one collector).
        self._dedup_window_s = dedup_window_s
        self._events_per_entry = events_per_entry  # more than 1: entries of several events, packed (version 2)
        if dedup_window_s:
            self._keys.append(names.collector_seen.encode())
        self._metrics, self._readiness = metrics, readiness
        self._durable = durable  # False while Redis would forget what it is given: keep events on disk then
        # Redis lost the entries it had acknowledged after the id given (None: all of ours): where we left off must
        # be read again
        self._forgotten = forgotten
        # Durable only once this many replicas confirm (WAIT), waiting at most this many ms: a failover promotes a
        # replica, and what only the old primary had is gone with it.
        self._wait_replicas, self._wait_timeout_ms = replicas
        self._where = str(redis_url if isinstance(redis_url, RedisPlace) else RedisPlace(redis_url))  # no password
        self._unreplicated_logged = False
        self.tail_id: bytes | None = None  # the id of the last entry added (None: none by this process yet)
        self._tail_lock = asyncio.Lock()
        self._unrecoverable = UnrecoverableLog()
        self._unconfirmed: dict[bytes, bytes] = {}  # identity → the id it was added under, no replica confirming
        self._in_flight_batch: list[bytes] = []
        # One EVALSHA per batch instead of one pipelined command per event: a third of the CPU per event.
        self._xadd_batch = client.register_script(XADD_BATCH_SCRIPT)
        self._queue = Buffer(capacity)
        self._batch_max = batch_max
        self._linger_s = linger_s
        self._read_resting = read_resting  # set while HA's socket rests: the linger ends then
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._flushed = asyncio.Event()
        self._progress = asyncio.Event()  # a batch settled since the last `progressed()`
        self._stop_taken = False
        self.settled = 0  # events taken from the buffer and made durable (or counted dropped), in order
        self._redis_down_logged = False
        self._spool = SpoolKeeper(spool, policy, metrics, readiness, self._xadd, durable, batch_max, self._update_idle)
        self._update_idle()

    def offer(self, payload: bytes) -> bool:
        """Buffer one encoded event (as `unrecoverable.encoded` gives it: marked when no backfill can bring it back,
        which a Redis that forgets it must count) if there is room; False when the buffer is full (then `put`)."""
        self._idle.clear()
        return self._queue.offer(payload)

    async def put(self, payload: bytes) -> None:
        """Buffer one encoded event (as `offer` takes it); waits only when the buffer is full."""
        self._idle.clear()
        await self._queue.put(payload)

    def unbound(self) -> None:
        """Never wait for room again: for a stopping collector, whose reader must read up to HA's answer to
        its unsubscribe (HA queues at most 4,096 messages for a client before it drops the connection)."""
        self._queue.unbound()

    @property
    def pending(self) -> int:
        """Events buffered in memory, being written, or spooled."""
        return len(self._queue) + self._in_flight + self._spool.records

    async def run(self) -> None:
        """Flush forever, and drain the spool beside it."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._flush_loop(), name="publisher-flush")
            tasks.create_task(self._spool.drain_forever(), name="publisher-drain")

    async def _flush_loop(self) -> None:
        while True:
            batch = await self._queue.take(self._batch_max)
            self._in_flight = len(batch)  # out of the buffer, not yet settled: still pending
            self._in_flight_batch = batch  # and still ours to account for (`held`)
            if len(batch) < self._batch_max and batch[-1] is not _STOP:
                # Time for more to arrive: a batch of tens, not of one or two, costs Redis and us a tenth per
                # event, and at a home's rate one call a tick instead of one an event; only the event's age waits.
                # While HA's socket rests (ReadPacing), what was read is all there is until it is read again.
                await self._linger()
                batch += self._queue.take_ready(self._batch_max - len(batch))
            closing = batch[-1] is _STOP
            if closing:
                self._stop_taken = True
                batch.pop()
            self._in_flight = len(batch)
            self._in_flight_batch = batch
            if not batch:
                self._flushed.set()
                return
            self._metrics.buffered.set(len(self._queue))
            if self._spool or not self._durable():
                await self._spool.keep(batch)
            elif not await self._xadd(batch):
                await self._spool.keep(batch, tried=True)
            self.settled += len(batch)  # in Redis, in the spool, or counted as dropped: no longer only in memory
            self._progress.set()
            self._in_flight = 0
            self._in_flight_batch = []
            self._update_idle()
            if closing:
                self._flushed.set()
                return

    async def _linger(self) -> None:
        resting = self._read_resting
        if resting is None:
            await asyncio.sleep(self._linger_s)
        elif not resting.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._linger_s):  # not wait_for: in 3.11 it can swallow a cancel
                    await resting.wait()

    async def _xadd(self, batch: list[bytes]) -> bool:
        """XADD the whole batch (one script call, atomic: all or none; with two collectors, a second call for a burst
        the other added in part); False when Redis failed, or when fewer replicas than asked confirmed it in time
        (then it is in Redis, and stays in the spool too: a failover could take it back; drained again later, its
        points are the same points)."""
        started = time.perf_counter()
        rounds = Rounds(batch, [identity(payload) for payload in batch] if self._dedup_window_s else None)
        try:
            async with self._tail_lock:  # the tail check of `check_tail_now` must not fall between script and reply
                try:
                    await self._xadd_and_wait(rounds)
                finally:
                    if rounds.answered:
                        self.check_tail(rounds.found)
                    if rounds.added:  # none: the other collector had added every one (or Redis failed at once)
                        self.tail_id = rounds.added[-1][0]
        except (RedisError, OSError) as exc:
            if rounds.added:  # a first call went in before the second failed: in Redis, and ours, not confirmed
                self._count_added(rounds, deduplicated=False)
                self._keep_unconfirmed(rounds)
            self._keep_unanswered(rounds)
            message = describe_redis_error(self._redis_url, exc)
            self._readiness.fail(READY_REDIS, message)
            if not self._redis_down_logged:
                log.warning("redis_unavailable", error=message, action="spooling to disk")
                self._redis_down_logged = True
            return False
        self._metrics.publish_seconds.observe(time.perf_counter() - started)
        self._count_added(rounds, deduplicated=True)
        if rounds.replicated < self._wait_replicas:
            # In Redis, not durable: it stays in the spool. A drain that finds it there (skipped) makes it durable,
            # and ours: what Redis may forget after that must count it (`_unconfirmed`).
            self._keep_unconfirmed(rounds)
            message = (f"Redis ({self._where}): {rounds.replicated} of {self._wait_replicas} replicas confirmed the "
                       f"last batch within {self._wait_timeout_ms} ms (COLLECTOR_WAIT_REPLICAS); keeping it in the "
                       "spool")
            self._readiness.fail(READY_REDIS, message)
            if not self._unreplicated_logged:
                log.warning("redis_not_replicated", error=message, action="spooling to disk")
                self._unreplicated_logged = True
            return False
        if self._unreplicated_logged:
            log.info("redis_replicated", replicas=rounds.replicated)
            self._unreplicated_logged = False
        for last_id, positions in rounds.added:  # what Redis may forget is what we added, not the other collector's
            self._unrecoverable.added(last_id, [batch[n] for n in positions])
            if self._unconfirmed and rounds.identities is not None:  # added now: no earlier try's to credit
                for n in positions:
                    self._unconfirmed.pop(rounds.identities[n][1], None)
        if rounds.skipped and rounds.identities is not None and self._unconfirmed:  # ours, by an unconfirmed try
            for n in rounds.skipped:
                earlier = self._unconfirmed.pop(rounds.identities[n][1], None)
                if earlier is not None:
                    self._unrecoverable.added(earlier, [batch[n]])
        self._readiness.ok(READY_REDIS)
        if self._redis_down_logged:
            log.info("redis_available")
            self._redis_down_logged = False
        return True

    def _count_added(self, rounds: Rounds, deduplicated: bool) -> None:
        added = sum(len(positions) for _, positions in rounds.added)
        self._metrics.published.inc(added)  # XADDed, confirmed by replicas or not
        if deduplicated:
            self._metrics.deduplicated.inc(len(rounds.batch) - added)

    def _keep_unconfirmed(self, rounds: Rounds) -> None:
        """Remember under which id each event we added went, until a drain finds it there (it is ours then)."""
        if rounds.identities is None:
            return
        for last_id, positions in rounds.added:
            for n in positions:
                self._unconfirmed[rounds.identities[n][1]] = last_id
        self._trim_unconfirmed()

    def _keep_unanswered(self, rounds: Rounds) -> None:
        """The call that failed may have added what it carried before its answer was lost (a connection reset after
        the script ran). With two collectors a drain then finds those events there and could not tell them from the
        other collector's: each is remembered as added right after the last id known ours, so the drain takes it for
        ours, and a Redis that forgets it counts it (an upper bound, as every such count; never a silent loss)."""
        if rounds.identities is None:
            return
        known = {n for _, positions in rounds.added for n in positions} | rounds.skipped
        last = rounds.added[-1][0] if rounds.added else self.tail_id
        ms, seq = id_key(last) if last else (0, 0)
        after = b"%d-%d" % (ms, seq + 1)
        for n, (_, found) in enumerate(rounds.identities):
            if n not in known:
                self._unconfirmed.setdefault(found, after)
        self._trim_unconfirmed()

    def _trim_unconfirmed(self) -> None:
        while len(self._unconfirmed) > UNCONFIRMED_MAX:
            del self._unconfirmed[next(iter(self._unconfirmed))]

    async def _xadd_and_wait(self, rounds: Rounds) -> None:
        """Call the script, and WAIT for the replicas on the same connection, right after it (a WAIT covers its
        connection's writes up to its previous command; in 7.0, a connection that wrote nothing waits for every
        write so far: a copy skipped for the other collector's entry is durable only once that entry is).

        Events are packed `events_per_entry` to an entry. With two collectors, an entry whose events the other
        collector added only in part stops the script before it: its new events are packed again, with the rest,
        in another call (a burst the other added whole is skipped whole in the first). Each call's outcome is in
        `rounds` as soon as it is known."""
        batch, identities = rounds.batch, rounds.identities
        todo = list(range(len(batch)))  # positions in `batch` still to add
        if identities is not None:  # the same event twice in one batch: the second is skipped (one entry holds both)
            first_of = {found: n for n, found in reversed(list(enumerate(identities)))}
            todo = [n for n in todo if first_of[identities[n]] == n]
            rounds.skipped = set(range(len(batch))) - set(todo)
        while todo:
            payloads = [batch[n] for n in todo]
            args = xadd_batch_args(rounds.added[-1][0] if rounds.added else self.tail_id or b"", payloads,
                                   self._dedup_window_s, None if identities is None else [identities[n] for n in todo],
                                   self._events_per_entry)
            if not self._wait_replicas or rounds.replicated < self._wait_replicas:  # none asked, or short already
                found, last_id, skipped, done = await self._xadd_batch(keys=self._keys, args=args)
            else:
                async with self._redis.pipeline(transaction=False) as pipe:
                    await self._xadd_batch(keys=self._keys, args=args, client=pipe)
                    pipe.wait(self._wait_replicas, self._wait_timeout_ms)
                    (found, last_id, skipped, done), confirmed = await uncancelled(pipe.execute())
                rounds.replicated = min(rounds.replicated, int(confirmed))
            if not rounds.answered:
                rounds.found, rounds.answered = found, True
            rounds.skipped.update(todo[position - 1] for position in skipped)
            handled = [n for n in todo[:done] if n not in rounds.skipped]
            if last_id is not None:
                rounds.added.append((last_id, handled))
            todo = [n for n in todo[done:] if n not in rounds.skipped]

    async def check_tail_now(self) -> None:
        """Ask Redis for the tail now, while no batch is on its way (see `check_tail`)."""
        async with self._tail_lock:
            found: Any = await self._redis.get(self._keys[1])
            self.check_tail(found)

    def check_tail(self, found: bytes | None) -> None:
        """`found`: the tail Redis holds. Older than the id we last got back (or gone), Redis forgot the entries
        after it: count the events among them that no backfill can bring back, and have the gap reopened. Further
        than ours, a call of ours whose answer was lost added up to there: it is our tail (only our calls set it),
        and what Redis may forget later is measured from it."""
        tail = self.tail_id
        if tail is None or found == tail:
            return  # first batch of this process, or as expected
        if found is not None and id_key(found) > id_key(tail):
            self.tail_id = found
            return
        lost, known = self._unrecoverable.after(found)
        self.tail_id = found
        self._metrics.redis_forgot.inc()
        self._metrics.dropped.labels("redis_forgot").inc(lost)
        log.error("redis_forgot", kept_up_to=(found or b"nothing").decode(), events_lost=lost, extent_known=known,
                  consequence="state changes are backfilled from the recorder; these other events are lost")
        self._forgotten(found)

    async def held_states(self) -> list[Key]:
        """The state changes given to us that Redis does not hold yet: in the spool, the batch in flight, the
        buffer (decoded in a thread, the spool a record at a time)."""
        return await self._spool.held_states([*self._in_flight_batch, *self._queue.items()])

    async def progressed(self, timeout_s: float) -> None:
        """Wait until another batch settles, or `timeout_s`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._progress.wait(), timeout_s)
        self._progress.clear()

    def _update_idle(self) -> None:
        if not self._queue and not self._in_flight and not self._spool:
            self._idle.set()

    async def drain(self, timeout_s: float) -> int:
        """Wait until everything buffered is published; returns how many events are still not in Redis."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return self.pending

    async def close(self, timeout_s: float) -> int:
        """Stop after every buffered event is in Redis, in the spool or counted as dropped (a full spool
        under `block` no longer waits); returns how many are in none of them after `timeout_s`."""
        self._spool.closing = True
        stop_queued = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._queue.put(_STOP)
                stop_queued = True
                await self._flushed.wait()
        if self._flushed.is_set():
            return len(self._queue)  # nothing is queued behind the stop marker; were it, it was not published
        return max(0, self._in_flight + len(self._queue) - (1 if stop_queued and not self._stop_taken else 0))
