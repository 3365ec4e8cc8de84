"""Sessions with Home Assistant, one at a time: connect and log in, discover the registries, subscribe; then read,
ping, refresh the registries and close gaps until the connection ends or a stop; after an end, say why and wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp

from homeiq.collector.backfill import Backfill
from homeiq.collector.clock import AHEAD_TOLERANCE_NS
from homeiq.collector.dialer import Dialer, unless_stopped
from homeiq.collector.gap import GapTracker
from homeiq.collector.metrics import CollectorMetrics
from homeiq.collector.registries import Registries
from homeiq.collector.session_end import Stopped, why_ended
from homeiq.collector.settings import CollectorSettings
from homeiq.shared.backoff import Backoff
from homeiq.shared.ha.client import CommandFailed, ConnectionLost, EventHandler, HAConnection, ReadPacing
from homeiq.shared.health import Readiness
from homeiq.shared.lifecycle import wait_or_stop
from homeiq.shared.logs import Log
from homeiq.shared.settings import redact_url

log = Log(__name__)

READY_HA = "home_assistant"
UNSUBSCRIBE_TIMEOUT_S = 2.0
AUTH_RETRY_CAP_S = 6 * 3600.0


class HaSessions:
    """Exactly one session at a time, never a task that spawns another. Each subscription hands its events to
    `on_event`; before it, a gap opens in `gap` after the stream's `tail()`; on a stop, `unbound()` lets the reader
    read up to HA's answer to the unsubscribe."""

    def __init__(self, settings: CollectorSettings, metrics: CollectorMetrics, readiness: Readiness, dialer: Dialer,
                 registries: Registries, backfill: Backfill, gap: GapTracker, tail: Callable[[], bytes],
                 on_event: EventHandler, unbound: Callable[[], None], pacing: ReadPacing | None = None) -> None:
        self.settings, self.metrics, self.readiness, self.dialer = settings, metrics, readiness, dialer
        self._pacing = pacing  # the live socket's (the backfill's own connection is not paced)
        self.registries, self.backfill, self._gap, self._tail = registries, backfill, gap, tail
        self._on_event, self._unbound = on_event, unbound
        self.sessions = 0  # begun so far
        self._subscribed_ns = 0  # when the last subscription began, on our clock
        self._unsubscribed_since: float | None = None
        self._auth_failures = 0

    async def supervise(self, stop: asyncio.Event) -> None:
        """Sessions one after another until `stop`: after each end, count it, say why, and wait (backing off)."""
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
                conn, version = await unless_stopped(stop, self.dialer.login(ws, self._pacing))
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
        self._unbound()  # a reader waiting for room (Redis slow) would never read the answer
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
            self._gap.begin(self._tail(), since_ns)
        self._subscribed_ns = time.time_ns()
        await conn.subscribe(self._on_event, s.command_timeout_s)
        if self._unsubscribed_since is not None:  # events other than state changes sent meanwhile are gone
            self.metrics.unsubscribed_seconds.inc(time.monotonic() - self._unsubscribed_since)
            self._unsubscribed_since = None
        self.metrics.connected.set(1)
        self.readiness.ok(READY_HA)
        log.info("ha_connected", url=redact_url(s.ha_url), ha_version=version, session=self.sessions,
                 entities=len(self.registries.registry.entities))
        tasks.create_task(self._heartbeat(conn), name="ha-heartbeat")
        tasks.create_task(self.registries.refresh(conn), name="ha-registries")
        if s.backfill:
            tasks.create_task(self.backfill.run(conn), name="ha-backfill")

    async def _heartbeat(self, conn: HAConnection) -> None:
        while True:
            await asyncio.sleep(self.settings.ping_interval_s)
            await conn.ping(self.settings.ping_timeout_s)
