"""What the operator's commands read and change in Redis: pending lists, trimming, the dead-letter stream."""

from __future__ import annotations

import typing
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec
import redis.asyncio as aioredis

from homeiq.shared.events import decode_event
from homeiq.shared.logs import Log
from homeiq.shared.packing import SINGLE_VERSION, BadEntry, unpack
from homeiq.shared.scripts import PRUNE_SCRIPT, REDRIVE_SCRIPT, TRIM_SCRIPT
from homeiq.shared.stream import (
    DEAD_CONSUMER,
    DEAD_DETAIL,
    DEAD_ORIGINAL_ID,
    DEAD_REASON,
    FIELD_EVENT,
    FIELD_PACKED,
    FIELD_VERSION,
    DeadLetter,
    DeadReason,
    StreamNames,
    dead_letter_of,
    xrange_pages,
)

log = Log(__name__)

SCAN = 10_000  # pending entries read per consumer to find the oldest idle and the most deliveries


def literal_values(kind: object) -> tuple[str, ...]:
    """The strings of a Literal, or of a union of Literals, in their order."""
    values: list[str] = []
    for arg in typing.get_args(kind):
        values.extend(literal_values(arg) if typing.get_args(arg) else [str(arg)])
    return tuple(values)


# Every reason a dead letter can carry, from the one list the writers and the replayer write them by: a reason
# added there is valid here at once.
DEAD_REASONS: Final = literal_values(DeadReason)


class ConsumerPending(msgspec.Struct):
    """One consumer's share of the pending list."""

    name: str
    pending: int
    oldest_idle_s: float
    max_deliveries: int
    inactive_s: float


class PendingReport(msgspec.Struct):
    """The group at a glance; `state` is `no_stream` before the first event, `no_group` before the first writer."""

    state: Literal["ok", "no_stream", "no_group"]
    stream: str
    group: str
    length: int
    lag: int | None
    last_delivered_id: str
    pending: int
    consumers: list[ConsumerPending]
    dead_letters: int


def _id(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def group_info(client: aioredis.Redis, names: StreamNames) -> dict[str, Any] | None:
    """XINFO GROUPS' entry for our group, or None when the stream or group does not exist."""
    if not await client.exists(names.stream):
        return None
    groups: Any = await client.xinfo_groups(names.stream)
    return next((g for g in groups if _id(g["name"]) == names.group), None)


async def pending_report(client: aioredis.Redis, names: StreamNames) -> PendingReport:
    """Per consumer: pending count, oldest idle, highest delivery count; stream length, lag, last id."""
    group = await group_info(client, names)
    state: Literal["ok", "no_stream", "no_group"] = "ok"
    if group is None:
        state = "no_group" if await client.exists(names.stream) else "no_stream"
    consumers: list[ConsumerPending] = []
    if group is not None:
        infos: Any = await client.xinfo_consumers(names.stream, names.group)
        for info in infos:
            name = _id(info["name"])
            rows: Any = []
            if info["pending"]:
                rows = await client.xpending_range(names.stream, names.group, "-", "+", SCAN, name)
            consumers.append(ConsumerPending(
                name=name, pending=int(info["pending"]),
                oldest_idle_s=max((r["time_since_delivered"] for r in rows), default=0) / 1000,
                max_deliveries=max((int(r["times_delivered"]) for r in rows), default=0),
                inactive_s=int(info.get("inactive", info.get("idle", 0))) / 1000,
            ))
    return PendingReport(
        state=state, stream=names.stream, group=names.group, length=await client.xlen(names.stream),
        lag=None if group is None or group.get("lag") is None else int(group["lag"]),
        last_delivered_id=_id(group["last-delivered-id"]) if group else "",
        pending=int(group["pending"]) if group else 0, consumers=consumers,
        dead_letters=await client.xlen(names.dead),
    )


class TrimPlan(msgspec.Struct):
    """Where `XTRIM MINID` may cut, and why that is safe."""

    min_id: str | None
    entries_before: int
    reason: str


async def trim_plan(client: aioredis.Redis, names: StreamNames) -> TrimPlan:
    """Where a trim would cut now and how many entries lie below (a dry run: nothing changes)."""
    plan, _ = await _trim(client, names, dry_run=True)
    if plan.min_id is not None:
        plan.entries_before = await _count_below(client, names, plan.min_id)
    return plan


async def trim(client: aioredis.Redis, names: StreamNames) -> tuple[TrimPlan, int]:
    """XTRIM MINID at the lowest id any group still needs, in one atomic step; the plan and how many went."""
    plan, removed = await _trim(client, names, dry_run=False)
    if plan.min_id is not None:
        plan.entries_before = removed
        if removed:  # a pass that cut nothing is no event (every 10 s of an idle pipeline)
            log.info("stream_trimmed", min_id=plan.min_id, removed=removed)
    return plan, removed


async def _trim(client: aioredis.Redis, names: StreamNames, dry_run: bool) -> tuple[TrimPlan, int]:
    script = client.register_script(TRIM_SCRIPT)
    reply: Any = await script(keys=[names.stream, names.resume_from], args=[b"1" if dry_run else b"0"])
    cut, removed, group, why, why_id = reply
    if not cut:
        reason = ("the stream does not exist" if _id(why) == "no_stream"
                  else "no consumer group: nothing says which entries were written, so keep all")
        return TrimPlan(None, 0, reason), 0
    min_id, group, why_id = _id(cut), _id(group), _id(why_id)
    because = {"pending": f"group {group} still has {why_id} pending",
               "resume": f"a restarted collector reads back what follows {why_id}"}.get(
        _id(why), f"group {group} has read up to {why_id}")
    reason = f"{because}; every group has been given, and has acked, every entry below {min_id}"
    return TrimPlan(min_id, 0, reason), int(removed)


async def _count_below(client: aioredis.Redis, names: StreamNames, min_id: str) -> int:
    count = 0
    async for chunk in xrange_pages(client, names.stream, end=f"({min_id}".encode()):
        count += len(chunk)
    return count


async def prune_consumers(client: aioredis.Redis, names: StreamNames, idle_s: float) -> list[str]:
    """Delete consumers idle longer than `idle_s` with nothing pending; the check and the delete are one step."""
    script = client.register_script(PRUNE_SCRIPT)
    reply: Any = await script(keys=[names.stream], args=[names.group, int(idle_s * 1000)])
    pruned: list[str] = []
    for name, idle_ms in zip(reply[::2], reply[1::2], strict=True):
        pruned.append(_id(name))
        log.info("consumer_pruned", consumer=_id(name), idle_s=round(int(idle_ms) / 1000))
    return pruned


class ListedDeadLetter(DeadLetter):
    """A dead letter as `dead-letter list` shows it: when it was dead-lettered (its id's time, UTC) and the entity
    its payload names (None when it has none, or it cannot be read)."""

    time: str = ""
    entity_id: str | None = None


class DeadLetterEntry(msgspec.Struct):
    """The whole of one dead letter (`dead-letter show`): the detail uncut, the payload decoded."""

    id: str
    time: str  # when it was dead-lettered, from its id
    reason: str
    detail: str
    original_id: str
    consumer: str
    entity_id: str | None
    event_time: str | None  # the event's own time (HA's), when the payload can be read
    payload_version: str | None
    payload: Any  # the decoded event, as JSON; None when there is none or it cannot be read
    payload_error: str | None  # why it cannot be read
    raw_payload: str | None  # the bytes as stored, escaped, when it cannot be read


def id_time(entry_id: str) -> str:
    """The UTC time of a stream id (its milliseconds part), ISO 8601 to the millisecond."""
    ms = int(entry_id.split("-", 1)[0])
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _ns_time(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns // 1000 / 1e6, UTC).isoformat(timespec="microseconds")


def _entity_of(payload: bytes | None) -> str | None:
    if payload is None:
        return None
    try:
        return decode_event(payload).entity_id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


async def dead_letters(client: aioredis.Redis, names: StreamNames, limit: int,
                       reason: str | None = None) -> list[ListedDeadLetter]:
    """The oldest `limit` dead letters (of `reason` when given)."""
    out: list[ListedDeadLetter] = []
    async for chunk in xrange_pages(client, names.dead, page=1000):
        for entry_id, fields in chunk:
            letter = dead_letter_of(entry_id, fields)
            if reason is None or letter.reason == reason:
                out.append(ListedDeadLetter(**msgspec.structs.asdict(letter), time=id_time(letter.id),
                                            entity_id=_entity_of(fields.get(FIELD_EVENT))))
        if len(out) >= limit:
            break
    return out[:limit]


async def dead_letter(client: aioredis.Redis, names: StreamNames, entry_id: str) -> DeadLetterEntry | None:
    """One dead letter, whole; None when there is none with this id."""
    rows: Any = await client.xrange(names.dead, entry_id, entry_id, count=1)
    if not rows:
        return None
    raw_id, fields = rows[0]
    text = {key: fields.get(key, b"").decode(errors="replace")
            for key in (DEAD_REASON, DEAD_DETAIL, DEAD_ORIGINAL_ID, DEAD_CONSUMER)}
    payload: bytes | None = fields.get(FIELD_EVENT)
    version: bytes | None = fields.get(FIELD_VERSION)
    decoded: Any = None
    error = raw = entity_id = event_time = None
    if payload is not None:
        try:
            event = decode_event(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            error, raw = str(exc), repr(payload)[2:-1]
        else:
            decoded = msgspec.json.decode(payload)
            entity_id, event_time = event.entity_id, _ns_time(event.time_ns)
    return DeadLetterEntry(
        id=_id(raw_id), time=id_time(_id(raw_id)), reason=text[DEAD_REASON], detail=text[DEAD_DETAIL],
        original_id=text[DEAD_ORIGINAL_ID], consumer=text[DEAD_CONSUMER], entity_id=entity_id, event_time=event_time,
        payload_version=None if version is None else version.decode(errors="replace"), payload=decoded,
        payload_error=error, raw_payload=raw)


async def redrive(client: aioredis.Redis, names: StreamNames, ids: list[str]) -> list[tuple[str, str | None]]:
    """Move each dead letter back onto the stream (a packed entry dead-lettered whole: each of its events an entry of
    its own); (dead id, the last new id, or None when it had no payload)."""
    script = client.register_script(REDRIVE_SCRIPT)
    results: list[tuple[str, str | None]] = []
    for dead_id in ids:
        rows: Any = await client.xrange(names.dead, dead_id, dead_id, count=1)
        packed: bytes | None = rows[0][1].get(FIELD_PACKED) if rows else None
        try:
            singles = [SINGLE_VERSION, *unpack(packed)] if packed is not None else []
        except BadEntry:
            singles = []  # no events to read out of it: back whole, to be dead-lettered whole again
        new_id = await script(keys=[names.dead, names.stream],
                              args=[dead_id, FIELD_VERSION, FIELD_EVENT, FIELD_PACKED, *singles])
        results.append((dead_id, _id(new_id) if new_id else None))
    return results


async def purge(client: aioredis.Redis, names: StreamNames, before_ms: int | None, dry_run: bool = False,
                reason: str | None = None) -> int:
    """Delete dead letters older than `before_ms` (all when None), only those of `reason` when given; returns how
    many (would go, on a dry run)."""
    if reason is not None:
        ids = [d.id for d in await dead_letters(client, names, 10_000_000, reason)
               if before_ms is None or int(d.id.split("-", 1)[0]) < before_ms]
        if not dry_run:
            for first in range(0, len(ids), 1000):
                await client.xdel(names.dead, *ids[first:first + 1000])
        return len(ids)
    if dry_run:
        if before_ms is None:
            return int(await client.xlen(names.dead))
        older: Any = await client.xrange(names.dead, "-", f"({before_ms}-0")
        return len(older)
    if before_ms is None:
        count = int(await client.xlen(names.dead))
        await client.delete(names.dead)
        return count
    return int(await client.xtrim(names.dead, minid=f"{before_ms}-0", approximate=False))

