"""HA's WebSocket frames as msgspec Structs: a tagged union on `type`, decoded once per frame."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from homeiq.shared.events import Context


class AuthRequired(msgspec.Struct, gc=False, tag_field="type", tag="auth_required"):
    """First server message."""

    ha_version: str = ""


class AuthOk(msgspec.Struct, gc=False, tag_field="type", tag="auth_ok"):
    """Authentication accepted."""

    ha_version: str = ""


class AuthInvalid(msgspec.Struct, gc=False, tag_field="type", tag="auth_invalid"):
    """Authentication refused; HA closes the socket next."""

    message: str = ""


class ErrorInfo(msgspec.Struct, gc=False):
    """The `error` of a failed result."""

    code: str = ""
    message: str = ""


class Result(msgspec.Struct, gc=False, tag_field="type", tag="result"):
    """The answer to one command."""

    id: int
    success: bool
    result: msgspec.Raw = msgspec.Raw(b"null")
    error: ErrorInfo | None = None


class EventFrame(msgspec.Struct, gc=False, tag_field="type", tag="event"):
    """An event for subscription `id`; `event` is decoded later by its consumer."""

    id: int
    event: msgspec.Raw


class Pong(msgspec.Struct, gc=False, tag_field="type", tag="pong"):
    """The answer to `ping`."""

    id: int


Frame = AuthRequired | AuthOk | AuthInvalid | Result | EventFrame | Pong

# What decoding a message can raise: text frames are UTF-8 bytes, checked where a string is decoded.
UNDECODABLE = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError)

# A frame is one message or, with coalescing, an array of messages.
frame_decoder = msgspec.json.Decoder(Frame | list[Frame])
single_decoder: msgspec.json.Decoder[Frame] = msgspec.json.Decoder(Frame)
raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])


# HA sends every time with its UTC offset; one without is malformed (decoding refuses it, the event is counted)
# rather than a naive datetime that would fail later, in arithmetic, outside the reader's error handling.
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]


class HAState(msgspec.Struct, gc=False):
    """The fields of `State.as_dict()` the collector uses (`last_reported`, newer HA only, is not needed)."""

    state: str
    last_changed: AwareTime
    last_updated: AwareTime
    attributes: msgspec.Raw = msgspec.Raw(b"{}")


class StateChangedData(msgspec.Struct, gc=False):
    """`data` of a `state_changed` event."""

    entity_id: str
    old_state: HAState | None = None
    new_state: HAState | None = None


class HAEvent(msgspec.Struct, gc=False):
    """An event as HA serialises it (`Event.as_dict()`)."""

    event_type: str
    time_fired: AwareTime
    data: msgspec.Raw = msgspec.Raw(b"{}")
    origin: str | None = None
    context: Context | None = None


class StateChangedEvent(msgspec.Struct, gc=False):
    """A `state_changed` event decoded in one pass (the fast path: almost every event is one)."""

    event_type: Literal["state_changed"]
    data: StateChangedData
    time_fired: AwareTime
    origin: str | None = None
    context: Context | None = None


class StateEventFrame(msgspec.Struct, gc=False, tag_field="type", tag="event"):
    """An event frame whose event is a `state_changed`."""

    id: int
    event: StateChangedEvent


FastFrame = AuthRequired | AuthOk | AuthInvalid | Result | StateEventFrame | Pong

# Tried first; a frame holding anything else (another event type, an unknown type) falls back to Frame.
fast_frame_decoder = msgspec.json.Decoder(FastFrame | list[FastFrame])


class KnownAttributes(msgspec.Struct, gc=False):
    """The attributes the collector reads for enrichment and filtering; all others pass through raw."""

    device_class: Any = None
    unit_of_measurement: Any = None
    friendly_name: Any = None


class MessageId(msgspec.Struct):
    """Only the `id` of a message (of one that cannot be read as a whole)."""

    id: int


id_decoder = msgspec.json.Decoder(MessageId)
event_decoder = msgspec.json.Decoder(HAEvent)
state_changed_decoder = msgspec.json.Decoder(StateChangedData)
attributes_decoder = msgspec.json.Decoder(KnownAttributes)
