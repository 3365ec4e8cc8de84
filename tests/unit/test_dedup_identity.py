"""Two collectors' copies of one event have one identity; two events never share one."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from homeiq.collector.dedup import BUCKET_NS, identity
from homeiq.shared.events import Context, Enrichment, NormalisedEvent, State, encode_enrichment, encode_event

T = 1_733_000_000_123_456_000


def state_change(entity_id: str = "sensor.t", updated_ns: int = T, value: str = "21.5") -> NormalisedEvent:
    return NormalisedEvent(event_type="state_changed", time_ns=updated_ns, time_fired_ns=updated_ns,
                           context=Context(id="01J0CTX"), entity_id=entity_id, domain="sensor",
                           new_state=State(state=value, last_updated_ns=updated_ns, last_changed_ns=updated_ns))


def call(context_id: str = "01J0CALL", data: bytes = b'{"domain":"light","service":"turn_on"}',
         fired_ns: int = T, point_ns: int = T + 417) -> NormalisedEvent:
    return NormalisedEvent(event_type="call_service", time_ns=point_ns, time_fired_ns=fired_ns,
                           context=Context(id=context_id), data=msgspec.Raw(data))


def test_what_a_collector_adds_of_its_own_is_not_part_of_the_identity() -> None:
    live = state_change()
    # The other collector's copy: its registry refreshed later, its measure of HA's clock, from the recorder.
    other = msgspec.structs.replace(live, enrichment=encode_enrichment(Enrichment(area_id="kitchen")),
                                    ha_clock_skew_ns=3_000_000_000,
                                    source="backfill", context=Context(), time_fired_ns=T + 5)
    assert identity(encode_event(live)) == identity(encode_event(other))
    # A point time moved off a collision by one collector and not by the other.
    assert identity(encode_event(call())) == identity(encode_event(call(point_ns=T + 418)))


def test_distinct_events_have_distinct_identities() -> None:
    events = [state_change(), state_change(entity_id="sensor.u"), state_change(updated_ns=T + 1000),
              call(), call(context_id="01J0OTHER"), call(data=b'{"domain":"light","service":"turn_off"}'),
              call(fired_ns=T + 1000, point_ns=T + 1417),
              msgspec.structs.replace(call(), event_type="my_custom_event"),
              # A removal (no new state) is an event of its own, not the entity's state at that time.
              NormalisedEvent(event_type="state_changed", time_ns=T + 3, time_fired_ns=T, entity_id="sensor.t",
                              context=Context(id="01J0CTX"), old_state=State(state="21.5", last_updated_ns=T))]
    assert len({identity(encode_event(event)) for event in events}) == len(events)


def test_the_bucket_is_the_second_of_the_events_own_time() -> None:
    bucket, digest = identity(encode_event(state_change(updated_ns=T)))
    assert bucket == str(T // BUCKET_NS).encode() and len(digest) == 16
    assert identity(encode_event(state_change(updated_ns=T + BUCKET_NS)))[0] == str(T // BUCKET_NS + 1).encode()


@given(st.binary(max_size=64))
def test_payloads_that_are_not_events_are_told_apart_by_their_bytes(tail: bytes) -> None:
    first, second = identity(b"\xff" + tail), identity(b"\xfe" + tail)  # never JSON
    assert first != second and len(first[1]) == 16
    assert identity(b"\xff" + tail) == first
