"""One XAUTOCLAIM pass over the group's pending list, writing reclaimed entries through the writer's code."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import redis.asyncio as aioredis

from homeiq_shared.logs import Log
from homeiq_shared.stream import StreamNames
from homeiq_writer.batch import BatchWriter, Entry

log = Log(__name__)


class PassSummary(msgspec.Struct):
    """What one reclaim pass did."""

    reclaimed: int = 0
    lost: int = 0
    completed: bool = True


async def reclaim_pass(
    client: aioredis.Redis, names: StreamNames, consumer: str, writer: BatchWriter,
    min_idle_ms: int, count: int, stop: asyncio.Event,
) -> PassSummary:
    """Follow the XAUTOCLAIM cursor from 0-0 back to 0-0; ids whose payload was trimmed are dead-lettered."""
    summary = PassSummary()
    cursor: Any = b"0-0"
    while not stop.is_set():
        # Raw XAUTOCLAIM, never justid: its reply carries the cursor and (Redis >= 7) the deleted ids.
        next_cursor, raw_entries, *rest = await client.execute_command(  # type: ignore[no-untyped-call]
            "XAUTOCLAIM", names.stream, names.group, consumer, min_idle_ms, cursor, "COUNT", count
        )
        deleted: list[bytes] = list(rest[0]) if rest else []
        entries: list[Entry] = [(eid, _pairs(fields)) for eid, fields in raw_entries]
        for entry_id in deleted:
            await writer.dead_letter(entry_id, {}, "payload_trimmed", "pending entry deleted from the stream")
            writer.count_lost("deleted_while_pending")
        summary.lost += len(deleted)
        if entries:
            summary.reclaimed += len(entries)
            if not await writer.process(entries, stop):
                summary.completed = False
                break
        cursor = next_cursor
        if cursor in (b"0-0", "0-0"):
            break
    else:
        summary.completed = False
    if summary.reclaimed or summary.lost:
        log.info("reclaim_pass", reclaimed=summary.reclaimed, lost=summary.lost, completed=summary.completed)
    return summary


def _pairs(fields: dict[bytes, bytes] | list[bytes] | None) -> dict[bytes, bytes]:
    """redis-py turns the field list into a dict; accept the raw list too."""
    if not fields:
        return {}
    if isinstance(fields, dict):
        return fields
    return dict(zip(fields[::2], fields[1::2], strict=True))
