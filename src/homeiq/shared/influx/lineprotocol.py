"""Line protocol of the `homeiq` schema: one measurement, `home_assistant_events` (docs/architecture.md).

Every field has one type forever; tags appear only when known and never empty. The parts that depend
only on the entity and its registry facts (tag set, device and area fields) are cached per entity.

A tag stores its value exactly, except a value that line protocol cannot carry (a line break anywhere, a
trailing backslash) or that looks like the encoding used for those (it starts and ends with `"`): such a
value is stored as its JSON string literal (`tag_value`), so no value makes a line unparsable and distinct
values never share a series.
"""

from __future__ import annotations

import json
import math
from typing import Final, get_args

import msgspec

from homeiq.shared.config import DEVICE_FIELDS, EntityFilter, EventTypes, Integration
from homeiq.shared.events import NO_ATTRIBUTES, NO_DATA, Enrichment, NormalisedEvent, Source, enrichment_of

MEASUREMENT: Final = "home_assistant_events"
CACHE_SIZE: Final = 20_000
STATES_REMEMBERED: Final = 4096  # ~0.8 MB when full
STATE_REMEMBERED_CHARS: Final = 64  # a longer state (HA allows 255) is a text, rarely repeated

# influxd 1.x unescapes only these three in a tag value; a backslash before anything else is kept as it is.
_TAG_ESCAPES: Final = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_EMPTY_OBJECT: Final = b"{}"

_SECURITY_DOMAINS: Final = frozenset({"alarm_control_panel", "lock"})
_SECURITY_CLASSES: Final = frozenset({"door", "window", "motion", "lock"})
_CLIMATE_CLASSES: Final = frozenset({"temperature", "humidity"})
_APPLIANCE_DOMAINS: Final = frozenset({"switch", "fan", "vacuum"})
_APPLIANCE_CLASSES: Final = frozenset({"power", "energy"})
_NUMBER_START: Final = frozenset("+-.0123456789")


def event_category(domain: str | None, device_class: str | None) -> str:
    """The seed service's category rules, checked in its order."""
    if domain in _SECURITY_DOMAINS or device_class in _SECURITY_CLASSES:
        return "security"
    if domain == "climate" or device_class in _CLIMATE_CLASSES:
        return "climate"
    if domain == "light":
        return "lighting"
    if domain in _APPLIANCE_DOMAINS or device_class in _APPLIANCE_CLASSES:
        return "appliance"
    if domain == "sensor":
        return "monitoring"
    return "general"


def numeric_value(state: str) -> float | None:
    """The state as a finite float when it is a plain decimal number, else None."""
    if not state or state[0] not in _NUMBER_START or "_" in state or state[-1].isspace():
        return None
    try:
        number = float(state)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def tag_value(value: str) -> str:
    """What a tag stores for `value`: itself, or its JSON string literal if it is unsafe or looks like one."""
    # Line protocol has no escape for a line break, and a trailing backslash escapes the separator after it;
    # a JSON literal has neither. Values that start and end with `"` are encoded too, so decoding is unique.
    if "\n" in value or value[-1:] == "\\" or (value[:1] == '"' == value[-1:] and len(value) > 1):
        return json.dumps(value, ensure_ascii=False)
    return value


def original_tag_value(stored: str) -> str:
    """The value `tag_value` stored as `stored` (the inverse: readers use it)."""
    return str(json.loads(stored)) if len(stored) > 1 and stored[0] == '"' == stored[-1] else stored


def escape_tag(value: str) -> str:
    """A tag key or value (or a field key) as it goes in the line (plain values, the usual case, untouched)."""
    value = tag_value(value)
    if "," in value or "=" in value or " " in value:
        return value.translate(_TAG_ESCAPES)
    return value


def _escape(value: str) -> str:
    """The inside of a string field value: backslashes and double quotes escaped."""
    if "\\" in value or '"' in value:
        return value.replace("\\", "\\\\").replace('"', '\\"')
    return value


def _str(value: str) -> str:
    """A string field value, double-quoted."""
    return '"' + _escape(value) + '"'


def _tags(event: NormalisedEvent, enrich: Enrichment) -> str:
    tags = (
        ("area_id", enrich.area_id),
        ("device_class", enrich.device_class),
        ("device_id", enrich.device_id),
        ("domain", event.domain),
        ("entity_category", enrich.entity_category),
        ("entity_id", event.entity_id),
        ("event_category", event_category(event.domain, enrich.device_class)),
        ("event_type", event.event_type),
        ("platform", enrich.platform),
    )  # sorted by key, as InfluxDB wants them
    return MEASUREMENT + "".join(f",{key}={escaped}" for key, value in tags if value and (escaped := escape_tag(value)))


def _entity_fields(enrich: Enrichment, kept: frozenset[str]) -> str:
    """The entity's strings (the device's, and its unit) named in `kept`, as fields."""
    strings = (
        ("manufacturer", enrich.manufacturer),
        ("model", enrich.model),
        ("sw_version", enrich.sw_version),
        ("area_name", enrich.area_name),
        ("friendly_name", enrich.friendly_name),
        ("unit_of_measurement", enrich.unit),
    )
    return "".join(f",{key}={_str(value)}" for key, value in strings if value is not None and key in kept)


_raw_attributes = msgspec.json.Decoder(dict[str, msgspec.Raw])
_raw_encoder = msgspec.json.Encoder()


def _attributes_field(raw: bytes, ignore: frozenset[str]) -> tuple[str, int]:
    """The `attributes` field, without the ignored attributes; and how many were left out. Each value kept
    keeps HA's own bytes."""
    if ignore:
        attributes = _raw_attributes.decode(raw)
        kept = {key: value for key, value in attributes.items() if key not in ignore}
        if len(kept) != len(attributes):
            raw = _raw_encoder.encode(kept)
            return ("" if raw == _EMPTY_OBJECT else "attributes=" + _str(raw.decode())), len(attributes) - len(kept)
    return ("" if raw == _EMPTY_OBJECT else "attributes=" + _str(raw.decode())), 0


_SOURCE_FIELDS: Final = {source: "source=" + _str(source) for source in get_args(Source)}  # decoding checked it


class _Entity:
    """The parts of a line that stay the same while an entity's registry facts and attributes do."""

    __slots__ = ("allowed", "attributes", "attributes_field", "dropped", "enrichment", "event_type", "fields", "head",
                 "ignore")

    def __init__(self, event: NormalisedEvent, allowed: bool, ignore: frozenset[str], kept: frozenset[str]) -> None:
        self.event_type = event.event_type
        enrichment = enrichment_of(event.enrichment)
        self.enrichment = msgspec.Raw(bytes(event.enrichment))  # a copy: a decoded one holds its whole entry
        self.head = _tags(event, enrichment) + " "
        self.fields = _entity_fields(enrichment, kept)
        self.attributes = NO_ATTRIBUTES  # the last attributes, as a copy (compared where an event's are: no copy each)
        self.attributes_field = ""
        self.allowed, self.ignore, self.dropped = allowed, ignore, 0


SKIP_REASONS: Final = ("event_type", "entity_filter")
ATTRIBUTE_REASONS: Final = ("ignore_attributes",)
_NOTHING: Final[frozenset[str]] = frozenset()


class LineEncoder:
    """Encodes events to lines; keeps the per-entity parts of recent entities (most events of an entity
    differ from its last one only in states, times and context).

    Volume control from the configuration file: `event_types` (ours), and the integration's include/exclude
    and `ignore_attributes` (global and per `component_config*`) applied to the `attributes` JSON. What they
    leave out is counted in `skipped` and `attributes_dropped`."""

    def __init__(self, words: Integration | None = None, event_types: EventTypes | None = None,
                 device_fields: tuple[str, ...] = DEVICE_FIELDS) -> None:
        self._cache: dict[str | None, _Entity] = {}
        self._kept_fields = frozenset((*device_fields, "unit_of_measurement"))
        self._states: dict[str, tuple[str, str]] = {}  # a state → its fields (`_state`)
        self._words = words
        self._filter = EntityFilter(words.include, words.exclude) if words is not None else None
        self._event_types = event_types if event_types and (event_types.include or event_types.exclude) else None
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        self.attributes_dropped = dict.fromkeys(ATTRIBUTE_REASONS, 0)
        self.overwritten: dict[str, int] = {}  # none: every state keeps its own time, so no two share a point
        self.overwrite_example = ""

    def _entity(self, event: NormalisedEvent) -> _Entity:
        allowed, ignore = True, _NOTHING
        if self._words is not None and self._filter is not None and event.entity_id is not None:
            allowed = self._filter(event.entity_id)
            ignore = self._words.ignored_attributes(event.entity_id)
        return _Entity(event, allowed, ignore, self._kept_fields)

    def encode(self, event: NormalisedEvent) -> str | None:
        """One line of line protocol for `event` (no trailing newline); None when a filter leaves it out."""
        if self._event_types is not None and not self._event_types.allows(event.event_type):
            enrichment_of(event.enrichment)  # poison all the same (those written: checked by `_Entity`)
            self.skipped["event_type"] += 1
            return None
        entity = self._cache.get(event.entity_id)
        if entity is None or entity.event_type != event.event_type or entity.enrichment != event.enrichment:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            entity = self._cache[event.entity_id] = self._entity(event)
        if not entity.allowed:
            self.skipped["entity_filter"] += 1
            return None
        new, old = event.new_state, event.old_state
        fields: list[str] = []
        if new is not None:
            fields.append(self._state(new.state)[0])
        if old is not None:
            fields.append(self._state(old.state)[1])
            if new is not None and old.last_changed_ns:
                fields.append(f"duration_in_state_seconds={(new.last_updated_ns - old.last_changed_ns) / 1e9!r}")
        shown = new if new is not None else old
        if shown is not None:
            if shown.attributes != entity.attributes:
                attributes = bytes(shown.attributes)
                entity.attributes = msgspec.Raw(attributes)
                entity.attributes_field, entity.dropped = _attributes_field(attributes, entity.ignore)
            if entity.dropped:
                self.attributes_dropped["ignore_attributes"] += entity.dropped
            if entity.attributes_field:
                fields.append(entity.attributes_field)
        if event.data != NO_DATA:
            fields.append("event_data=" + _str(bytes(event.data).decode()))
        context = event.context
        if context.id is not None:
            fields.append('context_id="' + _escape(context.id) + '"')
        if context.parent_id is not None:
            fields.append('context_parent_id="' + _escape(context.parent_id) + '"')
        if context.user_id is not None:
            fields.append('context_user_id="' + _escape(context.user_id) + '"')
        fields.append(_SOURCE_FIELDS[event.source])
        return f"{entity.head}{','.join(fields)}{entity.fields} {event.time_ns}"  # one copy, not four

    def _state(self, state: str) -> tuple[str, str]:
        """The fields of `state` as the new state (`state_value`, and `value` when it is a number) and as the old one
        (`previous_state`): remembered for the states seen last (a home's sensors repeat a few hundred values;
        escaping, reading and printing them took a tenth of a line's encoding)."""
        fields = self._states.get(state)
        if fields is None:
            escaped = _escape(state)
            number = numeric_value(state)
            fields = ('state_value="' + escaped + '"' + ("" if number is None else f",value={number!r}"),
                      'previous_state="' + escaped + '"')
            if len(state) <= STATE_REMEMBERED_CHARS:
                if len(self._states) >= STATES_REMEMBERED:
                    self._states.clear()
                self._states[state] = fields
        return fields

    def remembered(self) -> int:
        return len(self._cache)

    def forget(self) -> None:
        self._cache.clear()
        self._states.clear()


_default = LineEncoder()


def encode_line(event: NormalisedEvent) -> str:
    """One line for `event`, through a module-wide encoder (no filters: every event has a line)."""
    line = _default.encode(event)
    assert line is not None
    return line
