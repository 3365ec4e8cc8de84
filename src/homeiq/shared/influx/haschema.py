"""Line protocol for the `ha` schema: point for point what Home Assistant's `influxdb` integration writes.

The rules are those of `event_to_json` in home-assistant/core `homeassistant/components/influxdb/__init__.py`
and the regular expressions of its `const.py`, read at commit 01ae64906312f8ed31da2ee514b50cc33b758291, with
`state_as_number` from `homeassistant/helpers/state.py` (the LockState version, 2024.10 on: 1 for on, locked,
above_horizon, open, home; 0 for off, unlocked, unknown, below_horizon, closed, not_home):

- only `state_changed` with a new state; states `unknown`, `unavailable` and "" and filtered entities have no
  point;
- `value` (float) when `float(state)` works, else `state` (string) plus `value` when `state_as_number` maps
  it, else `state` alone;
- measurement: the entity's `component_config*` override, else `override_measurement`, else by
  `measurement_attr` (the attribute `unit_of_measurement`, `<domain>__<device_class>` or the entity id),
  else `default_measurement`, else the entity id; the attribute used is not repeated as a field;
- tags `domain` and `entity_id` (the object id), the attributes in `tags_attributes`, then `tags`;
- each other attribute not ignored: a float field when `float(value)` works, else `<key>_str` (its `str()`)
  and, when that string has a numeric tail (`RE_DIGIT_TAIL`, whose answers we give in linear time), a float
  `<key>` of its digits; a key already in the fields becomes `<key>_`; NaN and infinities are dropped;
- the point's time is the event's `time_fired`, cut to `precision` when one is set.

Where those rules would write something InfluxDB refuses, we write what the integration meant instead,
and say so here (README: "Switching from Home Assistant's InfluxDB integration"):

- a field's type is a function of its name: `state` and `<key>_str` are strings, every other field a float.
  The integration breaks this in two cases, and InfluxDB then refuses the point as a field-type conflict (a
  permanent loss): a numeric attribute named `state` when the state itself is numeric, and a numeric
  attribute (or numeric tail) whose name ends in `_str`. Such a float is written as `<name>_` instead.
- a non-finite `value` (a state of "nan" or "inf") is left out, as influxdb-client (v2) does; influxd 1.x
  refuses the whole request. The name stays taken, as in the integration: an attribute `value` is written
  `value_` (`value__str`). A point left with no field at all is not written (counted `no_fields`).
- a tag or field named `time` (which InfluxDB refuses) is written as `time_`; an attribute with an empty name
  is left out, as the integration's v1 client does.
- names and string values are written as the client of the user's `api_version` writes them, so influxd stores
  what it stored for HA (v1 doubles backslashes in names, both keep a line break as `\\n`); a name that
  client's line would lose is stored as its JSON literal instead (`haescape`).

Attribute values reach us as JSON, so `str()` of a value that was a tuple, a set, a datetime or an enum inside a
container in HA would differ (`[1, 2]` for HA's `(1, 2)`). Where HA's type is known (`RENDERED`: a light's
colours are tuples, its `supported_color_modes` ColorMode members, `last_triggered` a datetime) the text is rendered
as HA renders it; elsewhere it cannot be the same (`2024-01-01T…` for `2024-01-01 …`, `[1, 2]` for `{1, 2}`); the
numeric tails are the same.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import msgspec

from homeiq.shared.config import EntityFilter, EventTypes, Integration
from homeiq.shared.events import EnrichmentCheck, NormalisedEvent
from homeiq.shared.influx.haescape import HaNames

# const.py. Its RE_DIGIT_TAIL, r"^[^\.]*\d+\.?\d+[^\.]*$", backtracks in time polynomial in the text's length
# (1,000 digits and two dots: minutes); `has_numeric_tail` gives its answers in linear time.
RE_DECIMAL: Final = re.compile(r"[^\d.]+")
_TWO_DIGITS: Final = re.compile(r"\d\d")
# helpers/state.py state_as_number
STATE_ONE: Final = frozenset({"on", "locked", "above_horizon", "open", "home"})
STATE_ZERO: Final = frozenset({"off", "unlocked", "unknown", "below_horizon", "closed", "not_home"})
SKIPPED_STATES: Final = {"unknown": "state_unknown", "unavailable": "state_unavailable", "": "state_empty"}
PRECISION_NS: Final = {None: 1, "ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}

SKIP_REASONS: Final = ("event_type", "not_state_change", "removed", "entity_filter", "state_unknown",
                       "state_unavailable", "state_empty", "no_fields")
ATTRIBUTE_REASONS: Final = ("ignore_attributes", "non_finite")
# A point with the series and time of another state's point replaces it in InfluxDB: two times made equal by
# `precision`, or (no precision) two states at the very same nanosecond.
OVERWRITE_REASONS: Final = ("precision", "same_time")

CACHE_SIZE: Final = 20_000
# A point written from HA's recorder (the backfill, `replayer audit --repair`, a snapshot) lacks the attributes the
# recorder does not keep: a string field says so, where no attribute took the name.
_SOURCE_MARKS: Final = {"live": "", "backfill": ',homeiq_source="backfill"', "snapshot": ',homeiq_source="snapshot"'}


def _as_tuple(value: Any) -> str:
    """str() of the tuple HA held where JSON carries a list."""
    return str(tuple(value)) if isinstance(value, list) else str(value)


_COLOR_MODES: Final = frozenset({"unknown", "onoff", "brightness", "color_temp", "hs", "xy", "rgb", "rgbw", "rgbww",
                                 "white"})


def _as_color_modes(value: Any) -> str:
    """str() of the sorted list of `ColorMode` members HA held (`[<ColorMode.HS: 'hs'>]`)."""
    if not isinstance(value, list) or not all(isinstance(m, str) and m in _COLOR_MODES for m in value):
        return str(value)
    return "[" + ", ".join(f"<ColorMode.{mode.upper()}: '{mode}'>" for mode in value) + "]"


def _as_datetime(value: Any) -> str:
    """str() of the datetime HA held where JSON carries its ISO form (`2025-03-01 07:00:12+00:00`)."""
    if isinstance(value, str):
        try:
            return str(datetime.fromisoformat(value))
        except ValueError:
            pass
    return str(value)


# Attributes whose Python type in HA is known and is not what JSON gives back, by domain: their `_str` text is
# rendered as str() of HA's value (components/light/__init__.py state_attributes and capability_attributes,
# components/automation and components/script extra_state_attributes). Extend it where a core integration's
# type is known.
RENDERED: Final[dict[str, dict[str, Callable[[Any], str]]]] = {
    "light": {"hs_color": _as_tuple, "rgb_color": _as_tuple, "rgbw_color": _as_tuple, "rgbww_color": _as_tuple,
              "xy_color": _as_tuple, "supported_color_modes": _as_color_modes},
    "automation": {"last_triggered": _as_datetime},  # helpers/script.py: Script.last_triggered
    "script": {"last_triggered": _as_datetime},
}
_NOTHING_RENDERED: Final[dict[str, Callable[[Any], str]]] = {}
_attributes_decoder = msgspec.json.Decoder(dict[str, Any])


def _as_float(value: Any) -> float | None:
    """`float(value)` as the integration calls it, or None where it raises ValueError or TypeError."""
    try:
        return float(value)
    except (ValueError, TypeError, OverflowError):  # OverflowError: an integer beyond a double (HA would crash)
        return None


def point_time_ns(time_ns: int, unit_ns: int, through_float: bool = False) -> int:
    """`time_ns` as the `ha` schema stamps it with a precision of `unit_ns`: cut down to a whole unit, as the
    integration's v1 client (influxdb-python) does; `through_float`, as its v2 client (influxdb-client) does:
    `int(ns / unit)` with the nanoseconds made a float first, which is a unit earlier for some times (1 in 60 at
    `us`, tests/realha/test_point_times.py)."""
    if unit_ns == 1:
        return time_ns
    if through_float:
        return int(time_ns / float(unit_ns)) * unit_ns
    return time_ns - time_ns % unit_ns


def cut_to_precision(time_ns: int, precision: str | None) -> int:
    """`time_ns` as the `ha` schema writes it under the integration's `precision` (None is ns) with api_version 1."""
    return point_time_ns(time_ns, PRECISION_NS[precision])


def has_numeric_tail(text: str) -> bool:
    """Whether HA's `RE_DIGIT_TAIL` matches `text`, in time linear in its length."""
    # Outside its `\.?` the regex takes no dot, so it matches a text with no dot and two adjacent digits (\d+\d+),
    # or a text whose one dot sits between two digits (\d+\.\d+). `$` also matches before a final newline, which
    # `[^\.]*` would take anyway.
    dots = text.count(".")
    if dots == 0:
        return _TWO_DIGITS.search(text) is not None
    if dots > 1:
        return False
    dot = text.index(".")
    return 0 < dot < len(text) - 1 and text[dot - 1].isdecimal() and text[dot + 1].isdecimal()


def decode_attributes(raw: bytes) -> dict[str, Any]:
    """The state's attributes as Python values, in HA's order."""
    try:
        return _attributes_decoder.decode(raw)
    except msgspec.ValidationError:  # a number beyond a double: the standard library makes it inf
        decoded = json.loads(raw)
        return decoded if isinstance(decoded, dict) else {}


class _Shape(msgspec.Struct, gc=False):
    """What a state's attributes make of a point: the line up to the fields, and the attribute fields."""

    head: str  # measurement and tags, then a space
    fields: str  # the attribute fields, each with a leading comma
    field_count: int
    markable: bool  # no attribute took the name of the recorder's mark
    ignored: int
    non_finite: int


class _Entity:
    """What stays the same for an entity: its filter verdict, its configuration, and its last shape."""

    __slots__ = ("allowed", "attributes", "has_state", "has_value", "ignore", "object_id", "override",
                 "point_fired_ns", "point_head", "point_line", "point_others", "point_time_ns", "shape")

    def __init__(self, entity_id: str, allowed: bool, words: Integration) -> None:
        self.allowed = allowed
        customize = words.customize(entity_id)
        self.override = customize.override_measurement
        self.ignore = words.ignored_attributes(entity_id)
        self.object_id = entity_id.partition(".")[2]
        # The shape below was made for these attributes and these state fields.
        self.attributes = b""
        self.has_state = self.has_value = False
        self.shape: _Shape | None = None
        # The series and time of the entity's newest point so far; the first state given that point (its time
        # before the cut, its line), and the others (each replaced the one before).
        self.point_head = self.point_line = ""
        self.point_time_ns = self.point_fired_ns = 0
        self.point_others: set[tuple[int, str]] | None = None


class HaEncoder:
    """Encodes events to the `ha` schema; `encode` returns None for an event that has no point, and counts why
    in `skipped` (attributes left out in `attributes_dropped`, points that replace another state's point in
    `overwritten`, the last of them in `overwrite_example`)."""

    def __init__(self, words: Integration | None = None, event_types: EventTypes | None = None) -> None:
        self.words = words or Integration()
        self.event_types = event_types or EventTypes()
        self._filter = EntityFilter(self.words.include, self.words.exclude)
        self._tags = dict(self.words.tags)
        self._tags_attributes = frozenset(self.words.tags_attributes)
        self._precision_ns = PRECISION_NS[self.words.precision]
        self._through_float = self.words.api_version == "2"  # as the integration's v2 client computes times
        self._names = HaNames(self.words.api_version)
        self._cache: dict[str, _Entity] = {}
        self._enrichments = EnrichmentCheck()
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        self.attributes_dropped = dict.fromkeys(ATTRIBUTE_REASONS, 0)
        self.overwritten = dict.fromkeys(OVERWRITE_REASONS, 0)
        self.overwrite_example = ""
        self._overwrite_reason = "precision" if self._precision_ns != 1 else "same_time"

    def encode(self, event: NormalisedEvent) -> str | None:
        """One line for `event`, or None (counted in `skipped`) when the integration writes no point for it."""
        self._enrichments(event)  # unused here, but an event whose enrichment is none is poison in any schema
        if event.event_type != "state_changed":
            self.skipped["event_type" if not self.event_types.allows(event.event_type) else "not_state_change"] += 1
            return None
        if not self.event_types.allows("state_changed"):
            self.skipped["event_type"] += 1
            return None
        new, entity_id = event.new_state, event.entity_id
        if new is None or entity_id is None:
            self.skipped["removed"] += 1
            return None
        state = new.state
        if state in SKIPPED_STATES:
            self.skipped[SKIPPED_STATES[state]] += 1
            return None
        entity = self._cache.get(entity_id) or self._new_entity(entity_id)
        if not entity.allowed:
            self.skipped["entity_filter"] += 1
            return None
        value, include_state = _state_value(state)
        raw = bytes(new.attributes)
        has_value = value is not None
        shape = entity.shape
        if shape is None or raw != entity.attributes or include_state != entity.has_state \
                or has_value != entity.has_value:
            shape = entity.shape = self._shape(event, entity, raw, include_state, has_value)
            entity.attributes, entity.has_state, entity.has_value = raw, include_state, has_value
        if shape.ignored:
            self.attributes_dropped["ignore_attributes"] += shape.ignored
        if shape.non_finite:
            self.attributes_dropped["non_finite"] += shape.non_finite

        fired_ns = time_ns = event.time_fired_ns or event.time_ns
        if self._precision_ns != 1:
            time_ns = point_time_ns(fired_ns, self._precision_ns, self._through_float)
        mark = _SOURCE_MARKS[event.source] if shape.markable else ""
        line = _line(shape, None if not include_state else self._names.string(state), value, time_ns, mark)
        if line is None:
            self.skipped["no_fields"] += 1
            return None
        if time_ns > entity.point_time_ns or shape.head != entity.point_head:  # the entity's newest point
            entity.point_head, entity.point_time_ns, entity.point_fired_ns, entity.point_line, entity.point_others = \
                shape.head, time_ns, fired_ns, line, None
        else:
            self._count_overwrite(entity, time_ns, fired_ns, line)
        return line

    def remembered(self) -> int:
        return len(self._cache)

    def forget(self) -> None:
        """Also each entity's newest point: a state written after this onto an earlier one's point is not counted."""
        self._cache.clear()

    def _new_entity(self, entity_id: str) -> _Entity:
        """An entity seen for the first time (since the cache was last emptied), cached."""
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        entity = self._cache[entity_id] = _Entity(entity_id, self._filter(entity_id), self.words)
        return entity

    def _count_overwrite(self, entity: _Entity, time_ns: int, fired_ns: int, line: str) -> None:
        """Count a state in `overwritten` when this encoder gave another state the series and time of the entity's
        newest point before (in this batch or an earlier one)."""
        if time_ns < entity.point_time_ns:
            return  # older than the entity's newest point (a backfill, a re-delivery): what it met is not known
        state = (fired_ns, line)
        others = entity.point_others
        if state == (entity.point_fired_ns, entity.point_line) or (others is not None and state in others):
            return  # the same state again (a re-delivery, the backfill's copy) replaces nothing
        if others is None:
            others = entity.point_others = set()
        others.add(state)
        self.overwritten[self._overwrite_reason] += 1
        self.overwrite_example = f"{entity.point_head}{time_ns}"

    def _shape(self, event: NormalisedEvent, entity: _Entity, raw: bytes, has_state: bool,
               has_value: bool) -> _Shape:
        attributes = decode_attributes(raw)
        domain = event.domain or (event.entity_id or "").partition(".")[0]
        measurement, include_uom, include_dc = self._measurement_of(event.entity_id or "", domain, entity, attributes)
        tags: dict[str, Any] = {"domain": domain, "entity_id": entity.object_id}
        fields: dict[str, Any] = {}
        if has_state:
            fields["state"] = None  # placeholders: the clash check sees the state fields
        if has_value:
            fields["value"] = None
        ignored, non_finite = self._attribute_fields(attributes, entity.ignore, include_uom, include_dc, tags, fields,
                                                     RENDERED.get(domain, _NOTHING_RENDERED))
        tags.update(self._tags)
        names = self._names
        head = names.measurement(measurement)
        for tag, held in sorted(tags.items()):
            text = "" if held is None else str(held)
            if tag and text:  # the clients leave out empty keys and values, and None
                head += f",{names.tag('time_' if tag == 'time' else tag)}={names.tag(text)}"
        own = _type_stable({k: v for k, v in fields.items() if v is not None}, set(fields))
        parts = [f",{names.field_key(name)}={held!r}" if isinstance(held, float)
                 else f",{names.field_key(name)}={names.string(held)}"
                 for name, held in own.items()]
        return _Shape(head + " ", "".join(parts), len(parts), "homeiq_source" not in own, ignored, non_finite)

    def _attribute_fields(self, attributes: dict[str, Any], ignore: frozenset[str], include_uom: bool,
                          include_dc: bool, tags: dict[str, Any], fields: dict[str, Any],
                          rendered: dict[str, Callable[[Any], str]]) -> tuple[int, int]:
        """The integration's attribute loop, exactly; returns how many were ignored and how many not finite."""
        ignored = non_finite = 0
        for name, attribute in attributes.items():
            if name in self._tags_attributes:
                tags[name] = attribute
                continue
            if (name == "unit_of_measurement" and not include_uom) or (name == "device_class" and not include_dc):
                continue
            if name in ignore:
                ignored += 1
                continue
            if name in fields:
                name = f"{name}_"  # noqa: PLW2901 - the integration's rename
            number = _as_float(attribute)
            if number is not None:
                fields[name] = number
            else:
                render = rendered.get(name)
                text = render(attribute) if render is not None else str(attribute)
                fields[f"{name}_str"] = text
                if has_numeric_tail(text):
                    tail = _as_float(RE_DECIMAL.sub("", text))
                    if tail is not None:
                        fields[name] = tail
            held = fields.get(name)
            if isinstance(held, float) and not math.isfinite(held):
                del fields[name]
                non_finite += 1
        return ignored, non_finite

    def _measurement_of(self, entity_id: str, domain: str, entity: _Entity,
                        attributes: dict[str, Any]) -> tuple[str, bool, bool]:
        """The measurement, and whether unit_of_measurement and device_class stay fields."""
        include_uom = include_dc = True
        measurement: Any = entity.override
        if measurement in (None, ""):
            words = self.words
            if words.override_measurement:
                measurement = words.override_measurement
            else:
                attr = words.measurement_attr
                if attr == "entity_id":
                    measurement = entity_id
                elif attr == "domain__device_class":
                    device_class = attributes.get("device_class")
                    if device_class is None:
                        measurement = domain
                    else:
                        measurement = f"{domain}__{device_class}"
                        include_dc = False
                else:
                    measurement = attributes.get(attr)
                if measurement in (None, ""):
                    measurement = words.default_measurement or entity_id
                else:
                    include_uom = attr != "unit_of_measurement"
        return str(measurement), include_uom, include_dc



def _state_value(state: str) -> tuple[float | None, bool]:
    """The value field and whether the state field is written too: float(state), else state_as_number, else the
    state as a string. The mapped words are never floats, so looking them up first gives the same answer without
    the cost of float()'s exception."""
    if state in STATE_ONE:
        return 1.0, True
    if state in STATE_ZERO:
        return 0.0, True
    try:
        return float(state), False  # not finite: the name `value` is taken all the same, the field left out
    except ValueError:
        return None, True

def _line(shape: _Shape, state: str | None, value: float | None, time_ns: int, mark: str = "") -> str | None:
    """The point's line: `state` (quoted) as a field unless None, `value` unless None or not finite (what
    influxdb-client does with it; influxd 1.x refuses "nan"/"inf" outright), then `mark`; None when it has no
    field but the mark."""
    if value is not None and not math.isfinite(value):
        value = None
    if state is not None:
        head = shape.head + "state=" + state
        if value is not None:
            head += f",value={value!r}"
        return f"{head}{shape.fields}{mark} {time_ns}"
    if value is not None:
        return f"{shape.head}value={value!r}{shape.fields}{mark} {time_ns}"
    if not shape.field_count:
        return None
    return f"{shape.head}{shape.fields[1:]}{mark} {time_ns}"


def _type_stable(fields: dict[str, Any], taken: set[str]) -> dict[str, Any]:
    """Our rules on top of the integration's (module docstring): a float never goes in a field named `state`
    or `*_str`, nothing in `time`, nothing under an empty name."""
    out: dict[str, Any] = {}
    for name, held in fields.items():
        if name == "":
            continue
        wanted = name
        if name == "time" or (isinstance(held, float) and (name == "state" or name.endswith("_str"))):
            wanted = name + "_"
            while wanted in taken:
                wanted += "_"
            taken.add(wanted)
        out[wanted] = held
    return out
