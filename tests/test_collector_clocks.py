"""HA's clock, the collector's and Redis's differ and step: a time far ahead never moves the watermark, a step
back never hides a gap, and the offsets are measured and exported."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from homeiq.collector.clock import HaClock
from homeiq.ha_sim.runner import SimServer
from homeiq.local.services import InfluxServer, RedisServer
from tests.collector_harness import Running, all_states_published, running_collector, simulator, stream_events
from tests.helpers import wait_for
from tests.writer_harness import metric, running_writer, writer_settings

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


def test_a_step_back_replaces_the_offset_at_once() -> None:
    # HA's host two minutes fast, then NTP puts it right: the offset (carried to the writers, which subtract it from
    # the latency) must be the new one at once, not the old one's for ten more minutes.
    found: list[tuple[str, int]] = []
    clock = HaClock(lambda finding, amount: found.append((finding, amount)))
    start, second = 1_800_000_000 * 10**9, 10**9
    trusted = [clock.trust(start + k * second // 10 + 120 * second, start + k * second // 10 + 30 * 10**6)
               for k in range(20)]  # 30 ms on the way; so far ahead of ours that the first few need confirming
    assert trusted == [False] * 4 + [True] * 16
    assert clock.offset_ns == 120 * second - 30 * 10**6
    now = start + 3 * second
    assert clock.trust(now, now + 20 * 10**6)
    assert found[-1] == ("step_back", -120 * second + 10 * 10**6)
    assert clock.offset_ns == -20 * 10**6
    for k in range(1, 20):  # the offset goes on being the largest of what follows
        at = now + k * second // 10
        assert clock.trust(at, at + (5 if k % 2 else 40) * 10**6)
    assert clock.offset_ns == -5 * 10**6


def test_a_skew_that_changes_sign_is_followed() -> None:
    # Steps within the tolerance of a step ahead, in a steady flow of states (one every 100 ms).
    found: list[tuple[str, int]] = []
    clock = HaClock(lambda finding, amount: found.append((finding, amount)))
    start, tick = 1_800_000_000 * 10**9, 10**8
    offsets = []
    for skew_s in (-5, 5, -5):  # HA's clock 5 s behind ours, stepped 10 s ahead, and back
        for _ in range(10):
            start += tick
            assert clock.trust(start + skew_s * 10**9, start)
        offsets.append(clock.offset_ns)
    assert offsets == [-5 * 10**9, 5 * 10**9, -5 * 10**9]
    assert found == [("step_back", -10 * 10**9)]


async def test_the_latency_of_states_after_ha_s_clock_stepped_back_is_not_inflated(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str, tmp_path: Path,
) -> None:
    age = "homeiq_event_age_at_ack_seconds"
    async with simulator(entity_count=10, commit_interval_s=0) as sim:
        sim.hub.clock_offset_s = 120.0  # HA's host two minutes fast
        async with running_collector(sim, redis_server.url, tmp_path / "spool") as run:
            await wait_for(lambda: sim.hub.subscribed and not run.metric("homeiq_backfill_gap_open"), 20, "subscribed")
            await sim.hub.emit(20, rate_per_s=100)
            await wait_for(lambda: run.metric("homeiq_events_published_total") >= 20, 10, "20 published")
            sim.hub.clock_offset_s = 0.0  # NTP steps HA's clock back: it is right now
            await sim.hub.emit(20, rate_per_s=100)

            async def forty() -> bool:
                return sum(e.event_type == "state_changed" for e in await stream_events(redis_client)) >= 40
            await wait_for(forty, 10, "40 states in the stream")
        async with running_writer(writer_settings(redis_server.url, influx.url, influx_db)) as writer:
            await wait_for(lambda: metric(writer, age + "_count") >= 40, 15, "40 acked")
            late = metric(writer, age + "_count") - metric(writer, age + "_bucket", le="60.0")
    assert late == 0, f"{late:.0f} of 40 states written within seconds were counted over 60 s late"
