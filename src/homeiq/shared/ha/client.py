"""One authenticated HA WebSocket session. Only the reader reads; it routes every frame by id."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import struct
import termios
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sized
from typing import Any, Final, Literal, Protocol

import aiohttp
import msgspec

from homeiq.shared.ha import frames
from homeiq.shared.logs import Log, SampledLog

log = Log(__name__)

# aiohttp's closing handshake waits this long for HA's close frame.
WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_close=2.0)
PATIENCE = 6  # more timeouts a ping waits while frames keep coming (HA closes a client far behind by itself)


class ClientMetrics(Protocol):
    """What a connection counts: the events it routed, and the messages it could not use (each logged, sampled)."""

    def events_received(self, count: int) -> None:
        """`count` events of one frame were handed to their subscriptions."""

    def frame_rejected(self, reason: str, text: str, sample: str) -> None:
        """A message was not usable: count it under `reason` and log it."""


class LoggedOnly:
    """ClientMetrics for a short session outside a service (the audit's): rejected messages are logged, sampled."""

    def __init__(self) -> None:
        self._sampled = SampledLog(log, interval_s=60.0)

    def events_received(self, count: int) -> None:
        """Not counted: a short session subscribes to nothing."""

    def frame_rejected(self, reason: str, text: str, sample: str) -> None:
        """Logged at most once a minute per reason."""
        self._sampled.warning(reason, text, sample=sample)

# Returns an awaitable only when it must wait (a full buffer), so the reader awaits nothing per event.
EventHandler = Callable[[frames.EventFrame | frames.StateEventFrame], Awaitable[None] | None]


class ConnectionLost(Exception):
    """The WebSocket closed or broke; the message says how."""


class HeartbeatTimeout(ConnectionLost):
    """No pong in time: the connection is presumed half-open."""


class MessageTooBig(ConnectionLost):
    """A message over the size limit (HA_MAX_MESSAGE_MB): aiohttp closed the socket (1009) without reading it, and
    with it whatever HA had coalesced into that frame."""


class AuthInvalid(Exception):
    """HA refused the token (`auth_invalid`)."""


class CommandFailed(Exception):
    """HA answered a command with `success: false`."""

    def __init__(self, command: str, code: str, message: str) -> None:
        super().__init__(f"{command} failed: {code}: {message}")
        self.code = code


# Text frames arrive as bytes (`ws_connect(..., decode_text=False)`): msgspec decodes UTF-8 bytes at twice the
# speed of a str, and decoding to str first is a second pass over every frame. msgspec checks the UTF-8 of every
# string it decodes; a message whose strings are not UTF-8 is rejected on its own instead of closing the socket.
FrameSocket = aiohttp.ClientWebSocketResponse[Literal[False]]


NAP_S: Final = 0.02  # ~200 events at 10,000/s: a few hundred kB, which the kernel's socket buffers hold


class ReadPacing:
    """Read HA's socket in bursts while events trickle in: after a burst of events, leave the socket unread for
    `interval_s`, so that what HA sends meanwhile waits in the kernel and is read in one go, and each event does
    not wake the process on its own (at a home's rate, each wakeup costs more than the event). `resting` is set
    while the socket rests: the burst read so far is all there is until then (the publisher sends it at once
    instead of lingering). A burst of `max_burst` events or more means the rate is high enough to amortise
    wakeups: the socket then never rests until an interval brings fewer, so that HA's queue for us does not wait on
    a rest; it only naps (`nap_s`, 20 ms at most) each time what was read is routed, so that one wakeup reads what
    several of HA's sends brought (the collector's CPU an event 7-14 % less at 10,000/s, 20 % at 5,000/s). Neither
    a rest nor a nap while more waits in the kernel, and none over TLS on uvloop (see `_paceable`)."""

    def __init__(self, interval_s: float, max_burst: int = 256) -> None:
        self.interval_s, self.max_burst = interval_s, max_burst
        self.nap_s = min(interval_s, NAP_S)
        self.resting = asyncio.Event()
        self.rests = 0
        self.naps = 0


class HAConnection:
    """Command ids are per connection and strictly increasing on the wire."""

    def __init__(self, ws: FrameSocket, metrics: ClientMetrics, pacing: ReadPacing | None = None) -> None:
        self._ws, self._metrics = ws, metrics
        self._pacing = pacing if pacing is not None and pacing.interval_s > 0 else None
        self._socket = _paceable(ws) if self._pacing is not None else None
        self._burst = 0  # events routed since the socket last rested (or since `_since`, at a high rate)
        self._since = time.monotonic()
        self._fast = False  # a burst reached max_burst: read continuously until an interval has fewer
        self._last_id = 0
        self._send_lock = asyncio.Lock()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._subscriptions: dict[int, EventHandler] = {}
        self._events_routed = 0  # events of the current frame handed to a subscription
        self._holds = 0  # times the reader waited for room in the buffer
        self._holding = False  # waiting for room now
        self._frames_read = 0  # frames routed so far: a connection that brings them is alive

    async def authenticate(self, token: str, timeout_s: float) -> str:
        """auth_required → auth → auth_ok, every receive under `timeout_s`; returns HA's version."""
        first = await self._receive_auth_frame(timeout_s, "auth_required")
        if not isinstance(first, frames.AuthRequired):
            raise ConnectionLost(f"expected auth_required, got {type(first).__name__}")
        await self._ws.send_str(msgspec.json.encode({"type": "auth", "access_token": token}).decode())
        answer = await self._receive_auth_frame(timeout_s, "auth_ok")
        if isinstance(answer, frames.AuthInvalid):
            raise AuthInvalid(answer.message or "auth_invalid")
        if not isinstance(answer, frames.AuthOk):
            raise ConnectionLost(f"expected auth_ok, got {type(answer).__name__}")
        return answer.ha_version

    async def _receive_auth_frame(self, timeout_s: float, expected: str) -> frames.Frame:
        try:
            message = await self._ws.receive(timeout=timeout_s)
        except TimeoutError:
            raise ConnectionLost(f"no {expected} within {timeout_s:g} s") from None
        if message.type is not aiohttp.WSMsgType.TEXT:
            raise ConnectionLost(f"connection closed while waiting for {expected} ({message.type.name})")
        try:
            return frames.single_decoder.decode(message.data)
        except frames.UNDECODABLE:
            raise ConnectionLost(f"malformed frame while waiting for {expected}") from None

    async def command(self, payload: dict[str, Any], timeout_s: float,
                      on_event: EventHandler | None = None, alive_while_read: bool = False) -> msgspec.Raw:
        """Send a command with the next id and wait for its result (or pong): ConnectionLost when none came
        within `timeout_s` of reading. While the reader waits for room in our own buffer (Redis slow), HA's
        silence says nothing, and dropping the connection would lose what HA queued for us: the wait starts
        again. So it does, `alive_while_read`, while frames keep coming (up to `PATIENCE` times): HA answers in
        order, and an answer late behind them says we read slowly, not that HA is gone."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        msg_id = 0
        try:
            async with self._send_lock:  # ids reach HA in increasing order, as it requires
                self._last_id += 1
                msg_id = self._last_id
                self._pending[msg_id] = future
                if on_event is not None:
                    self._subscriptions[msg_id] = on_event
                await self._ws.send_str(msgspec.json.encode({"id": msg_id, **payload}).decode())
            read_on = PATIENCE if alive_while_read else 0
            while True:
                holds, read = self._holds, self._frames_read
                done, _ = await asyncio.wait((future,), timeout=timeout_s)
                if done:
                    result: msgspec.Raw = future.result()
                    return result
                if holds != self._holds or self._holding:
                    continue
                if read == self._frames_read or read_on == 0:
                    raise ConnectionLost(f"no answer to {payload['type']} within {timeout_s:g} s")
                read_on -= 1
        finally:
            self._pending.pop(msg_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # failed with the connection as we were cancelled: seen, nobody else will look

    async def subscribe(self, on_event: EventHandler, timeout_s: float, event_type: str | None = None) -> None:
        """`subscribe_events`; the handler is in place before the command is sent."""
        payload: dict[str, Any] = {"type": "subscribe_events"}
        if event_type:
            payload["event_type"] = event_type
        await self.command(payload, timeout_s, on_event=on_event)

    async def unsubscribe_all(self, timeout_s: float) -> None:
        """`unsubscribe_events` for every subscription, each handler kept until HA answers: HA sends a
        subscription's events before the answer to its unsubscribe, so once answered, every event HA sent
        has been routed and none follows."""
        for sub_id in list(self._subscriptions):
            await self.command({"type": "unsubscribe_events", "subscription": sub_id}, timeout_s)
            del self._subscriptions[sub_id]

    async def ping(self, timeout_s: float) -> None:
        """App-level ping; HeartbeatTimeout when no pong, and no frame either, within `timeout_s` of reading."""
        try:
            await self.command({"type": "ping"}, timeout_s, alive_while_read=True)
        except ConnectionLost as exc:
            raise HeartbeatTimeout(str(exc)) from None

    async def read_forever(self) -> None:
        """Route every frame until the socket ends; then fail whatever still waits and raise ConnectionLost."""
        error: object = None
        try:
            async for message in self._ws:
                if message.type is aiohttp.WSMsgType.TEXT:
                    self._frames_read += 1
                    await self._route_frame(message.data)
                    # aiohttp hands over queued frames without yielding: let the loop read sockets (Redis's
                    # answer to the publisher, more of this one) between frames, or the stages take turns.
                    await asyncio.sleep(0)
                    if self._socket is not None and self._burst:
                        await self._rest(self._socket)
                elif message.type is aiohttp.WSMsgType.BINARY:
                    self._reject("binary_frame", "binary frame ignored")
                elif message.type is aiohttp.WSMsgType.ERROR:
                    error = message.data
            reason = f"closed by server (code {self._ws.close_code})"
        except aiohttp.ClientError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if self._ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
            lost: ConnectionLost = MessageTooBig(f"a message over the size limit: {error}")
        else:
            lost = ConnectionLost(reason)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(lost)
        raise lost

    async def _rest(self, socket: _Paceable) -> None:
        """After a burst of events, once aiohttp holds no more frames: leave the socket unread for the interval
        (unless the burst says the rate is high, or aiohttp's own flow control holds the socket)."""
        assert self._pacing is not None
        transport, queue, protocol = socket
        if queue._buffer or transport.is_closing() or protocol._reading_paused or protocol._buffer_paused:
            return  # more to route first, the end, or aiohttp's own flow control has the socket
        if _unread_bytes(transport):
            return  # more waits in the kernel (the rest of a frame larger than one read): a reader behind reads on
        pacing, now = self._pacing, time.monotonic()
        if self._burst >= pacing.max_burst:  # a high rate: nap, and measure it again from here
            self._fast, self._burst, self._since = True, 0, now
            await self._nap(transport)
            return
        if self._fast and now - self._since < pacing.interval_s:
            await self._nap(transport)
            return  # still measuring: the rate must stay below max_burst an interval for a whole interval
        self._fast, self._burst = False, 0
        pacing.resting.set()
        pacing.rests += 1
        try:
            await _unread_for(transport, pacing.interval_s)
        finally:
            pacing.resting.clear()
            self._since = time.monotonic()

    async def _nap(self, transport: _Transport) -> None:
        """At a high rate, leave the socket unread a moment (`nap_s`) once what was read is routed, so that the
        next wakeup reads what several of HA's sends brought, not each on its own: the publisher is not told (its
        batch is not all there is). A nap never holds more than HA sends in `nap_s`, which the kernel's buffers
        take: HA's queue for us does not grow; and a reader behind never naps (`_rest` reads on while aiohttp holds
        frames or the kernel holds bytes)."""
        assert self._pacing is not None
        self._pacing.naps += 1
        await _unread_for(transport, self._pacing.nap_s)

    async def _route_frame(self, data: bytes) -> None:
        decoded: Any
        try:
            decoded = frames.fast_frame_decoder.decode(data)
        except frames.UNDECODABLE:
            try:
                decoded = frames.frame_decoder.decode(data)
            except frames.UNDECODABLE:
                decoded = self._split_bad_frame(data)
        try:
            # Routed without a coroutine an event (a third of the routing's cost): awaited only when a handler holds.
            if isinstance(decoded, list):
                for single in decoded:
                    if (waiting := self._route(single)) is not None:
                        await self._hold(waiting)
            elif (waiting := self._route(decoded)) is not None:
                await self._hold(waiting)
        finally:  # counted once a frame: a Counter takes a lock, which per event is a tenth of the reader's time
            if self._events_routed:
                self._metrics.events_received(self._events_routed)
                self._events_routed = 0

    def _split_bad_frame(self, data: bytes) -> list[frames.Frame]:
        """A frame that failed as a whole: keep each good message, count each bad one."""
        try:
            parts = frames.raw_list_decoder.decode(data)
        except frames.UNDECODABLE:
            parts = [msgspec.Raw(data)]
        good: list[frames.Frame] = []
        for part in parts:
            try:
                good.append(frames.single_decoder.decode(part))
            except msgspec.ValidationError:
                self._reject("unknown_type", "message of unknown type or shape ignored", part)
                self._fail_waiting(part)
            except (msgspec.DecodeError, UnicodeDecodeError):
                self._reject("malformed_json", "malformed JSON ignored", part)
                self._fail_waiting(part)
        return good

    def _fail_waiting(self, part: msgspec.Raw) -> None:
        """An unreadable answer still names the command it answers: fail that command now, not at its timeout."""
        try:
            msg_id = frames.id_decoder.decode(part).id
        except frames.UNDECODABLE:
            return
        future = self._pending.get(msg_id)
        if future is not None and not future.done():
            future.set_exception(CommandFailed(f"command {msg_id}", "malformed_answer", "the answer cannot be read"))

    def _reject(self, reason: str, text: str, part: msgspec.Raw | None = None) -> None:
        self._metrics.frame_rejected(reason, text, bytes(part)[:200].decode(errors="replace") if part else "")

    def _route(self, frame: frames.Frame | frames.FastFrame) -> Awaitable[None] | None:
        """Hand a message to its subscription or command; what the handler asks to be awaited (a full buffer)."""
        if isinstance(frame, frames.StateEventFrame | frames.EventFrame):
            handler = self._subscriptions.get(frame.id)
            if handler is None:
                self._reject("unknown_subscription", f"event for unknown subscription {frame.id}")
                return None
            self._events_routed += 1
            self._burst += 1
            return handler(frame)
        if isinstance(frame, frames.Result | frames.Pong):
            future = self._pending.get(frame.id)
            if future is None or future.done():
                self._reject("unexpected_result", f"answer to unknown id {frame.id}")
            elif isinstance(frame, frames.Result) and not frame.success:
                error = frame.error or frames.ErrorInfo()
                future.set_exception(CommandFailed(f"command {frame.id}", error.code, error.message))
            else:
                future.set_result(frame.result if isinstance(frame, frames.Result) else msgspec.Raw(b"null"))
        else:
            self._reject("unexpected_auth", f"unexpected {type(frame).__name__} after auth")
        return None

    async def _hold(self, waiting: Awaitable[None]) -> None:
        """Wait for what a handler asked (room in a full buffer), reading nothing meanwhile."""
        self._holds += 1
        self._holding = True
        try:
            await waiting
        finally:
            self._holding = False


class _Queue(Protocol):
    _buffer: Sized  # the frames aiohttp parsed and we have not taken yet


class _FlowControl(Protocol):
    _reading_paused: bool  # aiohttp's own flow control holds the socket
    _buffer_paused: bool


class _Transport(Protocol):  # asyncio's and uvloop's (which is not an asyncio.Transport)
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def is_closing(self) -> bool: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


async def _unread_for(transport: _Transport, seconds: float) -> None:
    """Leave the socket unread for `seconds` (what arrives waits in the kernel), then read it again unless it ended."""
    transport.pause_reading()
    try:
        await asyncio.sleep(seconds)
    finally:
        if not transport.is_closing():
            transport.resume_reading()


def _unread_bytes(transport: _Transport) -> int:
    """What the kernel holds for the transport's socket, unread (over TLS, still encrypted); 0 when it cannot say."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        answer = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", answer)[0])


def _on_uvloop() -> bool:
    return type(asyncio.get_running_loop()).__module__.partition(".")[0] == "uvloop"


_Paceable = tuple[_Transport, _Queue, _FlowControl]


def _paceable(ws: FrameSocket) -> _Paceable | None:
    """The socket's transport, aiohttp's queue of parsed frames and its flow control, to rest the socket when
    the queue is empty (pinned aiohttp's internals: `tests/test_ha_read_pacing.py` fails when they move);
    None when they are not there: the socket is then read continuously, as without pacing."""
    conn, queue = getattr(ws, "_conn", None), getattr(ws, "_reader", None)
    transport, protocol = getattr(conn, "transport", None), getattr(conn, "protocol", None)
    if not (all(callable(getattr(transport, name, None))
                for name in ("pause_reading", "resume_reading", "is_closing", "get_extra_info"))
            and hasattr(queue, "_buffer")
            and hasattr(protocol, "_reading_paused") and hasattr(protocol, "_buffer_paused")):
        log.warning("ha_read_pacing_unavailable", reason="aiohttp's internals moved: reading continuously")
        return None
    if transport.get_extra_info("sslcontext") is not None and _on_uvloop():  # type: ignore[union-attr]
        # uvloop's TLS transport drops what it holds undelivered when the peer's end closes while reading is paused
        # (MagicStack/uvloop#661, open): what HA sent before a crash or a network fault would be lost unseen.
        _note_pacing_off_for_tls()
        return None
    return transport, queue, protocol  # type: ignore[return-value]


@functools.cache
def _note_pacing_off_for_tls() -> None:
    """Noted once a process, not once a connection."""
    log.info("ha_read_pacing_off", reason="TLS on uvloop: HA's socket is read continuously (MagicStack/uvloop#661)")


@contextlib.asynccontextmanager
async def reading(conn: HAConnection, name: str) -> AsyncIterator[HAConnection]:
    """`conn` with its reader task routing answers for the length of the block (a short session's commands)."""
    reader = asyncio.create_task(conn.read_forever(), name=name)
    try:
        yield conn
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
