"""Home Assistant dropping or restarting, the collector stopped, killed or restarted at awkward moments, a
registry change while it is down: every state change lands once; what cannot be backfilled is reported."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from homeiq.shared.stream import DEFAULT_NAMES
from tests.faults.pipeline import DATABASE, FaultPipeline, service_calls, steady_traffic
from tests.faults.test_writer_faults import assert_exact
from tests.helpers import wait_for


def lost_calls(fired: dict[str, tuple[float, bool]], points: list[dict[str, Any]]) -> list[tuple[float, bool]]:
    """When each service call that has no point was fired, and whether it was sent to a subscriber."""
    found = {p["context_id"] for p in points if p.get("event_type") == "call_service"}
    return sorted(fired_sent for context_id, fired_sent in fired.items() if context_id not in found)


async def test_ha_dropping_the_connection_and_restarting_loses_no_state(tmp_path: Path) -> None:
    async with FaultPipeline(tmp_path) as pipeline:
        async with steady_traffic(pipeline.hub, 300), service_calls(pipeline.hub, 0.05) as calls:
            await asyncio.sleep(3)
            pipeline.sim.drop_connections()
            await asyncio.sleep(3)
            await pipeline.sim.stop()  # HA restarting: its recorder keeps what happens meanwhile
            await asyncio.sleep(5)
            await pipeline.sim.start()
            back = time.monotonic()
            await wait_for(lambda: pipeline.hub.subscribed, 20, "the collector back on the restarted HA")
            await asyncio.sleep(3)
        verdict, row = await pipeline.verdict("HA connection dropped, then HA restarted 5 s, 300/s", back)
        lost = lost_calls(calls, await pipeline.points())
        unsubscribed_s = pipeline.total("collector", "homeiq_ha_unsubscribed_seconds_total")
    row.explained = (f"{len(lost)} of {len(calls)} service calls (no recorder history) lost while unsubscribed "
                     f"for {unsubscribed_s:.1f} s")
    assert_exact(verdict, row.dropped)
    assert 0 < len(lost) <= (unsubscribed_s + 1.0) / 0.05  # only what HA sent while nobody was subscribed


async def test_collector_stopped_and_killed_loses_no_state_and_writes_no_duplicate(tmp_path: Path) -> None:
    async with FaultPipeline(tmp_path) as pipeline:
        async with steady_traffic(pipeline.hub, 300), service_calls(pipeline.hub, 0.05) as calls:
            await asyncio.sleep(3)
            for n in range(2000):  # still in the socket when SIGTERM comes, and read before the collector closes
                context_id, at = pipeline.hub.fire_service_call(n)
                calls[context_id] = at, bool(pipeline.hub.subscribed)
            assert await pipeline.stop("collector") == 0
            await asyncio.sleep(2)
            pipeline.start("collector")
            await asyncio.sleep(4)
            killed_at = time.time()
            pipeline.kill("collector")
            await asyncio.sleep(10)
            pipeline.start("collector")
            back = time.monotonic()
            await asyncio.sleep(4)
        verdict, row = await pipeline.verdict("collector SIGTERM (2,000 service calls in flight) + restart, "
                                              "SIGKILL + restart 10 s later, 300/s", back)
        lost = lost_calls(calls, await pipeline.points())
    sent = [at for at, was_sent in lost if was_sent]
    at_kill = [at for at in sent if killed_at - 1 <= at <= killed_at + 1]
    row.explained = (f"states all backfilled; service calls lost: {len(at_kill)} sent in the second before the "
                     f"SIGKILL, {len(sent) - len(at_kill)} other sent, {len(lost) - len(sent)} fired while no "
                     "collector was subscribed")
    assert_exact(verdict, row.dropped)
    # The SIGTERM loses nothing HA sent (the collector unsubscribes and reads up to the answer); the SIGKILL
    # only what was in its memory or its socket.
    assert sent == at_kill, (killed_at, sent)


async def test_restarted_while_a_backfill_waits_and_started_while_redis_is_down_every_gap_closes(
    tmp_path: Path,
) -> None:
    async with FaultPipeline(tmp_path) as pipeline:
        async with steady_traffic(pipeline.hub, 300):
            await asyncio.sleep(2)
            await pipeline.stop("collector")
            await asyncio.sleep(1)
            pipeline.hub.recorder.commit_interval_s = 3600  # a recorder yet to commit: the gap's backfill waits
            pipeline.start("collector")
            await asyncio.sleep(3)
            assert pipeline.gauge("collector", "homeiq_backfill_gap_open") == 1
            await pipeline.stop("collector")
            pipeline.hub.recorder.commit_interval_s = 5
            pipeline.start("collector")
            await asyncio.sleep(3)
            await pipeline.stop("collector")
            pipeline.redis.stop()
            pipeline.start("collector")  # Redis down: where the last run stopped is not known yet
            await asyncio.sleep(4)
            pipeline.redis.start()
            back = time.monotonic()
            await asyncio.sleep(3)
        verdict, row = await pipeline.verdict("collector restarted while a backfill waits; started with Redis "
                                              "down; 300/s", back)
    assert_exact(verdict, row.dropped)


async def test_a_registry_change_while_the_collector_is_down_makes_no_second_series(tmp_path: Path) -> None:
    async with FaultPipeline(tmp_path) as pipeline:
        hub = pipeline.hub
        moved = next(e for e in hub.population.entities if e.area_id is None)
        device = next(d for d in hub.population.devices if d.id == moved.device_id)
        old_area, new_area = device.area_id, next(a for a, _, _ in hub.population.areas if a != device.area_id)
        async with steady_traffic(hub, 300):

            async def newest_state_written_past_the_watermark() -> bool:
                """The moved entity's newest state is newer than the saved watermark and already written."""
                newest = hub.fire_state_change(moved)
                await asyncio.sleep(0.2)
                assert pipeline.client is not None
                saved = int(await pipeline.client.get(DEFAULT_NAMES.watermark) or 0)
                time_ns = newest.last_updated_us * 1000
                answer = await asyncio.to_thread(
                    pipeline.influx.query, f"SELECT state_value FROM home_assistant_events WHERE "
                    f"entity_id = '{moved.entity_id}' AND time = {time_ns}", DATABASE)
                return 0 < saved < time_ns and "series" in answer["results"][0]

            await wait_for(newest_state_written_past_the_watermark, 30, "a written state newer than the watermark")
            pipeline.kill("collector")
            killed_ns = time.time_ns()
            hub.move_entity(moved, new_area)
            moved_ns = time.time_ns()
            for _ in range(5):
                hub.fire_state_change(moved)
                await asyncio.sleep(0.1)
            await asyncio.sleep(2)
            pipeline.start("collector")
            back = time.monotonic()
            for _ in range(5):
                hub.fire_state_change(moved)
                await asyncio.sleep(0.1)
            await asyncio.sleep(2)
        verdict, row = await pipeline.verdict("entity moved to another area while the collector was down, 300/s",
                                              back, ignore=frozenset({"area_id"}))
        points = [p for p in await pipeline.points() if p["entity_id"] == moved.entity_id]
    row.explained = "states written before the move keep their area; one series per state"
    assert_exact(verdict, row.dropped)  # among others: no state has two points (one per series)
    live_before = [p for p in points if p["source"] == "live" and p["time"] < killed_ns]
    assert live_before and all(p["area_id"] == old_area for p in live_before)
    assert all(p["area_id"] == new_area for p in points if p["time"] > moved_ns)
