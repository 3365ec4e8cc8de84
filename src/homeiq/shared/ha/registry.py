"""What HA's registries say about each entity, kept to enrich events before XADD."""

from __future__ import annotations

from typing import Any

import msgspec

from homeiq.shared.events import NO_ATTRIBUTES, Enrichment, encode_enrichment
from homeiq.shared.ha.frames import UNDECODABLE, attributes_decoder

CACHE_SIZE = 50_000


# The command that lists each registry HA keeps.
REGISTRY_COMMANDS = {"floor": "config/floor_registry/list", "area": "config/area_registry/list",
                     "device": "config/device_registry/list", "entity": "config/entity_registry/list"}


class EntityEntry(msgspec.Struct):
    """The fields of `config/entity_registry/list` the collector uses."""

    entity_id: str
    device_id: str | None = None
    area_id: str | None = None
    platform: str | None = None
    entity_category: str | None = None
    id: str | None = None  # the entry's own id: it stays when the entity_id changes


class DeviceEntry(msgspec.Struct):
    """The fields of `config/device_registry/list` the collector uses."""

    id: str
    name: str | None = None
    name_by_user: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    sw_version: str | None = None
    area_id: str | None = None


class AreaEntry(msgspec.Struct):
    """The fields of `config/area_registry/list` the collector uses."""

    area_id: str
    name: str | None = None
    floor_id: str | None = None


class FloorEntry(msgspec.Struct):
    """The fields of `config/floor_registry/list` the collector uses."""

    floor_id: str
    name: str | None = None


DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "entity": msgspec.json.Decoder(list[EntityEntry]),
    "device": msgspec.json.Decoder(list[DeviceEntry]),
    "area": msgspec.json.Decoder(list[AreaEntry]),
    "floor": msgspec.json.Decoder(list[FloorEntry]),
}


class Registry:
    """Entities, devices, areas and floors by id; `enrichment()` answers from a per-entity cache."""

    def __init__(self) -> None:
        self.entities: dict[str, EntityEntry] = {}
        self.devices: dict[str, DeviceEntry] = {}
        self.areas: dict[str, AreaEntry] = {}
        self.floors: dict[str, FloorEntry] = {}
        # entity → its last attributes, what enrichment takes of them, and its enrichment
        self._cache: dict[str, tuple[msgspec.Raw, _Known, msgspec.Raw]] = {}
        self._facts: dict[str, Enrichment] = {}  # entity → what the registries alone say

    def load(self, kind: str, raw: bytes) -> int:
        """Replace one registry (`entity`, `device`, `area`, `floor`) from its list result; returns its size."""
        entries = DECODERS[kind].decode(raw)
        if kind == "entity":
            self.entities = {e.entity_id: e for e in entries}
        elif kind == "device":
            self.devices = {d.id: d for d in entries}
        elif kind == "area":
            self.areas = {a.area_id: a for a in entries}
        else:
            self.floors = {f.floor_id: f for f in entries}
        self._cache.clear()
        self._facts.clear()
        return len(entries)

    def cached(self) -> int:
        """Entities whose enrichment is cached now."""
        return len(self._cache)

    def enrichment(self, entity_id: str, attributes: msgspec.Raw | None = None) -> msgspec.Raw:
        """Registry facts about `entity_id`, plus device_class, unit and friendly_name from `attributes`: an
        `Enrichment` encoded as an event carries it.

        Kept per entity with the attributes it was made from: a sensor's attributes rarely change while its
        state does, and a light's that do change cost one decode of three attributes, not a registry walk (nor an
        encoding, when those three stayed the same).
        """
        if attributes is None:
            attributes = NO_ATTRIBUTES
        last = self._cache.get(entity_id)
        if last is not None and last[0] == attributes:  # compared where they are: no copy an event
            return last[2]
        raw = bytes(attributes)
        known = _known_attributes(raw)
        if last is not None and last[1] == known:
            enrichment = last[2]
        else:
            facts = self._facts.get(entity_id)
            if facts is None:
                facts = self._facts[entity_id] = self._registry_facts(entity_id)
            enrichment = encode_enrichment(msgspec.structs.replace(
                facts, device_class=known.device_class, unit=known.unit, friendly_name=known.friendly_name))
        if len(self._cache) >= CACHE_SIZE:  # more entities than any real home: start over rather than grow
            self._cache.clear()
            self._facts.clear()
        self._cache[entity_id] = (msgspec.Raw(raw), known, enrichment)  # a copy: a frame's Raw holds the whole frame
        return enrichment

    def _registry_facts(self, entity_id: str) -> Enrichment:
        entity = self.entities.get(entity_id)
        if entity is None:
            return Enrichment()
        device = self.devices.get(entity.device_id) if entity.device_id else None
        area_id = entity.area_id or (device.area_id if device else None)
        area = self.areas.get(area_id) if area_id else None
        floor = self.floors.get(area.floor_id) if area and area.floor_id else None
        return Enrichment(
            device_id=entity.device_id,
            device_name=(device.name_by_user or device.name) if device else None,
            manufacturer=device.manufacturer if device else None,
            model=device.model if device else None,
            sw_version=device.sw_version if device else None,
            area_id=area_id,
            area_name=area.name if area else None,
            floor_id=floor.floor_id if floor else None,
            floor_name=floor.name if floor else None,
            platform=entity.platform,
            entity_category=entity.entity_category,
        )


class _Known(msgspec.Struct, frozen=True, gc=False):
    device_class: str | None = None
    unit: str | None = None
    friendly_name: str | None = None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _known_attributes(raw: bytes) -> _Known:
    """The attributes enrichment uses; anything malformed or not a string is simply unknown."""
    if not raw:
        return _Known()
    try:
        known = attributes_decoder.decode(raw)
    except UNDECODABLE:
        return _Known()
    return _Known(_text(known.device_class), _text(known.unit_of_measurement), _text(known.friendly_name))
