"""The fault suite's key rows against released Home Assistant: every state its recorder holds is exactly one point."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.realha.home import HomeAssistant
from tests.realha.install import Installed
from tests.realha.pipeline import Comparison, RealPipeline, steady_changes

RATE_PER_S = 40  # REST calls a second; each number change makes three states (it and its two template sensors)


def assert_exact(result: Comparison) -> None:
    """Every recorded state is one point with its state; nothing else."""
    assert not result.missing, f"{len(result.missing)} of {result.states_in_ha} missing: {sorted(result.missing)[:3]}"
    assert not result.extra, f"{len(result.extra)} extra, e.g. {sorted(result.extra)[:3]}"
    assert not result.wrong, list(result.wrong.items())[:3]
    assert not result.events_missing, f"{len(result.events_missing)} of {result.events_in_ha} custom events missing"


@pytest.mark.parametrize("commit_interval_s", [5, 30], ids=["recorder-default", "recorder-30s"])
async def test_collector_killed_and_restarted_loses_no_state(
    commit_interval_s: int, ha_installed: Installed, tmp_path: Path
) -> None:
    home = HomeAssistant(ha_installed, tmp_path / "ha", commit_interval_s)
    async with RealPipeline(tmp_path / "pipeline", home) as pipeline:
        async with steady_changes(home, RATE_PER_S):
            await asyncio.sleep(4)
            pipeline.kill("collector")
            await asyncio.sleep(8)
            pipeline.start("collector")
            await pipeline.subscribed()
            await asyncio.sleep(6)
        result = await pipeline.compare(f"collector SIGKILL 8 s, recorder commit {commit_interval_s} s",
                                        drain_timeout_s=120 + commit_interval_s)
    assert_exact(result)


async def test_ha_restarted_loses_no_state(ha_installed: Installed, tmp_path: Path) -> None:
    home = HomeAssistant(ha_installed, tmp_path / "ha")
    async with RealPipeline(tmp_path / "pipeline", home) as pipeline:
        async with steady_changes(home, RATE_PER_S):
            await asyncio.sleep(4)
            await asyncio.to_thread(home.stop)
            await asyncio.to_thread(home.start)
            await pipeline.subscribed()
            await asyncio.sleep(6)
        result = await pipeline.compare("HA restarted (an update)")
    assert_exact(result)


async def test_collector_stopped_and_restarted_loses_no_state(ha_installed: Installed, tmp_path: Path) -> None:
    home = HomeAssistant(ha_installed, tmp_path / "ha")
    async with RealPipeline(tmp_path / "pipeline", home) as pipeline:
        async with steady_changes(home, RATE_PER_S):
            await asyncio.sleep(4)
            assert await pipeline.stop("collector") == 0
            await asyncio.sleep(5)
            pipeline.start("collector")
            await pipeline.subscribed()
            await asyncio.sleep(6)
        result = await pipeline.compare("collector SIGTERM, restarted 5 s later")
    assert_exact(result)


async def test_writers_killed_and_influxdb_stopped_lose_no_state(ha_installed: Installed, tmp_path: Path) -> None:
    home = HomeAssistant(ha_installed, tmp_path / "ha")
    async with RealPipeline(tmp_path / "pipeline", home) as pipeline:
        async with steady_changes(home, RATE_PER_S):
            await asyncio.sleep(3)
            pipeline.kill(pipeline.writer_names[0])
            await asyncio.sleep(3)
            pipeline.start("writer", pipeline.writer_names[0], {"WRITER_CONSUMER": pipeline.writer_names[0]})
            pipeline.influx.stop()
            await asyncio.sleep(30)
            pipeline.influx.start()
            await asyncio.sleep(5)
        result = await pipeline.compare("writer SIGKILL, then InfluxDB stopped 30 s")
    assert_exact(result)


async def test_one_custom_event_a_second_with_trimming_and_a_writer_killed_while_influxdb_is_down(
    ha_installed: Installed, tmp_path: Path
) -> None:
    """Custom events have no history: each must be a point, found by its context id (the replayer trims every
    second, and a writer dies holding entries while InfluxDB is away)."""
    home = HomeAssistant(ha_installed, tmp_path / "ha")
    async with RealPipeline(tmp_path / "pipeline", home) as pipeline:
        stop = asyncio.Event()

        async def one_a_second() -> None:
            n = 0
            while not stop.is_set():
                await asyncio.to_thread(home.fire, "homeiq_test_event", {"n": n})
                n += 1
                await asyncio.sleep(1)

        firing = asyncio.create_task(one_a_second())
        await asyncio.sleep(10)
        pipeline.influx.stop()
        await asyncio.sleep(8)
        pipeline.kill(pipeline.writer_names[0])
        await asyncio.sleep(10)
        pipeline.start("writer", pipeline.writer_names[0], {"WRITER_CONSUMER": pipeline.writer_names[0]})
        pipeline.influx.start()
        await asyncio.sleep(10)
        stop.set()
        await firing
        result = await pipeline.compare("1 custom event/s, trimming every second, writer SIGKILL while InfluxDB "
                                        "is down 18 s", custom_event="homeiq_test_event")
    assert result.events_in_ha >= 30
    assert_exact(result)


async def test_the_audit_finds_nothing_then_names_what_was_deleted_and_repair_brings_it_back(
    ha_installed: Installed, tmp_path: Path
) -> None:
    home = HomeAssistant(ha_installed, tmp_path / "ha", commit_interval_s=1)
    async with RealPipeline(tmp_path / "pipeline", home) as pipeline:
        async with steady_changes(home, RATE_PER_S):
            await asyncio.sleep(8)
        await pipeline.drained()
        await asyncio.sleep(2)  # the recorder's last commit
        code, clean = await pipeline.audit()
        assert code == 0, clean
        deleted = sorted(await asyncio.to_thread(home.recorded_states, pipeline.since_ns / 1e9),
                         key=lambda r: (r.entity_id, r.time_ns))[::40][:10]
        for state in deleted:
            pipeline.influx.query(f"DELETE FROM home_assistant_events WHERE entity_id = '{state.entity_id}' "
                                  f"AND time = {state.time_ns}", "home_assistant_events", epoch=None)
        code, found = await pipeline.audit()
        named = {(entity["entity_id"], time_ns) for entity in found["entities"] for time_ns in entity["missing"]}
        assert code == 1 and named == {(s.entity_id, s.time_ns) for s in deleted}, found
        code, _ = await pipeline.audit("--repair")
        await pipeline.drained()
        code, again = await pipeline.audit()
        assert code == 0, again
        result = await pipeline.compare(f"replayer audit: 0 differences; {len(deleted)} points deleted, named, "
                                        "repaired; 0 again")
    assert_exact(result)
