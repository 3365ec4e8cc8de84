"""Audit: HA's recorder (the ground truth users trust) against InfluxDB, per entity; repair through the backfill
path. HA's float times are compared as HA renders them, so a point 1 µs off is one missing and one extra; with
a `precision` (the `ha` schema), as the writers cut them: one point per entity and unit, the unit's last state."""

from __future__ import annotations

import asyncio
import fnmatch
import math
import time
from collections.abc import Callable, Iterable
from typing import Final

import msgspec
import redis.asyncio as aioredis

from homeiq.replayer.backlog import stream_backlog
from homeiq.shared.entity_filter import EntityRules
from homeiq.shared.events import NormalisedEvent, encode_event
from homeiq.shared.ha.history import HISTORY_CHUNK, backfill_events
from homeiq.shared.ha.reader import HAReader, StateInfo
from homeiq.shared.ha.registry import Registry
from homeiq.shared.influx.haschema import SKIPPED_STATES, point_time_ns
from homeiq.shared.influx.reader import InfluxReader
from homeiq.shared.logs import Log
from homeiq.shared.packing import xadd_events
from homeiq.shared.stream import DEFAULT_NAMES, StreamNames
from homeiq.shared.times import float_ns

log = Log(__name__)

WINDOW_NS: Final = 86_400 * 10**9  # one request per entity chunk and day: HA answers a day quickly
RECORDER_KEEP_DAYS: Final = 10
NOT_SEEN: Final = (
    "events other than state changes (HA keeps no history of them)",
    "entities the recorder excludes, and states older than its retention (10 days by default)",
    "entities HA no longer has",
)

Progress = Callable[[int], None]


class EntityAudit(msgspec.Struct):
    """One entity over the window."""

    entity_id: str
    status: str  # complete | differs | queued | excluded | not_recorded
    in_ha: int = 0
    found: int = 0
    missing: list[int] = []  # point times (ns) HA has, and neither InfluxDB nor the stream
    queued: list[int] = []  # point times HA has and InfluxDB lacks, still in the stream: the writers are behind
    extra: list[int] = []  # point times InfluxDB has and HA does not, or has twice (in two series)
    wrong: list[tuple[int, str, str]] = []  # (time, state in HA, state in InfluxDB)
    # HA's times of states a later state overwrote in InfluxDB (the same point at the schema's precision): what
    # the configured precision keeps, not a loss of the pipeline; never repaired.
    collapsed: list[int] = []
    # Point times HA has, recorded before the pipeline first ran (the collector's first-run mark), that InfluxDB
    # lacks: never the pipeline's to write, so not missing; never repaired.
    before_first_run: list[int] = []


class AuditReport(msgspec.Struct):
    """The whole audit."""

    since_ns: int
    until_ns: int
    entities: list[EntityAudit]
    schema: str = "homeiq"
    precision_ns: int = 1  # points compared at this precision (the `ha` schema's `precision`)
    through_float: bool = False  # times cut as the integration's v2 client cuts them (`point_time_ns`)
    cannot_see: tuple[str, ...] = NOT_SEEN
    repaired: int = 0
    # When the pipeline first ran (ns, the collector's mark); None when not known (no mark, or the pipeline ran
    # before the mark existed): then a state recorded before it counts as missing.
    first_run_ns: int | None = None
    first_run_doubt: str = ""  # why the mark was not used although Redis holds one (then `first_run_ns` is None)

    def total(self, what: str) -> int:
        """Sum of `missing`, `before_first_run`, `queued`, `extra`, `wrong`, `collapsed` (counts) or `in_ha`,
        `found` over the entities."""
        return sum(len(v) if isinstance(v := getattr(e, what), list) else int(v) for e in self.entities)

    @property
    def complete(self) -> bool:
        """Nothing missing, queued, extra or wrong (states recorded before the pipeline first ran are none)."""
        return not any(e.missing or e.queued or e.extra or e.wrong for e in self.entities)


async def first_run_ns(client: aioredis.Redis, names: StreamNames) -> int | None:
    """When the pipeline first ran (the collector's mark, ns); None when that is not known."""
    raw = await client.get(names.first_run)
    return int(raw) or None if raw is not None else None


async def record(client: aioredis.Redis, names: StreamNames, report: AuditReport, by: str) -> None:
    """Keep what an audit that ran to its end found, for `replayer status`."""
    await client.hset(names.last_audit, mapping={
        "finished_ns": time.time_ns(), "by": by, "since_ns": report.since_ns, "until_ns": report.until_ns,
        "complete": int(report.complete), "entities": len(report.entities),
        **{what: report.total(what) for what in LAST_AUDIT_COUNTS}})


LAST_AUDIT_COUNTS: Final = ("in_ha", "found", "missing", "before_first_run", "queued", "extra", "wrong", "collapsed")


def expected_in(schema: str, state: str) -> bool:
    """Whether a recorded state has a point: the `ha` schema, as HA's integration, writes none for unknown,
    unavailable and empty states, nor for a non-finite number (the integration's client leaves it out)."""
    if schema != "ha":
        return True
    if state in SKIPPED_STATES:
        return False
    return _number(state) is None or math.isfinite(_number(state) or 0.0)


def cut(time_ns: int, precision_ns: int) -> int:
    """A time as the writers stamp it at `precision_ns` (InfluxDB's `precision`: cut, not rounded)."""
    return time_ns - time_ns % precision_ns


def at_precision(states: dict[int, str], precision_ns: int, through_float: bool = False,
                 ) -> tuple[dict[int, str], list[int]]:
    """HA's states (time → state) as InfluxDB keeps them: one point per unit of `precision_ns`, holding the unit's
    last state (written last, it overwrote the others); and the times of the states it overwrote."""
    points: dict[int, str] = {}
    last: dict[int, int] = {}
    overwritten: list[int] = []
    for time_ns in sorted(states):
        unit = point_time_ns(time_ns, precision_ns, through_float)
        if unit in last:
            overwritten.append(last[unit])
        points[unit], last[unit] = states[time_ns], time_ns
    return points, overwritten


def same(in_ha: str, stored: str) -> bool:
    """A stored state equals HA's: the same text (a line break stored as `\\n`, as the `ha` schema's api_version 1
    writes it), or (the `ha` schema's `value`) the same number."""
    if in_ha == stored or ("\n" in in_ha and in_ha.replace("\n", "\\n") == stored):
        return True
    number, stored_number = _number(in_ha), _number(stored)
    return number is not None and number == stored_number


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _filtered(states: list[StateInfo], globs: list[str]) -> list[StateInfo]:
    if not globs:
        return states
    return [s for s in states if any(fnmatch.fnmatchcase(s.entity_id, glob) for glob in globs)]


def _excluded(state: StateInfo, rules: EntityRules | None, registry: Registry) -> bool:
    if rules is None:
        return False
    event = NormalisedEvent(event_type="state_changed", time_ns=0, entity_id=state.entity_id,
                            domain=state.entity_id.partition(".")[0],
                            enrichment=registry.enrichment(state.entity_id, state.attributes))
    return not rules.allows(event)


async def audit(ha: HAReader, influx: InfluxReader, since_ns: int, until_ns: int, globs: list[str] | None = None,
                rules: EntityRules | None = None, progress: Progress | None = None,
                redis: aioredis.Redis | None = None, names: StreamNames = DEFAULT_NAMES) -> AuditReport:
    """Compare every recorded state of the window with InfluxDB's points, entity by entity; with `redis`, a
    state InfluxDB lacks that the stream still holds for the writers is `queued`, not missing."""
    # The stream is read before InfluxDB: a state the writers write in between is then found in InfluxDB (they
    # ack only after its 2xx). Read the other way round, it could be in neither read, and a repair would publish
    # it again, enriched with today's registry (another series for an entity moved since).
    backlog = await stream_backlog(redis, names) if redis is not None else set()
    first_ns = await first_run_ns(redis, names) if redis is not None else None
    precision_ns = influx.precision_ns
    since_ns, until_ns = cut(since_ns, precision_ns), cut(until_ns, precision_ns)  # whole units: whole points
    registry = await ha.registry()
    states = sorted(_filtered(await ha.states(), globs or []), key=lambda s: s.entity_id)
    audited: list[EntityAudit] = []
    compared: list[str] = []
    for state in states:
        if _excluded(state, rules, registry):
            audited.append(EntityAudit(state.entity_id, "excluded"))
        else:
            compared.append(state.entity_id)
    chunks = [compared[i:i + HISTORY_CHUNK] for i in range(0, len(compared), HISTORY_CHUNK)]
    on_the_way: dict[str, set[int]] = {}
    for entity_id, time_ns in backlog:
        on_the_way.setdefault(entity_id, set()).add(point_time_ns(time_ns, precision_ns, influx.through_float))
    earliest_live: list[int] = []
    results = await asyncio.gather(*(_audit_chunk(ha, influx, chunk, since_ns, until_ns, progress, on_the_way,
                                                  earliest_live)
                                     for chunk in chunks))
    audited.extend(entity for chunk in results for entity in chunk)
    audited.sort(key=lambda e: e.entity_id)
    doubt = doubt_first_run(first_ns, min(earliest_live, default=None), time.time_ns())
    if doubt:
        log.warning("first_run_mark_ignored", first_run_ns=first_ns, reason=doubt)
        first_ns = None
    if first_ns is not None:
        # Its unit's states may be after it: counted missing, never hidden.
        _set_apart(audited, cut(first_ns, precision_ns))
    return AuditReport(since_ns, until_ns, audited, influx.schema, precision_ns, influx.through_float,
                       first_run_ns=first_ns, first_run_doubt=doubt)


def doubt_first_run(first_ns: int | None, earliest_live_ns: int | None, now_ns: int) -> str:
    """Why a first-run mark cannot be trusted (it would hide real losses as `before_first_run`), or "": a mark in
    the future, or one later than a point the writers wrote from a live event (so the pipeline ran before it)."""
    if first_ns is None:
        return ""
    if first_ns > now_ns:
        return "the first-run mark is in the future (a clock was wrong when it was set)"
    if earliest_live_ns is not None and earliest_live_ns < first_ns:
        return ("InfluxDB holds a live point older than the first-run mark: the pipeline ran before it (Redis lost "
                "the mark, and the collector its copy)")
    return ""


def _set_apart(audited: list[EntityAudit], first_point_ns: int) -> None:
    """Move what is missing from before the pipeline first ran to `before_first_run`; an entity with nothing else
    amiss is complete."""
    for entity in audited:
        before = [t for t in entity.missing if t < first_point_ns]
        if not before:
            continue
        entity.before_first_run = before
        entity.missing = [t for t in entity.missing if t >= first_point_ns]
        if entity.status == "differs" and not (entity.missing or entity.extra or entity.wrong):
            entity.status = "queued" if entity.queued else "complete"


async def _audit_chunk(ha: HAReader, influx: InfluxReader, entity_ids: list[str], since_ns: int, until_ns: int,
                       progress: Progress | None, on_the_way: dict[str, set[int]],
                       earliest_live: list[int]) -> list[EntityAudit]:
    """Audit these entities; append the time of the earliest live point found to `earliest_live`."""
    in_ha: dict[str, dict[int, str]] = {entity_id: {} for entity_id in entity_ids}
    stored: dict[str, dict[int, str]] = {entity_id: {} for entity_id in entity_ids}
    twice: dict[str, list[int]] = {}
    for start in range(since_ns, until_ns, WINDOW_NS):
        end = min(start + WINDOW_NS, until_ns)
        history, points = await asyncio.gather(ha.history(entity_ids, start, end),
                                               influx.states(entity_ids, start, end))
        for entity_id, rows in history.items():
            times = in_ha.setdefault(entity_id, {})
            for row in rows:
                time_ns = float_ns(row.lu)
                if start <= time_ns < end and expected_in(influx.schema, row.s):
                    times[time_ns] = row.s
        for point in points:
            times = stored.setdefault(point.entity_id, {})
            if point.time_ns in times:  # the same state in two series (other tags): one point too many
                twice.setdefault(point.entity_id, []).append(point.time_ns)
            times[point.time_ns] = point.state
        live = [point.time_ns for point in points if point.live]
        if live:
            earliest_live.append(min(live))
    out = [_entity(entity_id, in_ha[entity_id], stored[entity_id], twice.get(entity_id, []),
                   on_the_way.get(entity_id, set()), influx.precision_ns, influx.through_float)
           for entity_id in entity_ids]
    if progress is not None:
        progress(len(entity_ids))
    return out


def _entity(entity_id: str, in_ha: dict[int, str], stored: dict[int, str], twice: list[int],
            on_the_way: set[int], precision_ns: int, through_float: bool) -> EntityAudit:
    expected, collapsed = at_precision(in_ha, precision_ns, through_float)
    lacking = expected.keys() - stored.keys()
    missing, queued = sorted(lacking - on_the_way), sorted(lacking & on_the_way)
    extra = sorted([*(stored.keys() - expected.keys()), *twice])
    wrong = sorted((t, expected[t], stored[t]) for t in expected.keys() & stored.keys()
                   if not same(expected[t], stored[t]))
    status = "differs" if missing or extra or wrong else "queued" if queued else "complete"
    if not in_ha and stored:
        status = "not_recorded"  # or older than the recorder keeps: nothing to compare with
    return EntityAudit(entity_id, status, len(in_ha), len(stored) + len(twice), missing, queued, extra, wrong,
                       collapsed)


async def repair(ha: HAReader, client: aioredis.Redis, names: StreamNames, report: AuditReport,
                 progress: Progress | None = None) -> int:
    """Publish every missing state to the stream as the collector's backfill would (same point identity,
    today's registry); the writers write them. Never deletes. Returns how many were published. `report` must
    come from an audit that read the stream (`redis`), else states the writers have yet to write look missing."""
    registry = await ha.registry()
    wanted = [e for e in report.entities if e.missing]
    published = 0
    for first in range(0, len(wanted), HISTORY_CHUNK):
        chunk = wanted[first:first + HISTORY_CHUNK]
        missing = {(e.entity_id, t) for e in chunk for t in e.missing}
        history = await ha.history([e.entity_id for e in chunk], report.since_ns, report.until_ns,
                                   attributes=True)
        events = _missing_points(backfill_events(history, registry, report.since_ns, set()), missing, report)
        await xadd_events(client, names.stream, [encode_event(event) for event in events])
        published += len(events)
        if progress is not None:
            progress(len(chunk))
    log.info("audit_repaired", published=published, entities=len(wanted))
    return published


def _missing_points(events: Iterable[NormalisedEvent], missing: set[tuple[str, int]],
                    report: AuditReport) -> list[NormalisedEvent]:
    """Of the recorded states, the one each missing point holds: its unit's last state that has a point (one
    state per point: the others were overwritten in InfluxDB, and writing them again would be counted so)."""
    last: dict[tuple[str, int], NormalisedEvent] = {}
    for event in events:  # in the recorder's order, by time
        key = (event.entity_id or "", point_time_ns(event.time_ns, report.precision_ns, report.through_float))
        if key in missing and event.new_state is not None and expected_in(report.schema, event.new_state.state):
            last[key] = event
    return list(last.values())
