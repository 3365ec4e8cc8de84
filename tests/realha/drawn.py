"""What the differential test draws: events as Home Assistant holds them (described for `ha_convert.py`, with the
Python types JSON cannot carry) and `influxdb:` blocks."""

from __future__ import annotations

import random
from datetime import UTC
from typing import Any

from hypothesis import strategies as st

# What line protocol and HA's rules treat specially, drawn often; digits make numeric tails.
AWKWARD = st.sampled_from(["\\", '"', ",", "=", " ", "#", "\t", "\r", "\n", "'", "é", "😀", "a", "b", "1", ".", "_"])
TEXT = st.text(st.one_of(AWKWARD, st.characters(exclude_categories=("Cs", "Cc"))), max_size=8)
NAME = st.one_of(
    st.sampled_from(["unit_of_measurement", "device_class", "friendly_name", "value", "state", "time", "value_",
                     "state_class", "brightness", "hs_color", "rgb_color", "xy_color", "supported_color_modes",
                     "last_triggered", "temperature", "x_str", "", "icon"]),
    TEXT,
)
UNITS = st.sampled_from(["°C", "W", "kWh", "%", "lx", "m³", "µg/m³", "V", "A"])
DOMAINS = st.sampled_from(["sensor", "light", "automation", "script", "binary_sensor", "climate", "input_number",
                           "switch", "sun"])
OBJECT_IDS = st.from_regex(r"[a-z0-9]{1,4}(_[a-z0-9]{1,3})?", fullmatch=True)  # what HA takes as an object id
STATES = st.one_of(
    st.sampled_from(["on", "off", "home", "not_home", "open", "closed", "locked", "unlocked", "above_horizon",
                     "unknown", "unavailable", "", "nan", "inf", "-inf", " 7 ", "1e3", "heat", "idle"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-10**6, 10**6).map(str),
    TEXT,
)
COLOR_MODES = st.lists(st.sampled_from(["onoff", "brightness", "color_temp", "hs", "xy", "rgb", "rgbw", "rgbww",
                                        "white"]), unique=True, min_size=1, max_size=3).map(sorted)
DATETIMES = st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
SCALARS = st.one_of(
    TEXT, UNITS, st.none(), st.booleans(), st.integers(-10**12, 10**12),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from(["12.5", "v1.2", "abc12", "1.2.3", "20 %", "0x1f", "1_000"]),
)


def python_typed(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Values HA holds that JSON carries as something else."""
    return st.one_of(
        st.lists(inner, max_size=3).map(lambda v: {"$": "tuple", "v": v}),
        st.lists(st.integers(0, 300), max_size=3, unique=True).map(lambda v: {"$": "set", "v": v}),
        DATETIMES.map(lambda v: {"$": "datetime", "v": v}),
        st.sampled_from(["plain", "int", "str", "color_mode_hs"]).map(lambda v: {"$": "enum", "v": v}),
        st.sampled_from(["nan", "inf", "-inf"]).map(lambda v: {"$": "float", "v": v}),
        st.dictionaries(st.integers(0, 9).map(str), SCALARS, max_size=2).map(lambda v: {"$": "intkeys", "v": v}),
        COLOR_MODES.map(lambda v: {"$": "color_modes", "v": v}),
    )


VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(TEXT.filter(lambda k: k != "$"), inner, max_size=2),
    python_typed(inner)), max_leaves=4)  # no key "$": ha_convert.py reads {"$": kind, "v": value} as a type


@st.composite
def events(draw: st.DrawFn, start: float, n_max: int = 12) -> list[dict[str, Any]]:
    """State changes of a few entities, in time order, a few milliseconds apart (some in one second)."""
    entities = draw(st.lists(st.tuples(DOMAINS, OBJECT_IDS).map(".".join), min_size=1, max_size=3, unique=True))
    out = []
    fired = start
    for _ in range(draw(st.integers(1, n_max))):
        fired += draw(st.floats(0.001, 3.0))
        attributes = draw(st.dictionaries(NAME, VALUES, max_size=5))
        out.append({"entity_id": draw(st.sampled_from(entities)), "state": draw(STATES),
                    "attributes": attributes, "time_fired": round(fired, 6)})
    return out


@st.composite
def blocks(draw: st.DrawFn, attribute_names: list[str], entity_ids: list[str]) -> dict[str, Any]:
    """An `influxdb:` block using the keys that change points (api_version 1; the test reads it as 2 as well)."""
    block: dict[str, Any] = {}
    if draw(st.booleans()):
        block["measurement_attr"] = draw(st.sampled_from(["unit_of_measurement", "domain__device_class",
                                                          "entity_id"]))
    if draw(st.booleans()):
        block["default_measurement"] = draw(st.sampled_from(["state", "units", "a b,c"]))
    if draw(st.integers(0, 5)) == 0:
        block["override_measurement"] = draw(st.sampled_from(["homeassistant", "ha"]))
    names = st.sampled_from(attribute_names or ["friendly_name"])
    if draw(st.booleans()):
        block["tags_attributes"] = draw(st.lists(names, max_size=2, unique=True))
    if draw(st.booleans()):
        block["ignore_attributes"] = draw(st.lists(names, max_size=2, unique=True))
    if draw(st.booleans()):
        block["tags"] = draw(st.dictionaries(st.sampled_from(["instance", "site", "time", "a b"]),
                                             st.sampled_from(["prod", "home 1", "x=y"]), max_size=2))
    if entity_ids and draw(st.booleans()):
        block["component_config"] = {draw(st.sampled_from(entity_ids)): {
            "override_measurement": draw(st.sampled_from(["custom", ""])),
            "ignore_attributes": draw(st.lists(names, max_size=1))}}
    if draw(st.booleans()):
        block["precision"] = draw(st.sampled_from(["ms", "s"]))
    return block


def realistic_home(seed: int, count: int, start: float) -> list[dict[str, Any]]:
    """A home's state changes as HA's core integrations hold them: sensors with units and classes, lights with
    tuple colours and ColorMode members, automations with datetimes, climate with lists, the sun with strings."""
    rng = random.Random(seed)
    fired = start
    out = []
    for _ in range(count):
        fired += rng.uniform(0.0005, 0.4)
        kind = rng.choice(["temperature", "power", "humidity", "light", "light", "automation", "climate", "door",
                           "sun", "weather"])
        n = rng.randrange(4)
        modes = sorted(rng.sample(["brightness", "color_temp", "hs", "xy", "rgb"], 2))
        when = {"$": "datetime", "v": f"2025-03-0{1 + n}T07:00:{rng.randrange(60):02d}.{rng.randrange(10**6):06d}"
                                      "+00:00"}
        match kind:
            case "temperature" | "power" | "humidity":
                unit = {"temperature": "°C", "power": "W", "humidity": "%"}[kind]
                entity, state = f"sensor.{kind}_{n}", rng.choice([f"{rng.uniform(-5, 3000):.2f}", "unavailable"])
                attributes = {"state_class": "measurement", "unit_of_measurement": unit, "device_class": kind,
                              "friendly_name": f"{kind.title()} {n}"}
            case "light":
                on = rng.random() < 0.7
                entity, state = f"light.lamp_{n}", "on" if on else "off"
                attributes = {"min_color_temp_kelvin": 2000, "max_color_temp_kelvin": 6535, "min_mireds": 153,
                              "max_mireds": 500, "effect_list": ["none", "colorloop"],
                              "supported_color_modes": {"$": "color_modes", "v": modes},
                              "color_mode": {"$": "enum", "v": "color_mode_hs"} if on else None,
                              "brightness": rng.randrange(256) if on else None,
                              "hs_color": {"$": "tuple", "v": [round(rng.uniform(0, 360), 3),
                                                               round(rng.uniform(0, 100), 3)]} if on else None,
                              "rgb_color": {"$": "tuple", "v": [rng.randrange(256) for _ in range(3)]} if on else None,
                              "xy_color": {"$": "tuple", "v": [round(rng.random(), 3), round(rng.random(), 3)]}
                              if on else None,
                              "friendly_name": f"Lamp {n}", "supported_features": 44}
            case "automation":
                entity, state = f"automation.morning_{n}", rng.choice(["on", "off"])
                attributes = {"id": f"17{n}", "last_triggered": when, "mode": "single", "current": 0,
                              "friendly_name": f"Morning {n}"}
            case "climate":
                entity, state = f"climate.room_{n}", rng.choice(["heat", "off", "auto"])
                attributes = {"hvac_modes": ["off", "heat", "auto"], "min_temp": 7, "max_temp": 35,
                              "current_temperature": round(rng.uniform(15, 25), 1), "temperature": 21.5,
                              "hvac_action": rng.choice(["heating", "idle"]), "friendly_name": f"Room {n}",
                              "supported_features": 385}
            case "door":
                entity, state = f"binary_sensor.door_{n}", rng.choice(["on", "off"])
                attributes = {"device_class": "door", "friendly_name": f"Door {n}"}
            case "sun":
                entity, state = "sun.sun", rng.choice(["above_horizon", "below_horizon"])
                attributes = {"next_dawn": "2025-03-02T05:42:11.123456+00:00",
                              "elevation": round(rng.uniform(-20, 40), 2),
                              "azimuth": round(rng.uniform(0, 360), 2), "rising": rng.random() < 0.5,
                              "friendly_name": "Sun"}
            case _:
                entity, state = "weather.home", rng.choice(["sunny", "rainy", "cloudy"])
                attributes = {"temperature": round(rng.uniform(-5, 30), 1), "temperature_unit": "°C",
                              "humidity": rng.randrange(100), "attribution": "Data provided by met.no",
                              "friendly_name": "Home"}
        out.append({"entity_id": entity, "state": state, "attributes": attributes, "time_fired": round(fired, 6)})
    return out
