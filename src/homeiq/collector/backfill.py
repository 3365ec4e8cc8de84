"""The backfill: once HA's recorder has committed a gap, publish the gap's states that did not arrive live."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import aiohttp

from homeiq.collector.clock import AHEAD_TOLERANCE_NS
from homeiq.collector.gap import GapTracker
from homeiq.collector.metrics import CollectorMetrics
from homeiq.collector.recorder import History, Piece, RecorderReader
from homeiq.collector.resume import KnownEntities
from homeiq.collector.settings import CollectorSettings
from homeiq.shared.backoff import Backoff
from homeiq.shared.events import NormalisedEvent, State
from homeiq.shared.ha import frames
from homeiq.shared.ha.client import AuthInvalid, CommandFailed, ConnectionLost, HAConnection
from homeiq.shared.ha.history import HISTORY_CHUNK, backfill_events, current_states
from homeiq.shared.ha.registry import Registry
from homeiq.shared.logs import Log

log = Log(__name__)

RECORDER_POLL_S = 1.0
BACKFILL_RETRY_CAP_S = 300.0
# What can go wrong with the backfill's own connection: it is retried later, and the live session goes on.
RECORDER_FAILURES = (ConnectionLost, CommandFailed, AuthInvalid, TimeoutError, aiohttp.ClientError, OSError,
                     *frames.UNDECODABLE)


class BackfillFailed(Exception):
    """The backfill could not read the recorder; the gap stays open and is tried again."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused  # HA refused the token


class Backfill:
    """Closes the gaps the GapTracker opens, one at a time, for as long as a session lasts (`run`). `publish`
    offers one event as the live path does (filter, count, buffer) and says whether it was kept; `ha_now_ns` is now
    on HA's clock; `recorder_connection` opens a connection of the backfill's own."""

    def __init__(self, settings: CollectorSettings, metrics: CollectorMetrics, gap: GapTracker, known: KnownEntities,
                 registry: Registry, publish: Callable[[NormalisedEvent], Awaitable[bool]],
                 ha_now_ns: Callable[[], int],
                 recorder_connection: Callable[[], AbstractAsyncContextManager[HAConnection]]) -> None:
        self._settings, self._metrics, self._gap, self._known = settings, metrics, gap, known
        self._registry, self._publish, self._ha_now_ns = registry, publish, ha_now_ns
        self._recorder_connection = recorder_connection
        self.resumed = asyncio.Event()  # where the last run left off is known (set by the Redis watch)
        self.gap_opened = asyncio.Event()  # a gap may have opened meanwhile

    async def run(self, conn: HAConnection) -> None:
        """Close every gap as it opens; a restart's own gap is known once Redis has told where the last run stopped
        (and again after Redis forgot). A recorder that cannot be read keeps the gap open (counted, logged) and is
        asked again later."""
        backoff = Backoff(base_s=1.0, cap_s=BACKFILL_RETRY_CAP_S)
        while True:
            await self.resumed.wait()
            start_ns = self._gap.pending_start_ns
            if start_ns is None:
                self.gap_opened.clear()
                await self.gap_opened.wait()
                continue
            try:
                await self._backfill(conn, start_ns)
                backoff.reset()
            except BackfillFailed as exc:
                self._metrics.backfill_failures.inc()
                delay_s = backoff.next_delay_s()
                if exc.refused:  # HA's IP ban counts failed logins: as slowly as the live connection would
                    self._metrics.auth_rejected.set(1)
                    delay_s = max(delay_s, self._settings.auth_retry_s)
                log.warning("backfill_failed", error=str(exc), since_ns=start_ns, retry_in_s=round(delay_s, 2))
                await asyncio.sleep(delay_s)

    async def _backfill(self, conn: HAConnection, start_ns: int) -> None:
        """Once HA's recorder has committed the gap, publish its states since the last live one that did not arrive
        live: of every entity HA has now and every one this collector has seen (one removed meanwhile too)."""
        s = self._settings
        remembered = self._known.remembered
        raw = await conn.command({"type": "get_states"}, s.command_timeout_s)
        started = time.monotonic()
        try:
            current = current_states(bytes(raw))
            self._known.saw_all(current)
            present = current.keys() | self._registry.entities.keys()
            # Removed as HA stands now: one that becomes known later (added while the recorder is awaited) is not,
            # nor one that comes back meanwhile (`doubted` loses it at its first live state; one whose state came in
            # the frame of HA's answer is among those published since the gap opened).
            gone = self._known.ids - present
            self._known.doubted = gone - {entity_id for entity_id, _ in self._gap.seen} if gone else set()
            async with RecorderReader(self._recorder_connection, s.command_timeout_s, self._too_large,
                                      self._ha_now_ns) as recorder:
                confirmed = await self._recorder_committed(recorder, start_ns, current, gone)
                published, asked = await self._publish_history(conn, recorder, start_ns,
                                                               sorted(present | self._known.ids))
        except RECORDER_FAILURES as exc:
            raise BackfillFailed(f"{type(exc).__name__}: {exc}"[:300], refused=isinstance(exc, AuthInvalid)) from None
        self._metrics.backfilled.inc(published)
        self._gap.end(start_ns)
        # Removed entities' last states are published (or, unconfirmed, all the recorder showed after waiting at least
        # its commit interval): no later gap holds any of theirs.
        # Not when Redis forgot meanwhile, nor when HA's clock opened the gap from earlier: they may be needed again.
        if self._gap.pending_start_ns is None and self._known.remembered == remembered:
            self._known.forget(self._known.doubted - self._registry.entities.keys())
        self._known.doubted = set()
        if not confirmed:
            self._metrics.backfill_unconfirmed.inc()
            log.warning("backfill_unconfirmed", since_ns=start_ns, waited_s=s.recorder_wait_s,
                        consequence="states the recorder commits later are not backfilled (`replayer audit` finds "
                                    "them): it showed no state sent after the subscription, nor every current one")
        log.info("backfill_done", events=published, entities=asked, since_ns=start_ns, confirmed=confirmed,
                 seconds=round(time.monotonic() - started, 2), splits=recorder.splits)

    async def _recorder_committed(self, recorder: RecorderReader, start_ns: int, current: dict[str, int],
                                  removed: set[str]) -> bool:
        """Wait until the recorder holds every state of the gap: True then, False after HA_RECORDER_WAIT_S."""
        deadline = time.monotonic() + self._settings.recorder_wait_s
        asked = False
        while True:
            # With no live state yet, give one a moment to arrive: it is the cheaper proof in a busy home.
            if (self._gap.probes or asked) and await recorder.has_committed(dict(self._gap.probes), current, start_ns,
                                                                            removed):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(RECORDER_POLL_S)
            asked = True

    async def _publish_history(self, conn: HAConnection, recorder: RecorderReader, start_ns: int,
                               entity_ids: list[str]) -> tuple[int, int]:
        """Publish the gap's states of `entity_ids`, then of the new ids of those renamed meanwhile (HA's recorder
        moved their history there, perhaps before their chunk was asked for). The events published and the
        entities asked for."""
        published = 0
        previous_states: dict[str, State] = {}  # a piece cut by time continues its entity's last one
        asked_at: dict[str, int] = {}  # entity id → the gap's renames when it was last asked for
        while entity_ids:
            asked_at.update(dict.fromkeys(entity_ids, self._gap.renames))
            for first in range(0, len(entity_ids), HISTORY_CHUNK):
                async for history, unreadable in recorder.pieces(entity_ids[first:first + HISTORY_CHUNK], start_ns):
                    self._count_unreadable(unreadable)
                    # The answer came on another connection: the live reader may not have read yet states HA sent
                    # it before (a rename's event too). HA answers a ping after them, and our reader routes in
                    # order: after the pong they are seen.
                    await conn.ping(self._settings.ping_timeout_s)
                    published += await self._publish_rows(history, start_ns, previous_states)
            entity_ids = sorted(self._gap.renamed_since(asked_at))
        return published, len(asked_at)

    async def _publish_rows(self, history: History, start_ns: int, previous_states: dict[str, State]) -> int:
        published = 0
        ahead_ns = self._ha_now_ns() + AHEAD_TOLERANCE_NS
        for event in backfill_events(history, self._registry, start_ns, self._gap.seen, previous_states):
            assert event.entity_id is not None  # a state change of a known entity
            if await self._publish(event):
                published += 1
            # Only once buffered: a cancelled put (the session ended) must leave it to the retry of this gap. One far
            # ahead of HA's clock is after every later gap's start too: no backfill may publish it again.
            if event.time_ns > ahead_ns:
                self._gap.untrusted(event.entity_id, event.time_ns)
            else:
                self._gap.published(event.entity_id, event.time_ns)
        return published

    def _count_unreadable(self, unreadable: list[bytes]) -> None:
        if unreadable:
            self._metrics.dropped.labels("backfill_malformed").inc(len(unreadable))
            self._metrics.log_sampled("backfill_malformed", "recorder states dropped: cannot be decoded",
                                      dropped=len(unreadable), sample=unreadable[0][:200].decode(errors="replace"))

    def _too_large(self, piece: Piece, error: str) -> None:
        """One entity's states of one millisecond do not fit in HA_MAX_MESSAGE_MB: they cannot be backfilled."""
        self._metrics.dropped.labels("backfill_too_large").inc()
        log.error("backfill_too_large", entity_ids=piece.entity_ids, start_ns=piece.start_ns, end_ns=piece.end_ns,
                  error=error, consequence="the states of this millisecond are not backfilled: raise HA_MAX_MESSAGE_MB")
