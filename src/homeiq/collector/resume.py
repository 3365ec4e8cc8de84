"""Where a restarted collector resumes: the durable watermark in Redis, and the states already in the stream."""

from __future__ import annotations

import collections
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Final

import redis.asyncio as aioredis

from homeiq.collector.gap import GapTracker, Key, Watermark, state_keys
from homeiq.shared.logs import Log
from homeiq.shared.packing import events_or_none
from homeiq.shared.stream import StreamNames, id_key, xrange_pages

log = Log(__name__)

SCAN_PAGE: Final = 10_000
MAX_GONE: Final = 10_000  # entity ids forgotten, remembered for a Redis that forgets (removals of months)
HISTORY: Final = 2_000  # watermarks remembered: over an hour of saves, one every 2 s at most


# Set the mark, or lower it; never raise it (0, "not known", is the lowest): two collectors, or one that learns an
# earlier time, agree on the earliest.
_LOWER_FIRST_RUN: Final = """
local current = redis.call('GET', KEYS[1])
if not current or tonumber(ARGV[1]) < tonumber(current) then redis.call('SET', KEYS[1], ARGV[1]) end
"""


class FirstRun:
    """When the pipeline first ran (ns): what HA recorded before it was never the pipeline's to write, and the audit
    says so instead of calling it missing. The mark must be no later than any state the pipeline took, or the audit
    hides real losses: it is the earlier of this process's start (on our clock, taken before anything was read) and
    its first live state (on HA's: HA's clock may be behind ours). A copy in the collector's state directory (the
    spool's) survives Redis coming back empty, as does the copy in memory; 0: not known (the pipeline ran before
    the mark existed)."""

    FILE: Final = "first_run_ns"

    def __init__(self, client: aioredis.Redis, names: StreamNames, directory: Path) -> None:
        self._redis, self._names, self._path = client, names, directory / self.FILE
        self.started_ns = time.time_ns()
        self.ns: int | None = None
        with contextlib.suppress(FileNotFoundError, ValueError):
            self.ns = int(self._path.read_text())

    async def mark(self, first_live_ns: int) -> None:
        """At each first answer of Redis (again after Redis lost what it held): set the mark where it is missing."""
        if self.ns is None:
            stored = await self._redis.get(self._names.first_run)
            if stored is not None:
                self._keep(int(stored))
                return
            self._keep(0 if await self._ran_before() else min(self.started_ns, first_live_ns or self.started_ns))
        await self._lower(self.ns or 0)

    async def saw_live(self, first_live_ns: int) -> None:
        """This process's first live state is `first_live_ns` on HA's clock: lower the mark to it if it is earlier."""
        if self.ns and first_live_ns and first_live_ns < self.ns:
            self._keep(first_live_ns)
            await self._lower(first_live_ns)

    async def _ran_before(self) -> bool:
        """A watermark, or a stream entry added before this process started (ours may already be there: the spool
        empties as soon as Redis answers)."""
        if await self._redis.exists(self._names.watermark):
            return True
        older = await self._redis.xrange(self._names.stream, "-", str(self.started_ns // 1_000_000 - 1), count=1)
        return bool(older)

    def _keep(self, ns: int) -> None:
        self.ns = ns
        with contextlib.suppress(OSError):  # the copy in Redis stands; a read-only directory costs only the copy
            self._path.parent.mkdir(parents=True, exist_ok=True)
            partial = self._path.with_suffix(".partial")
            partial.write_text(str(ns))
            partial.replace(self._path)

    async def _lower(self, ns: int) -> None:
        await self._redis.eval(_LOWER_FIRST_RUN, 1, self._names.first_run, ns)


class KnownEntities:
    """Every entity id this collector has seen, kept in Redis: a backfill asks the recorder for each, so an entity
    removed while no collector listened still has the states of its last moments backfilled."""

    def __init__(self, client: aioredis.Redis, key: str) -> None:
        self._redis, self._key = client, key
        self.ids: set[str] = set()
        self._unsaved: set[str] = set()
        self._forgotten: set[str] = set()
        # The last MAX_GONE ids this process forgot (oldest first): a gap reopened before their removal needs them.
        self._gone: dict[str, None] = {}
        self.remembered = 0  # how often the forgotten came back: a backfill begun before must not forget them again
        # Those a backfill under way found removed, less those with a live state since (back meanwhile: `alive`).
        self.doubted: set[str] = set()

    def saw(self, entity_id: str) -> None:
        """Remember an entity id (the caller checked it is new: this is on the path of every event)."""
        self.ids.add(entity_id)
        self._unsaved.add(entity_id)
        self._forgotten.discard(entity_id)
        self._gone.pop(entity_id, None)

    def alive(self, entity_id: str) -> None:
        """A state of this entity arrived live: it is not removed, whatever a backfill found before."""
        self.doubted.discard(entity_id)

    def saw_all(self, entity_ids: Iterable[str]) -> None:
        """Remember every id of these not known yet (the entities of `get_states` and of the registry)."""
        for entity_id in entity_ids:
            if entity_id not in self.ids:
                self.saw(entity_id)

    def forget(self, entity_ids: set[str]) -> None:
        """These entities are gone and their last states published: no gap can hold any of theirs any more."""
        gone = entity_ids & self.ids
        if gone:
            self.ids -= gone
            self._unsaved -= gone
            self._forgotten |= gone
            self._gone.update(dict.fromkeys(gone))
            for oldest in list(itertools.islice(self._gone, max(0, len(self._gone) - MAX_GONE))):
                del self._gone[oldest]

    def remember_gone(self) -> None:
        """A gap reopened from before what this process knows (Redis forgot what it had acknowledged): the
        entities it forgot may have states in it again."""
        self.saw_all(list(self._gone))
        self.remembered += 1

    async def load(self) -> None:
        """Add the ids an earlier run saw (and did not forget since)."""
        stored: Any = await self._redis.smembers(self._key)
        self.ids.update(entity_id.decode() for entity_id in stored)
        self.ids -= self._forgotten

    async def save(self) -> None:
        """Store the ids seen, and drop the ids forgotten, since the last save."""
        if self._forgotten:
            forgotten, self._forgotten = self._forgotten, set()
            try:
                await self._redis.srem(self._key, *forgotten)
            except BaseException:
                self._forgotten |= forgotten - self.ids
                raise
        if self._unsaved:
            unsaved, self._unsaved = self._unsaved, set()
            try:
                await self._redis.sadd(self._key, *unsaved)
            except BaseException:
                self._unsaved |= unsaved
                raise


class SavedRegistryIds:
    """HA's entity registry as last seen (entry id → entity id), kept in Redis: an entry keeps its id when its entity
    is renamed, so a start can tell the renames made while no collector ran from it."""

    def __init__(self, client: aioredis.Redis, key: str) -> None:
        self._redis, self._key = client, key
        self._saved: dict[str, str] | None = None  # what Redis holds, once read

    async def load(self) -> dict[str, str]:
        """What an earlier run saved (and what this one saves from now on is compared with)."""
        stored: Any = await self._redis.hgetall(self._key)
        self._saved = {entry.decode(): entity_id.decode() for entry, entity_id in stored.items()}
        return dict(self._saved)

    async def save(self, now: dict[str, str]) -> None:
        """Store the registry as it is `now`: the entries changed and those gone (only once loaded: before, an
        earlier run's renames would be overwritten unseen)."""
        if self._saved is None or now is self._saved or now == self._saved:
            return
        changed = {entry: entity_id for entry, entity_id in now.items() if self._saved.get(entry) != entity_id}
        gone = self._saved.keys() - now.keys()
        if changed:
            await self._redis.hset(self._key, mapping=changed)  # type: ignore[arg-type]
        if gone:
            await self._redis.hdel(self._key, *gone)
        self._saved = now  # not changed after: the caller makes a new one at each load

class ResumePoint:
    """Reads the saved watermark (retried until Redis answers; again after Redis forgot what it had acknowledged)
    and only then saves newer ones, so a collector that started while Redis was down never overwrites the point its
    downtime starts from. `held` gives the events the publisher holds and Redis does not yet (spool, buffer)."""

    def __init__(self, client: aioredis.Redis, names: StreamNames, gap: GapTracker, enabled: bool,
                 held: Callable[[], Awaitable[list[Key]]]) -> None:
        self._redis, self._names, self._gap, self._enabled, self._held = client, names, gap, enabled, held
        self.watermark = Watermark()
        self._read_from = b""  # the resume id read at start: where a mark made before our first XADD reads back
        self._saved: tuple[int, bytes] = (0, b"")
        # Every watermark read or saved, oldest first, with the id every entry it covers is at or before (our tail
        # when it was saved: a mark's own id is the tail when it was taken, and what was buffered then came later).
        # After Redis forgot our entries after some id, the last one proven by it is where our losses start,
        # whatever another collector saved since.
        self._history: collections.deque[tuple[int, bytes, bytes]] = collections.deque(maxlen=HISTORY)
        self._lost_from: tuple[int, bytes] | None = None  # where the next read starts at the latest
        self._lost_older = False  # the loss is older than every watermark this process reached
        self._whole = True  # the history still holds the first watermark this process reached

    async def read(self, fallback_ns: int = 0) -> None:
        """Learn where the last run left off and which later states Redis or our spool already holds (a killed
        collector's watermark can be seconds old): the backfill starts there and skips those. `fallback_ns`: where
        to start when Redis holds no watermark although this process saved one (Redis lost it)."""
        stored: Any = (await self._redis.mget(self._names.watermark, self._names.resume_from) if self._enabled
                       else (None, None))
        saved_ns, self._read_from = int(stored[0]) if stored[0] else 0, stored[1] or b""
        lost_from = self._lost_from  # kept until this read succeeds: a retry must start there too
        if lost_from is not None and (not saved_ns or lost_from[0] < saved_ns):
            # Redis lost the watermark, or another collector saved one past what Redis lost of ours (its copies were
            # skipped as ours): ours, reached before the loss.
            log.warning("watermark_behind_loss", stored_ns=saved_ns, backfill_from_ns=lost_from[0])
            saved_ns, self._read_from = lost_from
        if self._lost_older and fallback_ns and fallback_ns - 1000 < saved_ns:
            # Older than every watermark it reached: back to this process's first live state (the first watermark
            # came after it), the stream read back whole.
            saved_ns, self._read_from = fallback_ns - 1000, b""
        if not saved_ns and self.saved and fallback_ns:
            log.error("watermark_lost", backfill_from_ns=fallback_ns,
                      consequence="Redis lost the watermark too: states before this process's first are not backfilled")
            saved_ns = fallback_ns - 1000  # the first one is not durable either
        self.watermark = Watermark(saved_ns, self._read_from)
        self._saved = (saved_ns, self._read_from)
        if saved_ns:
            # What the publisher holds first, then the stream: an entry it hands over in between is in the stream by
            # the time the stream is read.
            keys = await self._held()
            keys += await self._stream_states_after(self._read_from)
            for entity_id, time_ns in keys:
                self._gap.published(entity_id, time_ns)
            log.info("resuming", backfill_from_ns=saved_ns, read_back_after=self._read_from.decode() or "the start",
                     already_published=len(keys))
        self._gap.resume(saved_ns or None, self._read_from)
        self._lost_from, self._lost_older = None, False
        if saved_ns:
            self._remember((saved_ns, self._read_from, self._read_from))

    async def _stream_states_after(self, resume_from: bytes) -> list[Key]:
        found: list[Key] = []
        start = b"(" + resume_from if resume_from else b"-"
        async for page in xrange_pages(self._redis, self._names.stream, start, page=SCAN_PAGE):
            found += state_keys(event for _, fields in page for event in events_or_none(fields))
        return found

    def tail_or_read(self, tail: bytes | None) -> bytes:
        """The id after which events offered from now on are: the last one added, or (none added by this process
        yet) the one read back from at start."""
        return tail or self._read_from

    @property
    def saved(self) -> bool:
        """Whether Redis holds a watermark of this collector (read at start, or saved since)."""
        return self._saved[0] > 0

    async def save(self, offered: int, settled: int, tail: bytes | None) -> None:
        """Store the last live state time whose event, and every one before it, is durable, with the id of the
        last entry added before it was reached (`tail`: None while this process added none); never past a gap whose
        backfill has not completed, and never before the saved one was read."""
        if not self._gap.resume_known:
            return
        self.watermark.mark(offered, *self._gap.durable_until(self._gap.last_live_ns, self.tail_or_read(tail)))
        durable = self.watermark.advance(settled)
        if durable[0] and durable != self._saved:
            await self._redis.mset({self._names.watermark: durable[0], self._names.resume_from: durable[1]})
            self._saved = durable
            self._remember((*durable, self.tail_or_read(tail) or durable[1]))

    def _remember(self, mark: tuple[int, bytes, bytes]) -> None:
        if len(self._history) == self._history.maxlen:
            self._whole = False
        self._history.append(mark)

    def forgot(self, kept: bytes | None) -> None:
        """Redis lost our entries after `kept` (None: all of them): the next `read` starts no later than the last
        watermark reached at or before it (the earliest we know when none was)."""
        kept_key = id_key(kept) if kept else (0, 0)
        reached = [mark for mark in self._history if not mark[2] or id_key(mark[2]) <= kept_key]
        if reached:  # each still holds (its entries are kept); those proven after `kept` no longer do
            self._lost_from = reached[-1][:2]  # the last, not the largest: HA's clock may have stepped back
            self._lost_older = False
            self._history = collections.deque(reached, maxlen=HISTORY)
        elif self._history:
            # Older than every watermark reached: with the first still remembered, the states before it are this
            # process's too (`read` goes back to its first live state); a process that ran longer than the history
            # goes back only as far as it remembers (its first live state may be weeks ago).
            self._lost_from, self._lost_older = self._history[0][:2], self._whole
            log.warning("loss_older_than_known_watermarks", backfill_from_ns=self._history[0][0],
                        since_first_live=self._whole)
