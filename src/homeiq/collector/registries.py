"""HA's registries as the collector enriches events with them: loaded before subscribing, re-read when HA says one
changed (its `*_registry_updated` events carry only ids and `changes`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from homeiq.collector.metrics import CollectorMetrics
from homeiq.collector.resume import KnownEntities
from homeiq.shared.ha import frames
from homeiq.shared.ha.client import CommandFailed, HAConnection
from homeiq.shared.ha.registry import REGISTRY_COMMANDS, Registry
from homeiq.shared.logs import Log

log = Log(__name__)

REGISTRY_EVENTS: Final = {f"{kind}_registry_updated": kind for kind in REGISTRY_COMMANDS}


class Registries:
    """Keeps `registry` loaded; every entity in the entity registry is remembered in `known` (an entity removed
    during a later gap must still be asked for)."""

    def __init__(self, registry: Registry, known: KnownEntities, metrics: CollectorMetrics,
                 command_timeout_s: float, renamed: Callable[[str, str], None] = lambda old, new: None) -> None:
        self.registry, self._known, self._metrics, self._timeout_s = registry, known, metrics, command_timeout_s
        self._renamed = renamed  # an entry's entity_id changed between two loads: (old id, new id)
        # The registry an earlier run saved (entry id → entity id), until the first load of this one is compared with
        # it: the renames made while no collector ran.
        self._saved: dict[str, str] | None = None
        self._loaded = False  # the entity registry, at least once
        self._ids: dict[str, str] | None = None  # `ids()` of the last load (saved every 2 s: made once a load)
        self._stale: set[str] = set()
        self._stale_changed = asyncio.Event()

    def ids(self) -> dict[str, str] | None:
        """The entity registry as loaded (entry id → entity id); None before its first load."""
        if self._saved is not None or not self._loaded:
            return None  # not compared yet with what an earlier run saved: saving it would hide those renames
        if self._ids is None:
            self._ids = {entry.id: entity_id for entity_id, entry in self.registry.entities.items() if entry.id}
        return self._ids

    def saved(self, ids: dict[str, str]) -> None:
        """What an earlier run saved of the registry: its renames since are told once the registry is loaded."""
        self._saved = ids
        if self._loaded:
            self._renamed_since(ids)

    def _renamed_since(self, before: dict[str, str]) -> None:
        for entity_id, entry in self.registry.entities.items():
            old = before.get(entry.id) if entry.id else None
            if old is not None and old != entity_id:  # renamed while we did not listen, or just now
                self._renamed(old, entity_id)
        self._saved = None

    async def load_all(self, conn: HAConnection) -> None:
        """Every registry, in turn (discovery, before subscribing)."""
        for kind in REGISTRY_COMMANDS:
            await self._load(conn, kind)

    def changed(self, event_type: str) -> None:
        """An event arrived: if it says a registry changed, that one is re-read (by `refresh`)."""
        kind = REGISTRY_EVENTS.get(event_type)
        if kind is not None:
            self._stale.add(kind)
            self._stale_changed.set()

    async def refresh(self, conn: HAConnection) -> None:
        """Re-read each registry HA said changed, for as long as the session lasts."""
        while True:
            await self._stale_changed.wait()
            self._stale_changed.clear()
            while self._stale:
                kind = self._stale.pop()
                await self._load(conn, kind)
                log.info("registry_refreshed", registry=kind)

    async def _load(self, conn: HAConnection, kind: str) -> None:
        """Load one registry; one HA cannot answer or answers unreadably keeps what was loaded before."""
        try:
            raw = await conn.command({"type": REGISTRY_COMMANDS[kind]}, self._timeout_s)
            before = {entry.id: entry.entity_id for entry in self.registry.entities.values() if entry.id}
            if not self._loaded and self._saved is not None:
                before = self._saved  # the first load since a start: renames since the last run saved the registry
            size = self.registry.load(kind, bytes(raw))
        except CommandFailed as exc:
            log.warning("registry_unavailable", registry=kind, error=str(exc))
            return
        except frames.UNDECODABLE as exc:
            self._metrics.frames_rejected.labels("malformed_registry").inc()
            log.warning("registry_unavailable", registry=kind, error=f"{type(exc).__name__}: {exc}"[:200])
            return
        if kind == "entity":
            self._known.saw_all(self.registry.entities)
            if self._loaded or self._saved is not None:
                self._renamed_since(before)
            self._loaded, self._ids = True, None
        log.debug("registry_loaded", registry=kind, entries=size)
