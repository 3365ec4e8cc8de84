"""InfluxDB compared with ha-sim's ground truth, point by point, and the suite's report table."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import msgspec

from homeiq.ha_sim.hub import Hub, SentEvent
from homeiq.shared.events import decode_event
from homeiq.shared.packing import events_or_none

Key = tuple[str, int]  # entity_id, point time in ns


def expected_fields(hub: Hub, sent: SentEvent) -> dict[str, Any]:
    """What every point of a sent state change must hold, whether it came live or by backfill."""
    entity = hub.entities[sent.entity_id]
    device = next(d for d in hub.population.devices if d.id == entity.device_id)
    return {
        "state_value": sent.state,
        "domain": entity.domain,
        "device_id": entity.device_id,
        "area_id": entity.area_id or device.area_id,
        "device_class": sent.attributes.get("device_class"),
        "platform": entity.platform,
        "value": _number(sent.state),
    }


def _number(state: str) -> float | None:
    try:
        number = float(state)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


@dataclass
class Verdict:
    """How InfluxDB differs from what HA sent."""

    sent: int
    found: int
    missing: set[Key] = field(default_factory=set)
    extra: set[Key] = field(default_factory=set)
    duplicated: int = 0
    wrong: dict[Key, dict[str, tuple[Any, Any]]] = field(default_factory=dict)
    dead_lettered: set[Key] = field(default_factory=set)

    @property
    def unexplained_missing(self) -> set[Key]:
        """Missing points that are not in the dead-letter stream."""
        return self.missing - self.dead_lettered


def compare(hub: Hub, points: list[dict[str, Any]], dead: list[dict[bytes, bytes]],
            ignore: frozenset[str] = frozenset()) -> Verdict:
    """Every sent state change must be exactly one point with its time, tags and fields; nothing else may be
    there. Points of events that are not state changes are not compared here (their scenario does)."""
    expected = {(s.entity_id, s.last_updated_us * 1000): s for s in hub.sent}
    states = [p for p in points if p.get("event_type") == "state_changed"]
    found: dict[Key, dict[str, Any]] = {}
    duplicated = 0
    for point in states:
        key = (point["entity_id"], point["time"])
        duplicated += key in found
        found[key] = point
    verdict = Verdict(sent=len(expected), found=len(states), missing=expected.keys() - found.keys(),
                      extra=found.keys() - expected.keys(), duplicated=duplicated)
    for key in expected.keys() & found.keys():
        sent, point = expected[key], found[key]
        want = {k: v for k, v in expected_fields(hub, sent).items() if k not in ignore}
        if point["source"] == "live":  # a backfill knows no context and starts without a previous state
            want |= {"context_id": sent.context_id, "previous_state": sent.old_state}
        diff = {k: (v, point.get(k)) for k, v in want.items() if point.get(k) != v}
        if point["source"] not in ("live", "backfill"):
            diff["source"] = ("live or backfill", point["source"])
        if diff:
            verdict.wrong[key] = diff
    for fields in dead:  # an event alone, or a packed entry dead-lettered whole (crashed_reader)
        for payload in events_or_none(fields):
            try:
                event = decode_event(payload)
            except msgspec.DecodeError:
                continue
            if event.entity_id:
                verdict.dead_lettered.add((event.entity_id, event.time_ns))
    return verdict


@dataclass
class Row:
    """One line of the suite's report."""

    scenario: str
    sent: int
    found: int
    missing: int
    extra: int
    wrong: int
    dead_lettered: int
    dropped: dict[str, float]
    recovery_s: float | None
    explained: str = ""


ROWS: list[Row] = []


def record(scenario: str, verdict: Verdict, dropped: dict[str, float], recovery_s: float | None,
           explained: str = "") -> Row:
    """Add a scenario's result to the report."""
    row = Row(scenario, verdict.sent, verdict.found, len(verdict.missing), len(verdict.extra) + verdict.duplicated,
              len(verdict.wrong), len(verdict.dead_lettered), dropped, recovery_s, explained)
    ROWS.append(row)
    return row


def table(rows: list[Row]) -> str:
    """The report as a plain-text table."""
    header = ("scenario", "sent", "found", "missing", "extra", "wrong", "dead", "dropped", "recovery", "explained")
    lines = [header]
    for r in rows:
        dropped = ", ".join(f"{reason}={int(n)}" for reason, n in sorted(r.dropped.items())) or "-"
        recovery = "-" if r.recovery_s is None else f"{r.recovery_s:.1f} s"
        lines.append((r.scenario, str(r.sent), str(r.found), str(r.missing), str(r.extra), str(r.wrong),
                      str(r.dead_lettered), dropped, recovery, r.explained or "-"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                     for line in lines)
