"""Gauges of the stream and the group, refreshed by the replayer: what lag and stuck-entry alerts read."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Gauge

from homeiq.replayer.operations import group_info
from homeiq.shared.stream import StreamNames


class StreamMetrics:
    """Stream length, group lag (entries and age), pending count, idle time of the oldest pending entry, dead
    letters; Redis's memory against its limit."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.length = Gauge("homeiq_stream_length", "Entries in the events stream.", registry=registry)
        self.lag = Gauge("homeiq_stream_group_lag", "Entries not yet delivered to the writers' group.",
                         registry=registry)
        self.lag_age = Gauge("homeiq_stream_lag_seconds", "How long the oldest entry not yet delivered to the "
                             "writers' group has waited in the stream (0 when none waits).", registry=registry)
        self.used_memory = Gauge("homeiq_redis_used_memory_bytes", "Memory Redis uses (INFO used_memory).",
                                 registry=registry)
        self.max_memory = Gauge("homeiq_redis_maxmemory_bytes", "Redis's maxmemory (0: no limit).",
                                registry=registry)
        self.noeviction = Gauge("homeiq_redis_noeviction", "1 when Redis's maxmemory-policy is noeviction (a full "
                                "Redis refuses writes instead of evicting a stream).", registry=registry)
        self.pending = Gauge("homeiq_stream_pending", "Entries delivered but not acked.", registry=registry)
        self.oldest_idle = Gauge("homeiq_stream_oldest_pending_idle_seconds",
                                 "Idle time of the oldest pending entry.", registry=registry)
        self.dead = Gauge("homeiq_stream_dead_letters", "Entries in the dead-letter stream.", registry=registry)

    async def refresh(self, client: aioredis.Redis, names: StreamNames) -> None:
        """Read INFO memory, XLEN, XINFO GROUPS, XPENDING and the first undelivered entry once."""
        memory: Any = await client.info("memory")
        self.used_memory.set(int(memory["used_memory"]))
        self.max_memory.set(int(memory["maxmemory"]))
        policy = memory["maxmemory_policy"]
        self.noeviction.set(int((policy.decode() if isinstance(policy, bytes) else policy) == "noeviction"))
        group = await group_info(client, names)
        self.length.set(await client.xlen(names.stream))
        self.dead.set(await client.xlen(names.dead))
        if group is None:
            self.lag.set(0)
            self.lag_age.set(0)
            self.pending.set(0)
            self.oldest_idle.set(0)
            return
        after_delivered = f"({group['last-delivered-id'].decode()}"
        # XINFO's lag is unknown (nil) after trimming past undelivered entries: count them instead.
        lag = group.get("lag")
        if lag is None:
            after: Any = await client.xrange(names.stream, after_delivered, "+", count=100_000)
            lag = len(after)
        self.lag.set(int(lag))
        first: Any = await client.xrange(names.stream, after_delivered, "+", count=1)
        if first:
            seconds, micros = await client.time()  # Redis's clock made the id: no skew with ours
            added_ms = int(first[0][0].split(b"-")[0])
            self.lag_age.set(max(0.0, seconds + micros / 1e6 - added_ms / 1000))
        else:
            self.lag_age.set(0)
        self.pending.set(int(group["pending"]))
        oldest: Any = await client.xpending_range(names.stream, names.group, "-", "+", 1) if group["pending"] else []
        self.oldest_idle.set(oldest[0]["time_since_delivered"] / 1000 if oldest else 0)
