"""`replayer run`: periodic reclaim passes; safe to run twice."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

import msgspec
from prometheus_client import CollectorRegistry, Counter
from redis.exceptions import RedisError

from homeiq_collector.entity_filter import EntityFilter
from homeiq_replayer.audit_loop import AuditSettings, PeriodicAudit
from homeiq_replayer.crashes import CrashLedger
from homeiq_replayer.influx_reader import reader_for
from homeiq_replayer.operations import prune_consumers, trim
from homeiq_replayer.reclaim import reclaim_pass
from homeiq_replayer.stream_metrics import StreamMetrics
from homeiq_shared.backoff import Backoff
from homeiq_shared.broker import PersistenceCheck
from homeiq_shared.health import READY_REDIS, HealthServer, Readiness, counters
from homeiq_shared.lifecycle import wait_or_stop
from homeiq_shared.logs import Log
from homeiq_shared.settings import ConfigError, check_positive, check_url, read_secret
from homeiq_shared.stream import StreamNames, connect, describe_redis_error, ensure_group
from homeiq_writer.batch import READY_INFLUX, BatchWriter
from homeiq_writer.metrics import WriterMetrics
from homeiq_writer.settings import InfluxSettings

log = Log(__name__)



class ReplayerSettings(msgspec.Struct, frozen=True):
    """Everything `replayer run` needs."""

    redis_url: str
    names: StreamNames
    influx: InfluxSettings
    consumer: str = "replayer"
    min_idle_ms: int = 60_000
    interval_s: float = 10.0
    count: int = 500
    max_deliveries: int = 10
    max_crashes: int = 2
    trim: bool = True
    prune_idle_s: float = 86_400.0
    metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped from other containers
    metrics_port: int = 8003
    require_aof: bool = True
    audit: AuditSettings = AuditSettings()

    def validate(self) -> ReplayerSettings:
        """Raise ConfigError naming the variable that is wrong."""
        check_url("REDIS_URL", self.redis_url, ("redis", "rediss", "unix"))
        check_positive("REPLAYER_MIN_IDLE_MS", self.min_idle_ms)
        check_positive("REPLAYER_INTERVAL_S", self.interval_s)
        check_positive("REPLAYER_MAX_DELIVERIES", self.max_deliveries)
        check_positive("REPLAYER_MAX_CRASHES", self.max_crashes)
        check_positive("REPLAYER_PRUNE_IDLE_S", self.prune_idle_s)
        if not 1 <= self.count <= 5000:
            raise ConfigError(f"REPLAYER_COUNT: must be between 1 and 5000, got {self.count}")
        self.influx.validate()
        self.audit.validate()
        return self


class Replayer:
    """Reclaims entries idle longer than `min_idle_ms` and writes them like a writer would."""

    def __init__(self, settings: ReplayerSettings, metrics_registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.metrics_registry = metrics_registry or CollectorRegistry()
        self.metrics = WriterMetrics(self.metrics_registry)
        self.reclaimed = Counter("homeiq_reclaimed_total", "Entries reclaimed from idle consumers.",
                                 registry=self.metrics_registry)
        self.stream_metrics = StreamMetrics(self.metrics_registry)
        self.readiness = Readiness(READY_REDIS)
        self.redis = connect(settings.redis_url)
        self.sink = settings.influx.make_sink()
        # The replayer's readiness does not depend on InfluxDB; its write failures show in the metrics.
        self.batches = BatchWriter(self.redis, settings.names, self.sink, self.metrics,
                                   Readiness(READY_INFLUX), settings.consumer, encoder=settings.influx.make_encoder())
        self.persistence = PersistenceCheck(settings.redis_url, settings.require_aof, self.readiness,
                                            self.metrics_registry)
        self.ledger = CrashLedger(self.redis, settings.names, settings.consumer, settings.max_crashes)
        self.audit: PeriodicAudit | None = None
        if settings.audit.interval_s:
            rules = EntityFilter.from_settings(os.environ.get("ENTITY_FILTER_CONFIG", ""),
                                               os.environ.get("ENTITY_FILTER_CONFIG_FILE", ""), settings.influx.config)
            self.audit = PeriodicAudit(settings.audit, read_secret("HA_TOKEN"), reader_for(settings.influx),
                                       self.redis, settings.names, rules, self.metrics_registry)
        self.health = HealthServer(self.metrics_registry, self.readiness, settings.metrics_host, settings.metrics_port)

    async def run(self, stop: asyncio.Event) -> None:
        """Reclaim, and refresh the stream gauges, every `interval_s` until `stop`. Two loops: the gauges
        alerts read stay fresh while a reclaimed batch waits for InfluxDB."""
        await self.health.start()
        s = self.settings
        log.info("replayer_started", consumer=s.consumer, min_idle_ms=s.min_idle_ms, interval_s=s.interval_s)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._repeat(stop, "reclaim", self._reclaim))
                tasks.create_task(self._repeat(stop, "stream_metrics", self._refresh_stream_metrics))
                if self.audit is not None:
                    tasks.create_task(self.audit.run(stop), name="audit")
        finally:
            await self.sink.close()
            await self.redis.aclose()
            await self.health.stop()
            log.info("replayer_stopped", counters=counters(self.metrics_registry))

    async def _reclaim(self, stop: asyncio.Event) -> None:
        s = self.settings
        await ensure_group(self.redis, s.names)
        summary = await reclaim_pass(self.redis, s.names, s.consumer, self.batches, s.min_idle_ms, s.count, stop,
                                     s.max_deliveries, ledger=self.ledger)
        self.reclaimed.inc(summary.reclaimed)
        if s.trim:
            await trim(self.redis, s.names)
        await prune_consumers(self.redis, s.names, s.prune_idle_s)

    async def _refresh_stream_metrics(self, _stop: asyncio.Event) -> None:
        await self.stream_metrics.refresh(self.redis, self.settings.names)
        await self.persistence.check(self.redis)

    async def _repeat(self, stop: asyncio.Event, task: str,
                      action: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        """`action` every `interval_s` until `stop`; while Redis fails, not ready and back off."""
        backoff = Backoff(base_s=0.5, cap_s=15.0)
        while not stop.is_set():
            try:
                await action(stop)
                self.readiness.ok(READY_REDIS)
                backoff.reset()
                delay_s = self.settings.interval_s
            except (RedisError, OSError) as exc:
                message = describe_redis_error(self.settings.redis_url, exc)
                self.readiness.fail(READY_REDIS, message)
                delay_s = backoff.next_delay_s()
                log.warning("redis_unavailable", task=task, error=message, retry_in_s=round(delay_s, 2))
            await wait_or_stop(stop, delay_s)
