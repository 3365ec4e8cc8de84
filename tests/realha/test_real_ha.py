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
