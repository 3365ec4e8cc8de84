"""Gap backfill: HA's recorder history for the time no connection was open, as `source=backfill` events."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Final

import msgspec

from homeiq.shared import events
from homeiq.shared.ha.frames import UNDECODABLE
from homeiq.shared.ha.registry import Registry
from homeiq.shared.times import datetime_ns, float_ns, iso_ns


class HistoryRow(msgspec.Struct):
    """A compressed state of `history/history_during_period`: epoch-second floats; `lc` only if ≠ `lu`."""

    s: str
    lu: float
    a: msgspec.Raw = msgspec.Raw(b"{}")
    lc: float | None = None


class CurrentState(msgspec.Struct):
    """What the backfill needs of a `get_states` entry: which entity, and the time of its state."""

    entity_id: str
    last_updated: datetime


history_decoder = msgspec.json.Decoder(dict[str, list[HistoryRow]])
_raw_history_decoder = msgspec.json.Decoder(dict[str, list[msgspec.Raw]])
_row_decoder = msgspec.json.Decoder(HistoryRow)
states_decoder = msgspec.json.Decoder(list[CurrentState])


def current_states(raw: bytes) -> dict[str, int]:
    """A `get_states` answer as entity id → the time of its current state (ns, as a live event shows it)."""
    return {state.entity_id: datetime_ns(state.last_updated) for state in states_decoder.decode(raw)}


def decode_history(raw: bytes) -> tuple[dict[str, list[HistoryRow]], list[bytes]]:
    """A history answer's rows by entity, and the rows that cannot be read (left out, for the caller to count).
    Raises UNDECODABLE only when the answer is not even entities with lists of rows."""
    try:
        return history_decoder.decode(raw), []
    except UNDECODABLE:
        pass
    history: dict[str, list[HistoryRow]] = {}
    unreadable: list[bytes] = []
    for entity_id, rows in _raw_history_decoder.decode(raw).items():
        kept = history[entity_id] = []
        for row in rows:
            try:
                kept.append(_row_decoder.decode(row))
            except UNDECODABLE:
                unreadable.append(bytes(row))
    return history, unreadable


# HA's recorder compares the raw floats it stores with `start_time.timestamp()`; a state shown at exactly the
# start microsecond may be stored a fraction below it. Ask from a little earlier and filter here, exactly.
QUERY_MARGIN_NS: Final = 1_000_000
# Entities per history request: one answer stays well under a message limit, and HA answers it quickly.
HISTORY_CHUNK: Final = 50


def history_command(entity_ids: list[str], start_ns: int, end_ns: int | None = None, attributes: bool = True,
                    ) -> dict[str, object]:
    """Every state change of the entities from `start_ns` until `end_ns` (None: now), attribute-only changes
    included; both ends a little wider, for the caller to cut exactly."""
    command: dict[str, object] = {
        "type": "history/history_during_period",
        "start_time": iso_ns(start_ns - QUERY_MARGIN_NS),
        "entity_ids": entity_ids,
        "include_start_time_state": False,
        "significant_changes_only": False,
        "minimal_response": False,
        "no_attributes": not attributes,
    }
    if end_ns is not None:
        command["end_time"] = iso_ns(end_ns + QUERY_MARGIN_NS)
    return command


def backfill_events(
    history: dict[str, list[HistoryRow]], registry: Registry, start_ns: int, seen: set[tuple[str, int]],
    previous_states: dict[str, events.State] | None = None,
) -> Iterator[events.NormalisedEvent]:
    """The rows at or after `start_ns` that were not received live, with the point keys live events have; each
    with the row before it as its old state, without attributes as a live change's (`previous_states`: each
    entity's last row of an earlier piece, updated)."""
    previous_states = {} if previous_states is None else previous_states
    for entity_id, rows in history.items():
        domain = entity_id.partition(".")[0]
        previous = previous_states.get(entity_id)
        for row in rows:
            updated_ns = float_ns(row.lu)
            changed_ns = float_ns(row.lc) if row.lc is not None else updated_ns
            if updated_ns >= start_ns and (entity_id, updated_ns) not in seen:
                yield events.NormalisedEvent(
                    event_type="state_changed", time_ns=updated_ns, time_fired_ns=updated_ns,
                    entity_id=entity_id, domain=domain,
                    new_state=events.State(state=row.s, attributes=row.a, last_changed_ns=changed_ns,
                                           last_updated_ns=updated_ns),
                    old_state=previous, enrichment=registry.enrichment(entity_id, row.a), source="backfill",
                )
            previous = events.State(state=row.s, last_changed_ns=changed_ns, last_updated_ns=updated_ns)
        if previous is not None:
            previous_states[entity_id] = previous
