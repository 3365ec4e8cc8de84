"""HA event → NormalisedEvent: timestamps by the point-identity rule, enrichment from the registries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from homeiq_collector.frames import (
    Context,
    HAEvent,
    HAState,
    StateChangedData,
    state_changed_decoder,
)
from homeiq_collector.registry import Registry
from homeiq_shared import events

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_NO_CONTEXT: Final = events.Context()


def to_ns(moment: datetime) -> int:
    """A timezone-aware datetime as integer nanoseconds since the epoch, whole microseconds."""
    return ((moment - _EPOCH) // _MICROSECOND) * 1000


def _state(state: HAState) -> events.State:
    return events.State(
        state=state.state,
        attributes=state.attributes,
        last_changed_ns=to_ns(state.last_changed),
        last_updated_ns=to_ns(state.last_updated),
    )


def _context(context: Context | None) -> events.Context:
    if context is None:
        return _NO_CONTEXT
    return events.Context(id=context.id, parent_id=context.parent_id, user_id=context.user_id)


def normalise_state_changed(
    data: StateChangedData, time_fired: datetime, origin: str | None, context: Context | None,
    registry: Registry, source: events.Source = "live",
) -> events.NormalisedEvent:
    """A `state_changed` event as the stream payload."""
    fired_ns = to_ns(time_fired)
    new = _state(data.new_state) if data.new_state else None
    shown = data.new_state or data.old_state
    return events.NormalisedEvent(
        event_type="state_changed",
        # A state's point is stamped with its last_updated, so live, replayed and backfilled copies coincide.
        time_ns=new.last_updated_ns if new else fired_ns,
        time_fired_ns=fired_ns,
        origin=origin,
        context=_context(context),
        entity_id=data.entity_id,
        domain=data.entity_id.partition(".")[0],
        new_state=new,
        old_state=_state(data.old_state) if data.old_state else None,
        enrichment=registry.enrichment(data.entity_id, shown.attributes if shown else None),
        source=source,
    )


def normalise(event: HAEvent, registry: Registry, source: events.Source = "live") -> events.NormalisedEvent:
    """Build the stream payload of any event; raises msgspec errors when `state_changed` data is malformed."""
    if event.event_type == "state_changed":
        data = state_changed_decoder.decode(event.data)
        return normalise_state_changed(data, event.time_fired, event.origin, event.context, registry, source)
    fired_ns = to_ns(event.time_fired)
    return events.NormalisedEvent(
        event_type=event.event_type, time_ns=fired_ns, time_fired_ns=fired_ns, origin=event.origin,
        context=_context(event.context), data=event.data, source=source,
    )
