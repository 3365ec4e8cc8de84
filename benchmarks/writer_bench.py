"""Writer throughput: a stream pre-filled with realistic entries → one `writer run` → influxd (v1 API).

Beside it, influxd's own ceiling: the same points as pre-encoded line protocol, compressed as the writer
compresses it, POSTed in the same batch size over one connection to a fresh influxd. On a shared machine
one measurement varies by ±15%, so the ceiling and the writer are measured in alternating rounds (a fresh
influxd each time; each writer round reads the whole stream through a consumer group of its own) and the
medians are compared. Also the encoder alone on one core. Not a test: it prints numbers.

With --isolate-influxd, influxd runs on CPU 0 and everything else on the other CPUs, in the ceiling and
the writer rounds alike: what is left of the gap is then the writer's own, not the CPU it takes from
influxd on a small machine.

    python benchmarks/writer_bench.py --entries 500000 [--rounds 3] [--isolate-influxd] [--events-per-entry 1]
    python benchmarks/writer_bench.py --encoder-only --entries 200000   # both schemas' encoders, side by side
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from homeiq.local.processes import ScriptProcess
from homeiq.local.services import InfluxServer, RedisServer
from homeiq.local.waiting import wait_for
from homeiq.shared.events import decode_event
from homeiq.shared.influx.schemas import SCHEMAS, make_encoder
from homeiq.shared.influx.sink import gzip_body
from homeiq.shared.packing import DEFAULT_EVENTS_PER_ENTRY, xadd_events

sys.path.insert(0, str(Path(__file__).parent))
from workload import payloads

BATCH = 5000
STREAM = "homeiq:events"


def encoder_lines_per_s(entries: list[bytes], schema: str = "homeiq") -> tuple[float, float, list[bytes]]:
    """Lines/s of the encoder alone, and of decode + encode, on this core (events per second: the ha schema
    writes no line for unknown/unavailable states)."""
    events = [decode_event(p) for p in entries]
    encoder = make_encoder(schema)
    started = time.perf_counter()
    for event in events:
        encoder.encode(event)
    encode_only = len(events) / (time.perf_counter() - started)
    encoder = make_encoder(schema)
    started = time.perf_counter()
    lines = [line.encode() for p in entries if (line := encoder.encode(decode_event(p))) is not None]
    return encode_only, len(entries) / (time.perf_counter() - started), lines


def encoders(count: int, rounds: int) -> dict[str, object]:
    """Both schemas' encoders on the same entries, in alternating rounds; medians."""
    entries = payloads(count)
    runs: dict[str, list[tuple[float, float, float]]] = {schema: [] for schema in SCHEMAS}
    for _ in range(rounds):
        for schema in SCHEMAS:
            encode_only, decode_encode, lines = encoder_lines_per_s(entries, schema)
            runs[schema].append((encode_only, decode_encode, sum(map(len, lines)) / len(lines)))
    return {"entries": count, "rounds": rounds, **{schema: {
        "encoder_lines_per_s": round(statistics.median(r[0] for r in rows)),
        "decode_and_encode_lines_per_s": round(statistics.median(r[1] for r in rows)),
        "mean_line_bytes": round(statistics.median(r[2] for r in rows)),
    } for schema, rows in runs.items()}}


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, its children's it has waited for included (the
    AOF rewrites redis-server forks: at 5,000 events/s a quarter of its CPU), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(field) for field in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def start_influxd(workdir: Path, isolate: bool) -> InfluxServer:
    influx = InfluxServer(workdir, None).start()
    if isolate and influx.process is not None:  # every thread of it, not just the main one
        subprocess.run(["taskset", "-a", "-cp", "0", str(influx.process.pid)], check=True, capture_output=True)
    return influx


def stop_influxd(influx: InfluxServer) -> None:
    influx.stop()  # so its compactions do not slow the next round
    shutil.rmtree(influx.workdir, ignore_errors=True)


async def ceiling(workdir: Path, bodies: list[bytes], points: int, isolate: bool) -> dict[str, float]:
    """Points/s a fresh influxd takes when the client does nothing but POST ready bodies."""
    influx = start_influxd(workdir, isolate)
    try:
        influx.create_database("ceiling")
        pid = influx.process.pid if influx.process is not None else 0
        async with aiohttp.ClientSession() as session:
            started, influx_cpu = time.perf_counter(), cpu_s(pid)
            for body in bodies:
                async with session.post(f"{influx.url}/write", params={"db": "ceiling", "precision": "ns"},
                                        data=body, headers={"Content-Encoding": "gzip"}) as resp:
                    assert resp.status == 204, await resp.text()
            elapsed, influx_cpu = time.perf_counter() - started, cpu_s(pid) - influx_cpu
    finally:
        stop_influxd(influx)
    return {"points_per_s": points / elapsed, "mean_write_ms": elapsed / len(bodies) * 1000,
            "influxd_cores": influx_cpu / elapsed}


async def writer_round(workdir: Path, redis_server: RedisServer, group: str, count: int, stream_entries: int,
                       isolate: bool) -> dict[str, float]:
    """Points/s of one `writer run` reading the whole stream through a new group into a fresh influxd."""
    influx = start_influxd(workdir / "influxdb", isolate)
    client = aioredis.Redis.from_url(redis_server.url)
    writer = None
    try:
        await client.xgroup_create(STREAM, group, id="0")
        influx.create_database("writer")
        env = {"REDIS_URL": redis_server.url, "INFLUXDB_URL": influx.url, "INFLUXDB_API": "v1",
               "INFLUXDB_BUCKET": "writer", "STREAM_GROUP": group, "WRITER_CONSUMER": "bench",
               "LOG_FORMAT": "json", "METRICS_HOST": "127.0.0.1"}
        writer = ScriptProcess("writer", env, workdir / "writer.log")

        async def group_info() -> dict[str, int]:
            groups = await client.xinfo_groups(STREAM)
            return next(g for g in groups if g["name"] == group.encode())

        async def reading() -> bool:
            return bool((await group_info())["entries-read"])

        # The clock starts at the writer's first read: its process start-up is not write throughput.
        await wait_for(reading, 60, "the writer's first read", interval_s=0.005)
        started = time.perf_counter()
        pids = {"influxd": influx.process, "redis": redis_server.process, "writer": writer.process}
        cpu_before = {name: cpu_s(process.pid) for name, process in pids.items() if process is not None}

        async def drained() -> bool:
            info = await group_info()
            return bool(info["entries-read"] == stream_entries and info["pending"] == 0)

        await wait_for(drained, 900, "the writer to ack every entry", interval_s=0.05)
        elapsed = time.perf_counter() - started
        cpu = {name: cpu_s(process.pid) - cpu_before[name] for name, process in pids.items() if process is not None}
        write_sum, write_count = (writer.scrape(f"homeiq_write_duration_seconds_{part}") for part in ("sum", "count"))
        written = influx.count("writer")
        assert written == count, f"{written} points in influxd, {count} entries in the stream"
    finally:
        if writer is not None:
            writer.terminate()
        await client.aclose()
        stop_influxd(influx)
    return {"points_per_s": count / elapsed, "mean_write_ms": write_sum / write_count * 1000,
            "share_of_time_writing": write_sum / elapsed, "influxd_cores": cpu["influxd"] / elapsed,
            "writer_cpu_us_per_point": cpu["writer"] / count * 1e6,
            "redis_cpu_us_per_point": cpu["redis"] / count * 1e6}


async def main(count: int, rounds: int, isolate: bool, workdir: Path, per_entry: int) -> dict[str, object]:
    if isolate:  # we, Redis and the writer on every CPU but 0; influxd is moved to CPU 0
        os.sched_setaffinity(0, os.sched_getaffinity(0) - {0})
    entries = payloads(count)
    encode_only, decode_encode, lines = encoder_lines_per_s(entries)
    bodies = [gzip_body(b"\n".join(lines[i:i + BATCH])) for i in range(0, len(lines), BATCH)]
    redis_server = RedisServer(workdir / "redis", None).start()
    try:
        client = aioredis.Redis.from_url(redis_server.url)
        await xadd_events(client, STREAM, entries, events_per_entry=per_entry)  # as the collector packs them
        stream_entries = int(await client.xlen(STREAM))
        await client.aclose()
        os.sync()  # the fill's writes are not the writer's to wait for
        ceilings, writers = [], []
        for n in range(rounds):
            ceilings.append(await ceiling(workdir / f"ceiling-{n}", bodies, count, isolate))
            writers.append(await writer_round(workdir / f"writer-{n}", redis_server, f"writers-{n}", count,
                                              stream_entries, isolate))
            print(json.dumps({"round": n, "ceiling": ceilings[-1], "writer": writers[-1]}), file=sys.stderr)
    finally:
        redis_server.stop()

    def median(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    ceiling_rate, writer_rate = median(ceilings, "points_per_s"), median(writers, "points_per_s")
    return {
        "entries": count, "events_per_entry": per_entry, "batch": BATCH, "rounds": rounds, "isolate_influxd": isolate,
        "mean_line_bytes": round(sum(map(len, lines)) / len(lines)),
        "encoder_lines_per_s": round(encode_only), "decode_and_encode_lines_per_s": round(decode_encode),
        "influxd_ceiling_points_per_s": round(ceiling_rate), "writer_points_per_s": round(writer_rate),
        "writer_share_of_ceiling": round(writer_rate / ceiling_rate, 3),
        "share_per_round": [round(w["points_per_s"] / c["points_per_s"], 3)
                            for c, w in zip(ceilings, writers, strict=True)],
        "ceiling_mean_write_ms": round(median(ceilings, "mean_write_ms"), 1),
        "writer_mean_write_ms": round(median(writers, "mean_write_ms"), 1),
        "writer_share_of_time_writing": round(median(writers, "share_of_time_writing"), 3),
        "ceiling_influxd_cores": round(median(ceilings, "influxd_cores"), 2),
        "writer_run_influxd_cores": round(median(writers, "influxd_cores"), 2),
        "writer_cpu_us_per_point": round(median(writers, "writer_cpu_us_per_point"), 1),
        "redis_cpu_us_per_point": round(median(writers, "redis_cpu_us_per_point"), 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--isolate-influxd", action="store_true")
    parser.add_argument("--events-per-entry", type=int, default=DEFAULT_EVENTS_PER_ENTRY,
                        help="as COLLECTOR_EVENTS_PER_ENTRY (1: version-1 entries)")
    parser.add_argument("--encoder-only", action="store_true", help="Only the encoders of both schemas.")
    args = parser.parse_args()
    if args.encoder_only:
        print(json.dumps(encoders(args.entries, args.rounds), indent=2))
        sys.exit(0)
    if args.isolate_influxd and len(os.sched_getaffinity(0)) < 2:
        parser.error("--isolate-influxd needs at least two CPUs")
    with tempfile.TemporaryDirectory(prefix="homeiq-bench-") as tmp:
        print(json.dumps(asyncio.run(main(args.entries, args.rounds, args.isolate_influxd, Path(tmp),
                                                  args.events_per_entry)), indent=2))
