"""HA's clock, the collector's and Redis's differ and step: a time far ahead never moves the watermark, a step
back never hides a gap, and the offsets are measured and exported."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from homeiq.collector.clock import HaClock
from homeiq.ha_sim.runner import SimServer
from homeiq.local.services import RedisServer
from tests.collector_harness import Running, all_states_published, running_collector, simulator
from tests.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]
YEAR_S = 365 * 86_400.0





async def gap(sim: SimServer, changes: int) -> None:
    """HA unreachable while `changes` states change, then back, and a home that goes on changing."""
    sim.hub.faults.refuse_connections = True
    sim.drop_connections()
    await sim.hub.emit(changes, rate_per_s=300)
    sim.hub.faults.refuse_connections = False
    subscribes = sim.hub.subscribes
    await wait_for(lambda: sim.hub.subscribes > subscribes and sim.hub.subscribed, 10, "the reconnect")
    await sim.hub.emit(40, rate_per_s=20)


async def test_a_state_stamped_a_year_ahead_does_not_move_the_watermark_and_the_next_gap_is_backfilled(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with simulator(commit_interval_s=0) as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        await sim.hub.emit(100, rate_per_s=500)
        sim.hub.clock_offset_s = YEAR_S  # HA's clock a year ahead for one change, then NTP puts it right
        sim.hub.fire_state_change()
        sim.hub.clock_offset_s = 0
        await wait_for(lambda: run.metric("homeiq_events_published_total") == 101, 10, "the first 101")
        await gap(sim, 30)
        counts = await all_states_published(redis_client, sim.hub)
        assert max(counts.values()) == 1
        assert run.metric("homeiq_ha_clock_outliers_total") == 1


async def test_ha_s_clock_stepped_back_an_hour_hides_no_gap(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """After a step back, states are stamped before ones already published: the next gap is backfilled from the
    last state received, so the states of the hour before the step are published again (the same points)."""
    async with simulator(commit_interval_s=0) as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        await sim.hub.emit(100, rate_per_s=500)
        before_step = len(sim.hub.sent)
        sim.hub.clock_offset_s = -3600.0
        await sim.hub.emit(50, rate_per_s=500)
        await gap(sim, 30)
        counts = await all_states_published(redis_client, sim.hub)
        twice = {key for key, n in counts.items() if n > 1}
        assert twice <= {(s.entity_id, s.last_updated_us * 1000) for s in sim.hub.sent[:before_step]}
        assert run.metric("homeiq_ha_clock_steps_total", direction="back") == 1


async def test_the_offsets_of_ha_s_and_redis_s_clocks_are_exported(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with simulator(commit_interval_s=0) as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        sim.hub.clock_offset_s = 120.0
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        await sim.hub.emit(100, rate_per_s=100)

        def measured(run: Running = run) -> bool:
            return run.metric("homeiq_redis_clock_offset_seconds") != 0 or run.metric(
                "homeiq_ha_clock_offset_seconds") > 100

        await wait_for(measured, 10, "both offsets measured")
        assert 119 < run.metric("homeiq_ha_clock_offset_seconds") < 120.5  # HA ahead, less the latency
        assert abs(run.metric("homeiq_redis_clock_offset_seconds")) < 0.5  # Redis on this machine
        assert run.metric("homeiq_ha_clock_outliers_total") == 0  # a steady offset is not an outlier


async def test_a_first_state_a_year_ahead_does_not_move_the_watermark_either(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """No offset is known before the first state: the collector's own clock is the reference then."""
    async with simulator(commit_interval_s=0) as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await wait_for(lambda: sim.hub.subscribed and not run.metric("homeiq_backfill_gap_open"), 10, "a subscription")
        sim.hub.clock_offset_s = YEAR_S
        sim.hub.fire_state_change()
        sim.hub.clock_offset_s = 0
        await wait_for(lambda: run.metric("homeiq_events_published_total") == 1, 10, "the first state")
        await gap(sim, 30)
        counts = await all_states_published(redis_client, sim.hub)
        assert max(counts.values()) == 1


async def test_a_state_far_ahead_recorded_during_a_gap_is_backfilled_once(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with simulator(commit_interval_s=0) as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await wait_for(lambda: sim.hub.subscribed and not run.metric("homeiq_backfill_gap_open"), 10, "a subscription")
        await sim.hub.emit(50, rate_per_s=500)
        sim.hub.faults.refuse_connections = True
        sim.drop_connections()
        sim.hub.clock_offset_s = YEAR_S
        sim.hub.fire_state_change()  # recorded a year ahead, received by nobody
        sim.hub.clock_offset_s = 0
        sim.hub.faults.refuse_connections = False
        await wait_for(lambda: sim.hub.subscribes == 2 and sim.hub.subscribed, 10, "the reconnect")
        await sim.hub.emit(40, rate_per_s=20)
        await gap(sim, 10)
        await gap(sim, 10)
        counts = await all_states_published(redis_client, sim.hub)
        assert max(counts.values()) == 1


def test_the_offset_is_of_the_last_ten_minutes_and_a_step_is_measured_by_it() -> None:
    found: list[tuple[str, int]] = []
    clock = HaClock(lambda finding, amount: found.append((finding, amount)))
    start, second = 1_800_000_000 * 10**9, 10**9
    assert clock.trust(start, start)
    for k in range(1, 10):  # a quiet home: one state every 10 minutes, HA's clock an hour back from the first on
        now = start + k * 600 * second
        assert clock.trust(now - 3600 * second, now)
    assert clock.offset_ns == -3600 * second
    assert found == [("step_back", -3600 * second)]
