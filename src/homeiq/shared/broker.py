"""What the pipeline requires of its Redis: an append-only file, or an operator who said it does not care."""

from __future__ import annotations

from typing import Any, Final

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Gauge
from redis.exceptions import ResponseError

from homeiq.shared.health import Readiness
from homeiq.shared.logs import Log
from homeiq.shared.settings import redact_url

log = Log(__name__)

READY_PERSISTENCE: Final = "redis_persistence"
OPT_OUT: Final = "REDIS_REQUIRE_AOF=false"


async def persistence_problem(client: aioredis.Redis, url: str) -> str | None:
    """Why Redis at `url` would lose acknowledged entries when it restarts, or None when its AOF is on and
    writing. Reads INFO, which managed Redis services usually allow where CONFIG is disabled."""
    where = f"Redis at {redact_url(url)}"
    try:
        info: Any = await client.info("persistence")
    except ResponseError as exc:
        return (f"{where} does not tell whether it persists (INFO persistence: {exc}); if it does, for every "
                f"write, set {OPT_OUT}")
    if not int(info.get("aof_enabled", 0)):
        return (f"{where} has appendonly no: a restart would lose every entry since its last snapshot; set "
                f"`appendonly yes` (CONFIG SET appendonly yes works live), or {OPT_OUT} to accept that")
    status = info.get("aof_last_write_status", "ok")
    if (status.decode() if isinstance(status, bytes) else str(status)) != "ok":
        return f"{where} cannot write its append-only file (aof_last_write_status {status!r}): is its disk full?"
    return None


class PersistenceCheck:
    """Keeps a process's readiness and `homeiq_redis_persistent` in step with what Redis says of its AOF."""

    def __init__(self, url: str, required: bool, readiness: Readiness, registry: CollectorRegistry) -> None:
        self._url, self.required, self._readiness = url, required, readiness
        self._gauge = Gauge("homeiq_redis_persistent", "1 while Redis has its append-only file on and writing "
                            "(or the operator opted out), 0 when a restart of Redis would lose entries.",
                            registry=registry)
        self._last: str | None = "not checked yet"
        if not required:
            log.warning("redis_persistence_not_required", setting=OPT_OUT,
                        consequence="entries Redis holds are lost if it restarts without persistence")
            self._gauge.set(1)

    @property
    def ok(self) -> bool:
        """Whether the last check found Redis durable (always, when not required)."""
        return not self.required or self._last is None

    async def check(self, client: aioredis.Redis) -> bool:
        """Ask Redis now; returns `ok`. Raises what the client raises when Redis is unreachable."""
        if not self.required:
            return True
        problem = await persistence_problem(client, self._url)
        if problem != self._last:
            if problem is None:
                log.info("redis_persistent", url=redact_url(self._url))
            else:
                log.error("redis_not_persistent", problem=problem)
        self._last = problem
        self._gauge.set(0 if problem else 1)
        if problem:
            self._readiness.fail(READY_PERSISTENCE, problem)
        else:
            self._readiness.ok(READY_PERSISTENCE)
        return problem is None
