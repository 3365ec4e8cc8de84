"""Writers killed, InfluxDB stopped, slow or refusing: nothing lost, nothing dead-lettered."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from homeiq.local.services import free_port
from tests.faults.pipeline import FaultPipeline, steady_traffic
from tests.faults.truth import Verdict
from tests.helpers import DelayProxy, FaultyHttp


def assert_exact(verdict: Verdict, dropped: dict[str, float]) -> None:
    """Every state change is exactly one right point; nothing dead-lettered or dropped."""
    assert not verdict.missing, f"{len(verdict.missing)} missing, e.g. {sorted(verdict.missing)[:3]}"
    assert not verdict.extra and not verdict.duplicated, (len(verdict.extra), verdict.duplicated)
    assert not verdict.wrong, list(verdict.wrong.items())[:3]
    assert not verdict.dead_lettered
    assert not dropped, dropped


@pytest.mark.parametrize(("rate", "seconds", "every_s"), [(500, 60, 4), (1, 20, 3)], ids=["500-per-s", "1-per-s"])
async def test_writers_killed_every_few_seconds_lose_nothing(
    rate: float, seconds: float, every_s: float, tmp_path: Path
) -> None:
    async with FaultPipeline(tmp_path) as pipeline:
        kills = 0
        async with steady_traffic(pipeline.hub, rate):
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                await asyncio.sleep(every_s)
                name = pipeline.writer_names[kills % len(pipeline.writer_names)]
                pipeline.kill(name)
                pipeline.start("writer", name, {"WRITER_CONSUMER": name})
                kills += 1
        verdict, row = await pipeline.verdict(f"writer SIGKILL x{kills}, {rate:g}/s for {seconds:g} s",
                                              time.monotonic())
        assert_exact(verdict, row.dropped)
        assert pipeline.total("replayer", "homeiq_dead_lettered_total") == 0


@pytest.mark.parametrize(("rate", "down_s"), [(300, 30), (1, 30)], ids=["300-per-s", "1-per-s"])
async def test_influxdb_stopped_then_started_loses_nothing_and_writers_say_why(
    rate: float, down_s: float, tmp_path: Path
) -> None:
    async with FaultPipeline(tmp_path) as pipeline:
        async with steady_traffic(pipeline.hub, rate):
            await asyncio.sleep(3)
            retries_before = pipeline.total("writer", "homeiq_write_batches_total", outcome="retry")
            pipeline.influx.stop()
            await asyncio.sleep(down_s)
            reasons = [pipeline.readiness(name) for name in pipeline.writer_names]
            retries = pipeline.total("writer", "homeiq_write_batches_total", outcome="retry") - retries_before
            pipeline.influx.start()
            started = time.monotonic()
            await asyncio.sleep(3)
        verdict, row = await pipeline.verdict(f"InfluxDB stopped {down_s:g} s, {rate:g}/s", started,
                                              explained=f"{int(retries)} retries in {down_s:g} s")
    for ready in reasons:
        assert ready["status"] == "not_ready" and "InfluxDB at http://127.0.0.1:" in ready["reason"], ready
    # Growing delays: full jitter below a ceiling that doubles from 0.5 s to 10 s gives each writer ~10 tries in
    # 30 s (a few more when the jitter draws short); the collapsed backoff of before made about 120.
    assert retries <= 20 * len(pipeline.writer_names), retries
    assert_exact(verdict, row.dropped)


async def test_a_slow_influxdb_lets_lag_grow_and_the_pipeline_catches_up(tmp_path: Path) -> None:
    proxy_port = free_port()
    pipeline = FaultPipeline(tmp_path, influx_port=proxy_port)
    proxy = DelayProxy(pipeline.influx.port, delay_s=2.0)
    await proxy.start(proxy_port)
    try:
        async with pipeline:
            async with steady_traffic(pipeline.hub, 1000):
                await asyncio.sleep(20)
                unacked = await pipeline.unacked_events()
                proxy.delay_s = 0
                fast_again = time.monotonic()
            verdict, row = await pipeline.verdict("InfluxDB answering after 2 s for 20 s, 1000/s", fast_again)
    finally:
        await proxy.stop()
    # The stream holds what InfluxDB has not taken yet: no write is acked within 2 s of its read, so at least the
    # last 2 s of events (2,000) are pending or undelivered, however the writers read ahead (at full speed: ~200).
    assert unacked >= 1000, unacked
    assert_exact(verdict, row.dropped)


async def test_429_503_with_retry_after_and_500_are_honoured_and_lose_nothing(tmp_path: Path) -> None:
    proxy_port = free_port()
    pipeline = FaultPipeline(tmp_path, influx_port=proxy_port)
    proxy = FaultyHttp(pipeline.influx.url)
    await proxy.start(proxy_port)
    try:
        async with pipeline:
            async with steady_traffic(pipeline.hub, 300):
                await asyncio.sleep(2)
                for status, retry_after in ((429, "3"), (503, "2"), (500, None)):
                    proxy.window = (time.monotonic() + 6, status, retry_after)
                    await asyncio.sleep(6)
                healthy = time.monotonic()
                await asyncio.sleep(2)
            verdict, row = await pipeline.verdict("InfluxDB 429 (Retry-After 3), 503 (2), 500, 6 s each, 300/s",
                                                  healthy)
    finally:
        await proxy.stop()
    after: dict[str, tuple[float, int]] = {}
    gaps: dict[int, list[float]] = {429: [], 503: []}
    for at, client, status in proxy.answered:  # per connection: the delay a writer waited after each answer
        if client in after and after[client][1] in gaps:
            gaps[after[client][1]].append(at - after[client][0])
        after[client] = (at, status)
    assert gaps[429] and min(gaps[429]) >= 3 - 0.05, gaps[429]
    assert gaps[503] and min(gaps[503]) >= 2 - 0.05, gaps[503]
    assert_exact(verdict, row.dropped)
