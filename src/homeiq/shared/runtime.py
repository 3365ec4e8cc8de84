"""What every service runs on: its metrics registry, readiness, Redis client, persistence check and health server;
the start and the stop line; the path taken when Redis fails."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import sys
from collections.abc import AsyncIterator, Callable
from typing import Final

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Gauge

from homeiq.shared.backoff import Backoff
from homeiq.shared.broker import PersistenceCheck
from homeiq.shared.health import READY_REDIS, DiskSpace, HealthServer, Readiness, counters
from homeiq.shared.logs import Log
from homeiq.shared.options import ServiceSettings, disk_paths
from homeiq.shared.stream import DEFAULT_SOCKET_TIMEOUT_S, connect, describe_redis_error, place_of


class ServiceRuntime:
    """One service's runtime; `log` is the service's own logger (its lines keep their name)."""

    def __init__(self, log: Log, settings: ServiceSettings, readiness: Readiness,
                 metrics_registry: CollectorRegistry | None = None,
                 socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S, disks: dict[str, str] | None = None) -> None:
        self.log, self.redis_place = log, place_of(settings)
        self.metrics_registry = metrics_registry or CollectorRegistry()
        self.metrics_registry.register(DiskSpace({**(disks or {}), **disk_paths(settings.disk_paths)}))
        self.readiness = readiness
        self.redis: aioredis.Redis = connect(self.redis_place, socket_timeout_s)
        self.persistence = PersistenceCheck(str(self.redis_place), settings.require_aof, readiness,
                                            self.metrics_registry)
        self.health = HealthServer(self.metrics_registry, readiness, settings.metrics_host, settings.metrics_port)
        Gauge("homeiq_asyncio_tasks", "asyncio tasks alive in the service's event loop (a soak watches them stay "
              "bounded).", registry=self.metrics_registry).set_function(_tasks)
        Gauge("homeiq_python_heap_blocks", "Memory blocks the process's live Python objects hold "
              "(sys.getallocatedblocks): what its heap holds now, where RSS also keeps what a burst once took.",
              registry=self.metrics_registry).set_function(sys.getallocatedblocks)

    @contextlib.asynccontextmanager
    async def serving(self, stopped: str, fields: Callable[[], dict[str, object]] = dict) -> AsyncIterator[None]:
        """Serve /metrics, /healthz and /readyz for the block; then close Redis, stop serving and log `stopped` with
        `fields()` and every counter. The service closes what is its own inside the block."""
        await self.health.start()
        try:
            yield
        finally:
            await self.redis.aclose()
            await self.health.stop()
            self.log.info(stopped, **fields(), counters=counters(self.metrics_registry))

    def redis_failed(self, exc: BaseException, backoff: Backoff, **fields: object) -> float:
        """Redis failed: unready with the reason (its URL without the password, or the sentinels asked), logged once
        per failure; returns how long to wait before trying again."""
        message = describe_redis_error(self.redis_place, exc)
        self.readiness.fail(READY_REDIS, message)
        delay_s = backoff.next_delay_s()
        self.log.warning("redis_unavailable", **fields, error=message, retry_in_s=round(delay_s, 2))
        return delay_s


TRIM_INTERVAL_S: Final = 60.0


def _glibc(name: str) -> Callable[..., int] | None:
    """A function of glibc's by name, or None (another C library)."""
    try:
        function: Callable[..., int] = getattr(ctypes.CDLL(None), name)
    except (AttributeError, OSError):
        return None
    return function


_MALLOC_TRIM = _glibc("malloc_trim")
_M_ARENA_MAX: Final = -8  # glibc's mallopt parameter


def one_malloc_arena() -> None:
    """Let glibc keep one malloc arena for every thread (mallopt M_ARENA_MAX=1), unless MALLOC_ARENA_MAX says
    otherwise; call before any thread starts. A thread's first allocation otherwise gets an arena of its own (a
    64 MB reservation), and malloc_trim gives back less of one: a writer's compressing thread (asyncio.to_thread)
    kept 1.3-1.4 MB of RSS after its first backlog that, with this, the main heap's trim gives back (backlogs of
    300,000 entries, one writer: +8.0 MB after the first, +6.4 MB with this; one thread, so no lock contention)."""
    mallopt = _glibc("mallopt")
    if mallopt is not None and "MALLOC_ARENA_MAX" not in os.environ:
        mallopt(_M_ARENA_MAX, 1)


def give_back_memory_now() -> None:
    """Hand the C heap's free pages back to the system at once (after a burst: a backlog's last full batch)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


async def give_back_memory_forever() -> None:
    """Every minute, hand the C heap's free pages back to the system (glibc's malloc_trim). A burst (a backfill's
    multi-megabyte answers, a backlog's full batches) leaves freed memory that glibc keeps between live blocks, so
    RSS would step up at each one and stay (a soak of 4.2 M events: the collector's RSS +3 % per million events at HA
    restarts while its live blocks stayed flat); every 5 minutes, a soak still saw the heap 2-4 MB above its level
    for minutes after each HA restart. 13-40 ms of CPU each time on a 20 MB heap (0.02-0.07 % of a core); one task a
    process (`cli.run_services`), however many services it runs."""
    if _MALLOC_TRIM is None:
        return
    while True:
        await asyncio.sleep(TRIM_INTERVAL_S)
        give_back_memory_now()


def _tasks() -> int:
    """Tasks of the running loop (/metrics is served from it); 0 outside one."""
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:
        return 0
