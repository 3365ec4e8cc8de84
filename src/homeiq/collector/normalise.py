"""HA event → NormalisedEvent: timestamps by the point-identity rule, enrichment from the registries."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Final

import msgspec

from homeiq.shared import events
from homeiq.shared.ha.frames import (
    EventFrame,
    HAEvent,
    HAState,
    StateChangedData,
    StateEventFrame,
    event_decoder,
    state_changed_decoder,
)
from homeiq.shared.ha.registry import Registry
from homeiq.shared.times import datetime_ns

_NO_CONTEXT: Final = events.Context()


def event_time_ns(fired_ns: int, event_type: str, context: events.Context, data: bytes) -> int:
    """`time_fired` plus sub-microsecond nanoseconds derived from the event's identity (type, context id,
    data): HA's times are whole microseconds, and two events of one type can share one. The same event
    always gets the same time, so a re-delivery still overwrites its own point."""
    digest = hashlib.blake2b(digest_size=8)
    for part in (event_type.encode(), (context.id or "").encode(), data):
        digest.update(len(part).to_bytes(8, "big") + part)
    return fired_ns + int.from_bytes(digest.digest(), "big") % 1000


class PointTimes:
    """Keeps the point times of recent events without a state of their own distinct within their series:
    the derived nanoseconds of two events can coincide (one chance in a thousand); then the later one
    takes the next free nanosecond of its microsecond. The same event sent twice (same time, context id and
    data) keeps its time: one point. Decided once, before XADD: re-deliveries of the entry carry it too. An event is
    told from another by a 16-byte digest of its encoding (~140 bytes an entry, where keeping the encoding cost
    ~400 and more).

    Two events share a time only when HA fired them in one microsecond, so they arrive one right after the other
    (a copy of one, as the fault suite sends, is remembered as long as an entry stays): what must be remembered is
    the last moments, not hours. A restart empties it anyway, so nothing may rely on it remembering longer. 10,000
    entries: minutes of a busy home's service calls and automations, 1.4 MB (it kept 100,000, 14 MB, which took
    the soak 2 M events to fill: a warm-up that looked like growth)."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._recent: dict[tuple[str, str | None, int], bytes] = {}

    def __len__(self) -> int:
        return len(self._recent)

    @property
    def size(self) -> int:
        """The most it keeps."""
        return self._size

    def unique(self, event: events.NormalisedEvent) -> events.NormalisedEvent:
        """`event`, moved to a free nanosecond of its microsecond if another recent event of its series holds
        its time."""
        time_ns, key = event.time_ns, (event.event_type, event.entity_id, event.time_ns)
        identity = hashlib.blake2b(event.time_fired_ns.to_bytes(16, "big", signed=True) + events.encode_event(event),
                                   digest_size=16).digest()
        microsecond, offset = time_ns - time_ns % 1000, time_ns % 1000
        for step in range(1, 1000):
            if self._recent.get(key, identity) == identity:
                break
            key = (event.event_type, event.entity_id, microsecond + (offset + step) % 1000)
        self._recent[key] = identity
        if len(self._recent) > self._size:
            del self._recent[next(iter(self._recent))]
        return event if key[2] == time_ns else msgspec.structs.replace(event, time_ns=key[2])


def _state(state: HAState, fired: datetime, fired_ns: int, attributes: bool = True) -> events.State:
    # A new state is usually updated when its event fired, and changed when updated: one conversion, not three.
    updated_ns = fired_ns if state.last_updated == fired else datetime_ns(state.last_updated)
    return events.State(
        state=state.state,
        attributes=state.attributes if attributes else events.NO_ATTRIBUTES,
        last_changed_ns=updated_ns if state.last_changed == state.last_updated else datetime_ns(state.last_changed),
        last_updated_ns=updated_ns,
    )


def normalise_state_changed(
    data: StateChangedData, time_fired: datetime, origin: str | None, context: events.Context | None,
    registry: Registry,
) -> events.NormalisedEvent:
    """A `state_changed` event as the stream payload."""
    fired_ns = datetime_ns(time_fired)
    new = _state(data.new_state, time_fired, fired_ns) if data.new_state else None
    shown = data.new_state or data.old_state
    ctx = (context or _NO_CONTEXT)
    return events.NormalisedEvent(
        event_type="state_changed",
        # A state's point is stamped with its last_updated, so live, replayed and backfilled copies coincide.
        time_ns=new.last_updated_ns if new else event_time_ns(fired_ns, "state_changed", ctx, data.entity_id.encode()),
        time_fired_ns=fired_ns,
        origin=origin,
        context=ctx,
        entity_id=data.entity_id,
        domain=data.entity_id.partition(".")[0],
        new_state=new,
        # A change's old state goes without its attributes (no writer reads them: half the bytes of an entry whose
        # attributes are most of it); a removal's are what its point shows.
        old_state=_state(data.old_state, time_fired, fired_ns, attributes=new is None) if data.old_state else None,
        enrichment=registry.enrichment(data.entity_id, shown.attributes if shown else None),
    )


def normalise(event: HAEvent, registry: Registry) -> events.NormalisedEvent:
    """Build the stream payload of any event; raises msgspec errors when `state_changed` data is malformed."""
    if event.event_type == "state_changed":
        data = state_changed_decoder.decode(event.data)
        return normalise_state_changed(data, event.time_fired, event.origin, event.context, registry)
    fired_ns = datetime_ns(event.time_fired)
    context = (event.context or _NO_CONTEXT)
    return events.NormalisedEvent(
        event_type=event.event_type, time_ns=event_time_ns(fired_ns, event.event_type, context, bytes(event.data)),
        time_fired_ns=fired_ns, origin=event.origin, context=context, data=event.data,
    )


def event_of(frame: EventFrame | StateEventFrame, registry: Registry) -> events.NormalisedEvent:
    """The stream payload of an event frame as the reader decoded it (a `state_changed` one already typed); raises
    msgspec errors, ValueError, TypeError or OverflowError for an event that cannot be normalised."""
    if isinstance(frame, StateEventFrame):
        typed = frame.event
        return normalise_state_changed(typed.data, typed.time_fired, typed.origin, typed.context, registry)
    return normalise(event_decoder.decode(frame.event), registry)
