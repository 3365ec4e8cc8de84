"""The one health-and-metrics HTTP server every process runs: /metrics, /healthz, /readyz."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from homeiq.shared.logs import Log

log = Log(__name__)

READY_REDIS: Final = "redis"  # the readiness condition every process has: Redis answers


def counters(registry: CollectorRegistry) -> dict[str, float]:
    """Every non-zero counter as `name{label="value",…}` → value: what a process logs when it stops, so its
    totals outlive it (the last scrape may be seconds old)."""
    out: dict[str, float] = {}
    for family in registry.collect():
        if family.type != "counter":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.value:
                labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


class Readiness:
    """Named conditions that must all hold for the process to be ready; each failing one has a reason."""

    def __init__(self, *conditions: str) -> None:
        self._failing: dict[str, str] = {name: f"{name}: not checked yet" for name in conditions}
        self._conditions: dict[str, None] = dict.fromkeys(conditions)  # every one ever named, in order

    def ok(self, name: str) -> None:
        """Mark condition `name` as holding."""
        self._conditions.setdefault(name)
        self._failing.pop(name, None)

    def fail(self, name: str, reason: str) -> None:
        """Mark condition `name` as failing because of `reason`."""
        self._conditions.setdefault(name)
        self._failing[name] = f"{name}: {reason}"

    def holding(self) -> dict[str, bool]:
        """Each condition → whether it holds now."""
        return {name: name not in self._failing for name in self._conditions}

    @property
    def reason(self) -> str | None:
        """Why the process is not ready, or None when it is."""
        return "; ".join(self._failing.values()) if self._failing else None


class ReadinessMetric(Collector):
    """`homeiq_ready{condition}`: 1 while a readiness condition holds, 0 while it fails, so a scrape says which
    one keeps a process out of ready (the words of why are in /readyz, the log and `replayer status`)."""

    def __init__(self, readiness: Readiness) -> None:
        self._readiness = readiness

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("homeiq_ready", "1 while this readiness condition holds, 0 while it fails.",
                                   labels=["condition"])
        for name, holds in self._readiness.holding().items():
            family.add_metric([name], 1.0 if holds else 0.0)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("homeiq_ready", "", labels=["condition"])


class DiskSpace(Collector):
    """`homeiq_disk_free_bytes{use,path}` and `homeiq_disk_size_bytes{use,path}` of directories this process
    can see (statvfs at each scrape: free for an unprivileged user, as Redis and InfluxDB write). A path that
    cannot be read is left out (and the alert on absence says so)."""

    def __init__(self, paths: dict[str, str]) -> None:
        self._paths = dict(paths)

    def collect(self) -> Iterator[Metric]:
        free = GaugeMetricFamily("homeiq_disk_free_bytes", "Free bytes (for unprivileged writers) on the disk "
                                 "of a directory: spool (the collector's), redis, influxdb (DISK_PATHS).",
                                 labels=["use", "path"])
        size = GaugeMetricFamily("homeiq_disk_size_bytes", "Size in bytes of the disk of a directory.",
                                 labels=["use", "path"])
        for use, path in self._paths.items():
            try:
                stat = os.statvfs(path)
            except OSError:
                continue
            free.add_metric([use, path], float(stat.f_bavail * stat.f_frsize))
            size.add_metric([use, path], float(stat.f_blocks * stat.f_frsize))
        yield free
        yield size

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("homeiq_disk_free_bytes", "", labels=["use", "path"])
        yield GaugeMetricFamily("homeiq_disk_size_bytes", "", labels=["use", "path"])


class HealthServer:
    """Serves /metrics from `metrics_registry`, /healthz always 200 while the loop runs, /readyz from `readiness`."""

    def __init__(self, metrics_registry: CollectorRegistry, readiness: Readiness, host: str, port: int) -> None:
        self.metrics_registry, self.readiness = metrics_registry, readiness
        metrics_registry.register(ReadinessMetric(readiness))
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int | None:
        """The bound port once serving, else None."""
        return self._port if self._runner is not None else None

    async def start(self) -> int:
        """Bind and serve; returns the bound port (useful when `port` is 0)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self._port = self._runner.addresses[0][1]
        log.info("health_server_started", host=self._host, port=self._port)
        return self._port

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.metrics_registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, _: web.Request) -> web.Response:
        reason = self.readiness.reason
        if reason is None:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not_ready", "reason": reason}, status=503)
