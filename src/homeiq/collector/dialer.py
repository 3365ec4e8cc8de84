"""Connections to Home Assistant: the live session's socket and login, and connections of the backfill's own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import aiohttp

from homeiq.collector.session_end import Stopped
from homeiq.collector.settings import CollectorSettings
from homeiq.shared.certs import peer_expiry
from homeiq.shared.ha.client import WS_TIMEOUT, ClientMetrics, FrameSocket, HAConnection, ReadPacing, reading

T = TypeVar("T")


class Dialer:
    """Opens sockets with the collector's settings (message limit, TLS built once) and logs in with its token."""

    def __init__(self, settings: CollectorSettings, token: str, metrics: ClientMetrics,
                 certificate: Callable[[float], None] | None = None) -> None:
        self._settings, self._token, self._metrics = settings, token, metrics
        self._certificate = certificate  # told the notAfter of each wss:// certificate HA shows
        self._tls = settings.tls()  # built once: loading CA files per reconnect is wasted work

    async def open(self, http: aiohttp.ClientSession) -> FrameSocket:
        """A WebSocket to HA within HA_CONNECT_TIMEOUT_S."""
        s = self._settings
        async with asyncio.timeout(s.connect_timeout_s):
            # A close handshake behind megabytes of unread events would hold a stop for 10 s: 2 s is enough.
            ws = await http.ws_connect(
                s.ha_url, max_msg_size=s.max_message_mb * 1024 * 1024, autoping=True, heartbeat=None,
                timeout=WS_TIMEOUT, ssl=self._tls or True, decode_text=False)
        if self._certificate is not None:
            with contextlib.suppress(ValueError):
                if (expiry := peer_expiry(ws.get_extra_info("ssl_object"))) is not None:
                    self._certificate(expiry)
        return ws

    async def login(self, ws: FrameSocket, pacing: ReadPacing | None = None) -> tuple[HAConnection, str]:
        """The connection on `ws` (read in bursts with `pacing`), authenticated, and HA's version."""
        conn = HAConnection(ws, self._metrics, pacing)
        return conn, await conn.authenticate(self._token, self._settings.auth_timeout_s)

    @contextlib.asynccontextmanager
    async def recorder_connection(self) -> AsyncIterator[HAConnection]:
        """A connection of the backfill's own: an answer too large for one message closes it, not the live one."""
        async with aiohttp.ClientSession() as http, await self.open(http) as ws:
            conn, _version = await self.login(ws)
            async with reading(conn, "ha-recorder-reader"):
                yield conn


async def unless_stopped(stop: asyncio.Event, work: Coroutine[Any, Any, T]) -> T:
    """`work`'s result, or Stopped as soon as `stop` is set: connecting and logging in hold no event, so a
    stop need not wait out their timeouts."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopping), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise Stopped
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
