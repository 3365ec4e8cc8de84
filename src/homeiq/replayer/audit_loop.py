"""The replayer daemon's periodic audit (off by default): each run covers the last interval and a margin,
ending a little before now (what is still on its way is not missing), and exports what it found."""

from __future__ import annotations

import asyncio
import time
import traceback
from typing import Final

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.exceptions import RedisError

from homeiq.replayer.audit import AuditReport, audit, record, repair
from homeiq.replayer.settings import AuditSettings
from homeiq.shared.entity_filter import EntityRules
from homeiq.shared.ha.reader import HAReadError, ha_session
from homeiq.shared.influx.reader import InfluxReader, InfluxReadError
from homeiq.shared.lifecycle import wait_or_stop
from homeiq.shared.logs import Log
from homeiq.shared.stream import StreamNames

log = Log(__name__)

MARGIN_S: Final = 600.0  # windows overlap: a run that started late still covers what the last one did not
OUTCOMES: Final = ("complete", "differs", "failed", "crashed")
# What HA, InfluxDB or Redis can do to an audit; anything else is an error of ours (`crashed`).
SERVICE_FAILURES: Final = (HAReadError, InfluxReadError, RedisError, OSError)


class PeriodicAudit:
    """Audits every `interval_s`; gauges say what the last completed audit found, and when it completed."""

    def __init__(self, settings: AuditSettings, token: str, reader: InfluxReader, client: aioredis.Redis,
                 names: StreamNames, rules: EntityRules | None, registry: CollectorRegistry) -> None:
        self.settings, self._token, self._reader = settings, token, reader
        self._tls = settings.tls()  # built once: loading a CA file per audit is wasted work
        self._redis, self._names, self._rules = client, names, rules
        self.missing = Gauge("homeiq_audit_missing_points", "States HA's recorder has that InfluxDB lacks (last "
                             "completed audit).", registry=registry)
        self.extra = Gauge("homeiq_audit_extra_points", "Points InfluxDB has that HA's recorder does not (last "
                           "completed audit).", registry=registry)
        self.wrong = Gauge("homeiq_audit_wrong_points", "Points whose state differs from HA's (last completed "
                           "audit).", registry=registry)
        self.collapsed = Gauge("homeiq_audit_collapsed_states", "States HA's recorder has that a later state of the "
                               "same entity overwrote in InfluxDB, within the schema's precision (last completed "
                               "audit); not missing.", registry=registry)
        self.completed = Gauge("homeiq_audit_last_complete_timestamp_seconds", "When the last audit ran to its "
                               "end (Unix time; 0 before the first).", registry=registry)
        self.interval = Gauge("homeiq_audit_interval_seconds", "How often the audit runs (0: off).",
                              registry=registry)
        self.repaired = Counter("homeiq_audit_repaired_total", "Missing states published again by the audit.",
                                registry=registry)
        self.runs = Counter("homeiq_audit_runs_total", "Periodic audits by outcome: complete, differs, failed (HA, "
                            "InfluxDB or Redis failed: log audit_failed), crashed (an error of ours: log "
                            "audit_crashed, with the traceback).", ["outcome"], registry=registry)
        self.failed_at = Gauge("homeiq_audit_last_failure_timestamp_seconds", "When an audit last failed or "
                               "crashed (Unix time; 0 before the first).", registry=registry)
        for outcome in OUTCOMES:
            self.runs.labels(outcome)
        self.interval.set(settings.interval_s)

    async def run(self, stop: asyncio.Event) -> None:
        """Audit now, then every interval, until `stop`."""
        while not stop.is_set():
            await self.once()
            await wait_or_stop(stop, self.settings.interval_s)

    async def close(self) -> None:
        """Close the InfluxDB reader's connections."""
        await self._reader.close()

    async def once(self) -> None:
        """One audit. A failure is logged once and counted, and never ends the daemon: reclaim, trim and the
        stream gauges run beside it, and matter more than one audit."""
        try:
            report, repaired = await self._audit()
        except SERVICE_FAILURES as exc:
            self._failed("failed")
            log.warning("audit_failed", error=self._scrubbed(str(exc))[:300])
            return
        except Exception as exc:  # a bug of ours must show, but not stop reclaim and trim
            self._failed("crashed")
            # The traceback as a field, token removed: exc_info would log it as it is.
            log.error("audit_crashed",  # noqa: TRY400 error=self._scrubbed(f"{type(exc).__name__}: {exc}")[:300],
                      traceback=self._scrubbed("".join(traceback.format_exception(exc))))
            return
        self._completed(report, repaired)

    async def _audit(self) -> tuple[AuditReport, int]:
        """Audit the last interval (and the margin), ending `settle_s` before now; repair when asked."""
        s = self.settings
        until_ns = time.time_ns() - int(s.settle_s * 1e9)
        since_ns = until_ns - int((s.interval_s + MARGIN_S) * 1e9)
        async with ha_session(s.ha_url, self._token, s.timeout_s, s.concurrency, self._tls) as ha:
            report = await audit(ha, self._reader, since_ns, until_ns, None, self._rules, None, self._redis,
                                 self._names)
            repaired = await repair(ha, self._redis, self._names, report) if s.repair and report.total("missing") else 0
        await record(self._redis, self._names, report, "periodic audit")
        return report, repaired

    def _scrubbed(self, text: str) -> str:
        """`text` without the HA token: an exception's message or traceback may quote anything."""
        return text.replace(self._token, "***") if self._token else text

    def _failed(self, outcome: str) -> None:
        self.runs.labels(outcome).inc()
        self.failed_at.set(time.time())

    def _completed(self, report: AuditReport, repaired: int) -> None:
        self.missing.set(report.total("missing"))
        self.extra.set(report.total("extra"))
        self.wrong.set(report.total("wrong"))
        self.collapsed.set(report.total("collapsed"))
        self.repaired.inc(repaired)
        self.runs.labels("complete" if report.complete else "differs").inc()
        self.completed.set(time.time())
        log.info("audit_done", entities=len(report.entities), states=report.total("in_ha"),
                 missing=report.total("missing"), queued=report.total("queued"), extra=report.total("extra"),
                 wrong=report.total("wrong"), collapsed=report.total("collapsed"), repaired=repaired)
