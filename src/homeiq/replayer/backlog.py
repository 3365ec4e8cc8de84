"""The states still on their way to InfluxDB: in the stream and not yet acknowledged by the writers' group
(undelivered, or pending at a consumer). The audit reports them as queued, not missing, and never repairs them:
a second copy, enriched with today's registry, could land in another series."""

from __future__ import annotations

from typing import Any, Final

import msgspec
import redis.asyncio as aioredis

from homeiq.replayer.operations import group_info
from homeiq.shared.packing import events_or_none
from homeiq.shared.stream import StreamNames, fetch_entries, xrange_pages

PAGE: Final = 10_000

PointKey = tuple[str, int]
"""A state's point: entity id and `last_updated` (ns), as the audit compares them."""


class _StateKey(msgspec.Struct):
    """The few fields of a stream payload that name a state's point (the rest is not decoded)."""

    event_type: str
    time_ns: int
    entity_id: str | None = None


_key_decoder = msgspec.json.Decoder(_StateKey)


async def stream_backlog(client: aioredis.Redis, names: StreamNames) -> set[PointKey]:
    """The states the writers' group has not acknowledged yet: pending (at any consumer) or not yet delivered.

    Read in this order so that nothing slips between the reads: the group's last-delivered id first, then
    the pending list, then what lies after that id. An entry delivered after the first read is still read by
    the third; one acknowledged meanwhile was written to InfluxDB first (writers ack only after a 2xx)."""
    group = await group_info(client, names)
    if group is None:  # no writer has read anything yet (or there is no stream): all of it is on its way
        return _keys(await _payloads_after(client, names, b"-"))
    last_delivered: bytes = group["last-delivered-id"]
    pending = await fetch_entries(client, names, await _pending_ids(client, names))
    undelivered = await _payloads_after(client, names, b"(" + last_delivered)
    return _keys([event for _, fields in pending for event in events_or_none(fields)]) | _keys(undelivered)


async def _pending_ids(client: aioredis.Redis, names: StreamNames) -> list[bytes]:
    ids: list[bytes] = []
    start: bytes | str = "-"
    while True:
        rows: Any = await client.xpending_range(names.stream, names.group, start, "+", PAGE)
        ids += [row["message_id"] for row in rows]
        if len(rows) < PAGE:
            return ids
        start = b"(" + ids[-1]


async def _payloads_after(client: aioredis.Redis, names: StreamNames, start: bytes) -> list[bytes | None]:
    payloads: list[bytes | None] = []
    async for chunk in xrange_pages(client, names.stream, start, page=PAGE):
        payloads += [event for _, fields in chunk for event in events_or_none(fields)]
    return payloads


def _keys(payloads: list[bytes | None]) -> set[PointKey]:
    """The point keys of the state changes among `payloads`; unreadable ones are the writers' to dead-letter."""
    keys: set[PointKey] = set()
    for payload in payloads:
        if payload is None:  # trimmed
            continue
        try:
            key = _key_decoder.decode(payload)
        except msgspec.DecodeError:
            continue
        if key.event_type == "state_changed" and key.entity_id is not None:
            keys.add((key.entity_id, key.time_ns))
    return keys
