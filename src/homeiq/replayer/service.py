"""`replayer run`: periodic reclaim passes; safe to run twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Final

from prometheus_client import CollectorRegistry, Counter
from redis.exceptions import RedisError

from homeiq.replayer.audit_loop import PeriodicAudit
from homeiq.replayer.crashes import CrashLedger
from homeiq.replayer.operations import prune_consumers, trim
from homeiq.replayer.reclaim import reclaim_pass
from homeiq.replayer.settings import ReplayerSettings
from homeiq.replayer.stream_metrics import StreamMetrics
from homeiq.shared.backoff import Backoff
from homeiq.shared.entity_filter import PatternFilter
from homeiq.shared.ha.settings import read_ha_token
from homeiq.shared.health import READY_REDIS, Readiness
from homeiq.shared.influx.batch import READY_INFLUX, batch_writer_for
from homeiq.shared.influx.metrics import WriterMetrics
from homeiq.shared.influx.reader import reader_for
from homeiq.shared.lifecycle import wait_or_stop
from homeiq.shared.logs import Log
from homeiq.shared.packing import DEFAULT_EVENTS_PER_ENTRY
from homeiq.shared.runtime import ServiceRuntime
from homeiq.shared.stream import ensure_group

log = Log(__name__)

BUSY_TRIM_S: Final = 1.0
BUSY_EVENTS_PER_S: Final = 1_000
# What trimming counts is entries: at such rates the collector's batches fill theirs (a home's, one entry at most
# every COLLECTOR_LINGER_MS, ~5.5 a second, stay far below). Entries of one event (COLLECTOR_EVENTS_PER_ENTRY=1)
# are busy from ~16 events a second: a trim a second, which costs about nothing.
BUSY_ENTRIES_PER_S: Final = BUSY_EVENTS_PER_S / DEFAULT_EVENTS_PER_ENTRY
BUSY_GRACE_S: Final = 5.0


class TrimCadence:
    """When the daemon trims again: every second while the stream is acked at `BUSY_EVENTS_PER_S` or more, else
    every interval. Redis copies what the stream holds at each AOF rewrite (every few seconds at such rates: its
    AOF grows 64 MB): trimmed every second instead of every 10, redis-server took 20-24 % less CPU an event at
    5,000-10,000/s, and with this cadence 9-13 % less over 30-s steps, each begun at the interval
    (`pipeline_bench.py`, 2026-12-05); a home's few a second gain nothing from it. A busy
    stream stays busy for `BUSY_GRACE_S` after a pass that found it so: a pass can cut nothing although entries
    flow, because the collector's resume id, below which entries stay, moves every 2 s."""

    def __init__(self, interval_s: float, now: float) -> None:
        self._interval_s, self._last, self._busy_until = interval_s, now, now

    def next_in_s(self, removed: int, now: float) -> float:
        """After a pass at `now` (monotonic s) that trimmed `removed` entries."""
        since_s, self._last = now - self._last, now
        if removed >= BUSY_ENTRIES_PER_S * max(since_s, BUSY_TRIM_S):
            self._busy_until = now + BUSY_GRACE_S
        return min(BUSY_TRIM_S, self._interval_s) if now < self._busy_until else self._interval_s


class Replayer:
    """Reclaims entries idle longer than `min_idle_ms` and writes them like a writer would."""

    def __init__(self, settings: ReplayerSettings, metrics_registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.runtime = ServiceRuntime(log, settings, Readiness(READY_REDIS), metrics_registry)
        self.metrics_registry, self.readiness = self.runtime.metrics_registry, self.runtime.readiness
        self.redis, self.persistence = self.runtime.redis, self.runtime.persistence
        self.metrics = WriterMetrics(self.metrics_registry)
        self.reclaimed = Counter("homeiq_reclaimed_total", "Entries reclaimed from idle consumers.",
                                 registry=self.metrics_registry)
        self.stream_metrics = StreamMetrics(self.metrics_registry)

        # The replayer's readiness does not depend on InfluxDB; its write failures show in the metrics.
        self.batches = batch_writer_for(settings.influx, self.redis, settings.names, settings.reclaim.consumer,
                                        self.metrics, Readiness(READY_INFLUX))
        self.sink = self.batches.sink
        self.trim_cadence = TrimCadence(settings.interval_s, time.monotonic())
        self.ledger = CrashLedger(self.redis, settings.names, settings.reclaim.consumer, settings.reclaim.max_crashes)
        self.audit: PeriodicAudit | None = None
        if settings.audit.interval_s:
            rules = PatternFilter.from_settings(settings.audit.entity_filter, settings.audit.entity_filter_file,
                                               settings.influx.config)
            self.audit = PeriodicAudit(settings.audit, read_ha_token(), reader_for(settings.influx),
                                       self.redis, settings.names, rules, self.metrics_registry)

    async def run(self, stop: asyncio.Event) -> None:
        """Reclaim, and refresh the stream gauges, every `interval_s` until `stop`. Two loops: the gauges
        alerts read stay fresh while a reclaimed batch waits for InfluxDB."""
        s = self.settings
        async with self.runtime.serving("replayer_stopped"):
            log.info("replayer_started", consumer=s.reclaim.consumer, min_idle_ms=s.reclaim.min_idle_ms,
                     interval_s=s.interval_s)
            try:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._repeat(stop, "reclaim", self._reclaim))
                    tasks.create_task(self._repeat(stop, "stream_metrics", self._refresh_stream_metrics))
                    if s.trim:
                        tasks.create_task(self._repeat(stop, "trim", self._trim))
                    if self.audit is not None:
                        tasks.create_task(self.audit.run(stop), name="audit")
            finally:
                await self.sink.close()
                if self.audit is not None:
                    await self.audit.close()

    async def _reclaim(self, stop: asyncio.Event) -> None:
        s = self.settings
        await ensure_group(self.redis, s.names)
        options = s.reclaim
        try:
            summary = await reclaim_pass(self.redis, s.names, options.consumer, self.batches, options.min_idle_ms,
                                         options.count, stop, options.max_deliveries, ledger=self.ledger)
        finally:
            # The parts of each entity a pass met serve that pass's next entries; kept, they would grow with
            # every outage until every entity of the home was held (a soak: 3,000-6,500 live blocks a restart).
            self.batches.encoder.forget()
        self.reclaimed.inc(summary.reclaimed)
        await prune_consumers(self.redis, s.names, s.prune_idle_s)

    async def _trim(self, _stop: asyncio.Event) -> float:
        """Trim what every group has acked; the next pass in a second when this one removed a busy stream's worth,
        else after the interval."""
        _, removed = await trim(self.redis, self.settings.names)
        return self.trim_cadence.next_in_s(removed, time.monotonic())

    async def _refresh_stream_metrics(self, _stop: asyncio.Event) -> None:
        await self.stream_metrics.refresh(self.redis, self.settings.names)
        await self.persistence.check(self.redis)

    async def _repeat(self, stop: asyncio.Event, task: str,
                      action: Callable[[asyncio.Event], Awaitable[float | None]]) -> None:
        """`action` every `interval_s` (or after the pause it returns) until `stop`; while Redis fails, not ready
        and back off."""
        backoff = Backoff(base_s=0.5, cap_s=15.0)
        while not stop.is_set():
            try:
                pause_s = await action(stop)
                self.readiness.ok(READY_REDIS)
                backoff.reset()
                delay_s = self.settings.interval_s if pause_s is None else pause_s
            except (RedisError, OSError) as exc:
                delay_s = self.runtime.redis_failed(exc, backoff, task=task)
            await wait_or_stop(stop, delay_s)
