"""The `ha` schema against real influxd, with an oracle written by hand.

Each case is HA states (as the stream carries them) and the points Home Assistant's `influxdb` integration
writes for them, worked out by hand from its rules (`event_to_json` in home-assistant/core
`components/influxdb/__init__.py` and `const.py` at 01ae64906312f8ed31da2ee514b50cc33b758291;
`helpers/state.py` `state_as_number`; `helpers/entityfilter.py`; `helpers/entity_values.py`), or, where
marked OURS, the point we write instead and why (haschema's docstring). The events go through the writer's
encoder and sink into influxd; the test reads back SHOW SERIES, SHOW FIELD KEYS and every value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from homeiq.local.services import InfluxServer
from homeiq.shared.config_reader import parse_config
from homeiq.shared.events import NormalisedEvent, State
from homeiq.shared.influx.haschema import HaEncoder
from homeiq.shared.influx.sink import Outcome, v1_sink

T0 = 1_764_200_000_000_000_000  # ns, whole microseconds


@dataclass
class S:
    """One state_changed event (or another event when `event_type` says so)."""

    entity_id: str
    state: str | None
    attributes: dict[str, Any] = field(default_factory=dict)
    event_type: str = "state_changed"
    fired_us: int = 0  # time_fired minus T0, µs; a sub-second value shows `precision`
    raw_attributes: bytes | None = None  # when JSON can say what a dict cannot (1e400)


@dataclass
class P:
    """One expected point."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, float | str]
    fired_us: int = 0


@dataclass
class Case:
    name: str
    states: list[S]
    points: list[P]
    config: str = ""
    skipped: dict[str, int] = field(default_factory=dict)


def tags(entity_id: str, **extra: str) -> dict[str, str]:
    domain, _, object_id = entity_id.partition(".")
    return {"domain": domain, "entity_id": object_id, **extra}


TEMP = {"unit_of_measurement": "°C", "device_class": "temperature", "friendly_name": "Kitchen"}

CASES = [
    # --- the state ---------------------------------------------------------------------------------------
    Case("numeric state: value only, the unit is the measurement and not a field",
         [S("sensor.kitchen", "21.5", TEMP)],
         [P("°C", tags("sensor.kitchen"), {"value": 21.5, "device_class_str": "temperature",
                                           "friendly_name_str": "Kitchen"})]),
    Case("float() accepts what Python accepts: spaces, underscores, exponents",
         [S("sensor.a", " 12 ", {}, fired_us=1), S("sensor.a", "1_000", {}, fired_us=2),
          S("sensor.a", "2e3", {}, fired_us=3)],
         [P("sensor.a", tags("sensor.a"), {"value": 12.0}, 1), P("sensor.a", tags("sensor.a"), {"value": 1000.0}, 2),
          P("sensor.a", tags("sensor.a"), {"value": 2000.0}, 3)]),
    Case("on/off map to 1/0 and keep the state string",
         [S("switch.kettle", "on", {"friendly_name": "Kettle"}, fired_us=1),
          S("switch.kettle", "off", {"friendly_name": "Kettle"}, fired_us=2)],
         [P("switch.kettle", tags("switch.kettle"), {"state": "on", "value": 1.0, "friendly_name_str": "Kettle"}, 1),
          P("switch.kettle", tags("switch.kettle"), {"state": "off", "value": 0.0, "friendly_name_str": "Kettle"}, 2)]),
    Case("open/closed, home/not_home, locked/unlocked, above/below_horizon",
         [S("cover.garage", "open", fired_us=1), S("cover.garage", "closed", fired_us=2),
          S("person.anna", "home", fired_us=3), S("device_tracker.phone", "not_home", fired_us=4),
          S("lock.front", "locked", fired_us=5), S("lock.front", "unlocked", fired_us=6),
          S("sun.sun", "above_horizon", fired_us=7), S("sun.sun", "below_horizon", fired_us=8)],
         [P("cover.garage", tags("cover.garage"), {"state": "open", "value": 1.0}, 1),
          P("cover.garage", tags("cover.garage"), {"state": "closed", "value": 0.0}, 2),
          P("person.anna", tags("person.anna"), {"state": "home", "value": 1.0}, 3),
          P("device_tracker.phone", tags("device_tracker.phone"), {"state": "not_home", "value": 0.0}, 4),
          P("lock.front", tags("lock.front"), {"state": "locked", "value": 1.0}, 5),
          P("lock.front", tags("lock.front"), {"state": "unlocked", "value": 0.0}, 6),
          P("sun.sun", tags("sun.sun"), {"state": "above_horizon", "value": 1.0}, 7),
          P("sun.sun", tags("sun.sun"), {"state": "below_horizon", "value": 0.0}, 8)]),
    Case("other strings: state only (state_as_number knows no 'opening', 'Away', 'heat')",
         [S("cover.garage", "opening", fired_us=1), S("input_select.mode", "Away", fired_us=2),
          S("climate.hall", "heat", {"temperature": 21, "hvac_modes": ["off", "heat"]}, fired_us=3)],
         [P("cover.garage", tags("cover.garage"), {"state": "opening"}, 1),
          P("input_select.mode", tags("input_select.mode"), {"state": "Away"}, 2),
          P("climate.hall", tags("climate.hall"), {"state": "heat", "temperature": 21.0,
                                                   "hvac_modes_str": "['off', 'heat']"}, 3)]),
    Case("unknown, unavailable and empty states, removals and other events have no point",
         [S("sensor.a", "unknown", TEMP, fired_us=1), S("sensor.a", "unavailable", TEMP, fired_us=2),
          S("sensor.a", "", TEMP, fired_us=3), S("sensor.a", None, fired_us=4),
          S("", None, {}, event_type="call_service", fired_us=5)],
         [],
         skipped={"state_unknown": 1, "state_unavailable": 1, "state_empty": 1, "removed": 1,
                  "not_state_change": 1}),
    Case("OURS: a state of nan or inf has no value (influxd refuses it); no field left, no point",
         [S("sensor.a", "nan", {"friendly_name": "A"}, fired_us=1), S("sensor.b", "inf", {}, fired_us=2)],
         [P("sensor.a", tags("sensor.a"), {"friendly_name_str": "A"}, 1)],
         skipped={"no_fields": 1}),
    Case("a state of nan or inf keeps the name `value` taken, as in HA: an attribute `value` is written `value_`",
         [S("sensor.a", "nan", {"value": 7, "friendly_name": "A"}, fired_us=1),
          S("sensor.b", "inf", {"value": "x"}, fired_us=2)],
         [P("sensor.a", tags("sensor.a"), {"value_": 7.0, "friendly_name_str": "A"}, 1),
          P("sensor.b", tags("sensor.b"), {"value__str": "x"}, 2)]),
    # --- attributes --------------------------------------------------------------------------------------
    Case("each attribute kind: int, bool, null, list, dict, numeric string, text",
         [S("light.desk", "on", {"brightness": 255, "is_on": True, "effect": None, "rgb_color": [255, 0, 0],
                                 "extra": {"a": 1}, "level": "42", "icon": "mdi:lamp"})],
         [P("light.desk", tags("light.desk"), {"state": "on", "value": 1.0, "brightness": 255.0, "is_on": 1.0,
                                               "effect_str": "None", "rgb_color_str": "(255, 0, 0)",
                                               "rgb_color": 25500.0,
                                               "extra_str": "{'a': 1}", "level": 42.0, "icon_str": "mdi:lamp"})]),
    Case("a light's colours are tuples and its colour modes ColorMode members in HA: their text is str() of those",
         [S("light.desk", "on", {"hs_color": [30.0, 50.0], "rgb_color": [255, 191, 128], "xy_color": [0.46, 0.39],
                                 "rgbw_color": [255, 191, 128, 0], "supported_color_modes": ["color_temp", "hs"],
                                 "color_mode": "hs", "effect_list": ["a", "b"]}),
          S("sensor.list", "1", {"hs_color": [1.5, 2.5], "supported_color_modes": ["hs"]}, fired_us=1)],
         [P("light.desk", tags("light.desk"), {
             "state": "on", "value": 1.0, "hs_color_str": "(30.0, 50.0)", "rgb_color_str": "(255, 191, 128)",
             "rgb_color": 255191128.0, "xy_color_str": "(0.46, 0.39)", "rgbw_color_str": "(255, 191, 128, 0)",
             "rgbw_color": 2551911280.0,
             "supported_color_modes_str": "[<ColorMode.COLOR_TEMP: 'color_temp'>, <ColorMode.HS: 'hs'>]",
             "color_mode_str": "hs", "effect_list_str": "['a', 'b']"}),
          P("sensor.list", tags("sensor.list"), {"value": 1.0, "hs_color_str": "[1.5, 2.5]",
                                                  "supported_color_modes_str": "['hs']"}, 1)]),
    Case("an automation's and a script's last_triggered is a datetime in HA: its text is str() of it",
         [S("automation.lights", "on", {"last_triggered": "2025-03-01T07:00:12.123456+00:00", "mode": "single"}),
          S("script.bed", "off", {"last_triggered": None}, fired_us=1)],
         [P("automation.lights", tags("automation.lights"), {
             "state": "on", "value": 1.0, "last_triggered_str": "2025-03-01 07:00:12.123456+00:00",
             "last_triggered": 20250301070012.123456, "mode_str": "single"}),
          P("script.bed", tags("script.bed"), {"state": "off", "value": 0.0, "last_triggered_str": "None"}, 1)]),
    Case("numeric tail: a string with digits also gives its digits as a float",
         [S("sensor.fw", "ok", {"firmware": "v12", "version": "1.5.2", "next": "2026-11-27T07:31:12.123456+00:00",
                                "ratio": "50 %"})],
         [P("sensor.fw", tags("sensor.fw"), {"state": "ok", "firmware_str": "v12", "firmware": 12.0,
                                             "version_str": "1.5.2", "next_str": "2026-11-27T07:31:12.123456+00:00",
                                             "next": 20261127073112.123456, "ratio_str": "50 %", "ratio": 50.0})]),
    Case("NaN and infinities are dropped (strings, and a JSON number beyond a double)",
         [S("sensor.x", "1", raw_attributes=b'{"a":"nan","b":"-Infinity","c":1e400,"d":3}')],
         [P("sensor.x", tags("sensor.x"), {"value": 1.0, "d": 3.0})]),  # float("nan") works: no a_str
    Case("a key already in the fields becomes <key>_ (value and state clash)",
         [S("switch.a", "on", {"value": 7, "state": "x"}, fired_us=1),
          S("sensor.b", "3", {"value": "abc"}, fired_us=2)],
         [P("switch.a", tags("switch.a"), {"state": "on", "value": 1.0, "value_": 7.0, "state__str": "x"}, 1),
          P("sensor.b", tags("sensor.b"), {"value": 3.0, "value__str": "abc"}, 2)]),
    Case("OURS: type follows the name; a float never lands in `state` or `*_str`, nothing in `time`",
         [S("sensor.c", "3", {"state": 5, "mode_str": 4, "time": 9, "level_str": "x75"})],
         [P("sensor.c", tags("sensor.c"), {"value": 3.0, "state_": 5.0, "mode_str_": 4.0, "time_": 9.0,
                                           "level_str_str": "x75", "level_str_": 75.0})]),
    # --- measurement -------------------------------------------------------------------------------------
    Case("measurement_attr unit_of_measurement (default): no unit → the entity id; empty unit too, kept as field",
         [S("sensor.p", "5", {"unit_of_measurement": "W"}, fired_us=1), S("sensor.q", "5", {}, fired_us=2),
          S("sensor.r", "5", {"unit_of_measurement": ""}, fired_us=3)],
         [P("W", tags("sensor.p"), {"value": 5.0}, 1), P("sensor.q", tags("sensor.q"), {"value": 5.0}, 2),
          P("sensor.r", tags("sensor.r"), {"value": 5.0, "unit_of_measurement_str": ""}, 3)]),
    Case("measurement_attr domain__device_class: device_class not a field, the unit is",
         [S("sensor.kitchen", "21.5", TEMP, fired_us=1), S("sensor.q", "5", {"unit_of_measurement": "W"}, fired_us=2)],
         [P("sensor__temperature", tags("sensor.kitchen"),
            {"value": 21.5, "unit_of_measurement_str": "°C", "friendly_name_str": "Kitchen"}, 1),
          P("sensor", tags("sensor.q"), {"value": 5.0, "unit_of_measurement_str": "W"}, 2)],
         config="measurement_attr: domain__device_class"),
    Case("measurement_attr entity_id",
         [S("sensor.kitchen", "21.5", TEMP)],
         [P("sensor.kitchen", tags("sensor.kitchen"), {"value": 21.5, "unit_of_measurement_str": "°C",
                                                       "device_class_str": "temperature",
                                                       "friendly_name_str": "Kitchen"})],
         config="measurement_attr: entity_id"),
    Case("default_measurement when the attribute is missing",
         [S("switch.k", "on", fired_us=1), S("sensor.p", "5", {"unit_of_measurement": "W"}, fired_us=2)],
         [P("state", tags("switch.k"), {"state": "on", "value": 1.0}, 1), P("W", tags("sensor.p"), {"value": 5.0}, 2)],
         config="default_measurement: state"),
    Case("override_measurement: one measurement, the unit becomes a field",
         [S("sensor.p", "5", {"unit_of_measurement": "W"})],
         [P("ha", tags("sensor.p"), {"value": 5.0, "unit_of_measurement_str": "W"})],
         config="override_measurement: ha"),
    Case("component_config_domain < component_config_glob < component_config; ignore_attributes per entity and global",
         [S("sensor.power_a", "1", {"unit_of_measurement": "W", "icon": "i", "friendly_name": "A", "x": 1}, fired_us=1),
          S("sensor.power_b", "2", {"unit_of_measurement": "W", "icon": "i", "friendly_name": "B", "x": 1},
            fired_us=2),
          S("sensor.other", "3", {"unit_of_measurement": "W", "icon": "i", "friendly_name": "O", "x": 1}, fired_us=3),
          S("switch.s", "on", {"icon": "i", "friendly_name": "S", "x": 1}, fired_us=4)],
         [P("power", tags("sensor.power_a"), {"value": 1.0, "unit_of_measurement_str": "W", "x": 1.0}, 1),
          P("power_b", tags("sensor.power_b"), {"value": 2.0, "unit_of_measurement_str": "W", "icon_str": "i"}, 2),
          P("sensors", tags("sensor.other"), {"value": 3.0, "unit_of_measurement_str": "W", "icon_str": "i",
                                              "x": 1.0}, 3),
          P("switch.s", tags("switch.s"), {"state": "on", "value": 1.0, "icon_str": "i", "x": 1.0}, 4)],
         config="""
ignore_attributes: friendly_name
component_config_domain:
  sensor: {override_measurement: sensors}
component_config_glob:
  sensor.power_*: {override_measurement: power, ignore_attributes: [icon]}
component_config:
  sensor.power_b: {override_measurement: power_b, ignore_attributes: [x]}
""",
         ),
    # --- tags ----------------------------------------------------------------------------------------------
    Case("tags_attributes become tags (not fields), then the static tags",
         [S("sensor.kitchen", "21.5", {**TEMP, "room": "kitchen", "floor": 1})],
         [P("°C", tags("sensor.kitchen", room="kitchen", floor="1", instance="main"),
            {"value": 21.5, "device_class_str": "temperature", "friendly_name_str": "Kitchen"})],
         config="tags: {instance: main}\ntags_attributes: [room, floor]"),
    # --- filters -----------------------------------------------------------------------------------------
    Case("include domains (case 2)",
         [S("sensor.a", "1", fired_us=1), S("switch.b", "on", fired_us=2)],
         [P("sensor.a", tags("sensor.a"), {"value": 1.0}, 1)],
         config="include: {domains: [sensor]}", skipped={"entity_filter": 1}),
    Case("exclude entities and globs (case 3)",
         [S("sensor.a", "1", fired_us=1), S("sensor.b", "2", fired_us=2), S("sensor.tmp_c", "3", fired_us=3)],
         [P("sensor.a", tags("sensor.a"), {"value": 1.0}, 1)],
         config="exclude: {entities: [sensor.b], entity_globs: ['sensor.tmp_*']}", skipped={"entity_filter": 2}),
    Case("include domain + exclude glob and entity, include entity wins (case 4)",
         [S("sensor.a", "1", fired_us=1), S("sensor.tmp_b", "2", fired_us=2), S("sensor.c", "3", fired_us=3),
          S("switch.d", "on", fired_us=4), S("switch.e", "on", fired_us=5)],
         [P("sensor.a", tags("sensor.a"), {"value": 1.0}, 1),
          P("switch.e", tags("switch.e"), {"state": "on", "value": 1.0}, 5)],
         config="include: {domains: [sensor], entities: [switch.e]}\n"
                "exclude: {entity_globs: ['sensor.tmp_*'], entities: [sensor.c]}",
         skipped={"entity_filter": 3}),
    Case("exclude domain, include one entity back (case 5)",
         [S("switch.a", "on", fired_us=1), S("switch.b", "on", fired_us=2), S("sensor.c", "3", fired_us=3)],
         [P("switch.b", tags("switch.b"), {"state": "on", "value": 1.0}, 2),
          P("sensor.c", tags("sensor.c"), {"value": 3.0}, 3)],
         config="include: {entities: [switch.b]}\nexclude: {domains: [switch]}", skipped={"entity_filter": 1}),
    # --- time ----------------------------------------------------------------------------------------------
    Case("precision: s cuts time_fired to the second",
         [S("sensor.a", "1", fired_us=1_234_567)],
         [P("sensor.a", tags("sensor.a"), {"value": 1.0}, 1_000_000)],
         config="precision: s"),
]


def event(state: S, index: int) -> NormalisedEvent:
    fired_ns = T0 + state.fired_us * 1000
    raw = state.raw_attributes if state.raw_attributes is not None else json.dumps(state.attributes).encode()
    new = None if state.state is None else State(state=state.state, attributes=msgspec.Raw(raw),
                                                 last_changed_ns=fired_ns, last_updated_ns=fired_ns)
    entity_id = state.entity_id or None
    return NormalisedEvent(event_type=state.event_type, time_ns=fired_ns + index, time_fired_ns=fired_ns,
                           entity_id=entity_id, domain=entity_id.partition(".")[0] if entity_id else None,
                           new_state=new)


def _rows(answer: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for result in answer["results"]:
        assert "error" not in result, result
        for series in result.get("series", []):
            rows.extend({"_name": series.get("name", ""), **series.get("tags", {}),
                         **dict(zip(series["columns"], values, strict=True))} for values in series["values"])
    return rows


def _series_key(measurement: str, point_tags: dict[str, str]) -> str:
    def esc(text: str) -> str:
        return text.replace(",", r"\,").replace(" ", r"\ ")
    return esc(measurement) + "".join(f",{esc(k)}={esc(v)}" for k, v in sorted(point_tags.items()))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_ha_schema_case(case: Case, influx: InfluxServer, influx_db: str) -> None:
    words = parse_config(f"influxdb:\n{_indent(case.config)}" if case.config else "{}", "test").integration
    encoder = HaEncoder(words)
    lines = [line for i, s in enumerate(case.states) if (line := encoder.encode(event(s, i))) is not None]
    assert {k: v for k, v in encoder.skipped.items() if v} == case.skipped
    if lines:
        sink = v1_sink(influx.url, influx_db, "", "", "", 10)
        try:
            assert (await sink.write(sink.prepare("\n".join(lines).encode()))).outcome is Outcome.OK
        finally:
            await sink.close()

    series = {row["key"] for row in _rows(influx.query("SHOW SERIES", influx_db))}
    assert series == {_series_key(p.measurement, p.tags) for p in case.points}

    field_keys = {(row["_name"], row["fieldKey"], row["fieldType"])
                  for row in _rows(influx.query("SHOW FIELD KEYS", influx_db))}
    assert field_keys == {(p.measurement, name, "string" if isinstance(value, str) else "float")
                          for p in case.points for name, value in p.fields.items()}

    got = []
    for measurement in sorted({p.measurement for p in case.points}):
        quoted = measurement.replace('"', '\\"')
        for row in _rows(influx.query(f'SELECT * FROM "{quoted}"', influx_db)):
            row.pop("_name")
            got.append((measurement, row.pop("time"), {k: v for k, v in row.items() if v is not None}))
    want = [(p.measurement, T0 + p.fired_us * 1000, {**p.tags, **p.fields}) for p in case.points]
    assert sorted(got, key=repr) == sorted(want, key=repr)


def _indent(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.strip().splitlines())


def test_points_from_the_recorder_say_so_and_live_ones_do_not() -> None:
    """The recorder leaves attributes out (`supported_features`, a light's brightness on 2025.4...): a point the
    backfill, `audit --repair` or a snapshot wrote says where it came from, so a query can tell its holes."""
    encoder = HaEncoder()
    live = event(S("light.a", "on", {"brightness": 128}, fired_us=1), 0)
    backfilled = msgspec.structs.replace(event(S("light.a", "on", fired_us=2), 1), source="backfill")
    assert "homeiq_source" not in (encoder.encode(live) or "")
    assert 'state="on",value=1.0,homeiq_source="backfill" ' in (encoder.encode(backfilled) or "")
    taken = msgspec.structs.replace(event(S("light.a", "on", {"homeiq_source": 1}, fired_us=3), 2), source="backfill")
    assert (encoder.encode(taken) or "").count("homeiq_source=") == 1  # an attribute of that name keeps it
    lookalike = msgspec.structs.replace(event(S("light.a", "on", {"note": "a,homeiq_source=b"}, fired_us=4), 3),
                                        source="backfill")
    assert (encoder.encode(lookalike) or "").endswith(',homeiq_source="backfill" 1764200000000004000')
