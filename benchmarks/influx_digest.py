"""What InfluxDB digests best: influxd's CPU per point for the same realistic points sent in different ways.

Each case starts a fresh influxd, optionally fills the database first with earlier points of the same series (a
pipeline writes into a database that already holds them), then POSTs the points and measures influxd's CPU time
(/proc, every thread) twice: while the requests run, and in all until it has been idle for a second after the
last one (its cache snapshots and compactions run later: a client that only times its requests misses them).
Cases vary one thing at a time from the writer's way: batch size, gzip, two concurrent clients, the order of the
points (as they arrive: interleaved series in time order; grouped by series over the whole run, or only within each
request as a writer can), and the filled database; then the live pipeline's shape (two clients' paced requests of
1,000), alone and beside a busy core.
Not a test: numbers on a shared machine vary; compare cases of one run.

    python benchmarks/influx_digest.py --points 200000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from workload import payloads
from writer_bench import cpu_s, start_influxd, stop_influxd

from homeiq.shared.config import DEVICE_FIELDS
from homeiq.shared.events import NormalisedEvent, decode_event
from homeiq.shared.influx.lineprotocol import LineEncoder
from homeiq.shared.influx.sink import gzip_body

BASE: dict[str, Any] = {"batch": 1500, "gzip": True, "clients": 1, "order": "arrival", "filled": False, "pace": 0,
                        "busy": 0, "device_fields": DEVICE_FIELDS}
# A live pipeline's requests: each writer's batch of ~1,000 lines every ~0.1-0.2 s, not back to back; and influxd
# shares the machine's cores with the collector, the writers and Redis.
LIVE: dict[str, Any] = {"batch": 1000, "order": "request", "clients": 2, "pace": 10_000}
CASES: dict[str, dict[str, Any]] = {
    "writer's way (1,500 a request, gzip, one client)": {},
    "5,000 a request": {"batch": 5000},
    "200 a request": {"batch": 200},
    "no gzip": {"gzip": False},
    "two clients at once": {"clients": 2},
    "grouped by series": {"order": "series"},
    "grouped by series within each request": {"order": "request"},
    "into a database already holding the series": {"filled": True},
    "1,000 a request from two clients, 10,000 points/s": LIVE,
    "the same beside a busy core": LIVE | {"busy": 1},
    "the same alone, 2,500 a request": LIVE | {"batch": 2500},
    "without the device's five string fields": {"device_fields": ()},
    "without three (manufacturer and model kept)": {"device_fields": DEVICE_FIELDS[:2]},
}


def lines_of(events: list[NormalisedEvent], device_fields: tuple[str, ...] = DEVICE_FIELDS) -> list[bytes]:
    """The events' lines as a writer with `homeiq.device_fields` set so would write them."""
    encoder = LineEncoder(device_fields=device_fields)
    return [line.encode() for event in events if (line := encoder.encode(event)) is not None]


def series_key(line: bytes) -> bytes:
    """Measurement and tags: everything before the first unescaped space."""
    i = 0
    while True:
        i = line.index(b" ", i)
        if line[i - 1:i] != b"\\":
            return line[:i]
        i += 1


async def post_all(url: str, bodies: list[bytes], gzip: bool, clients: int, seconds_apart: float = 0.0) -> None:
    """POST every body, `clients` at a time; with `seconds_apart`, the n-th request starts no earlier than n times
    that after the first (a paced sender's requests, not back to back)."""
    headers = {"Content-Encoding": "gzip"} if gzip else {}
    queue = list(reversed(bodies))
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def client(session: aiohttp.ClientSession) -> None:
        while queue:
            due = started + (len(bodies) - len(queue)) * seconds_apart
            body = queue.pop()
            if seconds_apart and (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            async with session.post(f"{url}/write", params={"db": "digest", "precision": "ns"}, data=body,
                                    headers=headers) as resp:
                assert resp.status == 204, await resp.text()

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))


def idle_after(pid: int, quiet_s: float = 1.0, limit_s: float = 60.0) -> float:
    """Wait until the process used under 2 % of a core for `quiet_s`; the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        before = cpu_s(pid)
        time.sleep(quiet_s)
        if cpu_s(pid) - before < 0.02 * quiet_s:
            break
    return time.monotonic() - started


async def run_case(workdir: Path, events: list[NormalisedEvent], fill: list[bytes], case: dict[str, Any]
                   ) -> dict[str, float]:
    lines = lines_of(events, case["device_fields"])
    if case["order"] == "series":
        lines = sorted(lines, key=series_key)  # stable: each series keeps its time order
    batch = case["batch"]
    chunks = [lines[i:i + batch] for i in range(0, len(lines), batch)]
    if case["order"] == "request":  # as a writer sends: each request's own points grouped, not the whole run's
        chunks = [sorted(chunk, key=series_key) for chunk in chunks]
    raw = [b"\n".join(chunk) for chunk in chunks]
    bodies = [gzip_body(body) for body in raw] if case["gzip"] else raw
    influx = start_influxd(workdir, isolate=False)
    try:
        influx.create_database("digest")
        assert influx.process is not None
        pid = influx.process.pid
        if case["filled"]:
            await post_all(influx.url, [gzip_body(b"\n".join(fill[i:i + 5000])) for i in range(0, len(fill), 5000)],
                           True, 1)
        idle_after(pid)
        burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])  # noqa: ASYNC220 - returns at once
                   for _ in range(case["busy"])]
        try:
            cpu0, started = cpu_s(pid), time.perf_counter()
            await post_all(influx.url, bodies, case["gzip"], case["clients"],
                           batch / case["pace"] if case["pace"] else 0.0)
            elapsed, during = time.perf_counter() - started, cpu_s(pid) - cpu0
        finally:
            for burner in burners:
                burner.kill()
                burner.wait()
        idle_after(pid)
        total = cpu_s(pid) - cpu0
    finally:
        stop_influxd(influx)
    n = len(lines)
    return {"points_per_s": n / elapsed, "us_per_point_during": during / n * 1e6, "us_per_point_total": total / n * 1e6}


async def main(points: int, rounds: int, workdir: Path, entities: int, only: list[str]) -> dict[str, Any]:
    every = [decode_event(p) for p in payloads(points * 2, entities)]
    fill, events = lines_of(every[:points]), every[points:]  # the same entities, earlier times
    results: dict[str, list[dict[str, float]]] = {name: [] for name in CASES if not only or name in only}
    for n in range(rounds):
        for name, runs in results.items():
            result = await run_case(workdir / f"{n}-{len(runs)}-{abs(hash(name))}", events, fill, BASE | CASES[name])
            runs.append(result)
            print(json.dumps({"round": n, "case": name, **{k: round(v, 1) for k, v in result.items()}}),
                  file=sys.stderr)
    return {name: {key: round(sorted(r[key] for r in runs)[len(runs) // 2], 1) for key in runs[0]}
            for name, runs in results.items()} | {"points": len(events), "entities": entities}


def table(report: dict[str, Any]) -> str:
    out = [f"{'case':<50}{'points/s':>10}{'µs/pt during':>14}{'µs/pt in all':>14}"]
    for name in (name for name in CASES if name in report):
        r = report[name]
        out.append(f"{name:<50}{r['points_per_s']:>10.0f}{r['us_per_point_during']:>14.1f}"
                   f"{r['us_per_point_total']:>14.1f}")
    return "\n".join(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3, help="the median of this many runs of each case")
    parser.add_argument("--entities", type=int, default=2000, help="the series the points spread over")
    parser.add_argument("--case", action="append", default=[], choices=list(CASES), help="only these (repeatable)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="homeiq-digest-") as tmp:
        report = asyncio.run(main(args.points, args.rounds, Path(tmp), args.entities, args.case))
    print(json.dumps(report, indent=2) if args.json else table(report))
