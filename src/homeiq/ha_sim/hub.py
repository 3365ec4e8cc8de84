"""The simulated Home Assistant core: states, registries, the event bus, the recorder, the ground truth."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from homeiq.ha_sim.messages import (
    Standalone,
    event_message,
    iso,
    json_bytes,
    now_ts,
    partial_event_message,
    render,
    rendered_us,
    ulid,
)
from homeiq.ha_sim.population import KINDS, Device, Entity, Population, build_population, next_state
from homeiq.ha_sim.recorder import Recorded, Recorder

HA_VERSION = "2025.11.2"
MATCH_ALL = "*"
USER_ID = "0e8df5cbe0d447799e44aa601b68033d"  # the admin user of the captures
TICK_S = 0.005
MAX_PER_TICK = 500


@dataclass(frozen=True)
class SentEvent:
    """Ground truth for one fired state_changed event; times are HA's raw floats."""

    entity_id: str
    state: str
    attributes: dict[str, Any]
    last_updated: float
    last_changed: float
    old_state: str | None
    context_id: str

    @property
    def last_updated_us(self) -> int:
        """The microseconds the live event shows (HA's rendering of the float)."""
        return rendered_us(self.last_updated)


@dataclass
class Faults:
    """Faults a test can switch on while the simulator runs."""

    silent_after_connect: bool = False  # never send auth_required
    silent_after_auth: bool = False  # never answer the auth message
    ignore_pings: bool = False  # a half-open connection: pings go unanswered
    pong_delay_s: float = 0.0  # pongs leave this late, events meanwhile (as to a client behind in reading)
    refuse_connections: bool = False  # HA down: the WebSocket upgrade is answered 503


class Subscriber(Protocol):
    """A connection that receives events for its subscriptions."""

    subscriptions: dict[int, str]

    @property
    def queued(self) -> int:
        """Messages waiting to be sent."""

    def send(self, message: bytes) -> None:
        """Queue one message for the client."""

    def abort(self, reason: str) -> None:
        """Drop the connection."""


@dataclass
class Hub:
    """Everything a connection can ask for, and the event bus that feeds the subscriptions."""

    population: Population
    token: str
    faults: Faults = field(default_factory=Faults)
    connections: set[Subscriber] = field(default_factory=set)
    sent: list[SentEvent] = field(default_factory=list)
    recorder: Recorder = field(default_factory=Recorder)
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    clock: Callable[[], float] = now_ts  # the time of the next state change (a benchmark schedules them ahead)
    clock_offset_s: float = 0.0  # HA's clock minus the real one: a host whose clock is off, or stepped by NTP
    removed: set[str] = field(default_factory=set)  # entity ids removed from HA (the recorder keeps their rows)
    connects: int = 0
    subscribes: int = 0  # `subscribe_events` answered: a collector's live sessions (its backfill has connections too)
    # Called when a connection with a subscription ends, with why ("dropped by the simulator", HA's own drop of a
    # client that cannot keep up, or "closed by the client"): what it had been sent and not read is lost.
    on_subscriber_lost: Callable[[str], None] | None = None
    active: int = 0  # WebSocket connections open right now (authenticated or not)
    added: int = 0  # entities added since the start (`add_entity`)
    max_active: int = 0

    @classmethod
    def create(cls, entity_count: int, token: str, seed: int = 1, commit_interval_s: float = 5.0) -> Hub:
        """A hub with `entity_count` entities, each with an initial recorded state (committed), and a recorder that
        commits every `commit_interval_s` as HA's does (5 s by default; 0: at once)."""
        hub = cls(population=build_population(entity_count, seed), token=token)
        start = now_ts()
        for entity in hub.population.entities:
            entity.last_changed = entity.last_updated = start
            entity.context = {"id": ulid(start), "parent_id": None, "user_id": None}
            hub.recorder.record(entity.entity_id, Recorded(entity.state, entity.attributes, start, start))
        hub.recorder.commit()
        hub.recorder.commit_interval_s = commit_interval_s
        return hub

    def now(self) -> float:
        """HA's clock: the real one, off by `clock_offset_s`."""
        return self.clock() + self.clock_offset_s

    @property
    def entities(self) -> dict[str, Entity]:
        """Entities by entity_id, removed ones included (the ground truth still needs them)."""
        return {entity.entity_id: entity for entity in self.population.entities}

    @property
    def present(self) -> list[Entity]:
        """The entities HA has now: `get_states` and the entity registry list these."""
        if not self.removed:
            return self.population.entities
        return [entity for entity in self.population.entities if entity.entity_id not in self.removed]

    def state_dict(self, entity: Entity, last_changed: str | None = None, last_updated: str | None = None
                   ) -> dict[str, Any]:
        """HA's `State.as_dict()` for the entity's current state (its times when already rendered)."""
        updated = last_updated or iso(entity.last_updated)
        return {
            "entity_id": entity.entity_id,
            "state": entity.state,
            "attributes": entity.attributes,
            "last_changed": last_changed or iso(entity.last_changed),
            "last_reported": updated,
            "last_updated": updated,
            "context": entity.context,
        }

    def fire_state_change(
        self, entity: Entity | None = None, forced: tuple[str, dict[str, Any]] | None = None
    ) -> SentEvent:
        """Change one entity's state and fire `state_changed` to every matching subscription."""
        entity = entity or self.rng.choice(self.present)
        old = entity.shown or self.state_dict(entity)
        # HA serialises a State once (`as_dict_json`) and its next event's old_state reuses those bytes.
        old_json = entity.shown_json or msgspec.Raw(json_bytes(old))
        state, attributes = forced or next_state(entity, self.rng)
        stamp = self.now()
        rendered, shown_us = render(stamp)
        # One state per shown µs (a clock stepped back may repeat an earlier one; HA's would not be this unlucky).
        while shown_us == (entity.shown_us or rendered_us(entity.last_updated)):
            stamp += 1e-6
            rendered, shown_us = render(stamp)
        changed = state != entity.state
        if changed:
            entity.last_changed = stamp
        entity.state, entity.attributes, entity.last_updated = state, attributes, stamp
        entity.context = self._context(entity, stamp)
        new = self.state_dict(entity, rendered if changed else old["last_changed"], rendered)
        new_json = msgspec.Raw(json_bytes(new))
        entity.shown, entity.shown_json, entity.shown_us = new, new_json, shown_us
        event = {
            "event_type": "state_changed",
            "data": {"entity_id": entity.entity_id, "old_state": old_json, "new_state": new_json},
            "origin": "LOCAL",
            "time_fired": rendered,
            "context": entity.context,
        }
        self.broadcast("state_changed", event)
        record = SentEvent(entity.entity_id, state, attributes, stamp, entity.last_changed, old["state"],
                           entity.context["id"] or "")
        self.sent.append(record)
        self.recorder.record(entity.entity_id, Recorded(state, attributes, stamp, entity.last_changed))
        return record

    def _context(self, entity: Entity, stamp: float) -> dict[str, str | None]:
        """Who caused the change: a user for some switch and light toggles, an automation for some others."""
        roll = self.rng.random()
        user = USER_ID if entity.domain in ("light", "switch") and roll < 0.3 else None
        parent = ulid(stamp - 0.001) if user is None and roll > 0.9 else None
        return {"id": ulid(stamp), "parent_id": parent, "user_id": user}

    def broadcast(self, event_type: str, event: dict[str, Any]) -> None:
        """Send one event to every subscription that matches it, serialised once like HA's cache (and not at
        all when none does)."""
        if any(wanted in (MATCH_ALL, event_type)
               for connection in self.connections for wanted in connection.subscriptions.values()):
            self.broadcast_rendered(event_type, partial_event_message(event))

    def broadcast_rendered(self, event_type: str, partial: bytes) -> None:
        """Send an event serialised already (`partial_event_message`) to every subscription that matches it."""
        for connection in self.connections:
            for sub_id, wanted in connection.subscriptions.items():
                if wanted in (MATCH_ALL, event_type):
                    connection.send(event_message(partial, sub_id))

    def set_state(self, entity: Entity, state: str, attributes: dict[str, Any]) -> SentEvent:
        """Fire a state change to exactly `state` and `attributes` (for tests: huge or odd states)."""
        return self.fire_state_change(entity, forced=(state, attributes))

    def remove_entity(self, entity: Entity) -> None:
        """Remove the entity as HA does: `state_changed` with no new state; it leaves `get_states` and the registry,
        and the recorder keeps its rows."""
        self.removed.add(entity.entity_id)
        old = msgspec.Raw(json_bytes(entity.shown or self.state_dict(entity)))
        self.fire_event("state_changed", {"entity_id": entity.entity_id, "old_state": old, "new_state": None})

    def move_entity(self, entity: Entity, area_id: str) -> None:
        """Change the entity's area and fire `entity_registry_updated` as HA does: ids and `changes` only."""
        old_area = entity.area_id
        entity.area_id = area_id
        self.fire_event("entity_registry_updated",
                        {"action": "update", "entity_id": entity.entity_id, "changes": {"area_id": old_area}})

    def add_entity(self) -> Entity:
        """Add an entity to a device, as an integration does: `entity_registry_updated` (create), then its first
        state (HA's has no old state; ha-sim's shows the initial one as old)."""
        self.added += 1
        kind, domain, device_class, unit, platform = KINDS[self.added % len(KINDS)]
        device = self.rng.choice(self.population.devices)
        entity = Entity(entity_id=f"{domain}.added_{kind}_{self.added}", kind=kind, domain=domain, platform=platform,
                        device_id=device.id, registry_id=f"{self.rng.getrandbits(128):032x}",
                        friendly_name=f"Added {kind.title()} {self.added}", device_class=device_class, unit=unit,
                        level=self.rng.uniform(15, 25))
        entity.state, entity.attributes = next_state(entity, self.rng)
        entity.last_changed = entity.last_updated = self.now()
        self.population.entities.append(entity)
        self.fire_event("entity_registry_updated", {"action": "create", "entity_id": entity.entity_id})
        self.fire_state_change(entity)
        return entity

    def rename_entity(self, entity: Entity, new_id: str) -> Entity:
        """Give the entity a new entity_id as HA does: the old id leaves the state machine (`state_changed` with
        no new state), `entity_registry_updated` names both ids, the recorder's history moves to the new id, and
        the new id's state follows. Returns the entity under its new id (the old one is kept as removed: the
        ground truth still needs it)."""
        renamed = dataclasses.replace(entity, entity_id=new_id, shown=None, shown_json=None, shown_us=0)
        self.remove_entity(entity)
        self.population.entities.append(renamed)
        self.fire_event("entity_registry_updated", {"action": "update", "entity_id": new_id,
                                                    "old_entity_id": entity.entity_id,
                                                    "changes": {"entity_id": entity.entity_id}})
        self.recorder.rename(entity.entity_id, new_id)
        self.fire_state_change(renamed)
        return renamed

    def move_device(self, device: Device, area_id: str) -> None:
        """Change the device's area and fire `device_registry_updated` as HA does: its id and `changes` only."""
        old_area = device.area_id
        device.area_id = area_id
        self.fire_event("device_registry_updated",
                        {"action": "update", "device_id": device.id, "changes": {"area_id": old_area}})

    def fire_service_call(self, n: int) -> tuple[str, float]:
        """A `call_service` event (HA records no state for it, so no backfill can recover it)."""
        return self.fire_event("call_service", {"domain": "light", "service": "toggle", "service_data": {"n": n}})

    def fire_event(self, event_type: str, data: dict[str, Any]) -> tuple[str, float]:
        """Fire an event without a state of its own; its context id and the time it was fired."""
        stamp = self.now()
        context_id = ulid(stamp)
        self.broadcast(event_type, {
            "event_type": event_type, "data": data, "origin": "LOCAL", "time_fired": iso(stamp),
            "context": {"id": context_id, "parent_id": None, "user_id": None},
        })
        return context_id, stamp

    def send_raw(self, message: bytes) -> None:
        """Send `message` as it is, in a frame of its own, to every authenticated connection (bad frames)."""
        for connection in self.connections:
            connection.send(Standalone(message))

    @property
    def subscribed(self) -> int:
        """Connections with at least one subscription."""
        return sum(1 for connection in self.connections if connection.subscriptions)

    async def emit(self, count: int | None, rate_per_s: float, stop: asyncio.Event | None = None) -> int:
        """Fire `count` events (None: until `stop`) at `rate_per_s`; returns how many were fired."""
        loop = asyncio.get_running_loop()
        started, fired = loop.time(), 0
        while (count is None or fired < count) and not (stop and stop.is_set()):
            due = int((loop.time() - started) * rate_per_s) + 1
            if count is not None:
                due = min(due, count)
            # At most MAX_PER_TICK at once so the connections' writers get to send in between.
            for _ in range(min(due - fired, MAX_PER_TICK)):
                self.fire_state_change()
                fired += 1
            await asyncio.sleep(TICK_S if fired >= due else 0)
        return fired
