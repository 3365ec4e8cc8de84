"""The line-protocol encoder: schema v1, exact escaping, one type per field, checked against real influxd."""

from __future__ import annotations

import re

import msgspec
import pytest

from homeiq.local.services import InfluxServer
from homeiq.shared.events import Context, Enrichment, NormalisedEvent, State, encode_enrichment
from homeiq.shared.influx.lineprotocol import encode_line, event_category, numeric_value, tag_value
from homeiq.shared.influx.sink import Outcome, v1_sink


def state_event(state: str = "21.5", **changes: object) -> NormalisedEvent:
    event = NormalisedEvent(
        event_type="state_changed", time_ns=1_700_000_000_123_456_000, entity_id="sensor.kitchen_temp",
        domain="sensor", context=Context(id="01ABC", user_id="u1"),
        new_state=State(state=state, attributes=msgspec.Raw(b'{"unit_of_measurement":"\\u00b0C","a":"x\\"y"}'),
                        last_changed_ns=1_700_000_000_000_000_000, last_updated_ns=1_700_000_000_123_456_000),
        old_state=State(state="21.0", last_changed_ns=1_699_999_990_000_000_000),
        enrichment=encode_enrichment(Enrichment(device_id="dev1", area_id="kitchen", device_class="temperature",
                                                platform="zha", manufacturer="Aqara", unit="°C",
                                                friendly_name="Kitchen temp")),
    )
    return msgspec.structs.replace(event, **changes)


def test_state_line_has_the_schema_fields_and_tags() -> None:
    line = encode_line(state_event())
    head, rest = line.split(" ", 1)  # no spaces in these tags
    fields, stamp = rest.rsplit(" ", 1)
    assert head == ("home_assistant_events,area_id=kitchen,device_class=temperature,device_id=dev1,domain=sensor,"
                    "entity_id=sensor.kitchen_temp,event_category=climate,event_type=state_changed,platform=zha")
    assert stamp == "1700000000123456000"
    assert 'state_value="21.5"' in fields and "value=21.5" in fields and 'previous_state="21.0"' in fields
    assert "duration_in_state_seconds=10.123456" in fields
    assert 'attributes="{\\"unit_of_measurement\\":\\"\\\\u00b0C\\",\\"a\\":\\"x\\\\\\"y\\"}"' in fields
    assert 'context_id="01ABC"' in fields and 'context_user_id="u1"' in fields
    assert 'source="live"' in fields and "context_parent_id" not in fields


@pytest.mark.parametrize(("state", "expected"), [
    ("21.5", 21.5), ("-3", -3.0), ("1e3", 1000.0), (".5", 0.5), ("nan", None), ("inf", None), ("-inf", None),
    ("unavailable", None), ("on", None), ("", None), ("1_000", None), (" 5", None), ("5 ", None),
])
def test_value_only_for_finite_plain_numbers(state: str, expected: float | None) -> None:
    assert numeric_value(state) == expected
    assert (re.search(r"[ ,]value=", encode_line(state_event(state))) is not None) is (expected is not None)


def test_removal_is_written_without_state_value() -> None:
    event = state_event(new_state=None, time_ns=1_700_000_100_000_000_000)
    line = encode_line(event)
    assert "state_value=" not in line and 'previous_state="21.0"' in line and line.endswith(" 1700000100000000000")


@pytest.mark.parametrize(("domain", "device_class", "category"), [
    ("lock", None, "security"), ("binary_sensor", "door", "security"), ("climate", None, "climate"),
    ("sensor", "humidity", "climate"), ("light", None, "lighting"), ("switch", None, "appliance"),
    ("sensor", "power", "appliance"), ("sensor", None, "monitoring"), ("person", None, "general"),
])
def test_event_category_follows_the_seed_rules(domain: str, device_class: str | None, category: str) -> None:
    assert event_category(domain, device_class) == category


@pytest.mark.parametrize(("value", "stored"), [
    ("kitchen", "kitchen"), ("a\\b", "a\\b"), ("a\\,b", "a\\,b"), ("a\rb\t", "a\rb\t"), (" ", " "), ('"', '"'),
    ("a\nb", '"a\\nb"'), ("x\\", '"x\\\\"'), ("\\", '"\\\\"'), ('"q"', '"\\"q\\""'), ('""', '"\\"\\""'),
])
def test_tags_line_protocol_cannot_carry_are_stored_as_json_literals(value: str, stored: str) -> None:
    assert tag_value(value) == stored
    assert "\n" not in encode_line(state_event(enrichment=encode_enrichment(Enrichment(area_id=value))))


async def test_awkward_strings_round_trip_through_influxd(influx: InfluxServer, influx_db: str) -> None:
    nasty = 'a "quoted", spaced=value \\ with\nnewline and ünïcode ✓'
    event = state_event(nasty, enrichment=encode_enrichment(Enrichment(area_id="living room,=x",
                                                                        friendly_name=nasty)))
    sink = v1_sink(influx.url, influx_db, "", "", "", 10)
    try:
        assert (await sink.write(sink.prepare(encode_line(event).encode()))).outcome is Outcome.OK
    finally:
        await sink.close()
    (point,) = influx.points(influx_db)
    assert point["state_value"] == nasty and point["friendly_name"] == nasty
    assert point["area_id"] == "living room,=x"
    assert point["attributes"] == '{"unit_of_measurement":"\\u00b0C","a":"x\\"y"}'
    assert point["time"] == 1_700_000_000_123_456_000
