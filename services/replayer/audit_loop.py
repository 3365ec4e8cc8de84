"""The replayer daemon's periodic audit (off by default): each run covers the last interval and a margin,
ending a little before now (what is still on its way is not missing), and exports what it found."""

from __future__ import annotations

import asyncio
import time
from typing import Final

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.exceptions import RedisError

from homeiq_collector.entity_filter import EntityRules
from homeiq_replayer.audit import audit, repair
from homeiq_replayer.ha_reader import HAReadError, ha_session
from homeiq_replayer.influx_reader import InfluxReader, InfluxReadError
from homeiq_replayer.settings import AuditSettings
from homeiq_shared.lifecycle import wait_or_stop
from homeiq_shared.logs import Log
from homeiq_shared.stream import StreamNames

log = Log(__name__)

MARGIN_S: Final = 600.0  # windows overlap: a run that started late still covers what the last one did not


class PeriodicAudit:
    """Audits every `interval_s`; gauges say what the last completed audit found, and when it completed."""

    def __init__(self, settings: AuditSettings, token: str, reader: InfluxReader, client: aioredis.Redis,
                 names: StreamNames, rules: EntityRules | None, registry: CollectorRegistry) -> None:
        self.settings, self._token, self._reader = settings, token, reader
        self._redis, self._names, self._rules = client, names, rules
        self.missing = Gauge("homeiq_audit_missing_points", "States HA's recorder has that InfluxDB lacks (last "
                             "completed audit).", registry=registry)
        self.extra = Gauge("homeiq_audit_extra_points", "Points InfluxDB has that HA's recorder does not (last "
                           "completed audit).", registry=registry)
        self.wrong = Gauge("homeiq_audit_wrong_points", "Points whose state differs from HA's (last completed "
                           "audit).", registry=registry)
        self.completed = Gauge("homeiq_audit_last_complete_timestamp_seconds", "When the last audit ran to its "
                               "end (Unix time; 0 before the first).", registry=registry)
        self.interval = Gauge("homeiq_audit_interval_seconds", "How often the audit runs (0: off).",
                              registry=registry)
        self.repaired = Counter("homeiq_audit_repaired_total", "Missing states published again by the audit.",
                                registry=registry)
        self.interval.set(settings.interval_s)

    async def run(self, stop: asyncio.Event) -> None:
        """Audit now, then every interval, until `stop`."""
        while not stop.is_set():
            await self.once()
            await wait_or_stop(stop, self.settings.interval_s)

    async def once(self) -> None:
        """One audit; a failure is logged (the staleness of `completed` is what alerts)."""
        s = self.settings
        until_ns = time.time_ns() - int(s.settle_s * 1e9)
        since_ns = until_ns - int((s.interval_s + MARGIN_S) * 1e9)
        try:
            async with ha_session(s.ha_url, self._token, s.timeout_s, s.concurrency) as ha:
                report = await audit(ha, self._reader, since_ns, until_ns, None, self._rules)
                repaired = await repair(ha, self._redis, self._names, report) if s.repair and not report.complete else 0
        except (HAReadError, InfluxReadError, RedisError, OSError) as exc:
            log.warning("audit_failed", error=str(exc)[:300])
            return
        self.missing.set(report.total("missing"))
        self.extra.set(report.total("extra"))
        self.wrong.set(report.total("wrong"))
        self.repaired.inc(repaired)
        self.completed.set(time.time())
        log.info("audit_done", entities=len(report.entities), states=report.total("in_ha"),
                 missing=report.total("missing"), extra=report.total("extra"), wrong=report.total("wrong"),
                 repaired=repaired)
