"""Message builders byte-for-byte in HA's shapes (`websocket_api/messages.py`)."""

from __future__ import annotations

import functools
import random
import time
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from homeiq.shared.times import EPOCH, MICROSECOND

_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_encode = msgspec.json.Encoder().encode


class Standalone(bytes):
    """A message sent in a frame of its own, never inside a coalesced array (a raw frame a test injects)."""


def json_bytes(obj: Any) -> bytes:
    """Compact JSON, as HA's orjson writes it."""
    return _encode(obj)


def result_message(msg_id: int, result: Any = None) -> bytes:
    """`{"id":n,"type":"result","success":true,"result":…}`."""
    return json_bytes({"id": msg_id, "type": "result", "success": True, "result": result})


def error_message(msg_id: int | None, code: str, message: str) -> bytes:
    """`{"id":n,"type":"result","success":false,"error":{"code":…,"message":…}}`."""
    return json_bytes({"id": msg_id, "type": "result", "success": False,
                       "error": {"code": code, "message": message}})


def pong_message(msg_id: int) -> bytes:
    """`{"id":n,"type":"pong"}`."""
    return json_bytes({"id": msg_id, "type": "pong"})


def partial_event_message(event: dict[str, Any]) -> bytes:
    """`{"type":"event","event":…}` without the closing brace; HA caches this once per event."""
    return json_bytes({"type": "event", "event": event})[:-1]


def event_message(partial: bytes, subscription_id: int) -> bytes:
    """The cached partial message completed with the subscription id, as HA does."""
    return partial + b',"id":' + str(subscription_id).encode() + b"}"




def iso(ts: float) -> str:
    """A raw `time.time()` float as HA renders it in events: `datetime.fromtimestamp(ts, UTC).isoformat()`,
    which rounds to the microsecond (and leaves out the fraction when it is 0)."""
    return datetime.fromtimestamp(ts, UTC).isoformat()


def render(ts: float) -> tuple[str, int]:
    """`iso(ts)` and `rendered_us(ts)` from one conversion."""
    shown = datetime.fromtimestamp(ts, UTC)
    return shown.isoformat(), (shown - EPOCH) // MICROSECOND


def rendered_us(ts: float) -> int:
    """The epoch microseconds of `iso(ts)`: what a live event says about a time HA keeps as a float."""
    return render(ts)[1]


def now_ts() -> float:
    """HA's clock: `time.time()` as it is, sub-microsecond digits included (HA 2024.x and later)."""
    return time.time()


_PAIRS: Final = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits → two digits: 13 lookups, not 26


def ulid(ts: float) -> str:
    """A ULID like HA's context ids: 48-bit milliseconds + 80 random bits, Crockford base32."""
    random_bits = random.getrandbits(80)
    return _ulid_time(int(ts * 1000)) + "".join([_PAIRS[(random_bits >> shift) & 1023] for shift in range(70, -1, -10)])


@functools.lru_cache(maxsize=8)
def _ulid_time(ms: int) -> str:
    """The first 10 digits of the ULIDs of one millisecond (events in the same millisecond share them)."""
    return "".join([_PAIRS[(ms >> shift) & 1023] for shift in range(40, -1, -10)])
