"""Line protocol for schema v1 of measurement `home_assistant_events` (see design: InfluxDB schema).

Every field has one type forever; tags appear only when known and never empty.
"""

from __future__ import annotations

import math
from typing import Final

from homeiq_shared.events import NO_DATA, NormalisedEvent

MEASUREMENT: Final = "home_assistant_events"

_TAG_ESCAPES: Final = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": " ", "\r": " "})
_STR_ESCAPES: Final = str.maketrans({"\\": "\\\\", '"': '\\"'})
_EMPTY_OBJECT: Final = b"{}"

_SECURITY_DOMAINS: Final = frozenset({"alarm_control_panel", "lock"})
_SECURITY_CLASSES: Final = frozenset({"door", "window", "motion", "lock"})
_CLIMATE_CLASSES: Final = frozenset({"temperature", "humidity"})
_APPLIANCE_DOMAINS: Final = frozenset({"switch", "fan", "vacuum"})
_APPLIANCE_CLASSES: Final = frozenset({"power", "energy"})


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
    if not state or state[0] not in "+-.0123456789" or "_" in state or state[-1].isspace():
        return None
    try:
        number = float(state)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _tag(value: str) -> str:
    return value.translate(_TAG_ESCAPES)


def _str(value: str) -> str:
    return '"' + value.translate(_STR_ESCAPES) + '"'


def _raw_json(raw: bytes) -> str:
    return '"' + raw.decode().replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode_line(event: NormalisedEvent) -> str:
    """One line of line protocol for `event` (no trailing newline)."""
    enrich = event.enrichment
    new, old = event.new_state, event.old_state
    tags = {
        "area_id": enrich.area_id,
        "device_class": enrich.device_class,
        "device_id": enrich.device_id,
        "domain": event.domain,
        "entity_category": enrich.entity_category,
        "entity_id": event.entity_id,
        "event_category": event_category(event.domain, enrich.device_class),
        "event_type": event.event_type,
        "platform": enrich.platform,
    }
    parts = [MEASUREMENT]
    parts.extend(f",{key}={_tag(value)}" for key, value in tags.items() if value)

    fields: list[str] = []
    if new is not None:
        fields.append(f"state_value={_str(new.state)}")
        number = numeric_value(new.state)
        if number is not None:
            fields.append(f"value={number!r}")
    if old is not None:
        fields.append(f"previous_state={_str(old.state)}")
        if new is not None and old.last_changed_ns:
            seconds = (new.last_updated_ns - old.last_changed_ns) / 1e9
            fields.append(f"duration_in_state_seconds={seconds!r}")
    shown = new if new is not None else old
    if shown is not None and bytes(shown.attributes) != _EMPTY_OBJECT:
        fields.append(f"attributes={_raw_json(bytes(shown.attributes))}")
    if event.data != NO_DATA:
        fields.append(f"event_data={_raw_json(bytes(event.data))}")
    strings = (
        ("context_id", event.context.id),
        ("context_parent_id", event.context.parent_id),
        ("context_user_id", event.context.user_id),
        ("manufacturer", enrich.manufacturer),
        ("model", enrich.model),
        ("sw_version", enrich.sw_version),
        ("area_name", enrich.area_name),
        ("friendly_name", enrich.friendly_name),
        ("unit_of_measurement", enrich.unit),
    )
    fields.extend(f"{key}={_str(value)}" for key, value in strings if value is not None)
    fields.append(f"source={_str(event.source)}")
    parts.append(" ")
    parts.append(",".join(fields))
    parts.append(f" {event.time_ns}")
    return "".join(parts)
