"""Gauges of the stream and the group, refreshed by the replayer: what lag and stuck-entry alerts read."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Gauge

from homeiq_replayer.operations import group_info
from homeiq_shared.stream import StreamNames


class StreamMetrics:
    """Stream length, group lag, pending count, idle time of the oldest pending entry, dead letters."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.length = Gauge("homeiq_stream_length", "Entries in the events stream.", registry=registry)
        self.lag = Gauge("homeiq_stream_group_lag", "Entries not yet delivered to the writers' group.",
                         registry=registry)
        self.pending = Gauge("homeiq_stream_pending", "Entries delivered but not acked.", registry=registry)
        self.oldest_idle = Gauge("homeiq_stream_oldest_pending_idle_seconds",
                                 "Idle time of the oldest pending entry.", registry=registry)
        self.dead = Gauge("homeiq_stream_dead_letters", "Entries in the dead-letter stream.", registry=registry)

    async def refresh(self, client: aioredis.Redis, names: StreamNames) -> None:
        """Read XLEN, XINFO GROUPS and XPENDING once."""
        group = await group_info(client, names)
        self.length.set(await client.xlen(names.stream))
        self.dead.set(await client.xlen(names.dead))
        if group is None:
            self.lag.set(0)
            self.pending.set(0)
            self.oldest_idle.set(0)
            return
        # XINFO's lag is unknown (nil) after trimming past undelivered entries: count them instead.
        lag = group.get("lag")
        if lag is None:
            after: Any = await client.xrange(names.stream, f"({group['last-delivered-id'].decode()}", "+",
                                             count=100_000)
            lag = len(after)
        self.lag.set(int(lag))
        self.pending.set(int(group["pending"]))
        oldest: Any = await client.xpending_range(names.stream, names.group, "-", "+", 1) if group["pending"] else []
        self.oldest_idle.set(oldest[0]["time_since_delivered"] / 1000 if oldest else 0)
