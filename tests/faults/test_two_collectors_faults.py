"""Two collectors on one Home Assistant (as on two machines, COLLECTOR_DEDUP_WINDOW_S): one SIGKILLed every 10 s,
or one gone for good halfway. Every event of every type is in InfluxDB exactly once, each reached the stream once,
and nothing is counted as dropped."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from homeiq.collector.dedup import identity
from homeiq.shared.packing import events_or_none
from homeiq.shared.stream import DEFAULT_NAMES
from tests.faults.pipeline import FaultPipeline, service_calls, steady_traffic
from tests.faults.test_writer_faults import assert_exact

CUSTOM = "homeiq_fault_custom"
NO_TRIM = {"REPLAYER_TRIM": "false"}


@contextlib.asynccontextmanager
async def every_kind(pipeline: FaultPipeline) -> AsyncIterator[tuple[dict[str, Any], dict[str, Any]]]:
    """300 events/s: 260 state changes, 20 service calls and 20 custom events (whose data repeats)."""
    async with steady_traffic(pipeline.hub, 260), service_calls(pipeline.hub, 0.05) as calls, \
            service_calls(pipeline.hub, 0.05, CUSTOM) as customs:
        yield calls, customs


def once_each(fired: dict[str, Any], points: list[dict[str, Any]], event_type: str) -> tuple[int, int, int]:
    """(fired, missing, more than once) of the events of `event_type`, told apart by their context ids."""
    counts = Counter(p.get("context_id") for p in points if p.get("event_type") == event_type)
    return len(fired), sum(1 for c in fired if c not in counts), sum(1 for c in fired if counts[c] > 1)


async def assert_every_event_once(pipeline: FaultPipeline, verdict: Any, row: Any, calls: dict[str, Any],
                                  customs: dict[str, Any]) -> None:
    points = await pipeline.points()
    assert pipeline.client is not None
    # Nothing trimmed (NO_TRIM): every event the two added is still in the stream, packed or not.
    stream = [p for _, f in await pipeline.client.xrange(DEFAULT_NAMES.stream) for p in events_or_none(f)]
    added, copies = len(stream), Counter(identity(p) for p in stream)
    called, customed = once_each(calls, points, "call_service"), once_each(customs, points, CUSTOM)
    deduplicated = pipeline.total("collector", "homeiq_events_deduplicated_total")
    row.explained = (f"service calls {called[0]}, custom events {customed[0]}: none missing or twice; stream "
                     f"events {added} for {len(points)} points; {deduplicated:.0f} copies the other had added")
    assert_exact(verdict, row.dropped)
    assert called[1:] == (0, 0) and customed[1:] == (0, 0), (called, customed)
    assert max(copies.values()) == 1, [key for key, n in copies.items() if n > 1][:3]  # each event reached it once
    assert added == len(points), (added, len(points))


async def test_two_collectors_one_sigkilled_every_10_s_every_event_once(tmp_path: Path) -> None:
    async with FaultPipeline(tmp_path, collectors=2, env=NO_TRIM) as pipeline:
        async with every_kind(pipeline) as (calls, customs):
            kills, started = 0, time.monotonic()
            while time.monotonic() - started < 120:
                await asyncio.sleep(10)
                name = pipeline.collector_names[kills % 2]
                pipeline.kill(name)
                kills += 1
                await asyncio.sleep(0.5)
                pipeline.start("collector", name)
            back = time.monotonic()
            await asyncio.sleep(5)
        verdict, row = await pipeline.verdict(f"two collectors, one SIGKILLed every 10 s ({kills} kills, each "
                                              "restarted), 300/s of states, service calls and custom events", back)
        await assert_every_event_once(pipeline, verdict, row, calls, customs)


async def test_two_collectors_one_gone_for_good_halfway_every_event_once(tmp_path: Path) -> None:
    async with FaultPipeline(tmp_path, collectors=2, env=NO_TRIM) as pipeline:
        async with every_kind(pipeline) as (calls, customs):
            await asyncio.sleep(30)
            pipeline.kill(pipeline.collector_names[1])  # its machine died
            gone = time.monotonic()
            await asyncio.sleep(30)
        verdict, row = await pipeline.verdict("two collectors, one SIGKILLed for good halfway (60 s), 300/s of "
                                              "states, service calls and custom events", gone)
        await assert_every_event_once(pipeline, verdict, row, calls, customs)
