"""The normalised event: what the collector puts in the stream and the writer decodes.

Schema evolution follows msgspec's rules: new fields get defaults, no field ever changes type.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

PAYLOAD_VERSION: Final = "1"

Source = Literal["live", "backfill", "snapshot"]
NO_DATA: Final = msgspec.Raw(b"null")
NO_ATTRIBUTES: Final = msgspec.Raw(b"{}")
NO_ENRICHMENT: Final = msgspec.Raw(b"{}")


class Context(msgspec.Struct, gc=False, frozen=True, omit_defaults=True):
    """HA's context: who or what caused the event."""

    id: str | None = None
    parent_id: str | None = None
    user_id: str | None = None


class State(msgspec.Struct, gc=False, frozen=True, omit_defaults=True):
    """One entity state; times are integer nanoseconds since the epoch, whole microseconds. An event's old state
    has attributes only when it has no new state (a removal)."""

    state: str
    attributes: msgspec.Raw = NO_ATTRIBUTES
    last_changed_ns: int = 0
    last_updated_ns: int = 0


class Enrichment(msgspec.Struct, gc=False, frozen=True, omit_defaults=True):
    """What the registries know about the entity at the time the collector saw the event."""

    device_id: str | None = None
    device_name: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    sw_version: str | None = None
    area_id: str | None = None
    area_name: str | None = None
    floor_id: str | None = None
    floor_name: str | None = None
    platform: str | None = None
    entity_category: str | None = None
    device_class: str | None = None
    unit: str | None = None
    friendly_name: str | None = None


class NormalisedEvent(msgspec.Struct, gc=False, frozen=True, omit_defaults=True):
    """One HA event, ready for the writer; `time_ns` is the point's timestamp (see point identity)."""

    event_type: str
    time_ns: int
    time_fired_ns: int = 0
    origin: str | None = None
    context: Context = Context()
    entity_id: str | None = None
    domain: str | None = None
    new_state: State | None = None
    old_state: State | None = None
    data: msgspec.Raw = NO_DATA  # the raw `data` of events other than state_changed
    # An `Enrichment` as JSON (`enrichment_of` reads it): the collector encodes an entity's once, not an event's each
    # time, and the writer decodes it only when it changed (a third of the work of either, an event, was this).
    enrichment: msgspec.Raw = NO_ENRICHMENT
    source: Source = "live"
    # HA's clock minus the collector's as measured when a live event arrived, set only when a second or more:
    # the writer measures latency from `time_ns - ha_clock_skew_ns` (our clock), not from HA's.
    ha_clock_skew_ns: int = 0


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(NormalisedEvent)
_enrichment_decoder = msgspec.json.Decoder(Enrichment)
_NOTHING_KNOWN: Final = Enrichment()


def encode_enrichment(enrichment: Enrichment) -> msgspec.Raw:
    """An enrichment as an event carries it (nothing known: the default, left out of the event's JSON)."""
    return NO_ENRICHMENT if enrichment == _NOTHING_KNOWN else msgspec.Raw(_encoder.encode(enrichment))


def enrichment_of(encoded: msgspec.Raw) -> Enrichment:
    """An event's `enrichment`: what the registries knew of its entity; raises msgspec.DecodeError or
    msgspec.ValidationError when it is none (saying where, as decoding the whole event did)."""
    try:
        return _enrichment_decoder.decode(encoded)
    except msgspec.ValidationError as exc:
        text = str(exc)
        inside = " - at `$"
        where = text.replace(inside, inside + ".enrichment", 1) if inside in text else f"{text} - at `$.enrichment`"
        raise msgspec.ValidationError(where) from None


class EnrichmentCheck:
    """Refuses an event whose `enrichment` is no `Enrichment`, as decoding the event refused it before the field was
    kept as JSON (`decode_event` takes any JSON there now): each entity's checked once until it changes."""

    def __init__(self, size: int = 20_000) -> None:
        self._size = size
        self._checked: dict[str | None, msgspec.Raw] = {}  # entity → a copy of its last good enrichment

    def __call__(self, event: NormalisedEvent) -> None:
        """Raise msgspec.ValidationError (or DecodeError) unless the event's enrichment is good."""
        last = self._checked.get(event.entity_id)
        if last is not None and last == event.enrichment:
            return
        enrichment_of(event.enrichment)
        if len(self._checked) >= self._size:
            self._checked.clear()
        self._checked[event.entity_id] = msgspec.Raw(bytes(event.enrichment))  # a copy: not a view of its entry


def encode_event(event: NormalisedEvent) -> bytes:
    """Serialise an event for the stream's `e` field."""
    return _encoder.encode(event)


def decode_event(payload: bytes) -> NormalisedEvent:
    """Parse a stream `e` field; raises msgspec.DecodeError or msgspec.ValidationError when bad."""
    return _decoder.decode(payload)
