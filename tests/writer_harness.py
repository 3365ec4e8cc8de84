"""An in-process writer against a real Redis and an InfluxDB URL, and stream fill helpers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from homeiq.shared.influx.settings import InfluxSettings
from homeiq.shared.packing import PACKED_VERSION, pack
from homeiq.shared.stream import DEFAULT_NAMES, FIELD_PACKED, FIELD_VERSION, ensure_group, entry_fields
from homeiq.writer.service import Writer
from homeiq.writer.settings import WriterSettings
from tests.helpers import FaultyHttp, wait_for


async def fill(client: aioredis.Redis, payloads: list[bytes], events_per_entry: int = 1) -> None:
    """Create the group and XADD every payload: an entry each, or packed this many to an entry."""
    await ensure_group(client, DEFAULT_NAMES)
    step = 1000 * events_per_entry
    for first in range(0, len(payloads), step):
        async with client.pipeline(transaction=False) as pipe:
            for start in range(first, min(first + step, len(payloads)), events_per_entry):
                events = payloads[start:start + events_per_entry]
                pipe.xadd(DEFAULT_NAMES.stream, entry_fields(events[0]) if events_per_entry == 1 else
                          {FIELD_VERSION: PACKED_VERSION, FIELD_PACKED: pack(events)})
            await pipe.execute()


def writer_settings(redis_url: str, influx_url: str, database: str, **changes: Any) -> WriterSettings:
    base = WriterSettings(redis_url=redis_url, names=DEFAULT_NAMES, consumer="w1",
                          influx=InfluxSettings(url=influx_url, api="v1", bucket=database, timeout_s=2),
                          block_ms=100, metrics_host="127.0.0.1", metrics_port=0)
    return msgspec.structs.replace(base, **changes).validate()


@contextlib.asynccontextmanager
async def running_writer(settings: WriterSettings) -> AsyncIterator[Writer]:
    """A writer task for the duration of the block."""
    writer = Writer(settings, CollectorRegistry())
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        yield writer
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def metric(writer: Writer, name: str, **labels: str) -> float:
    value = writer.metrics_registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


async def group_state(client: aioredis.Redis) -> dict[str, int]:
    group = (await client.xinfo_groups(DEFAULT_NAMES.stream))[0]
    return {"read": int(group["entries-read"] or 0), "pending": int(group["pending"])}


def write_requests(proxy: FaultyHttp) -> int:
    """How many write requests reached the proxy (readiness checks not counted)."""
    return sum(1 for path, _, body in proxy.requests if path.startswith("/write") and body)  # readiness writes none


async def restart_during_outage(redis_url: str, proxy: FaultyHttp, database: str, times: int) -> None:
    """Start writer w1 `times` times behind `proxy` (answering faults); each run tries its batch, then stops."""
    for _ in range(times):
        before = write_requests(proxy)
        async with running_writer(writer_settings(redis_url, proxy.url, database)):
            await wait_for(lambda b=before: write_requests(proxy) > b, 20, "the writer's attempt at its entries")
