"""Audit speed: ha-sim's recorder holding `--days` of history for `--entities` entities, a private influxd
holding the same points, and one `replayer audit` pass over the whole window (in this process).

Prints states compared per second, wall time, and how many HA requests and InfluxDB queries it took. Not a
test: numbers on a shared machine vary.

    python benchmarks/audit_bench.py --entities 1000 --days 7 --per-day 100
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import random
import tempfile
import time
import urllib.request
from pathlib import Path

from homeiq.ha_sim.hub import Hub
from homeiq.ha_sim.population import next_state
from homeiq.ha_sim.recorder import Recorded, Recorder
from homeiq.ha_sim.runner import SimServer
from homeiq.local.services import InfluxServer
from homeiq.replayer.audit import audit
from homeiq.shared.ha.reader import ha_session
from homeiq.shared.influx.reader import InfluxReader
from homeiq.shared.influx.settings import InfluxSettings
from homeiq.shared.times import float_ns

TOKEN = "bench-token"  # noqa: S105 - a private simulator
DATABASE = "audit_bench"


def seed(hub: Hub, days: float, per_day: int, end: float) -> list[str]:
    """Fill the recorder with `per_day` changes a day per entity (raw float times, as HA keeps them) and
    return the matching line protocol, as the pipeline would have written it."""
    rng = random.Random(3)
    lines: list[str] = []
    start = end - days * 86_400
    count = int(days * per_day)
    hub.recorder = Recorder(commit_interval_s=0)  # this history only, committed
    for entity in hub.population.entities:
        for n in range(count):
            ts = start + (n + rng.random()) * (end - start) / count
            state, attributes = next_state(entity, rng)
            entity.state = state
            hub.recorder.record(entity.entity_id, Recorded(state, attributes, ts, ts))
            value = state.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'home_assistant_events,entity_id={entity.entity_id},event_type=state_changed '
                         f'state_value="{value}" {float_ns(ts)}')
    return lines


def load(url: str, lines: list[str]) -> None:
    """Write the lines in gzip batches of 5,000."""
    for first in range(0, len(lines), 5000):
        body = gzip.compress("\n".join(lines[first:first + 5000]).encode(), 1)
        request = urllib.request.Request(f"{url}/write?db={DATABASE}&precision=ns", data=body,  # noqa: S310
                                         headers={"Content-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=120):  # noqa: S310 - loopback
            pass


async def run(entities: int, days: float, per_day: int, concurrency: int, workdir: Path) -> dict[str, object]:
    """Seed, load, audit once; the report's numbers."""
    influx = InfluxServer(workdir / "influxd", None).start()
    try:
        influx.create_database(DATABASE)
        hub = Hub.create(entities, TOKEN)
        end = time.time() - 60
        started = time.monotonic()
        lines = seed(hub, days, per_day, end)
        await asyncio.to_thread(load, influx.url, lines)
        loaded_s = time.monotonic() - started
        sim = SimServer(hub)
        url = await sim.start()
        reader = InfluxReader(InfluxSettings(url=influx.url, api="v1", bucket=DATABASE))
        try:
            started = time.monotonic()
            async with ha_session(url, TOKEN, 300, concurrency) as ha:
                report = await audit(ha, reader, int((end - days * 86_400) * 1e9), int(end * 1e9) + 1)
            audit_s = time.monotonic() - started
        finally:
            await reader.close()
            await sim.stop()
    finally:
        influx.stop()
    states = report.total("in_ha")
    return {"entities": entities, "days": days, "states": states, "points": report.total("found"),
            "missing": report.total("missing"), "extra": report.total("extra"), "wrong": report.total("wrong"),
            "seed_and_load_s": round(loaded_s, 1), "audit_s": round(audit_s, 1),
            "states_per_s": round(states / audit_s), "concurrency": concurrency}


def main() -> None:
    """Parse arguments, run, print the numbers as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=1000)
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument("--per-day", type=int, default=100, help="state changes per entity and day")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="homeiq-audit-bench-") as workdir:
        result = asyncio.run(run(args.entities, args.days, args.per_day, args.concurrency, Path(workdir)))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
