"""HA events (captured from a real Home Assistant) → normalised stream payloads."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from homeiq.collector.normalise import PointTimes, normalise
from homeiq.shared.events import decode_event, encode_event, enrichment_of
from homeiq.shared.ha import frames
from homeiq.shared.ha.registry import Registry
from homeiq.shared.times import datetime_ns, float_ns

CAPTURES = Path(__file__).parents[1] / "captures"
STATE_CHANGED = (
    '{"event_type":"state_changed","data":{"entity_id":"sensor.kitchen_temp","old_state":null,'
    '"new_state":{"entity_id":"sensor.kitchen_temp","state":"21.5","attributes":{"unit_of_measurement":"°C",'
    '"device_class":"temperature","friendly_name":"Kitchen"},"last_changed":"2026-06-25T21:20:05+00:00",'
    '"last_reported":"2026-06-25T21:20:05.162552+00:00","last_updated":"2026-06-25T21:20:05.162552+00:00",'
    '"context":{"id":"01KW0AF0","parent_id":null,"user_id":null}}},"origin":"LOCAL",'
    '"time_fired":"2026-06-25T21:20:05.162552+00:00","context":{"id":"01KW0AF0","parent_id":null,"user_id":null}}'
)


def registry() -> Registry:
    reg = Registry()
    reg.load("floor", b'[{"floor_id":"ground","name":"Ground"}]')
    reg.load("area", b'[{"area_id":"kitchen","name":"Kitchen","floor_id":"ground"}]')
    reg.load("device", b'[{"id":"dev1","name":"Thermo","manufacturer":"Aqara","model":"T1","sw_version":"1.2",'
                       b'"area_id":"kitchen"}]')
    reg.load("entity", b'[{"entity_id":"sensor.kitchen_temp","device_id":"dev1","area_id":null,'
                       b'"platform":"zha","entity_category":null}]')
    return reg


def test_state_point_is_stamped_with_last_updated_in_whole_microseconds() -> None:
    event = normalise(frames.event_decoder.decode(STATE_CHANGED), registry())
    assert event.time_ns == 1782422405162552000
    assert event.new_state is not None and event.new_state.last_changed_ns == 1782422405000000000
    assert (event.entity_id, event.domain, event.old_state) == ("sensor.kitchen_temp", "sensor", None)


def test_enrichment_comes_from_registries_and_attributes() -> None:
    enrichment = enrichment_of(normalise(frames.event_decoder.decode(STATE_CHANGED), registry()).enrichment)
    assert (enrichment.device_id, enrichment.manufacturer, enrichment.model, enrichment.sw_version) == (
        "dev1", "Aqara", "T1", "1.2")
    # The entity has no area of its own: the device's area applies, and its floor.
    assert (enrichment.area_id, enrichment.area_name, enrichment.floor_name) == ("kitchen", "Kitchen", "Ground")
    assert (enrichment.device_class, enrichment.unit, enrichment.platform) == ("temperature", "°C", "zha")


def test_enrichment_follows_the_attributes_it_takes_and_the_registries_as_they_change() -> None:
    reg = registry()

    def known(attributes: dict[str, object]) -> tuple[str | None, str | None, str | None, str | None]:
        found = enrichment_of(reg.enrichment("sensor.kitchen_temp", msgspec.Raw(msgspec.json.encode(attributes))))
        return found.unit, found.friendly_name, found.device_class, found.area_name

    first = {"unit_of_measurement": "°C", "friendly_name": "Kitchen", "battery": 90}
    assert known(first) == ("°C", "Kitchen", None, "Kitchen")
    assert known({**first, "battery": 89}) == ("°C", "Kitchen", None, "Kitchen")  # another attribute changed
    assert known({**first, "friendly_name": "Cooking"}) == ("°C", "Cooking", None, "Kitchen")
    assert known({**first, "device_class": "temperature"}) == ("°C", "Kitchen", "temperature", "Kitchen")
    reg.load("area", b'[{"area_id":"kitchen","name":"Galley","floor_id":"ground"}]')  # renamed in HA
    assert known(first) == ("°C", "Kitchen", None, "Galley")


def test_removal_event_is_kept_and_stamped_within_the_microsecond_of_time_fired() -> None:
    removal = json.loads(STATE_CHANGED)
    removal["data"]["old_state"], removal["data"]["new_state"] = removal["data"]["new_state"], None
    removal["time_fired"] = "2026-06-25T21:21:00.000001+00:00"
    event = normalise(frames.event_decoder.decode(json.dumps(removal)), registry())
    assert event.new_state is None and event.old_state is not None
    assert event.time_ns // 1000 == 1782422460000001  # HA's microsecond; the nanoseconds tell events apart
    assert enrichment_of(event.enrichment).device_class == "temperature"


def test_captured_frames_decode_and_round_trip_through_the_stream_payload() -> None:
    frame = frames.frame_decoder.decode((CAPTURES / "state_changed_example.json").read_bytes())
    assert isinstance(frame, frames.EventFrame)
    event = normalise(frames.event_decoder.decode(frame.event), Registry())
    # Captured from HA 2024.3, which has no last_reported: accepted all the same.
    assert event.entity_id == "input_boolean.bool_1"
    assert event.new_state is not None and event.new_state.state == "on"
    assert event.context.user_id == "0e8df5cbe0d447799e44aa601b68033d"
    assert decode_event(encode_event(event)) == event


def test_other_events_keep_their_data_and_time_fired() -> None:
    raw = ('{"event_type":"call_service","data":{"domain":"light","service":"turn_on"},"origin":"LOCAL",'
           '"time_fired":"2026-06-25T21:20:05.5+00:00","context":{"id":"X","parent_id":"P","user_id":null}}')
    event = normalise(frames.event_decoder.decode(raw), Registry())
    assert datetime_ns(frames.event_decoder.decode(raw).time_fired) == 1782422405500000000
    assert event.time_ns // 1000 == 1782422405500000 and event.time_fired_ns == 1782422405500000000
    assert normalise(frames.event_decoder.decode(raw), Registry()).time_ns == event.time_ns  # a re-delivery
    assert json.loads(bytes(event.data)) == {"domain": "light", "service": "turn_on"}
    assert decode_event(encode_event(event)) == event
    assert event.entity_id is None and event.context.parent_id == "P"


def test_malformed_state_data_raises_for_the_caller_to_count() -> None:
    raw = STATE_CHANGED.replace('"state":"21.5"', '"state":21.5')
    with pytest.raises(msgspec.ValidationError):
        normalise(frames.event_decoder.decode(raw), Registry())


@given(st.floats(min_value=1.6e9, max_value=2.2e9, allow_nan=False))
def test_backfill_converts_recorder_floats_as_live_events_show_them(ts: float) -> None:
    """The recorder's raw float and the live event's ISO string of the same instant give the same point time."""
    live = datetime_ns(datetime.fromisoformat(datetime.fromtimestamp(ts, UTC).isoformat()))
    assert float_ns(ts) == live


def test_events_of_one_type_in_one_microsecond_get_distinct_point_times() -> None:
    times = PointTimes()
    raw = ('{{"event_type":"automation_triggered","data":{{"name":"a"}},"origin":"LOCAL",'
           '"time_fired":"2026-06-25T21:20:05.5+00:00","context":{{"id":"{0}"}}}}')
    stamped = [times.unique(normalise(frames.event_decoder.decode(raw.format(n % 500)), Registry()))
               for n in range(1000)]  # 500 distinct events, then the same 500 sent once more
    assert len({e.time_ns for e in stamped}) == 500  # 500 points: distinct events never share one
    assert [e.time_ns for e in stamped[:500]] == [e.time_ns for e in stamped[500:]]  # a duplicate overwrites
    assert {e.time_ns // 1000 for e in stamped} == {1782422405500000}


def test_the_point_times_kept_cost_little_memory_however_large_the_events() -> None:
    """The soak found it: full (then 100,000 events without a state of their own, ~5 h of a busy home's service calls
    and automations), PointTimes held every event's encoding to tell a re-delivery, ~40 MB in the collector for
    events of 400 bytes and more for larger ones. A digest of it tells the same."""
    import tracemalloc  # noqa: PLC0415

    raw = ('{{"event_type":"call_service","data":{{"domain":"light","service":"turn_on","service_data":'
           '{{"entity_id":"light.kitchen_{0}","brightness":{1},"transition":2,"color_name":"warm_white"}}}},'
           '"origin":"LOCAL","time_fired":"2026-06-25T21:20:{2:02d}.{0:06d}+00:00","context":{{"id":"{0}"}}}}')
    events = [normalise(frames.event_decoder.decode(raw.format(n, n % 255, n % 60)), Registry())
              for n in range(5000)]
    times = PointTimes()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for event in events:
            times.unique(event)
        per_event = (tracemalloc.get_traced_memory()[0] - before) / len(times)
    finally:
        tracemalloc.stop()
    assert len(times) == 5000
    assert per_event < 200, f"{per_event:.0f} bytes kept per event"


def test_a_changes_old_state_goes_without_its_attributes_which_no_writer_reads() -> None:
    change = json.loads(STATE_CHANGED)
    change["data"]["old_state"] = dict(change["data"]["new_state"], state="21.0",
                                       last_changed="2026-06-25T21:19:00+00:00",
                                       last_updated="2026-06-25T21:19:00+00:00")
    event = normalise(frames.event_decoder.decode(json.dumps(change)), registry())
    assert event.old_state is not None and event.new_state is not None
    assert (event.old_state.state, event.old_state.last_changed_ns) == ("21.0", 1782422340000000000)
    assert event.old_state.attributes == msgspec.Raw(b"{}")
    assert b'"old_state":{"state":"21.0","last_changed_ns"' in encode_event(event)
    assert json.loads(bytes(event.new_state.attributes))["friendly_name"] == "Kitchen"


def test_a_removals_old_state_keeps_its_attributes_the_point_shows() -> None:
    removal = json.loads(STATE_CHANGED)
    removal["data"]["old_state"], removal["data"]["new_state"] = removal["data"]["new_state"], None
    event = normalise(frames.event_decoder.decode(json.dumps(removal)), registry())
    assert event.old_state is not None
    assert json.loads(bytes(event.old_state.attributes))["unit_of_measurement"] == "°C"
