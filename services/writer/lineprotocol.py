"""Line protocol for schema v1 of measurement `home_assistant_events` (see design: InfluxDB schema).

Every field has one type forever; tags appear only when known and never empty. The parts that depend
only on the entity and its registry facts (tag set, device and area fields) are cached per entity.
"""

from __future__ import annotations

import math
from typing import Final

from homeiq_shared.events import NO_DATA, Enrichment, NormalisedEvent

MEASUREMENT: Final = "home_assistant_events"
CACHE_SIZE: Final = 20_000

_TAG_ESCAPES: Final = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": " ", "\r": " "})
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


def _tag(value: str) -> str:
    return value.translate(_TAG_ESCAPES)


def _str(value: str) -> str:
    """A string field value: double-quoted, with backslashes and quotes escaped."""
    if "\\" in value or '"' in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + value + '"'


def _raw_json(raw: bytes) -> str:
    return _str(raw.decode())


def _tags(event: NormalisedEvent) -> str:
    enrich = event.enrichment
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
    return MEASUREMENT + "".join(f",{key}={escaped}" for key, value in tags if value and (escaped := _tag(value)))


def _entity_fields(enrich: Enrichment) -> str:
    strings = (
        ("manufacturer", enrich.manufacturer),
        ("model", enrich.model),
        ("sw_version", enrich.sw_version),
        ("area_name", enrich.area_name),
        ("friendly_name", enrich.friendly_name),
        ("unit_of_measurement", enrich.unit),
    )
    return "".join(f",{key}={_str(value)}" for key, value in strings if value is not None)


class LineEncoder:
    """Encodes events to lines; keeps the per-entity parts of recent entities."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str | None, str, Enrichment], tuple[str, str]] = {}

    def encode(self, event: NormalisedEvent) -> str:
        """One line of line protocol for `event` (no trailing newline)."""
        key = (event.entity_id, event.event_type, event.enrichment)
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            cached = self._cache[key] = (_tags(event) + " ", _entity_fields(event.enrichment))
        head, entity_fields = cached
        new, old = event.new_state, event.old_state
        fields: list[str] = []
        if new is not None:
            fields.append("state_value=" + _str(new.state))
            number = numeric_value(new.state)
            if number is not None:
                fields.append(f"value={number!r}")
        if old is not None:
            fields.append("previous_state=" + _str(old.state))
            if new is not None and old.last_changed_ns:
                fields.append(f"duration_in_state_seconds={(new.last_updated_ns - old.last_changed_ns) / 1e9!r}")
        shown = new if new is not None else old
        if shown is not None:
            attributes = bytes(shown.attributes)
            if attributes != _EMPTY_OBJECT:
                fields.append("attributes=" + _raw_json(attributes))
        if event.data != NO_DATA:
            fields.append("event_data=" + _raw_json(bytes(event.data)))
        context = event.context
        if context.id is not None:
            fields.append("context_id=" + _str(context.id))
        if context.parent_id is not None:
            fields.append("context_parent_id=" + _str(context.parent_id))
        if context.user_id is not None:
            fields.append("context_user_id=" + _str(context.user_id))
        fields.append("source=" + _str(event.source) + entity_fields)
        return head + ",".join(fields) + f" {event.time_ns}"


_default = LineEncoder()


def encode_line(event: NormalisedEvent) -> str:
    """One line for `event`, through a module-wide encoder."""
    return _default.encode(event)
