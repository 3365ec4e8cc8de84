"""`collector run`: the supervisor loop around one HA connection, and the publisher beside it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import msgspec
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from homeiq.collector.clock import AHEAD_TOLERANCE_NS, Finding, HaClock
from homeiq.collector.gap import GapTracker
from homeiq.collector.metrics import CollectorMetrics
from homeiq.collector.normalise import PointTimes, normalise, normalise_state_changed
from homeiq.collector.publisher import Publisher
from homeiq.collector.recorder import History, Piece, RecorderReader
from homeiq.collector.resume import KnownEntities, ResumePoint
from homeiq.collector.session_end import Stopped, why_ended
from homeiq.collector.settings import CollectorSettings
from homeiq.collector.spool import Spool
from homeiq.shared.backoff import Backoff
from homeiq.shared.broker import PersistenceCheck
from homeiq.shared.entity_filter import EntityRules
from homeiq.shared.events import NormalisedEvent, State, encode_event
from homeiq.shared.ha import frames
from homeiq.shared.ha.client import WS_TIMEOUT, AuthInvalid, CommandFailed, ConnectionLost, FrameSocket, HAConnection
from homeiq.shared.ha.history import HISTORY_CHUNK, backfill_events, current_states
from homeiq.shared.ha.registry import REGISTRY_COMMANDS, Registry
from homeiq.shared.health import READY_REDIS, HealthServer, Readiness, counters
from homeiq.shared.lifecycle import wait_or_stop
from homeiq.shared.logs import Log
from homeiq.shared.settings import redact_url
from homeiq.shared.stream import connect, describe_redis_error

log = Log(__name__)

READY_HA = "home_assistant"
REGISTRY_EVENTS = {f"{kind}_registry_updated": kind for kind in REGISTRY_COMMANDS}
DRAIN_TIMEOUT_S = 5.0
UNSUBSCRIBE_TIMEOUT_S = 2.0
REDIS_CHECK_S = 2.0
AUTH_RETRY_CAP_S = 6 * 3600.0
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

T = TypeVar("T")


class Collector:
    """Supervises exactly one connection loop; never two, never a task that spawns another."""

    def __init__(self, settings: CollectorSettings, token: str, entity_filter: EntityRules | None = None,
                 metrics_registry: CollectorRegistry | None = None) -> None:
        self.settings, self._token, self._filter = settings, token, entity_filter
        self._tls = settings.tls()  # built once: loading CA files per reconnect is wasted work
        self.metrics_registry = metrics_registry or CollectorRegistry()
        self.metrics = CollectorMetrics(self.metrics_registry)
        self.readiness = Readiness(READY_HA, READY_REDIS)
        self.redis: aioredis.Redis = connect(settings.redis_url)
        spool = Spool(Path(settings.spool_dir), settings.spool_max_mb * 1024 * 1024)
        self.metrics.spool_max_bytes.set(spool.max_bytes)
        self.persistence = PersistenceCheck(settings.redis_url, settings.require_aof, self.readiness,
                                            self.metrics_registry)
        self.publisher = Publisher(self.redis, settings.redis_url, settings.names, self.metrics,
                                   self.readiness, spool, settings.spool_policy, settings.buffer_events,
                                   settings.publish_batch, durable=lambda: self.persistence.ok,
                                   forgotten=self._redis_forgot)
        self.ha_registry = Registry()
        self.gap = GapTracker()
        self.ha_clock = HaClock(self._clock_finding)
        self.metrics.ha_clock_offset.set_function(lambda: (self.ha_clock.offset_ns or 0) / 1e9)
        self._first_live_ns = 0  # the first trusted live state of this process: the oldest time it can vouch for
        self._subscribed_ns = 0  # when the last subscription began, on our clock
        self.resume = ResumePoint(self.redis, settings.names, self.gap, settings.backfill,
                                  self.publisher.held_states)
        self.known = KnownEntities(self.redis, settings.names.collector_entities)
        self.metrics.gap_open.set_function(
            lambda: float(settings.backfill and (self.gap.pending_start_ns is not None or not self.gap.resume_known)))
        self._resumed = asyncio.Event()
        self._gap_opened = asyncio.Event()
        self.point_times = PointTimes()
        self._offered = 0
        self._auth_failures = 0
        self._unsubscribed_since: float | None = None
        self.sessions = 0
        self._stale: set[str] = set()
        self._stale_changed = asyncio.Event()
        self.health = HealthServer(self.metrics_registry, self.readiness, settings.metrics_host, settings.metrics_port)

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, read and publish until `stop`; then publish (or spool) what is buffered and exit."""
        await self.health.start()
        unpublished = 0
        try:
            # One tree: a failure of any task (the publisher's, the Redis watch's) ends the others and
            # surfaces here, instead of a reader filling a buffer that nobody empties.
            async with asyncio.TaskGroup() as tasks:
                publishing = tasks.create_task(self.publisher.run(), name="publisher")
                watching = tasks.create_task(self._watch_redis(), name="redis-watch")
                await self._supervise(stop)
                await self.publisher.drain(DRAIN_TIMEOUT_S)
                unpublished = await self.publisher.close(DRAIN_TIMEOUT_S)
                publishing.cancel()
                watching.cancel()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:  # one failure (a spool bug): surfaces as itself
                raise group.exceptions[0] from None
            raise
        finally:
            if unpublished:
                self.metrics.dropped.labels("shutdown_unpublished").inc(unpublished)
                log.error("events_unpublished_at_exit", events=unpublished)
            with contextlib.suppress(RedisError, OSError):
                await self.resume.save(self._offered, self.publisher.settled, self.publisher.tail_id)
            await self.redis.aclose()
            await self.health.stop()
            log.info("collector_stopped", unpublished=unpublished, spooled=self.publisher.pending,
                     counters=counters(self.metrics_registry))

    async def _watch_redis(self) -> None:
        """Readiness needs Redis even while no event flows: PING it now and then. The first answer tells
        where the last run left off (however long Redis takes to come); after that, save the watermark, and see
        that Redis still holds what it acknowledged (else learn again where we left off)."""
        while True:
            try:
                await self._measure_redis_clock()
                self.readiness.ok(READY_REDIS)
                await self.persistence.check(self.redis)  # until it holds, the publisher keeps events on disk
                if self._resumed.is_set():
                    await self.publisher.check_tail_now()
                if not self._resumed.is_set():
                    await self.resume.read(self._first_live_ns)
                    await self.known.load()
                    self._resumed.set()
                    self._gap_opened.set()
                await self.resume.save(self._offered, self.publisher.settled, self.publisher.tail_id)
                await self.known.save()
            except (RedisError, OSError) as exc:
                self.readiness.fail(READY_REDIS, describe_redis_error(self.settings.redis_url, exc))
            if self.resume.saved:
                await asyncio.sleep(REDIS_CHECK_S)
            else:  # a first run: save as soon as its first events are durable (Redis may be gone in 2 s)
                await self.publisher.progressed(REDIS_CHECK_S)

    async def _measure_redis_clock(self) -> None:
        """PING by TIME: Redis's clock minus ours (stream ids carry Redis's, state times HA's)."""
        before_ns = time.time_ns()
        seconds, microseconds = await self.redis.time()
        after_ns = time.time_ns()
        self.metrics.redis_clock_offset.set((seconds * 10**9 + microseconds * 1000 - (before_ns + after_ns) // 2) / 1e9)

    def _ha_now_ns(self) -> int:
        """Now on HA's clock, as far as its states tell."""
        return time.time_ns() + (self.ha_clock.offset_ns or 0)

    def _redis_forgot(self) -> None:
        """Redis lost entries it had acknowledged: learn again, as a restart does, where we left off (the gap from
        there is backfilled); meanwhile every state published is remembered, so none is published twice."""
        self.gap.unknown()
        self._resumed.clear()

    def _clock_finding(self, finding: Finding, amount: int) -> None:
        if finding == "outliers":
            self.metrics.ha_clock_outliers.inc(amount)
            self.metrics.log_sampled("ha_clock_outliers", "state times far ahead of HA's clock: they do not move "
                                     "the watermark", states=amount, offset_s=(self.ha_clock.offset_ns or 0) / 1e9)
        else:
            direction = "back" if finding == "step_back" else "ahead"
            self.metrics.ha_clock_steps.labels(direction).inc()
            log.warning("ha_clock_stepped", direction=direction, step_s=round(amount / 1e9, 3))

    async def _supervise(self, stop: asyncio.Event) -> None:
        backoff = Backoff(base_s=self.settings.backoff_base_s, cap_s=self.settings.backoff_max_s,
                          reset_after_s=60.0)
        url = redact_url(self.settings.ha_url)
        while not stop.is_set():
            backoff.started()
            if self.sessions:
                self.metrics.reconnects.inc()
            self.sessions += 1
            try:
                await self._session(stop)
                break
            except Exception as failure:  # every end is in SESSION_ENDS; anything else is a bug, re-raised
                ended = why_ended(failure, self.settings.connect_timeout_s)
                if ended is None:
                    raise
                kind, reason = ended
                if kind is None:
                    break
            finally:
                self.metrics.connected.set(0)
                if self._unsubscribed_since is None:  # since the first failure, not the last attempt
                    self._unsubscribed_since = time.monotonic()
            self.metrics.disconnects.labels(kind).inc()
            delay_s = backoff.next_delay_s()
            if kind == "auth_invalid":
                # A refused token stays refused and HA's IP ban counts failed logins: stay up and unready (an exit
                # would make `restart:` a loop of logins) and try again only after a long, doubling wait.
                delay_s = min(self.settings.auth_retry_s * 2 ** self._auth_failures, AUTH_RETRY_CAP_S)
                self._auth_failures += 1
                self.metrics.auth_rejected.set(1)
                reason = (f"Home Assistant refused the token ({reason}): create a new long-lived access token, set "
                          f"HA_TOKEN or HA_TOKEN_FILE and restart the collector; next attempt in {delay_s:.0f} s")
            self.readiness.fail(READY_HA, f"disconnected from {url}: {reason}")
            log.warning("ha_disconnected", url=url, reason=reason, retry_in_s=round(delay_s, 2))
            await wait_or_stop(stop, delay_s)

    async def _open_socket(self, http: aiohttp.ClientSession) -> FrameSocket:
        s = self.settings
        async with asyncio.timeout(s.connect_timeout_s):
            # A close handshake behind megabytes of unread events would hold a stop for 10 s: 2 s is enough.
            return await http.ws_connect(
                s.ha_url, max_msg_size=s.max_message_mb * 1024 * 1024, autoping=True, heartbeat=None,
                timeout=WS_TIMEOUT, ssl=self._tls or True, decode_text=False)

    async def _session(self, stop: asyncio.Event) -> None:
        s = self.settings
        async with aiohttp.ClientSession() as http:
            ws = await unless_stopped(stop, self._open_socket(http))
            async with ws:
                conn = HAConnection(ws, self.metrics)
                version = await unless_stopped(stop, conn.authenticate(self._token, s.auth_timeout_s))
                self._auth_failures = 0
                self.metrics.auth_rejected.set(0)
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(conn.read_forever(), name="ha-reader")
                    tasks.create_task(self._connected(conn, version, tasks), name="ha-setup")
                    tasks.create_task(self._end_on_stop(conn, stop), name="stop")

    async def _end_on_stop(self, conn: HAConnection, stop: asyncio.Event) -> None:
        """On `stop`, unsubscribe before closing: what HA sent until its answer is read and published. Events
        with no recorder history (service calls, automation triggers) still in the socket would be gone."""
        await stop.wait()
        self.publisher.unbound()  # a reader waiting for room (Redis slow) would never read the answer
        try:
            await conn.unsubscribe_all(UNSUBSCRIBE_TIMEOUT_S)
        except (ConnectionLost, CommandFailed) as exc:
            log.warning("unsubscribe_unanswered", error=str(exc),
                        consequence="events HA sent after the last one read are lost")
        raise Stopped

    async def _connected(self, conn: HAConnection, version: str, tasks: asyncio.TaskGroup) -> None:
        """Features, discovery, one subscription, then heartbeat, registry refreshes and the backfill."""
        s = self.settings
        await conn.command({"type": "supported_features", "features": {"coalesce_messages": 1}},
                           s.command_timeout_s)
        # Discovery before subscribing: every event is enriched, and the reader never waits on a full
        # buffer while a registry answer is still to be read.
        for kind in REGISTRY_COMMANDS:
            await self._load_registry(conn, kind)
        if s.backfill:  # HA's clock is not known to differ from ours by more than the tolerance: else a state says so
            since_ns = self._subscribed_ns and self._subscribed_ns - AHEAD_TOLERANCE_NS
            self.gap.begin(self.resume.tail_or_read(self.publisher.tail_id), since_ns)
        self._subscribed_ns = time.time_ns()
        await conn.subscribe(self._on_event, s.command_timeout_s)
        if self._unsubscribed_since is not None:  # events other than state changes sent meanwhile are gone
            self.metrics.unsubscribed_seconds.inc(time.monotonic() - self._unsubscribed_since)
            self._unsubscribed_since = None
        self.metrics.connected.set(1)
        self.readiness.ok(READY_HA)
        log.info("ha_connected", url=redact_url(s.ha_url), ha_version=version, session=self.sessions,
                 entities=len(self.ha_registry.entities))
        tasks.create_task(self._heartbeat(conn), name="ha-heartbeat")
        tasks.create_task(self._refresh_registries(conn), name="ha-registries")
        if s.backfill:
            tasks.create_task(self._backfills(conn), name="ha-backfill")

    async def _load_registry(self, conn: HAConnection, kind: str) -> None:
        """Load one registry; one HA cannot answer or answers unreadably keeps what was loaded before."""
        try:
            raw = await conn.command({"type": REGISTRY_COMMANDS[kind]}, self.settings.command_timeout_s)
            size = self.ha_registry.load(kind, bytes(raw))
        except CommandFailed as exc:
            log.warning("registry_unavailable", registry=kind, error=str(exc))
            return
        except frames.UNDECODABLE as exc:
            self.metrics.frames_rejected.labels("malformed_registry").inc()
            log.warning("registry_unavailable", registry=kind, error=f"{type(exc).__name__}: {exc}"[:200])
            return
        if kind == "entity":  # an entity removed during a later gap must still be asked for
            self.known.saw_all(self.ha_registry.entities)
        log.debug("registry_loaded", registry=kind, entries=size)

    async def _refresh_registries(self, conn: HAConnection) -> None:
        """Re-read a registry after HA said it changed (its events carry only ids and `changes`)."""
        while True:
            await self._stale_changed.wait()
            self._stale_changed.clear()
            while self._stale:
                kind = self._stale.pop()
                await self._load_registry(conn, kind)
                log.info("registry_refreshed", registry=kind)

    async def _heartbeat(self, conn: HAConnection) -> None:
        while True:
            await asyncio.sleep(self.settings.ping_interval_s)
            await conn.ping(self.settings.ping_timeout_s)

    async def _backfills(self, conn: HAConnection) -> None:
        """Close every gap as it opens; a restart's own gap is known once Redis has told where the last run stopped
        (and again after Redis forgot). A recorder that cannot be read keeps the gap open (counted, logged) and is
        asked again later."""
        backoff = Backoff(base_s=1.0, cap_s=BACKFILL_RETRY_CAP_S)
        while True:
            await self._resumed.wait()
            start_ns = self.gap.pending_start_ns
            if start_ns is None:
                self._gap_opened.clear()
                await self._gap_opened.wait()
                continue
            try:
                await self._backfill(conn, start_ns)
                backoff.reset()
            except BackfillFailed as exc:
                self.metrics.backfill_failures.inc()
                delay_s = backoff.next_delay_s()
                if exc.refused:  # HA's IP ban counts failed logins: as slowly as the live connection would
                    self.metrics.auth_rejected.set(1)
                    delay_s = max(delay_s, self.settings.auth_retry_s)
                log.warning("backfill_failed", error=str(exc), since_ns=start_ns, retry_in_s=round(delay_s, 2))
                await asyncio.sleep(delay_s)

    async def _backfill(self, conn: HAConnection, start_ns: int) -> None:
        """Once HA's recorder has committed the gap, publish its states since the last live one that did not arrive
        live: of every entity HA has now and every one this collector has seen (one removed meanwhile too)."""
        s = self.settings
        raw = await conn.command({"type": "get_states"}, s.command_timeout_s)
        started = time.monotonic()
        try:
            current = current_states(bytes(raw))
            self.known.saw_all(current)
            present = current.keys() | self.ha_registry.entities.keys()
            async with RecorderReader(self._recorder_connection, s.command_timeout_s, self._too_large,
                                      self._ha_now_ns) as recorder:
                confirmed = await self._recorder_committed(recorder, start_ns, current, self.known.ids - present)
                entity_ids = sorted(present | self.known.ids)
                published = await self._publish_history(conn, recorder, start_ns, entity_ids)
        except RECORDER_FAILURES as exc:
            raise BackfillFailed(f"{type(exc).__name__}: {exc}"[:300], refused=isinstance(exc, AuthInvalid)) from None
        self.metrics.backfilled.inc(published)
        self.gap.end(start_ns)
        # Removed entities' last states are published (or, unconfirmed, all the recorder showed after waiting at least
        # its commit interval): no later gap holds any of theirs.
        self.known.forget(self.known.ids - present)
        if not confirmed:
            self.metrics.backfill_unconfirmed.inc()
            log.warning("backfill_unconfirmed", since_ns=start_ns, waited_s=s.recorder_wait_s,
                        consequence="states the recorder commits later are not backfilled (`replayer audit` finds "
                                    "them): it showed no state sent after the subscription, nor every current one")
        log.info("backfill_done", events=published, entities=len(entity_ids), since_ns=start_ns, confirmed=confirmed,
                 seconds=round(time.monotonic() - started, 2), splits=recorder.splits)

    async def _recorder_committed(self, recorder: RecorderReader, start_ns: int, current: dict[str, int],
                                  removed: set[str]) -> bool:
        """Wait until the recorder holds every state of the gap: True then, False after HA_RECORDER_WAIT_S."""
        deadline = time.monotonic() + self.settings.recorder_wait_s
        asked = False
        while True:
            # With no live state yet, give one a moment to arrive: it is the cheaper proof in a busy home.
            if (self.gap.probes or asked) and await recorder.has_committed(dict(self.gap.probes), current, start_ns,
                                                                           removed):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(RECORDER_POLL_S)
            asked = True

    async def _publish_history(self, conn: HAConnection, recorder: RecorderReader, start_ns: int,
                               entity_ids: list[str]) -> int:
        published = 0
        previous_states: dict[str, State] = {}  # a piece cut by time continues its entity's last one
        for first in range(0, len(entity_ids), HISTORY_CHUNK):
            async for history, unreadable in recorder.pieces(entity_ids[first:first + HISTORY_CHUNK], start_ns):
                self._count_unreadable(unreadable)
                # The answer came on another connection: the live reader may not have read yet states HA sent it
                # before. HA answers a ping after them, and our reader routes in order: after the pong they are seen.
                await conn.ping(self.settings.ping_timeout_s)
                published += await self._publish_rows(history, start_ns, previous_states)
        return published

    async def _publish_rows(self, history: History, start_ns: int, previous_states: dict[str, State]) -> int:
        published = 0
        ahead_ns = self._ha_now_ns() + AHEAD_TOLERANCE_NS
        for event in backfill_events(history, self.ha_registry, start_ns, self.gap.seen, previous_states):
            assert event.entity_id is not None  # a state change of a known entity
            if self._passes_filter(event):
                self._offered += 1
                await self.publisher.put(encode_event(event))
                published += 1
            # Only once buffered: a cancelled put (the session ended) must leave it to the retry of this gap. One far
            # ahead of HA's clock is after every later gap's start too: no backfill may publish it again.
            if event.time_ns > ahead_ns:
                self.gap.untrusted(event.entity_id, event.time_ns)
            else:
                self.gap.published(event.entity_id, event.time_ns)
        return published

    def _count_unreadable(self, unreadable: list[bytes]) -> None:
        if unreadable:
            self.metrics.dropped.labels("backfill_malformed").inc(len(unreadable))
            self.metrics.log_sampled("backfill_malformed", "recorder states dropped: cannot be decoded",
                                     dropped=len(unreadable), sample=unreadable[0][:200].decode(errors="replace"))

    def _too_large(self, piece: Piece, error: str) -> None:
        """One entity's states of one millisecond do not fit in HA_MAX_MESSAGE_MB: they cannot be backfilled."""
        self.metrics.dropped.labels("backfill_too_large").inc()
        log.error("backfill_too_large", entity_ids=piece.entity_ids, start_ns=piece.start_ns, end_ns=piece.end_ns,
                  error=error, consequence="the states of this millisecond are not backfilled: raise HA_MAX_MESSAGE_MB")

    @contextlib.asynccontextmanager
    async def _recorder_connection(self) -> AsyncIterator[HAConnection]:
        """A connection of the backfill's own: an answer too large for one message closes it, not the live one."""
        async with aiohttp.ClientSession() as http, await self._open_socket(http) as ws:
            conn = HAConnection(ws, self.metrics)
            await conn.authenticate(self._token, self.settings.auth_timeout_s)
            reader = asyncio.create_task(conn.read_forever(), name="ha-recorder-reader")
            try:
                yield conn
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

    def _passes_filter(self, event: NormalisedEvent) -> bool:
        if self._filter is None or self._filter.allows(event):
            return True
        self.metrics.filtered.inc()
        return False

    def _on_event(self, frame: frames.EventFrame | frames.StateEventFrame) -> Awaitable[None] | None:
        """Normalise, filter and buffer one event; returns an awaitable only when the buffer is full."""
        try:
            if isinstance(frame, frames.StateEventFrame):
                typed = frame.event
                event = normalise_state_changed(typed.data, typed.time_fired, typed.origin, typed.context,
                                                self.ha_registry)
            else:
                event = normalise(frames.event_decoder.decode(frame.event), self.ha_registry)
        except (msgspec.DecodeError, ValueError, TypeError, OverflowError) as exc:  # no frame may end the reader
            self.metrics.dropped.labels("malformed_event").inc()
            sample = msgspec.json.encode(frame.event) if isinstance(frame, frames.StateEventFrame) else frame.event
            self.metrics.log_sampled("malformed_event", "event dropped: cannot be normalised",
                                     error=f"{type(exc).__name__}: {exc}"[:200],
                                     sample=bytes(sample)[:200].decode(errors="replace"))
            return None
        if not isinstance(frame, frames.StateEventFrame):
            kind = REGISTRY_EVENTS.get(event.event_type)
            if kind is not None:
                self._stale.add(kind)
                self._stale_changed.set()
        entity_id = event.entity_id
        if entity_id is not None:
            if event.new_state is not None:
                if entity_id not in self.known.ids:
                    self.known.saw(entity_id)
                self.gap.probe(entity_id, event.time_ns)
            elif event.event_type == "state_changed":  # removed, and its last moments arrived live
                self.known.forget({entity_id})
        if self._filter is not None and not self._passes_filter(event):
            return None
        if event.new_state is not None and entity_id is not None:
            if self.ha_clock.trust(event.time_ns, time.time_ns()):
                self.gap.live(entity_id, event.time_ns)
                self._first_live_ns = self._first_live_ns or event.time_ns
            else:
                self.gap.untrusted(entity_id, event.time_ns)
        else:
            event = self.point_times.unique(event)
        payload = encode_event(event)
        self._offered += 1
        return None if self.publisher.offer(payload) else self.publisher.put(payload)


async def unless_stopped(stop: asyncio.Event, work: Coroutine[Any, Any, T]) -> T:
    """`work`'s result, or Stopped as soon as `stop` is set: connecting and logging in hold no event, so a
    stop need not wait out their timeouts."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopping), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise Stopped
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))
