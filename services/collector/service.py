"""`collector run`: the supervisor loop around one HA connection, and the publisher."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import msgspec
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from homeiq_collector import frames
from homeiq_collector.ha_client import (
    AuthInvalid,
    CommandFailed,
    ConnectionLost,
    HAConnection,
    HeartbeatTimeout,
)
from homeiq_collector.metrics import CollectorMetrics
from homeiq_collector.normalise import normalise
from homeiq_collector.publisher import READY_REDIS, Publisher
from homeiq_collector.registry import Registry
from homeiq_collector.settings import CollectorSettings
from homeiq_shared.backoff import Backoff
from homeiq_shared.events import encode_event
from homeiq_shared.health import HealthServer, Readiness
from homeiq_shared.lifecycle import wait_or_stop
from homeiq_shared.logs import Log
from homeiq_shared.settings import redact_url
from homeiq_shared.stream import connect

log = Log(__name__)

READY_HA = "home_assistant"
REGISTRIES = (("floor", "config/floor_registry/list"), ("area", "config/area_registry/list"),
              ("device", "config/device_registry/list"), ("entity", "config/entity_registry/list"))
DRAIN_TIMEOUT_S = 10.0


class Fatal(Exception):
    """A failure that retrying cannot fix (the operator must act)."""


class Collector:
    """Supervises exactly one connection loop; never two, never a task that spawns another."""

    def __init__(self, settings: CollectorSettings, token: str, registry: CollectorRegistry | None = None) -> None:
        self.settings, self._token = settings, token
        self.registry = registry or CollectorRegistry()
        self.metrics = CollectorMetrics(self.registry)
        self.readiness = Readiness(READY_HA, READY_REDIS)
        self.redis: aioredis.Redis = connect(settings.redis_url)
        self.publisher = Publisher(self.redis, settings.redis_url, settings.names.stream, self.metrics,
                                   self.readiness, settings.buffer_events, settings.publish_batch)
        self.ha_registry = Registry()
        self.sessions = 0
        self._health = HealthServer(self.registry, self.readiness, settings.metrics_host, settings.metrics_port)

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, read and publish until `stop`; then publish what is buffered and exit."""
        await self._health.start()
        publisher = asyncio.create_task(self.publisher.run(), name="publisher")
        try:
            await self._supervise(stop)
        finally:
            unpublished = await self.publisher.drain(DRAIN_TIMEOUT_S)
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
            if unpublished:
                self.metrics.dropped.labels("shutdown_unpublished").inc(unpublished)
                log.error("events_unpublished_at_exit", events=unpublished)
            await self.redis.aclose()
            await self._health.stop()
            log.info("collector_stopped", unpublished=unpublished)

    async def _supervise(self, stop: asyncio.Event) -> None:
        backoff = Backoff(base_s=1.0, cap_s=self.settings.backoff_max_s, reset_after_s=60.0)
        url = redact_url(self.settings.ha_url)
        while not stop.is_set():
            backoff.started()
            if self.sessions:
                self.metrics.reconnects.inc()
            self.sessions += 1
            reason, kind = "stopped", "closed"
            try:
                reason = await self._session(stop)
            except AuthInvalid as exc:
                reason, kind = f"auth_invalid: {exc}", "auth_invalid"
                if not self.settings.retry_auth:
                    self.metrics.disconnects.labels(kind).inc()
                    raise Fatal(f"Home Assistant at {url} refused the token (auth_invalid). "
                                "Create a new long-lived access token and set HA_TOKEN or HA_TOKEN_FILE.") from None
            except HeartbeatTimeout as exc:
                reason, kind = str(exc), "heartbeat"
            except (ConnectionLost, CommandFailed) as exc:
                reason, kind = str(exc), "closed"
            except TimeoutError:
                reason, kind = f"no connection within {self.settings.connect_timeout_s:g} s", "timeout"
            except (aiohttp.ClientError, OSError) as exc:
                reason, kind = f"{type(exc).__name__}: {exc}", "error"
            finally:
                self.metrics.connected.set(0)
            if stop.is_set():
                break
            self.metrics.disconnects.labels(kind).inc()
            self.readiness.fail(READY_HA, f"disconnected from {url}: {reason}")
            delay_s = backoff.next_delay_s()
            log.warning("ha_disconnected", url=url, reason=reason, retry_in_s=round(delay_s, 2))
            await wait_or_stop(stop, delay_s)

    async def _session(self, stop: asyncio.Event) -> str:
        s = self.settings
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(s.connect_timeout_s):
                ws = await http.ws_connect(s.ha_url, max_msg_size=s.max_message_mb * 1024 * 1024,
                                           autoping=True, heartbeat=None)
            async with ws:
                conn = HAConnection(ws, self.metrics)
                version = await conn.authenticate(self._token, s.auth_timeout_s)
                reader = asyncio.create_task(conn.read_forever(), name="ha-reader")
                try:
                    return await self._serve(conn, version, reader, stop)
                finally:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionLost):
                        await reader

    async def _serve(self, conn: HAConnection, version: str, reader: asyncio.Task[None],
                     stop: asyncio.Event) -> str:
        s = self.settings
        setup = asyncio.create_task(self._setup(conn), name="ha-setup")
        await asyncio.wait({setup, reader}, return_when=asyncio.FIRST_COMPLETED)
        if not setup.done():
            setup.cancel()
        await setup  # raises what failed (ConnectionLost from the reader fails the pending commands)
        self.metrics.connected.set(1)
        self.readiness.ok(READY_HA)
        log.info("ha_connected", url=redact_url(s.ha_url), ha_version=version, entities=len(self.ha_registry.entities))
        heartbeat = asyncio.create_task(self._heartbeat(conn), name="ha-heartbeat")
        stopper = asyncio.create_task(stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait({reader, heartbeat, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (heartbeat, stopper):
                task.cancel()
        if stopper in done:
            return "stopped"
        finished = reader if reader in done else heartbeat
        finished.result()  # raises ConnectionLost with the reason
        return "ended"

    async def _setup(self, conn: HAConnection) -> None:
        s = self.settings
        await conn.command({"type": "supported_features", "features": {"coalesce_messages": 1}},
                           s.command_timeout_s)
        # Discovery before subscribing: every event is enriched, and the reader never waits on a full
        # buffer while a registry answer is still to be read.
        for kind, command in REGISTRIES:
            try:
                raw = await conn.command({"type": command}, s.command_timeout_s)
            except CommandFailed as exc:
                log.warning("registry_unavailable", registry=kind, error=str(exc))
                continue
            size = self.ha_registry.load(kind, bytes(raw))
            log.debug("registry_loaded", registry=kind, entries=size)
        await conn.subscribe(self._on_event, s.command_timeout_s)

    async def _heartbeat(self, conn: HAConnection) -> None:
        while True:
            await asyncio.sleep(self.settings.ping_interval_s)
            await conn.ping(self.settings.ping_timeout_s)

    async def _on_event(self, frame: frames.EventFrame) -> None:
        self.metrics.received.inc()
        try:
            event = frames.event_decoder.decode(frame.event)
            payload = encode_event(normalise(event, self.ha_registry))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.metrics.dropped.labels("malformed_event").inc()
            self.metrics.log_sampled("malformed_event", "event dropped: cannot be normalised",
                                     error=str(exc)[:200], sample=bytes(frame.event)[:200].decode(errors="replace"))
            return
        await self.publisher.put(payload)
