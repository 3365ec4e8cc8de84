"""Where a restarted collector resumes: the durable watermark in Redis, and the states already in the stream."""

from __future__ import annotations

from typing import Any, Final

import msgspec
import redis.asyncio as aioredis

from homeiq_collector.gap import GapTracker, Watermark
from homeiq_shared.events import decode_event
from homeiq_shared.logs import Log
from homeiq_shared.stream import FIELD_EVENT, RESUME_MARGIN_MS, StreamNames

log = Log(__name__)

SCAN_PAGE: Final = 10_000


class KnownEntities:
    """Every entity id this collector has seen, kept in Redis: a backfill asks the recorder for each, so an entity
    removed while no collector listened still has the states of its last moments backfilled."""

    def __init__(self, client: aioredis.Redis, key: str) -> None:
        self._redis, self._key = client, key
        self.ids: set[str] = set()
        self._unsaved: set[str] = set()

    def saw(self, entity_id: str) -> None:
        """Remember an entity id (the caller checked it is new: this is on the path of every event)."""
        self.ids.add(entity_id)
        self._unsaved.add(entity_id)

    async def load(self) -> None:
        """Add the ids an earlier run saw."""
        stored: Any = await self._redis.smembers(self._key)
        self.ids.update(entity_id.decode() for entity_id in stored)

    async def save(self) -> None:
        """Store the ids seen since the last save."""
        if self._unsaved:
            unsaved, self._unsaved = self._unsaved, set()
            try:
                await self._redis.sadd(self._key, *unsaved)
            except BaseException:
                self._unsaved |= unsaved
                raise


class ResumePoint:
    """Reads the saved watermark once (retried until Redis answers) and only then saves newer ones, so a
    collector that started while Redis was down never overwrites the point its downtime starts from."""

    def __init__(self, client: aioredis.Redis, names: StreamNames, gap: GapTracker, enabled: bool) -> None:
        self._redis, self._names, self._gap, self._enabled = client, names, gap, enabled
        self._key = names.watermark
        self.watermark = Watermark()
        self._saved_ns = 0

    async def read(self) -> None:
        """Learn where the last run left off and which later states the stream already holds (a killed
        collector's watermark can be seconds old): the backfill starts there and skips those."""
        saved = await self._redis.get(self._key) if self._enabled else None
        saved_ns = int(saved) if saved else 0
        if saved_ns:
            for entity_id, time_ns in await self._states_after(saved_ns):
                self._gap.published(entity_id, time_ns)
            self.watermark.durable_ns = self._saved_ns = saved_ns
            log.info("resuming", backfill_from_ns=saved_ns, already_in_stream=len(self._gap.seen))
        self._gap.resume(saved_ns or None)

    async def _states_after(self, saved_ns: int) -> list[tuple[str, int]]:
        found: list[tuple[str, int]] = []
        start = f"{max(0, saved_ns // 1_000_000 - RESUME_MARGIN_MS)}-0"
        while True:
            page: Any = await self._redis.xrange(self._names.stream, start, "+", count=SCAN_PAGE)
            for _, fields in page:
                try:
                    event = decode_event(fields[FIELD_EVENT])
                except (KeyError, msgspec.DecodeError):
                    continue  # not ours to judge here: the writers dead-letter it
                if event.new_state is not None and event.entity_id and event.time_ns > saved_ns:
                    found.append((event.entity_id, event.time_ns))
            if len(page) < SCAN_PAGE:
                return found
            start = "(" + page[-1][0].decode()

    @property
    def saved(self) -> bool:
        """Whether Redis holds a watermark of this collector (read at start, or saved since)."""
        return self._saved_ns > 0

    async def save(self, offered: int, settled: int) -> None:
        """Store the newest live state time whose event, and every one before it, is durable; never past
        a gap whose backfill has not completed, and never before the saved one was read."""
        if not self._gap.resume_known:
            return
        self.watermark.mark(offered, self._gap.durable_until(self._gap.last_live_ns))
        durable_ns = self.watermark.advance(settled)
        if durable_ns > self._saved_ns:
            await self._redis.set(self._key, durable_ns)
            self._saved_ns = durable_ns
