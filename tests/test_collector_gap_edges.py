"""Edges of the gap a review found in the fixes of 2026-12-05: an entity removed in an outage whose clock step
reopens the gap, a filter that keeps no state and the states a gap keeps in memory (the others, a rename and back
while the backfill asks and a restart that saved the registry ids while a gap waited, are beside the cases they
extend in `test_collector_gap_races.py`): ha-sim and a private redis-server."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from homeiq.local.services import RedisServer
from homeiq.shared.entity_filter import FilterConfig, Pattern, PatternFilter
from tests.collector_harness import (
    all_states_published,
    drop_for,
    running_collector,
    simulator,
    stream_state_keys,
    subscribed_with,
)
from tests.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def test_a_filter_that_keeps_no_state_leaves_every_gap_s_seen_in_memory(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """`end` keeps `seen` while the clock is unchecked, and only a live state that passes the filter checks it: with
    a filter that keeps no state, each reconnect's gap adds its backfilled (filtered) keys and none is ever let go
    (`begin` does not empty it either), up to MAX_SEEN."""
    rules = PatternFilter(FilterConfig(mode="exclude", patterns=[Pattern(entity_id="*")]))
    async with simulator(commit_interval_s=0.5) as sim, \
            running_collector(sim, redis_server.url, tmp_path, entity_filter=rules) as run:
        await wait_for(lambda: sim.hub.subscribed and not run.metric("homeiq_backfill_gap_open"), 10, "subscribed")
        await sim.hub.emit(50, rate_per_s=500)
        sizes = []
        for n in range(2, 5):
            await drop_for(sim, 300)
            await wait_for(lambda n=n: sim.hub.subscribes == n and sim.hub.subscribed, 10, "the reconnect")
            await sim.hub.emit(50, rate_per_s=500)
            await wait_for(lambda: not run.metric("homeiq_backfill_gap_open"), 30, "the gap closed")
            await sim.hub.emit(50, rate_per_s=500)
            await asyncio.sleep(0.5)
            sizes.append(len(run.collector.gap.seen))
        assert sizes[-1] == 0, f"gap.seen kept after closed gaps: {sizes}"


async def test_an_entity_removed_during_an_outage_in_which_ha_s_clock_stepped_back_keeps_its_states_in_a_quiet_home(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """The quiet-home case of test_states_of_a_gap_during_which_ha_s_clock_stepped_back_are_backfilled, with an
    entity removed during the outage: the first backfill (from the unstepped start) forgets it as removed, then the
    first live state reopens the gap from earlier, and the second backfill no longer asks for it."""
    async with simulator(commit_interval_s=0) as sim, running_collector(sim, redis_server.url, tmp_path,
                                                                        recorder_wait_s=2) as run:
        await subscribed_with(sim, run, 50)
        removed = sim.hub.population.entities[0]
        sim.hub.faults.refuse_connections = True
        sim.drop_connections()
        sim.hub.clock_offset_s = -3
        for _ in range(3):
            sim.hub.fire_state_change(removed)  # stamped before the gap's start
        sim.hub.remove_entity(removed)
        await sim.hub.emit(30, rate_per_s=100)
        await asyncio.sleep(4)
        await sim.hub.emit(30, rate_per_s=100)
        sim.hub.faults.refuse_connections = False
        await wait_for(lambda: sim.hub.subscribes == 2 and sim.hub.subscribed, 10, "the reconnect")
        await wait_for(lambda: not run.metric("homeiq_backfill_gap_open"), 30, "the gap closed")
        await sim.hub.emit(40, rate_per_s=100)
        await wait_for(lambda: not run.metric("homeiq_backfill_gap_open"), 30, "the reopened gap closed")
        with contextlib.suppress(TimeoutError, AssertionError):
            await all_states_published(redis_client, sim.hub, 10)
        counts = await stream_state_keys(redis_client)
        missing = sorted(k for k in {(s.entity_id, s.last_updated_us * 1000) for s in sim.hub.sent} if k not in counts)
        assert not missing, f"{len(missing)} states missing: {missing[:5]}"
