"""The fault suite's pipeline (private Redis and influxd, a collector, two writers, a replayer) on a real Home
Assistant instead of ha-sim, compared state for state with HA's recorder database, and the lane's report table."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from homeiq.local.waiting import wait_for
from tests.faults.pipeline import DATABASE, FaultPipeline
from tests.realha.home import HomeAssistant, RecordedState


@dataclass
class Comparison:
    """InfluxDB against HA's recorder, state for state, and custom events by context id."""

    states_in_ha: int
    points: int
    missing: set[tuple[str, int]] = field(default_factory=set)
    extra: set[tuple[str, int]] = field(default_factory=set)
    wrong: dict[tuple[str, int], tuple[str, str]] = field(default_factory=dict)
    events_in_ha: int = 0
    events_missing: set[str] = field(default_factory=set)


@dataclass
class RealRow:
    """One line of the lane's report: states (and custom events) the recorder holds, points."""

    scenario: str
    version: str
    states_in_ha: int
    points: int
    missing: int
    extra: int
    wrong: int
    explained: str = ""


ROWS: list[RealRow] = []


def compare(recorded: list[RecordedState], points: list[dict[str, Any]], since_ns: int) -> Comparison:
    """Every recorded state since `since_ns` must be exactly one point (its entity, HA's time, its state)."""
    expected = {(r.entity_id, r.time_ns): r.state for r in recorded if r.time_ns >= since_ns}
    found: dict[tuple[str, int], str] = {}
    for point in points:
        if point.get("event_type") == "state_changed" and point["time"] >= since_ns and point.get("state_value"):
            found[(point["entity_id"], point["time"])] = point["state_value"]
    result = Comparison(states_in_ha=len(expected), points=len(found), missing=expected.keys() - found.keys(),
                        extra=found.keys() - expected.keys())
    result.wrong = {key: (expected[key], found[key]) for key in expected.keys() & found.keys()
                    if expected[key] != found[key]}
    return result


class RealPipeline(FaultPipeline):
    """FaultPipeline's processes and their faults, with `home` as the source."""

    def __init__(self, workdir: Path, home: HomeAssistant, env: dict[str, str] | None = None,
                 databases: tuple[str, ...] = ()) -> None:
        super().__init__(workdir, env=env)
        self.home = home
        self._databases = (DATABASE, *databases)  # created before HA starts (its own integration checks them)
        self.since_ns = 0

    @property
    def env(self) -> dict[str, str]:
        """What every process shares: HA's URL and token instead of the simulator's."""
        return {**super().env, "HA_URL": self.home.url, "HA_TOKEN": self.home.token, **self._extra_env}

    async def __aenter__(self) -> RealPipeline:
        self.redis.start()
        self.influx.start()
        for database in self._databases:
            self.influx.create_database(database)
        await asyncio.to_thread(self.home.start)
        self.client = aioredis.Redis.from_url(self.redis.url)
        for name in self.writer_names:
            self.start("writer", name, {"WRITER_CONSUMER": name})
        self.start("replayer")
        self.start("collector")
        await self.subscribed()
        self.since_ns = time.time_ns()  # what HA did at its start, before any collector listened, is not ours
        return self

    async def __aexit__(self, *_exc: object) -> None:
        for name in list(self.processes):
            await self.stop(name)
        if self.client is not None:
            await self.client.aclose()
        await asyncio.to_thread(self.home.stop)
        self.influx.stop()
        self.redis.stop()

    async def subscribed(self, timeout_s: float = 60) -> None:
        """Wait until a collector is connected and subscribed to HA; on a timeout the error carries the end of the
        collector's log and HA's (the temporary directory is gone by the time CI's output is read)."""
        try:
            await wait_for(lambda: self.gauge("collector", "homeiq_ha_connected") == 1, timeout_s,
                           "the collector to subscribe to Home Assistant")
        except TimeoutError as exc:
            collector = self.workdir / f"collector-{self._starts['collector']}.log"
            raise TimeoutError(f"{exc}\n--- {collector.name}:\n{_tail(collector)}\n--- home-assistant.log:\n"
                               f"{_tail(self.home.config_dir / 'home-assistant.log')}") from None

    async def audit(self, *args: str) -> tuple[int, dict[str, Any]]:
        """`replayer audit --json` over this run, as an operator runs it: its exit code and its report."""
        since = datetime.fromtimestamp(self.since_ns / 1e9, UTC).isoformat()
        done = await asyncio.to_thread(
            subprocess.run, [Path(sys.executable).parent / "replayer", "audit", "--json", "--since", since, *args],
            env={**os.environ, **self.env}, capture_output=True, text=True, timeout=300, check=False)
        try:
            return done.returncode, json.loads(done.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"replayer audit exited {done.returncode}: {done.stdout[-500:]} {done.stderr[-2000:]}"
                                 ) from None

    async def compare(self, scenario: str, explained: str = "", custom_event: str = "",
                      drain_timeout_s: float = 120.0) -> Comparison:
        """Drain; stop HA (its recorder commits on shutdown); compare InfluxDB with its database; add the row."""
        await self.drained(drain_timeout_s)
        await asyncio.to_thread(self.home.stop)
        points = await self.points()
        result = compare(await asyncio.to_thread(self.home.recorded_states), points, self.since_ns)
        written: set[str] = set()
        if custom_event:
            written = {p["context_id"] for p in points if p.get("event_type") == custom_event and p.get("context_id")}
            fired = await asyncio.to_thread(self.home.recorded_events, custom_event)
            result.events_in_ha, result.events_missing = len(fired), set(fired) - written
        ROWS.append(RealRow(scenario, self.home.installed.release.version, result.states_in_ha + result.events_in_ha,
                            result.points + len(written), len(result.missing) + len(result.events_missing),
                            len(result.extra), len(result.wrong), explained))
        return result


@contextlib.asynccontextmanager
async def steady_changes(home: HomeAssistant, rate_per_s: float) -> AsyncIterator[None]:
    """Helper changes through HA's REST API at `rate_per_s` until the block ends (calls that fail while HA is down
    are skipped: nothing changes in a stopped HA)."""
    stop = asyncio.Event()

    async def drive() -> None:
        n = 0
        while not stop.is_set():
            with contextlib.suppress(OSError):
                await asyncio.to_thread(home.change, n)
            n += 1
            await asyncio.sleep(1 / rate_per_s)

    task = asyncio.create_task(drive())
    try:
        yield
    finally:
        stop.set()
        await task


def table(rows: list[RealRow]) -> str:
    """The lane's report as a plain-text table."""
    header = ("scenario", "HA", "in HA", "points", "missing", "extra", "wrong", "explained")
    lines = [header] + [(r.scenario, r.version, str(r.states_in_ha), str(r.points), str(r.missing), str(r.extra),
                         str(r.wrong), r.explained or "-") for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def _tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log, or why there are none."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({exc})"
