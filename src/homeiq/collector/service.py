"""`collector run`: the supervisor loop around one HA session at a time, the events it turns into stream entries,
and the publisher, the Redis watch, the registries and the backfill beside it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from pathlib import Path

import aiohttp
import msgspec
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from homeiq.collector.backfill import Backfill
from homeiq.collector.clock import AHEAD_TOLERANCE_NS, Finding, HaClock
from homeiq.collector.dialer import Dialer, unless_stopped
from homeiq.collector.gap import GapTracker
from homeiq.collector.metrics import CollectorMetrics
from homeiq.collector.normalise import PointTimes, normalise, normalise_state_changed
from homeiq.collector.publisher import Publisher
from homeiq.collector.registries import Registries
from homeiq.collector.resume import KnownEntities, ResumePoint
from homeiq.collector.session_end import Stopped, why_ended
from homeiq.collector.settings import CollectorSettings
from homeiq.collector.spool import Spool
from homeiq.shared.backoff import Backoff
from homeiq.shared.entity_filter import EntityRules
from homeiq.shared.events import NormalisedEvent, encode_event
from homeiq.shared.ha import frames
from homeiq.shared.ha.client import CommandFailed, ConnectionLost, HAConnection
from homeiq.shared.ha.registry import Registry
from homeiq.shared.health import READY_REDIS, Readiness
from homeiq.shared.lifecycle import wait_or_stop
from homeiq.shared.logs import Log
from homeiq.shared.runtime import ServiceRuntime
from homeiq.shared.settings import redact_url
from homeiq.shared.stream import describe_redis_error

log = Log(__name__)

READY_HA = "home_assistant"
DRAIN_TIMEOUT_S = 5.0
UNSUBSCRIBE_TIMEOUT_S = 2.0
REDIS_CHECK_S = 2.0
AUTH_RETRY_CAP_S = 6 * 3600.0
class Collector:
    """Supervises exactly one connection loop; never two, never a task that spawns another."""

    def __init__(self, settings: CollectorSettings, token: str, entity_filter: EntityRules | None = None,
                 metrics_registry: CollectorRegistry | None = None) -> None:
        self.settings, self._filter = settings, entity_filter
        self.runtime = ServiceRuntime(log, settings, Readiness(READY_HA, READY_REDIS), metrics_registry)
        self.metrics_registry, self.readiness = self.runtime.metrics_registry, self.runtime.readiness
        self.redis, self.persistence = self.runtime.redis, self.runtime.persistence
        self.metrics = CollectorMetrics(self.metrics_registry)
        spool = Spool(Path(settings.spool_dir), settings.spool_max_mb * 1024 * 1024)
        self.metrics.spool_max_bytes.set(spool.max_bytes)
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
        self.dialer = Dialer(settings, token, self.metrics)
        self.registries = Registries(self.ha_registry, self.known, self.metrics, settings.command_timeout_s)
        self.backfill = Backfill(settings, self.metrics, self.gap, self.known, self.ha_registry,
                                 self._publish_backfilled, self._ha_now_ns, self.dialer.recorder_connection)
        self.metrics.gap_open.set_function(
            lambda: float(settings.backfill and (self.gap.pending_start_ns is not None or not self.gap.resume_known)))
        self.point_times = PointTimes()
        self._offered = 0
        self._auth_failures = 0
        self._unsubscribed_since: float | None = None
        self.sessions = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, read and publish until `stop`; then publish (or spool) what is buffered and exit."""
        unpublished = 0
        async with self.runtime.serving("collector_stopped",
                                        lambda: {"unpublished": unpublished, "spooled": self.publisher.pending}):
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

    async def _watch_redis(self) -> None:
        """Readiness needs Redis even while no event flows: PING it now and then. The first answer tells
        where the last run left off (however long Redis takes to come); after that, save the watermark, and see
        that Redis still holds what it acknowledged (else learn again where we left off)."""
        while True:
            try:
                await self._measure_redis_clock()
                self.readiness.ok(READY_REDIS)
                await self.persistence.check(self.redis)  # until it holds, the publisher keeps events on disk
                if self.backfill.resumed.is_set():
                    await self.publisher.check_tail_now()
                if not self.backfill.resumed.is_set():
                    await self.resume.read(self._first_live_ns)
                    await self.known.load()
                    self.backfill.resumed.set()
                    self.backfill.gap_opened.set()
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
        self.backfill.resumed.clear()

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

    async def _session(self, stop: asyncio.Event) -> None:
        """One HA session: connect, log in, then read, set up and watch for a stop, all in one task group."""
        async with aiohttp.ClientSession() as http:
            ws = await unless_stopped(stop, self.dialer.open(http))
            async with ws:
                conn, version = await unless_stopped(stop, self.dialer.login(ws))
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
        await self.registries.load_all(conn)
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
        tasks.create_task(self.registries.refresh(conn), name="ha-registries")
        if s.backfill:
            tasks.create_task(self.backfill.run(conn), name="ha-backfill")

    async def _heartbeat(self, conn: HAConnection) -> None:
        while True:
            await asyncio.sleep(self.settings.ping_interval_s)
            await conn.ping(self.settings.ping_timeout_s)

    async def _publish_backfilled(self, event: NormalisedEvent) -> bool:
        """Offer a backfilled state as a live one is offered (filtered, counted); False when the filter left it out."""
        if not self._passes_filter(event):
            return False
        self._offered += 1
        await self.publisher.put(encode_event(event))
        return True

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
            self.registries.changed(event.event_type)
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
