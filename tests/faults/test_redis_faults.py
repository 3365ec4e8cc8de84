"""Redis stopped, killed, or gone long enough to fill the collector's spool."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from homeiq.shared.events import decode_event
from homeiq.shared.packing import BadEntry, events_in
from homeiq.shared.stream import DEFAULT_NAMES
from tests.faults.pipeline import FaultPipeline, steady_traffic
from tests.faults.test_writer_faults import assert_exact


@pytest.mark.parametrize("rate", [500, 1], ids=["500-per-s", "1-per-s"])
async def test_redis_stopped_20_s_and_restarted_from_its_aof_loses_nothing(rate: float, tmp_path: Path) -> None:
    async with FaultPipeline(tmp_path) as pipeline:
        async with steady_traffic(pipeline.hub, rate):
            await asyncio.sleep(3)
            pipeline.redis.stop()
            await asyncio.sleep(20)
            spooled = pipeline.total("collector", "homeiq_events_spooled_total")
            pipeline.redis.start()
            back = time.monotonic()
            await asyncio.sleep(3)
        verdict, row = await pipeline.verdict(f"redis-server stopped 20 s, {rate:g}/s", back,
                                              explained=f"{int(spooled)} spooled meanwhile")
    assert spooled > 0
    assert_exact(verdict, row.dropped)


async def test_redis_killed_loses_at_most_its_last_second_of_writes(tmp_path: Path) -> None:
    async with FaultPipeline(tmp_path) as pipeline:
        async with steady_traffic(pipeline.hub, 1000):
            await asyncio.sleep(5)
            killed_at = datetime.now(UTC).timestamp()
            pipeline.redis.kill()  # appendfsync everysec: Redis promises all but the last second
            await asyncio.sleep(2)
            pipeline.redis.start()
            back = time.monotonic()
            await asyncio.sleep(3)
        verdict, row = await pipeline.verdict("redis-server SIGKILL (AOF everysec), 1000/s", back)
        lost_window_s = max(((killed_at - ns / 1e9) for _, ns in verdict.missing), default=0.0)
        row.explained = (f"{len(verdict.missing)} lost by Redis, all from its last {lost_window_s:.2f} s "
                         "(appendfsync everysec)")
    assert all(killed_at - ns / 1e9 <= 1.5 for _, ns in verdict.missing), sorted(verdict.missing)[:3]
    assert not verdict.extra and not verdict.duplicated and not verdict.wrong
    assert not verdict.dead_lettered and not row.dropped


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
async def test_a_full_spool_drops_exactly_what_it_counts(policy: str, tmp_path: Path) -> None:
    env = {"COLLECTOR_SPOOL_MAX_MB": "1", "COLLECTOR_SPOOL_POLICY": policy}
    async with FaultPipeline(tmp_path, env=env) as pipeline:
        async with steady_traffic(pipeline.hub, 500):
            await asyncio.sleep(2)
            pipeline.redis.stop()
            await asyncio.sleep(15)  # ~7,500 events, ~4 MB, into a 1 MiB spool
            pipeline.redis.start()
            back = time.monotonic()
            await asyncio.sleep(2)
        verdict, row = await pipeline.verdict(f"spool full ({policy}), Redis down 15 s, 500/s", back)
        garbage = await undecodable_entries(pipeline)
    dropped = row.dropped.get("spool_full", 0)
    row.explained = f"missing {len(verdict.missing)} = dropped {int(dropped)}"
    assert dropped > 0 and len(verdict.missing) == dropped
    assert set(row.dropped) == {"spool_full"}
    assert not garbage and not verdict.extra and not verdict.duplicated and not verdict.wrong
    assert not verdict.dead_lettered


async def test_a_full_spool_under_block_stops_within_its_bound_and_the_restart_backfills(tmp_path: Path) -> None:
    env = {"COLLECTOR_SPOOL_MAX_MB": "1", "COLLECTOR_SPOOL_POLICY": "block"}
    async with FaultPipeline(tmp_path, env=env) as pipeline:
        async with steady_traffic(pipeline.hub, 500):
            await asyncio.sleep(2)
            pipeline.redis.stop()
            await asyncio.sleep(12)  # the spool fills, the collector blocks, HA drops it as a slow client
            asked = time.monotonic()
            code = await pipeline.stop("collector")  # SIGTERM while blocked
            stopped_in_s = time.monotonic() - asked
            pipeline.redis.start()
            pipeline.start("collector")
            back = time.monotonic()
            await asyncio.sleep(3)
        verdict, row = await pipeline.verdict("spool full (block), Redis down, SIGTERM, restart, 500/s", back)
        garbage = await undecodable_entries(pipeline)
    row.explained = (f"SIGTERM took {stopped_in_s:.1f} s; what it could not keep was counted, then backfilled "
                     "from the recorder")
    assert code == 0 and stopped_in_s < 15
    assert sum(row.dropped.values()) > 0 and set(row.dropped) <= {"shutdown_spool_full", "shutdown_unpublished"}
    assert not verdict.missing  # states: the restarted collector backfilled what the exit could not keep
    assert not garbage and not verdict.extra and not verdict.duplicated and not verdict.wrong
    assert not verdict.dead_lettered


async def undecodable_entries(pipeline: FaultPipeline) -> list[bytes]:
    """Stream entries that are not a valid event (a misaligned spool read would make one)."""
    assert pipeline.client is not None
    bad: list[bytes] = []
    for entry_id, fields in await pipeline.client.xrange(DEFAULT_NAMES.stream):
        try:
            for payload in events_in([part for pair in fields.items() for part in pair])[1]:
                decode_event(payload)
        except (BadEntry, msgspec.DecodeError):
            bad.append(entry_id)
    return bad
