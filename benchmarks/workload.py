"""Realistic stream payloads for benchmarks: ha-sim state changes, normalised as the collector does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from homeiq.collector.normalise import normalise_state_changed
from homeiq.ha_sim.hub import MATCH_ALL, Hub
from homeiq.ha_sim.messages import now_ts
from homeiq.shared.events import encode_event
from homeiq.shared.ha import frames
from homeiq.shared.ha.registry import Registry


class Recorder:
    """A stand-in subscriber of ha-sim's hub that keeps every message instead of sending it."""

    def __init__(self) -> None:
        self.subscriptions = {1: MATCH_ALL}
        self.messages: list[bytes] = []
        self.queued = 0

    def send(self, message: bytes) -> None:
        self.messages.append(message)

    def abort(self, reason: str) -> None:
        """Never called."""


def prerendered(hub: Hub, count: int, clock: Callable[[], float] = now_ts) -> list[bytes]:
    """Fire `count` state changes into the hub's record without sending them, at the times `clock` gives: the
    messages without their subscription id (`event_message` completes one when it is sent)."""
    recorder = Recorder()
    live, hub.connections, hub.clock = hub.connections, {recorder}, clock
    try:
        for _ in range(count):
            hub.fire_state_change()
    finally:
        hub.connections, hub.clock = live, now_ts
    return [message[: message.rindex(b',"id":')] for message in recorder.messages]


def registry_of(hub: Hub) -> Registry:
    """The registries a collector would have loaded from this simulator."""
    registry = Registry()
    devices: list[dict[str, Any]] = [
        {"id": d.id, "name": d.name, "manufacturer": d.manufacturer, "model": d.model,
         "sw_version": d.sw_version, "area_id": d.area_id} for d in hub.population.devices]
    entities: list[dict[str, Any]] = [
        {"entity_id": e.entity_id, "device_id": e.device_id, "platform": e.platform, "area_id": e.area_id,
         "entity_category": e.entity_category} for e in hub.population.entities]
    areas = [{"area_id": a, "name": n, "floor_id": f} for a, n, f in hub.population.areas]
    for kind, items in (("device", devices), ("entity", entities), ("area", areas)):
        registry.load(kind, msgspec.json.encode(items))
    return registry


def payloads(count: int, entities: int = 2000) -> list[bytes]:
    """`count` stream payloads (`e` fields) of distinct state changes."""
    hub = Hub.create(entities, "unused")
    recorder = Recorder()
    hub.connections.add(recorder)
    registry = registry_of(hub)
    out: list[bytes] = []
    for _ in range(count):
        hub.fire_state_change()
        frame = frames.single_decoder.decode(recorder.messages.pop())
        assert isinstance(frame, frames.EventFrame)
        event = frames.event_decoder.decode(frame.event)
        data = frames.state_changed_decoder.decode(event.data)
        out.append(encode_event(normalise_state_changed(data, event.time_fired, event.origin, event.context,
                                                        registry)))
    hub.sent.clear()
    return out
