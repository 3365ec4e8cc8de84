"""One XAUTOCLAIM pass over the group's pending list, writing reclaimed entries through the writer's code."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis

from homeiq.replayer.crashes import CrashLedger
from homeiq.shared.influx.batch import BatchWriter, Handled
from homeiq.shared.logs import Log
from homeiq.shared.stream import Entry, StreamNames, entries_of

log = Log(__name__)

Progress = Callable[[int], None]


class PassSummary(msgspec.Struct):
    """What one reclaim pass did (or, with dry_run, would do)."""

    reclaimed: int = 0  # entries claimed (a packed one holds several events)
    written: int = 0  # events written
    suspects: int = 0  # entries written one at a time under the crash ledger
    dead_lettered: int = 0  # events (an entry that cannot be read at all: one)
    lost: int = 0
    completed: bool = True
    dry_run: bool = False


async def delivery_counts(client: aioredis.Redis, names: StreamNames, entries: list[Entry]) -> dict[bytes, int]:
    """How often each of `entries` has been delivered, asked entry by entry (one round trip)."""
    # One XPENDING over the entries' range with COUNT len(entries) would return other pending entries of that
    # range first (ones this consumer holds but did not just claim), and leave claimed entries uncounted.
    async with client.pipeline(transaction=False) as pipe:
        for entry_id, _ in entries:
            pipe.xpending_range(names.stream, names.group, min=entry_id, max=entry_id, count=1)
        replies: list[Any] = await pipe.execute()
    return {row["message_id"]: int(row["times_delivered"]) for rows in replies for row in rows}


async def reclaim_pass(
    client: aioredis.Redis, names: StreamNames, consumer: str, writer: BatchWriter,
    min_idle_ms: int, count: int, stop: asyncio.Event, max_deliveries: int = 10,
    progress: Progress | None = None, ledger: CrashLedger | None = None,
) -> PassSummary:
    """Settle the crash ledger, then follow the XAUTOCLAIM cursor from 0-0 back to 0-0.

    Entries delivered more than `max_deliveries` times are suspects: Redis counts claims and re-reads
    whatever their cause (an InfluxDB outage, restarts), so a count is no verdict. Suspects are written
    one at a time under the crash ledger, which dead-letters only an entry that kept killing its reader.
    Ids whose payload was trimmed are dead-lettered as lost, never just acked."""
    ledger = ledger or CrashLedger(client, names, consumer)
    summary = PassSummary(dead_lettered=await ledger.settle(writer))
    cursor: Any = b"0-0"
    while not stop.is_set():
        # Never justid: the reply carries the cursor, the entries and (Redis >= 7) the deleted ids.
        next_cursor, raw_entries, *rest = await client.execute_command(  # type: ignore[no-untyped-call]
            "XAUTOCLAIM", names.stream, names.group, consumer, min_idle_ms, cursor, "COUNT", count
        )
        deleted: list[bytes] = list(rest[0]) if rest else []
        entries = entries_of(raw_entries)
        for entry_id in deleted:
            await writer.dead_letter(entry_id, [], "payload_trimmed", "pending entry deleted from the stream")
            writer.count_lost("deleted_while_pending")
        summary.lost += len(deleted)
        if entries:
            summary.reclaimed += len(entries)
            deliveries = await delivery_counts(client, names, entries)
            suspects = [(eid, f) for eid, f in entries if deliveries.get(eid, 0) > max_deliveries]
            others = [(eid, f) for eid, f in entries if deliveries.get(eid, 0) <= max_deliveries]
            handled = await writer.handle(others, stop)
            if not handled.given_up:
                handled = handled.add(await _write_suspects(suspects, writer, ledger, stop, summary))
            summary.written += handled.written
            summary.dead_lettered += sum(handled.dead_lettered.values())
            summary.lost += handled.lost
            if handled.given_up:
                summary.completed = False
                break
        if progress is not None:
            progress(len(entries) + len(deleted))
        cursor = next_cursor
        if cursor in (b"0-0", "0-0"):
            break
    else:
        summary.completed = False
    if summary.reclaimed or summary.lost or summary.dead_lettered:
        log.info("reclaim_pass", reclaimed=summary.reclaimed, written=summary.written, suspects=summary.suspects,
                 dead_lettered=summary.dead_lettered, lost=summary.lost, completed=summary.completed)
    return summary


async def _write_suspects(suspects: list[Entry], writer: BatchWriter, ledger: CrashLedger, stop: asyncio.Event,
                          summary: PassSummary) -> Handled:
    """Write each suspect alone, decoded and encoded under the crash ledger's marker; given up when `stop`
    cut a write short (that suspect and the rest stay pending)."""
    done = Handled()
    for entry_id, fields in suspects:
        if stop.is_set():
            return done.add(Handled(given_up=True))
        crashes = await ledger.crashes(entry_id)
        if crashes >= ledger.max_crashes:  # counted by another replayer since this pass began
            if await ledger.dead_letter(writer, entry_id, crashes):
                done.dead("crashed_reader")
            continue
        handled = await writer.handle([(entry_id, fields)], stop, reading=ledger.reading(entry_id))
        done = done.add(handled)
        if handled.given_up:
            return done
        await ledger.forget(entry_id)
        summary.suspects += 1
    return done
