"""HA's recorder as history sees it: rows become visible only when the recorder commits its session.

HA's recorder writes each state into a database session and commits it every `commit_interval` seconds (a
timer from the recorder's start; 5 s by default, often 30 s on SD cards), or after every event when the
interval is 0; on shutdown it commits what it holds (`recorder/core.py`: `_async_commit`, `_process_one_event`).
`history/history_during_period` reads the database, so a state is invisible to it until the next commit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Recorded:
    """One recorder row: HA stores the raw floats (`last_updated_ts`, `last_changed_ts`) as they are."""

    state: str
    attributes: dict[str, Any]
    last_updated: float
    last_changed: float


class Recorder:
    """Rows by entity, committed on HA's schedule; `monotonic` is the recorder's timer clock."""

    def __init__(self, commit_interval_s: float = 5.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.commit_interval_s = commit_interval_s
        self._monotonic = monotonic
        self._started = monotonic()
        self._committed: dict[str, list[Recorded]] = {}
        self._session: list[tuple[float, str, Recorded]] = []  # recorded at (timer clock), entity, row

    def record(self, entity_id: str, row: Recorded) -> None:
        """Add a state to the open session (committed at once when the interval is 0)."""
        if self.commit_interval_s <= 0:
            self._committed.setdefault(entity_id, []).append(row)
        else:
            self._session.append((self._monotonic(), entity_id, row))

    def rows(self, entity_id: str) -> list[Recorded]:
        """What the database holds for `entity_id` now: every commit due so far has happened."""
        self._commit_due()
        return self._committed.get(entity_id, [])

    @property
    def entity_ids(self) -> list[str]:
        """Every entity with a committed row."""
        self._commit_due()
        return list(self._committed)

    @property
    def uncommitted(self) -> int:
        """Rows in the session, not yet visible to history."""
        self._commit_due()
        return len(self._session)

    def commit(self) -> None:
        """Commit the whole session now (HA does on shutdown)."""
        self._commit_until(math.inf)

    def restart(self) -> None:
        """HA stopped (committing what it held) and started again: the commit timer starts over."""
        self.commit()
        self._started = self._monotonic()

    def rename(self, entity_id: str, new_entity_id: str) -> None:
        """An entity's id changed in the registry: its history (committed or not) becomes the new id's, as HA's
        recorder moves its `states_meta` row (`recorder/entity_registry.py`: `update_states_metadata`); HA
        refuses, and keeps both, when the new id has history already."""
        if new_entity_id in self._committed or any(row_id == new_entity_id for _, row_id, _ in self._session):
            return
        if entity_id in self._committed:
            self._committed[new_entity_id] = self._committed.pop(entity_id)
        self._session = [(at, new_entity_id if row_id == entity_id else row_id, row)
                         for at, row_id, row in self._session]

    def purge(self, before: float) -> int:
        """Delete committed rows last updated before `before`, as HA's purge (`purge_keep_days`) does, keeping each
        entity's latest row; returns how many went."""
        self._commit_due()
        purged = 0
        for entity_id, rows in self._committed.items():
            kept = [row for row in rows[:-1] if row.last_updated >= before] + rows[-1:]
            purged += len(rows) - len(kept)
            self._committed[entity_id] = kept
        return purged

    def _commit_due(self) -> None:
        if not self._session:
            return
        if self.commit_interval_s <= 0:  # the interval was changed to 0 by a test: what is due is everything
            self.commit()
            return
        elapsed_s = self._monotonic() - self._started
        last_commit = self._started + math.floor(elapsed_s / self.commit_interval_s) * self.commit_interval_s
        self._commit_until(last_commit)

    def _commit_until(self, moment: float) -> None:
        committed = 0
        for recorded_at, entity_id, row in self._session:
            if recorded_at >= moment:  # recorded after that commit
                break
            self._committed.setdefault(entity_id, []).append(row)
            committed += 1
        del self._session[:committed]
