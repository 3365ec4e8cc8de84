"""One XAUTOCLAIM pass over the group's pending list, writing reclaimed entries through the writer's code."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis

from homeiq_shared.logs import Log
from homeiq_shared.stream import Entry, StreamNames, entries_of
from homeiq_writer.batch import BatchWriter

log = Log(__name__)

Progress = Callable[[int], None]


class PassSummary(msgspec.Struct):
    """What one reclaim pass did (or, with dry_run, would do)."""

    reclaimed: int = 0
    written: int = 0
    dead_lettered: int = 0
    lost: int = 0
    completed: bool = True
    dry_run: bool = False


async def delivery_counts(client: aioredis.Redis, names: StreamNames, consumer: str,
                          entries: list[Entry]) -> dict[bytes, int]:
    """How often each of `entries` (just claimed by `consumer`) has been delivered."""
    if not entries:
        return {}
    rows: Any = await client.xpending_range(names.stream, names.group, min=entries[0][0], max=entries[-1][0],
                                            count=len(entries), consumername=consumer)
    return {row["message_id"]: int(row["times_delivered"]) for row in rows}


async def reclaim_pass(
    client: aioredis.Redis, names: StreamNames, consumer: str, writer: BatchWriter,
    min_idle_ms: int, count: int, stop: asyncio.Event, max_deliveries: int = 10,
    progress: Progress | None = None,
) -> PassSummary:
    """Follow the XAUTOCLAIM cursor from 0-0 back to 0-0. Entries delivered more than `max_deliveries`
    times are dead-lettered; ids whose payload was trimmed are dead-lettered as lost, never just acked."""
    summary = PassSummary()
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
            deliveries = await delivery_counts(client, names, consumer, entries)
            poison = [(eid, f) for eid, f in entries if deliveries.get(eid, 0) > max_deliveries]
            for entry_id, fields in poison:
                await writer.dead_letter(entry_id, fields, "max_deliveries",
                                         f"delivered {deliveries[entry_id]} times (max {max_deliveries})")
            summary.dead_lettered += len(poison)
            writable = [(eid, f) for eid, f in entries if deliveries.get(eid, 0) <= max_deliveries]
            written_before, dead_before = writer.totals()
            completed = await writer.write(await writer.prepare(writable), stop)
            await writer.acked()
            if not completed:
                summary.completed = False
                break
            written_after, dead_after = writer.totals()
            summary.written += written_after - written_before
            summary.dead_lettered += dead_after - dead_before
        if progress is not None:
            progress(len(entries) + len(deleted))
        cursor = next_cursor
        if cursor in (b"0-0", "0-0"):
            break
    else:
        summary.completed = False
    if summary.reclaimed or summary.lost:
        log.info("reclaim_pass", reclaimed=summary.reclaimed, written=summary.written,
                 dead_lettered=summary.dead_lettered, lost=summary.lost, completed=summary.completed)
    return summary

