"""A deterministic population of floors, areas, devices and entities, and how each entity changes."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import msgspec

FLOORS = (("ground_floor", "Ground Floor", 0), ("first_floor", "First Floor", 1))
AREAS = (
    ("living_room", "Living Room", "ground_floor"),
    ("kitchen", "Kitchen", "ground_floor"),
    ("hallway", "Hallway", "ground_floor"),
    ("bedroom", "Bedroom", "first_floor"),
    ("office", "Office", "first_floor"),
    ("bathroom", "Bathroom", "first_floor"),
)
MANUFACTURERS = (("Aqara", "WSDCGQ11LM", "3.0.0"), ("Philips", "LCT015", "1.104.2"),
                 ("Shelly", "SHPLG-S", "20230913-114010"), ("Ecobee", "EB-STATE5-01", "4.8.7.132"))

# kind → (domain, device_class, unit, platform)
KINDS: tuple[tuple[str, str, str | None, str | None, str], ...] = (
    ("temperature", "sensor", "temperature", "°C", "zha"),
    ("humidity", "sensor", "humidity", "%", "zha"),
    ("power", "sensor", "power", "W", "shelly"),
    ("energy", "sensor", "energy", "kWh", "shelly"),
    ("light", "light", None, None, "hue"),
    ("switch", "switch", None, None, "shelly"),
    ("door", "binary_sensor", "door", None, "zha"),
    ("motion", "binary_sensor", "motion", None, "zha"),
    ("climate", "climate", None, None, "ecobee"),
)


@dataclass
class Entity:
    """One simulated entity with its current state (HA's State.as_dict fields)."""

    entity_id: str
    kind: str
    domain: str
    platform: str
    device_id: str
    registry_id: str
    friendly_name: str
    device_class: str | None
    unit: str | None
    entity_category: str | None = None
    area_id: str | None = None
    state: str = "unknown"
    attributes: dict[str, Any] = field(default_factory=dict)
    last_changed: float = 0.0  # raw time.time() floats, as HA keeps them
    last_updated: float = 0.0
    context: dict[str, str | None] = field(default_factory=dict)
    shown: dict[str, Any] | None = None  # the last State.as_dict() sent: the next event's old_state
    shown_json: msgspec.Raw | None = None  # `shown` as JSON, serialised once like HA's `State.as_dict_json`
    shown_us: int = 0  # the microsecond HA showed for last_updated
    level: float = 0.0


@dataclass
class Device:
    """One simulated device (a device registry entry)."""

    id: str
    name: str
    manufacturer: str
    model: str
    sw_version: str
    area_id: str
    config_entry: str


@dataclass
class Population:
    """Floors, areas, devices and entities built from a seed."""

    entities: list[Entity]
    devices: list[Device]
    areas: tuple[tuple[str, str, str], ...] = AREAS
    floors: tuple[tuple[str, str, int], ...] = FLOORS


def build_population(entity_count: int, seed: int = 1) -> Population:
    """`entity_count` entities of every kind, four per device, devices spread over the areas."""
    rng = random.Random(seed)
    entities: list[Entity] = []
    devices: list[Device] = []
    counters: dict[str, int] = {}
    for index in range(entity_count):
        kind, domain, device_class, unit, platform = KINDS[index % len(KINDS)]
        if index % 4 == 0:
            maker, model, version = MANUFACTURERS[len(devices) % len(MANUFACTURERS)]
            area_id = AREAS[len(devices) % len(AREAS)][0]
            devices.append(Device(id=f"{rng.getrandbits(128):032x}", name=f"{maker} {model} {len(devices)}",
                                  manufacturer=maker, model=model, sw_version=version, area_id=area_id,
                                  config_entry=f"{rng.getrandbits(128):032x}"))
        device = devices[-1]
        number = counters[kind] = counters.get(kind, 0) + 1
        object_id = f"{device.area_id}_{kind}_{number}"
        entity = Entity(
            entity_id=f"{domain}.{object_id}", kind=kind, domain=domain, platform=platform,
            device_id=device.id, registry_id=f"{rng.getrandbits(128):032x}",
            friendly_name=f"{device.area_id.replace('_', ' ').title()} {kind.title()} {number}",
            device_class=device_class, unit=unit,
            entity_category="diagnostic" if kind == "energy" and number % 3 == 0 else None,
            area_id=AREAS[index % len(AREAS)][0] if index % 7 == 0 else None,
            level=rng.uniform(15, 25),
        )
        entity.state, entity.attributes = next_state(entity, rng)
        entities.append(entity)
    return Population(entities=entities, devices=devices)


def next_state(entity: Entity, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """A new (state, attributes) for `entity`: always different from the current one, like HA events."""
    base: dict[str, Any] = {}
    if entity.kind in ("temperature", "humidity", "power", "energy"):
        if rng.random() < 0.01 and entity.state != "unavailable":
            return "unavailable", {"friendly_name": entity.friendly_name, "unit_of_measurement": entity.unit,
                                   "device_class": entity.device_class}
        entity.level = max(0.0, entity.level + rng.uniform(-0.5, 0.5)) if entity.kind != "energy" else (
            entity.level + rng.uniform(0.001, 0.05))
        value = f"{entity.level:.2f}" if entity.kind == "energy" else f"{entity.level:.1f}"
        if value == entity.state:
            entity.level += 0.1
            value = f"{entity.level:.2f}" if entity.kind == "energy" else f"{entity.level:.1f}"
        state_class = "total_increasing" if entity.kind == "energy" else "measurement"
        base = {"state_class": state_class, "unit_of_measurement": entity.unit,
                "device_class": entity.device_class, "friendly_name": entity.friendly_name}
        return value, base
    if entity.kind == "light":
        on = entity.state != "on"
        attrs: dict[str, Any] = {"supported_color_modes": ["brightness"],
                                 "color_mode": "brightness" if on else None,
                                 "brightness": rng.randint(1, 255) if on else None,
                                 "friendly_name": entity.friendly_name, "supported_features": 40}
        return ("on" if on else "off"), attrs
    if entity.kind == "switch":
        return ("off" if entity.state == "on" else "on"), {"friendly_name": entity.friendly_name}
    if entity.kind in ("door", "motion"):
        return ("off" if entity.state == "on" else "on"), {"device_class": entity.device_class,
                                                           "friendly_name": entity.friendly_name}
    # climate: mostly attribute-only updates (current temperature), sometimes a mode change
    mode = entity.state if entity.state in ("heat", "off") and rng.random() < 0.8 else (
        "off" if entity.state == "heat" else "heat")
    entity.level += rng.choice((-0.1, 0.1))
    return mode, {"hvac_modes": ["off", "heat"], "min_temp": 7, "max_temp": 35,
                  "current_temperature": round(entity.level, 1), "temperature": 21.0 if mode == "heat" else None,
                  "friendly_name": entity.friendly_name, "supported_features": 385}
