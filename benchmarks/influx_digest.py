"""What InfluxDB digests best: influxd's CPU per point for the same realistic points sent in different ways.

Each case starts a fresh influxd, optionally fills the database first with earlier points of the same series (a
pipeline writes into a database that already holds them), then POSTs the points and measures influxd's CPU time
(/proc, every thread) twice: while the requests run, and in all until it has been idle for a second after the
last one (its cache snapshots and compactions run later: a client that only times its requests misses them).
Cases vary one thing at a time from the writer's way: batch size, gzip, two concurrent clients, the order of the
points (as they arrive: interleaved series in time order; or grouped by series), and the filled database.
Not a test: numbers on a shared machine vary; compare cases of one run.

    python benchmarks/influx_digest.py --points 200000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from workload import payloads
from writer_bench import cpu_s, start_influxd, stop_influxd

from homeiq.shared.events import decode_event
from homeiq.shared.influx.schemas import make_encoder
from homeiq.shared.influx.sink import gzip_body

BASE: dict[str, Any] = {"batch": 1500, "gzip": True, "clients": 1, "order": "arrival", "filled": False}
CASES: dict[str, dict[str, Any]] = {
    "writer's way (1,500 a request, gzip, one client)": {},
    "5,000 a request": {"batch": 5000},
    "200 a request": {"batch": 200},
    "no gzip": {"gzip": False},
    "two clients at once": {"clients": 2},
    "grouped by series": {"order": "series"},
    "into a database already holding the series": {"filled": True},
}


def lines_of(count: int) -> list[bytes]:
    encoder = make_encoder("homeiq")
    return [line.encode() for p in payloads(count) if (line := encoder.encode(decode_event(p))) is not None]


def series_key(line: bytes) -> bytes:
    """Measurement and tags: everything before the first unescaped space."""
    i = 0
    while True:
        i = line.index(b" ", i)
        if line[i - 1:i] != b"\\":
            return line[:i]
        i += 1


async def post_all(url: str, bodies: list[bytes], gzip: bool, clients: int) -> None:
    headers = {"Content-Encoding": "gzip"} if gzip else {}
    queue = list(reversed(bodies))

    async def client(session: aiohttp.ClientSession) -> None:
        while queue:
            body = queue.pop()
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


async def run_case(workdir: Path, lines: list[bytes], fill: list[bytes], case: dict[str, Any]) -> dict[str, float]:
    if case["order"] == "series":
        lines = sorted(lines, key=series_key)  # stable: each series keeps its time order
    batch = case["batch"]
    raw = [b"\n".join(lines[i:i + batch]) for i in range(0, len(lines), batch)]
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
        cpu0, started = cpu_s(pid), time.perf_counter()
        await post_all(influx.url, bodies, case["gzip"], case["clients"])
        elapsed, during = time.perf_counter() - started, cpu_s(pid) - cpu0
        idle_after(pid)
        total = cpu_s(pid) - cpu0
    finally:
        stop_influxd(influx)
    n = len(lines)
    return {"points_per_s": n / elapsed, "us_per_point_during": during / n * 1e6, "us_per_point_total": total / n * 1e6}


async def main(points: int, rounds: int, workdir: Path) -> dict[str, Any]:
    every = lines_of(points * 2)
    fill, lines = every[:points], every[points:]  # the same entities, earlier times
    results: dict[str, list[dict[str, float]]] = {name: [] for name in CASES}
    for n in range(rounds):
        for name, change in CASES.items():
            result = await run_case(workdir / f"{n}-{len(results[name])}-{abs(hash(name))}", lines, fill,
                                    BASE | change)
            results[name].append(result)
            print(json.dumps({"round": n, "case": name, **{k: round(v, 1) for k, v in result.items()}}),
                  file=sys.stderr)
    return {name: {key: round(sorted(r[key] for r in runs)[len(runs) // 2], 1) for key in runs[0]}
            for name, runs in results.items()} | {"points": len(lines)}


def table(report: dict[str, Any]) -> str:
    out = [f"{'case':<50}{'points/s':>10}{'µs/pt during':>14}{'µs/pt in all':>14}"]
    for name in CASES:
        r = report[name]
        out.append(f"{name:<50}{r['points_per_s']:>10.0f}{r['us_per_point_during']:>14.1f}"
                   f"{r['us_per_point_total']:>14.1f}")
    return "\n".join(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3, help="the median of this many runs of each case")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="homeiq-digest-") as tmp:
        report = asyncio.run(main(args.points, args.rounds, Path(tmp)))
    print(json.dumps(report, indent=2) if args.json else table(report))
