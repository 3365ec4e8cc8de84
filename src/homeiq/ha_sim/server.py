"""The WebSocket endpoint `/api/websocket`: auth phase, command dispatch, coalescing writer, back-pressure."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from homeiq.ha_sim import commands
from homeiq.ha_sim.hub import HA_VERSION, Hub
from homeiq.ha_sim.messages import Standalone, error_message, json_bytes
from homeiq.shared.logs import Log

log = Log(__name__)

AUTH_TIMEOUT_S = 10.0
MAX_PENDING_MSG = 4096  # HA disconnects a client this far behind
PENDING_MSG_PEAK = 1024  # … or one that stays above this for PENDING_MSG_PEAK_TIME_S
PENDING_MSG_PEAK_TIME_S = 10.0
_decode = msgspec.json.decode
HUB = web.AppKey("hub", Hub)


class Connection:
    """One authenticated client: its subscriptions, its id counter, its outgoing queue."""

    def __init__(self, hub: Hub, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.hub, self.ws, self._request = hub, ws, request
        self.subscriptions: dict[int, str] = {}
        self.last_id = 0
        self.coalesce = False
        self._queue: collections.deque[bytes] = collections.deque()
        self._wake = asyncio.Event()
        self._peak_since: float | None = None
        self.closed_reason: str | None = None

    @property
    def queued(self) -> int:
        """Messages waiting to be sent (HA drops the client at MAX_PENDING_MSG)."""
        return len(self._queue)

    def send(self, message: bytes) -> None:
        """Queue a message; disconnect a client that cannot keep up, as HA does."""
        if self.closed_reason:
            return
        self._queue.append(message)
        self._wake.set()
        pending = self.queued
        if pending >= MAX_PENDING_MSG:
            self.abort(f"Client unable to keep up with pending messages. Reached {MAX_PENDING_MSG}")
        elif pending > PENDING_MSG_PEAK:
            now = time.monotonic()
            self._peak_since = self._peak_since or now
            if now - self._peak_since > PENDING_MSG_PEAK_TIME_S:
                self.abort(f"Client unable to keep up: stayed over {PENDING_MSG_PEAK} for 10 seconds")
        else:
            self._peak_since = None

    def abort(self, reason: str) -> None:
        """Drop the TCP connection without a close frame (close code 1006 at the client)."""
        self.closed_reason = reason
        log.warning("client_disconnected", reason=reason)
        if self._request.transport is not None:
            self._request.transport.abort()

    async def writer(self) -> None:
        """Send queued messages; with coalescing on, several queued ones go as one JSON array."""
        while not self.ws.closed:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and not self.ws.closed:
                frame = self._queue.popleft()
                if self.coalesce and self._queue and not isinstance(frame, Standalone):
                    batch = [frame]
                    # Everything queued goes in one frame, as HA's `_writer` sends it (a client behind gets a big one).
                    while self._queue and not isinstance(self._queue[0], Standalone):
                        batch.append(self._queue.popleft())
                    if len(batch) > 1:
                        frame = b"[" + b",".join(batch) + b"]"
                await self.ws.send_frame(frame, WSMsgType.TEXT)  # JSON bytes are UTF-8 already: no decode, no encode

    def handle(self, message: Any) -> None:
        """Validate the envelope and id order, then run the command (HA's `async_handle`)."""
        if not (
            isinstance(message, dict)
            and type(cur_id := message.get("id")) is int
            and cur_id >= 0
            and isinstance(message.get("type"), str)
            and message["type"]
        ):
            bad_id = message.get("id") if isinstance(message, dict) else 0
            self.send(error_message(bad_id, "invalid_format", "Message incorrectly formatted."))
            return
        if cur_id <= self.last_id:
            self.send(error_message(cur_id, "id_reuse", "Identifier values have to increase."))
            return
        self.last_id = cur_id
        commands.dispatch(self, cur_id, message)


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    """HA's `WebSocketHandler.async_handle`: auth phase first, then the command phase."""
    hub = request.app[HUB]
    if hub.faults.refuse_connections:
        raise web.HTTPServiceUnavailable
    ws = web.WebSocketResponse(heartbeat=55, max_msg_size=0)
    await ws.prepare(request)
    hub.connects += 1
    hub.active += 1
    hub.max_active = max(hub.max_active, hub.active)
    try:
        return await _serve(hub, ws, request)
    finally:
        hub.active -= 1


async def _serve(hub: Hub, ws: web.WebSocketResponse, request: web.Request) -> web.WebSocketResponse:
    """The auth phase, then the command phase, of one connection."""
    if hub.faults.silent_after_connect:
        await _drain_until_closed(ws)
        return ws
    await ws.send_str(json_bytes({"type": "auth_required", "ha_version": HA_VERSION}).decode())
    try:
        first = await ws.receive(timeout=AUTH_TIMEOUT_S)
    except TimeoutError:
        await ws.close()
        return ws
    if hub.faults.silent_after_auth:
        await _drain_until_closed(ws)
        return ws
    auth = _parse(first)
    if not (isinstance(auth, dict) and auth.get("type") == "auth" and auth.get("access_token") == hub.token):
        await ws.send_str(json_bytes({"type": "auth_invalid", "message": "Invalid access token or password"})
                          .decode())
        await ws.close()
        return ws
    await ws.send_str(json_bytes({"type": "auth_ok", "ha_version": HA_VERSION}).decode())
    connection = Connection(hub, ws, request)
    hub.connections.add(connection)
    writer = asyncio.create_task(connection.writer(), name="ha-sim-writer")
    try:
        async for frame in ws:
            if frame.type is not WSMsgType.TEXT:
                break
            parsed = _parse(frame)
            if parsed is None:
                break  # HA disconnects on invalid JSON
            for message in parsed if isinstance(parsed, list) else [parsed]:
                connection.handle(message)
    finally:
        hub.connections.discard(connection)
        if connection.subscriptions and hub.on_subscriber_lost is not None:
            hub.on_subscriber_lost(connection.closed_reason or "closed by the client")
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
    return ws


def _parse(frame: Any) -> Any:
    if frame.type is not WSMsgType.TEXT:
        return None
    try:
        return _decode(frame.data)
    except msgspec.DecodeError:
        return None


async def _drain_until_closed(ws: web.WebSocketResponse) -> None:
    async for _ in ws:
        pass


def make_app(hub: Hub) -> web.Application:
    """The aiohttp application serving `/api/websocket` for `hub`, and `/core/websocket` as the Supervisor's proxy
    does for an add-on (the add-on test puts ha-sim behind the host name `supervisor`)."""
    app = web.Application()
    app[HUB] = hub
    app.router.add_get("/api/websocket", websocket_handler)
    app.router.add_get("/core/websocket", websocket_handler)
    return app
