"""`collector run`: the supervisor loop around one HA session at a time, the events it turns into stream entries,
and the publisher, the Redis watch, the registries and the backfill beside it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Final

import msgspec
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from homeiq.collector.backfill import Backfill
from homeiq.collector.clock import BACK_STEP_NS, Finding, HaClock
from homeiq.collector.dialer import Dialer
from homeiq.collector.gap import GapTracker
from homeiq.collector.metrics import CollectorMetrics
from homeiq.collector.normalise import PointTimes, event_of
from homeiq.collector.publisher import Publisher
from homeiq.collector.registries import Registries
from homeiq.collector.resume import FirstRun, KnownEntities, ResumePoint, SavedRegistryIds
from homeiq.collector.session import READY_HA, HaSessions
from homeiq.collector.settings import CollectorSettings
from homeiq.collector.spool import Spool
from homeiq.collector.state_dir import StateDirLock, collector_id
from homeiq.collector.unrecoverable import encoded
from homeiq.shared.entity_filter import EntityRules
from homeiq.shared.events import NormalisedEvent
from homeiq.shared.ha import frames
from homeiq.shared.ha.client import ReadPacing
from homeiq.shared.ha.registry import Registry
from homeiq.shared.health import READY_REDIS, Readiness
from homeiq.shared.logs import Log
from homeiq.shared.runtime import ServiceRuntime
from homeiq.shared.stream import describe_redis_error

log = Log(__name__)

SKEW_CARRIED_NS: Final = 10**9  # HA's clock this far off ours: live events carry the skew, for honest latency

DRAIN_TIMEOUT_S = 5.0
REDIS_CHECK_S = 2.0


class Collector:
    """HA sessions one at a time (`ha`), the events they bring turned into stream entries (`_on_event`), the
    publisher and its spool, the Redis watch, the registries and the backfill."""

    def __init__(self, settings: CollectorSettings, token: str, entity_filter: EntityRules | None = None,
                 metrics_registry: CollectorRegistry | None = None) -> None:
        self.settings, self._filter = settings, entity_filter
        self.runtime = ServiceRuntime(log, settings, Readiness(READY_HA, READY_REDIS), metrics_registry,
                                      disks={"spool": settings.spool_dir})
        self.metrics_registry, self.readiness = self.runtime.metrics_registry, self.runtime.readiness
        self.redis, self.persistence = self.runtime.redis, self.runtime.persistence
        self.metrics = CollectorMetrics(self.metrics_registry)
        self._state_lock = StateDirLock(Path(settings.spool_dir))  # a ConfigError when another collector has it
        try:  # what reads the directory comes after the lock; a failure here must not keep it
            spool = Spool(Path(settings.spool_dir), settings.spool_max_mb * 1024 * 1024)
            identity = collector_id(Path(settings.spool_dir))
        except BaseException:
            self._state_lock.release()
            raise
        self.metrics.spool_max_bytes.set(spool.max_bytes)
        # HA's socket is read in bursts a linger apart while events trickle in (a wakeup per burst, not per event);
        # each burst is one batch.
        self.read_pacing = ReadPacing(settings.linger_ms / 1000)
        self.publisher = Publisher(self.redis, self.runtime.redis_place, settings.names, self.metrics,
                                   self.readiness, spool, settings.spool_policy, settings.buffer_events,
                                   settings.publish_batch, settings.linger_ms / 1000,
                                   durable=lambda: self.persistence.ok, forgotten=self._redis_forgot,
                                   replicas=(settings.wait_replicas, settings.wait_timeout_ms),
                                   dedup_window_s=settings.dedup_window_s, events_per_entry=settings.events_per_entry,
                                   collector_id=identity, read_resting=self.read_pacing.resting)
        self.ha_registry = Registry()
        self.gap = GapTracker()
        self.ha_clock = HaClock(self._clock_finding)
        self.metrics.ha_clock_offset.set_function(lambda: (self.ha_clock.offset_ns or 0) / 1e9)
        self.metrics.ha_clock_skew.set_function(lambda: (self.ha_clock.offset_ns or 0) / 1e9)
        self._first_live_ns = 0  # the first trusted live state of this process: the oldest time it can vouch for
        self.first_run = FirstRun(self.redis, settings.names, Path(settings.spool_dir))
        self.resume = ResumePoint(self.redis, settings.names, self.gap, settings.backfill,
                                  self.publisher.held_states)
        self.known = KnownEntities(self.redis, settings.names.collector_entities)
        self.registry_ids = SavedRegistryIds(self.redis, settings.names.collector_registry_ids)
        self.dialer = Dialer(settings, token, self.metrics, self._saw_ha_certificate)
        self.registries = Registries(self.ha_registry, self.known, self.metrics, settings.command_timeout_s,
                                     self.gap.renamed)
        self.backfill = Backfill(settings, self.metrics, self.gap, self.known, self.ha_registry,
                                 self._publish_backfilled, self._ha_now_ns, self.dialer.recorder_connection)
        self.metrics.gap_open.set_function(
            lambda: float(settings.backfill and (self.gap.pending_start_ns is not None or not self.gap.resume_known)))
        self.point_times = PointTimes()
        self._offered = 0
        self._removed: dict[str, int] = {}  # removed live → how many events were offered up to its removal
        caches = {"enrichment": self.ha_registry.cached, "known_entities": lambda: len(self.known.ids),
                  "gap_seen": lambda: len(self.gap.seen), "gap_probes": lambda: len(self.gap.probes),
                  "point_times": lambda: len(self.point_times)}
        for cache, size in caches.items():
            self.metrics.cache_entries.labels(cache).set_function(size)
        self.ha = HaSessions(settings, self.metrics, self.readiness, self.dialer, self.registries, self.backfill,
                             self.gap, lambda: self.resume.tail_or_read(self.publisher.tail_id), self._on_event,
                             self.publisher.unbound, self.read_pacing)

    @property
    def sessions(self) -> int:
        """HA sessions begun so far."""
        return self.ha.sessions

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, read and publish until `stop`; then publish (or spool) what is buffered and exit."""
        try:
            await self._run(stop)
        finally:
            self._state_lock.release()

    async def _run(self, stop: asyncio.Event) -> None:
        unpublished = 0
        async with self.runtime.serving("collector_stopped",
                                        lambda: {"unpublished": unpublished, "spooled": self.publisher.pending}):
            try:
                # One tree: a failure of any task (the publisher's, the Redis watch's) ends the others and
                # surfaces here, instead of a reader filling a buffer that nobody empties.
                async with asyncio.TaskGroup() as tasks:
                    publishing = tasks.create_task(self.publisher.run(), name="publisher")
                    watching = tasks.create_task(self._watch_redis(), name="redis-watch")
                    await self.ha.supervise(stop)
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
                    await self._save_known()  # before the watermark, as in `_watch_redis`
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
                    await self.first_run.mark(self._first_live_ns)
                    await self.resume.read(self._first_live_ns)
                    await self.known.load()
                    self.registries.saved(await self.registry_ids.load())
                    self.backfill.resumed.set()
                    self.backfill.gap_opened.set()
                # The entities first: a watermark past a state of an entity no run would ask the recorder for loses
                # that entity's states of a later gap it is removed in.
                await self._save_known()
                await self.resume.save(self._offered, self.publisher.settled, self.publisher.tail_id)
                await self.first_run.saw_live(self._first_live_ns)
            except (RedisError, OSError) as exc:
                self.readiness.fail(READY_REDIS, describe_redis_error(self.runtime.redis_place, exc))
            if self.resume.saved:
                await asyncio.sleep(REDIS_CHECK_S)
            else:  # a first run: save as soon as its first events are durable (Redis may be gone in 2 s)
                await self.publisher.progressed(REDIS_CHECK_S)

    async def _save_known(self) -> None:
        """Save the known entities, without those removed live whose removal, and so every event of theirs before
        it, is durable: until then a crash loses their last states, and the next run's backfill must still ask the
        recorder for them."""
        settled = self.publisher.settled
        durable = {entity_id for entity_id, offered in self._removed.items() if offered <= settled}
        if durable:
            self.known.forget(durable)
            for entity_id in durable:
                del self._removed[entity_id]
        await self.known.save()
        # Not while a gap is open: a restart reads back states published under ids the registry no longer has, and
        # must still see those renames.
        if not self.gap.open and (registry := self.registries.ids()) is not None:
            await self.registry_ids.save(registry)

    async def _measure_redis_clock(self) -> None:
        """PING by TIME: Redis's clock minus ours (stream ids carry Redis's, state times HA's)."""
        before_ns = time.time_ns()
        seconds, microseconds = await self.redis.time()
        after_ns = time.time_ns()
        self.metrics.redis_clock_offset.set((seconds * 10**9 + microseconds * 1000 - (before_ns + after_ns) // 2) / 1e9)

    def _saw_ha_certificate(self, expiry_s: float) -> None:
        """HA's wss:// certificate expires at `expiry_s` (no sample before one is seen: ws:// has none)."""
        self.metrics.tls_cert_expiry.labels("home_assistant").set(expiry_s)

    def _ha_now_ns(self) -> int:
        """Now on HA's clock, as far as its states tell."""
        return time.time_ns() + (self.ha_clock.offset_ns or 0)

    def _redis_forgot(self, kept: bytes | None) -> None:
        """Redis lost our entries after `kept`: learn again, as a restart does, where we left off (the gap from
        there is backfilled, no later than where our losses start); meanwhile every state published is remembered,
        so none is published twice."""
        self.resume.forgot(kept)
        self.known.remember_gone()
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
            if finding == "step_back" and amount < 0:
                self.gap.stepped_back(-amount + BACK_STEP_NS)

    async def _publish_backfilled(self, event: NormalisedEvent) -> bool:
        """Offer a backfilled state as a live one is offered (filtered, counted); False when the filter left it out."""
        if not self._passes_filter(event):
            return False
        self._offered += 1
        await self.publisher.put(encoded(event))
        return True

    def _passes_filter(self, event: NormalisedEvent) -> bool:
        if self._filter is None or self._filter.allows(event):
            return True
        self.metrics.filtered.inc()
        return False

    def _renamed(self, data: bytes) -> None:
        """An entity's id changed while a gap is open: HA's recorder gives its history back under the new id, so
        the states that arrived live under the old one must be known under the new one too, or the backfill
        publishes them a second time."""
        with contextlib.suppress(msgspec.DecodeError):
            change = msgspec.json.decode(data)
            if isinstance(change, dict) and change.get("action") == "update":
                old, new = change.get("old_entity_id"), change.get("entity_id")
                if isinstance(old, str) and isinstance(new, str) and old != new:
                    self.gap.renamed(old, new)

    def _on_event(self, frame: frames.EventFrame | frames.StateEventFrame) -> Awaitable[None] | None:
        """Normalise, filter and buffer one event; returns an awaitable only when the buffer is full."""
        try:
            event = event_of(frame, self.ha_registry)
        except (msgspec.DecodeError, ValueError, TypeError, OverflowError) as exc:  # no frame may end the reader
            self.metrics.dropped.labels("malformed_event").inc()
            sample = msgspec.json.encode(frame.event) if isinstance(frame, frames.StateEventFrame) else frame.event
            self.metrics.log_sampled("malformed_event", "event dropped: cannot be normalised",
                                     error=f"{type(exc).__name__}: {exc}"[:200],
                                     sample=bytes(sample)[:200].decode(errors="replace"))
            return None
        if not isinstance(frame, frames.StateEventFrame):
            self.registries.changed(event.event_type)
            if event.event_type == "entity_registry_updated" and self.gap.open:
                self._renamed(bytes(event.data))
        entity_id = event.entity_id
        trusted = False
        if entity_id is not None:
            if event.new_state is not None:
                # HA's clock is judged by every state, kept by our filter or not (a gap's check of it too).
                trusted = self.ha_clock.trust(event.time_ns, time.time_ns())
                if trusted and self.gap.clock_unchecked and self.gap.clock_shown(self.ha_clock.shortfall_ns):
                    self.known.remember_gone()  # the reopened gap may hold the last states of those forgotten
                    self.backfill.gap_opened.set()  # HA's clock went back during a gap backfilled already
                if entity_id not in self.known.ids:
                    self.known.saw(entity_id)
                if self._removed:
                    self._removed.pop(entity_id, None)  # back before it was forgotten
                if self.known.doubted:
                    self.known.alive(entity_id)  # back while a backfill takes it for removed
                self.gap.probe(entity_id, event.time_ns)
            elif event.event_type == "state_changed" and not (self.settings.backfill and self.gap.open):
                # Removed, and its last moments arrived live: forgotten once they are durable (`_save_known`).
                # With a gap open, some of them may still be only in the recorder: the backfill asks for every known
                # entity and forgets the removed ones once done.
                self._removed[entity_id] = self._offered + 1
        if self._filter is not None and not self._passes_filter(event):
            return None
        if event.new_state is not None and entity_id is not None:
            if trusted:
                self.gap.live(entity_id, event.time_ns)
                self._first_live_ns = self._first_live_ns or event.time_ns
            else:
                self.gap.untrusted(entity_id, event.time_ns)
        else:
            event = self.point_times.unique(event)
        skew_ns = self.ha_clock.offset_ns or 0
        if abs(skew_ns) >= SKEW_CARRIED_NS:
            event = msgspec.structs.replace(event, ha_clock_skew_ns=skew_ns)
        payload = encoded(event)
        self._offered += 1
        return None if self.publisher.offer(payload) else self.publisher.put(payload)
