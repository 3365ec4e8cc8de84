"""The one builder of normalised events for tests (what the collector puts in the stream)."""

from __future__ import annotations

from typing import Any

import msgspec

from homeiq.shared.events import Enrichment, NormalisedEvent, State, encode_enrichment, encode_event

BASE_NS = 1_700_000_000_000_000_000


def state_event(n: int = 0, state: str | None = None, attributes: bytes = b'{"friendly_name":"S"}',
                entity_id: str | None = None, device_class: str | None = None, area_id: str | None = "kitchen",
                **changes: Any) -> NormalisedEvent:
    """A `state_changed` of `entity_id` (default `sensor.s<n % 50>`) at a time unique to `n`, with state `str(n)`
    unless given, enriched with a device and an area; any other field through `changes`."""
    entity_id = entity_id or f"sensor.s{n % 50}"
    time_ns = BASE_NS + n * 1000
    event = NormalisedEvent(
        event_type="state_changed", time_ns=time_ns, entity_id=entity_id, domain=entity_id.partition(".")[0],
        new_state=State(state=state if state is not None else str(n), attributes=msgspec.Raw(attributes),
                        last_updated_ns=time_ns),
        enrichment=encode_enrichment(Enrichment(device_id=f"dev{n % 7}", area_id=area_id,
                                                device_class=device_class)),
    )
    return msgspec.structs.replace(event, **changes)


def state_payload(n: int = 0, *args: Any, **kwargs: Any) -> bytes:
    """`state_event` (same arguments) as the stream's `e` field."""
    return encode_event(state_event(n, *args, **kwargs))


def other_payload(event_type: str, n: int, data: bytes = b"{}") -> bytes:
    """An event without a state of its own (a service call, an automation) as the stream's `e` field."""
    return encode_event(NormalisedEvent(event_type=event_type, time_ns=BASE_NS + n * 1000, data=msgspec.Raw(data)))
