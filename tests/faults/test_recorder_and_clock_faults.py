"""Home Assistant as it really is around a gap: a recorder that commits every 30 s (SD cards), a restart, an outage
whose history outgrows one message, clocks that are off and step; and a Redis that comes back older than it was."""

from __future__ import annotations

import asyncio
import random
import shutil
import time
from pathlib import Path

from homeiq.ha_sim.hub import Hub
from homeiq.ha_sim.messages import rendered_us
from homeiq.ha_sim.population import next_state
from tests.faults.pipeline import FaultPipeline, service_calls, steady_traffic
from tests.faults.test_collector_faults import lost_calls
from tests.faults.test_writer_faults import assert_exact

SD_CARD_COMMIT_S = 30.0
DRAIN_S = 120.0  # a backfill waits for the recorder's next commit: up to 30 s more than usual


async def test_a_recorder_committing_every_30_s_loses_nothing_across_a_kill_and_a_dropped_connection(
    tmp_path: Path,
) -> None:
    async with FaultPipeline(tmp_path, commit_interval_s=SD_CARD_COMMIT_S) as pipeline:
        async with steady_traffic(pipeline.hub, 150):
            await asyncio.sleep(3)
            pipeline.kill("collector")
            await asyncio.sleep(8)
            pipeline.start("collector")
            await asyncio.sleep(6)
            pipeline.sim.drop_connections()
            back = time.monotonic()
            await asyncio.sleep(6)
        verdict, row = await pipeline.verdict("recorder committing every 30 s: collector SIGKILL 8 s, then HA drops "
                                              "the connection, 150/s", back, drain_timeout_s=DRAIN_S)
        unconfirmed = pipeline.total("collector", "homeiq_backfill_unconfirmed_total")
    row.explained = "every gap backfilled once the recorder had committed it"
    assert_exact(verdict, row.dropped)
    assert unconfirmed == 0


async def test_ha_restarted_with_a_recorder_committing_every_30_s_loses_nothing(tmp_path: Path) -> None:
    """HA commits on shutdown; what changes after it is back and before the collector is subscribed again sits in
    the recorder's session, not yet in its history, for up to 30 s."""
    async with FaultPipeline(tmp_path, commit_interval_s=SD_CARD_COMMIT_S) as pipeline:
        async with steady_traffic(pipeline.hub, 150):
            await asyncio.sleep(3)
            await pipeline.sim.stop()
            await asyncio.sleep(4)
            await pipeline.sim.start()
            back = time.monotonic()
            await asyncio.sleep(8)
        verdict, row = await pipeline.verdict("HA restarted (4 s) with a recorder committing every 30 s, 150/s", back,
                                              drain_timeout_s=DRAIN_S)
    assert_exact(verdict, row.dropped)


def chatty_outage(hub: Hub, hours: float, changes: int, attribute_bytes: int) -> None:
    """`changes` state changes spread over `hours` of HA's time (the simulator's clock moves ahead, and stays),
    each carrying `attribute_bytes` more of attributes: a long outage of a chatty home, in a second."""
    rng = random.Random(11)
    start_offset_s = hub.clock_offset_s
    started = time.time()
    for n in range(changes):
        hub.clock_offset_s = start_offset_s + hours * 3600 * n / changes - (time.time() - started)
        entity = rng.choice(hub.population.entities)
        state, attributes = next_state(entity, rng)
        hub.set_state(entity, state, {**attributes, "notes": "x" * attribute_bytes})
    hub.clock_offset_s = start_offset_s + hours * 3600


async def test_a_two_hour_outage_whose_history_exceeds_the_message_limit_is_backfilled(tmp_path: Path) -> None:
    async with FaultPipeline(tmp_path, env={"HA_MAX_MESSAGE_MB": "16"}) as pipeline:
        async with steady_traffic(pipeline.hub, 100) as traffic:
            await asyncio.sleep(3)
            await pipeline.stop("collector")
            traffic.set()
        # 36,000 changes over two hours of 100 entities, 1 KB more each: ~20 MB of history per 50 entities
        chatty_outage(pipeline.hub, hours=2, changes=36_000, attribute_bytes=1000)
        async with steady_traffic(pipeline.hub, 100):
            pipeline.start("collector")
            back = time.monotonic()
            await asyncio.sleep(10)
        verdict, row = await pipeline.verdict("collector down for 2 h of HA's time (simulated), 36,000 changes, "
                                              "history over HA_MAX_MESSAGE_MB (16)", back, drain_timeout_s=DRAIN_S)
        reconnects = pipeline.total("collector", "homeiq_ha_reconnects_total")
    row.explained = f"backfilled in pieces; live connection reconnects: {reconnects:.0f}"
    assert_exact(verdict, row.dropped)
    assert reconnects == 0


async def test_a_redis_back_from_an_older_append_only_file_loses_no_state_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    async with FaultPipeline(tmp_path) as pipeline:
        aof = pipeline.redis.workdir / "appendonlydir"
        older = tmp_path / "older-aof"
        async with steady_traffic(pipeline.hub, 300), service_calls(pipeline.hub, 0.05) as calls:
            await asyncio.sleep(3)
            pipeline.redis.stop()
            shutil.copytree(aof, older)
            pipeline.redis.start()
            await asyncio.sleep(6)
            pipeline.redis.stop()
            shutil.rmtree(aof)
            shutil.copytree(older, aof)
            pipeline.redis.start()  # six seconds older than what it had acknowledged
            back = time.monotonic()
            await asyncio.sleep(4)
        verdict, row = await pipeline.verdict("redis-server restarted from a 6-s-older AOF, 300/s", back)
        lost = lost_calls(calls, await pipeline.points())
        counted = row.dropped.pop("redis_forgot", 0)
    row.explained = (f"states backfilled; {counted:.0f} service calls counted redis_forgot, {len(lost)} of them "
                     "not yet written when Redis forgot")
    assert_exact(verdict, row.dropped)
    assert pipeline.total("collector", "homeiq_redis_forgot_total") == 1
    assert counted > 0 and len(lost) <= counted  # the count is of what Redis forgot; writers had some already


async def test_ha_s_clock_two_minutes_ahead_then_stepped_back_an_hour_loses_nothing(tmp_path: Path) -> None:
    """After the step back, the gap is backfilled from the last state received: the recorder's states of the hour
    before the step come again, the simulator's initial states among them (real states, but not in its record of
    what it fired): the same points, and those extra ones."""
    pipeline = FaultPipeline(tmp_path)
    initial = {(e.entity_id, rendered_us(e.last_updated) * 1000) for e in pipeline.hub.population.entities}
    pipeline.hub.clock_offset_s = 120.0
    async with pipeline:
        async with steady_traffic(pipeline.hub, 300):
            await asyncio.sleep(4)
            pipeline.kill("collector")  # its read-back compares nothing of HA's clock with Redis's
            await asyncio.sleep(3)
            pipeline.start("collector")
            await asyncio.sleep(5)
            pipeline.hub.clock_offset_s = 120.0 - 3600.0  # NTP steps HA's clock back an hour
            await asyncio.sleep(4)
            pipeline.sim.drop_connections()
            back = time.monotonic()
            await asyncio.sleep(4)
        verdict, row = await pipeline.verdict("HA's clock 2 min ahead (collector SIGKILL), then stepped back 1 h "
                                              "(connection dropped), 300/s", back)
        steps = pipeline.total("collector", "homeiq_ha_clock_steps_total", direction="back")
    row.explained = (f"{steps:.0f} step back seen; the states of the hour before it published again (the same points; "
                     f"extra: {len(verdict.extra)} of the simulator's {len(initial)} initial states)")
    assert verdict.extra <= initial
    verdict.extra.clear()
    assert_exact(verdict, row.dropped)
    assert steps == 1
