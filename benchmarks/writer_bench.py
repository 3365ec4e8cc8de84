"""Writer throughput: a stream pre-filled with realistic entries → one `writer run` → influxd (v1 API).

Beside it, in the same run, influxd's own ceiling: the same points as pre-encoded line protocol, compressed
as the writer compresses it, POSTed in the same batch size over one connection. Also the encoder alone on one core.
Not a test: numbers on a shared machine vary.

    python benchmarks/writer_bench.py --entries 500000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from homeiq_local.processes import ScriptProcess
from homeiq_local.services import InfluxServer, RedisServer
from homeiq_local.waiting import wait_for
from homeiq_shared.events import decode_event
from homeiq_writer.influx import gzip_body
from homeiq_writer.lineprotocol import LineEncoder

sys.path.insert(0, str(Path(__file__).parent))
from workload import payloads

BATCH = 5000
FILL = """
for i = 1, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'v', '1', 'e', ARGV[i])
end
"""


def encoder_lines_per_s(entries: list[bytes]) -> tuple[float, float, list[bytes]]:
    """Lines/s of the encoder alone, and of decode + encode, on this core."""
    events = [decode_event(p) for p in entries]
    encoder = LineEncoder()
    started = time.perf_counter()
    for event in events:
        encoder.encode(event)
    encode_only = len(events) / (time.perf_counter() - started)
    encoder = LineEncoder()
    started = time.perf_counter()
    lines = [encoder.encode(decode_event(p)).encode() for p in entries]
    return encode_only, len(entries) / (time.perf_counter() - started), lines


async def ceiling(workdir: Path, lines: list[bytes]) -> tuple[float, float]:
    """Points/s a fresh influxd takes when the client does nothing but POST ready bodies, and the mean
    duration of one write."""
    influx = InfluxServer(workdir / "influxdb-ceiling", None).start()
    try:
        influx.create_database("ceiling")
        bodies = [gzip_body(b"\n".join(lines[i:i + BATCH])) for i in range(0, len(lines), BATCH)]
        async with aiohttp.ClientSession() as session:
            started = time.perf_counter()
            for body in bodies:
                async with session.post(f"{influx.url}/write", params={"db": "ceiling", "precision": "ns"},
                                        data=body, headers={"Content-Encoding": "gzip"}) as resp:
                    assert resp.status == 204, await resp.text()
            elapsed = time.perf_counter() - started
            return len(lines) / elapsed, elapsed / len(bodies)
    finally:
        influx.stop()  # so its compactions do not slow the writer's run


async def main(count: int, workdir: Path) -> dict[str, object]:
    entries = payloads(count)
    encode_only, decode_encode, lines = encoder_lines_per_s(entries)
    influx_ceiling, ceiling_write_s = await ceiling(workdir, lines)
    redis_server = RedisServer(workdir / "redis", None).start()
    influx = InfluxServer(workdir / "influxdb", None).start()
    client = aioredis.Redis.from_url(redis_server.url)
    writer = None
    try:
        fill = client.register_script(FILL)
        for first in range(0, len(entries), 2000):
            await fill(keys=["homeiq:events"], args=entries[first:first + 2000])
        await client.xgroup_create("homeiq:events", "writers", id="0")
        influx.create_database("writer")
        env = {"REDIS_URL": redis_server.url, "INFLUXDB_URL": influx.url, "INFLUXDB_API": "v1",
               "INFLUXDB_BUCKET": "writer", "WRITER_CONSUMER": "bench", "LOG_FORMAT": "json",
               "METRICS_HOST": "127.0.0.1"}
        writer = ScriptProcess("writer", env, workdir / "writer.log")

        async def reading() -> bool:
            return bool((await client.xinfo_groups("homeiq:events"))[0]["entries-read"])

        # The clock starts at the writer's first read: its process start-up is not write throughput.
        await wait_for(reading, 60, "the writer's first read", interval_s=0.005)
        started = time.perf_counter()

        async def drained() -> bool:
            group = (await client.xinfo_groups("homeiq:events"))[0]
            return bool(group["entries-read"] == count and group["pending"] == 0)

        await wait_for(drained, 900, "the writer to ack every entry", interval_s=0.05)
        elapsed = time.perf_counter() - started
        writer_rate = count / elapsed
        write_s = [writer.scrape(f"homeiq_write_duration_seconds_{part}") for part in ("sum", "count")]
        written = influx.count("writer")
    finally:
        if writer is not None:
            writer.terminate()
        await client.aclose()
        influx.stop()
        redis_server.stop()
    return {
        "entries": count, "batch": BATCH, "encoder_lines_per_s": round(encode_only),
        "decode_and_encode_lines_per_s": round(decode_encode), "influxd_ceiling_points_per_s": round(influx_ceiling),
        "writer_points_per_s": round(writer_rate), "writer_share_of_ceiling": round(writer_rate / influx_ceiling, 3),
        "ceiling_mean_write_ms": round(ceiling_write_s * 1000, 1),
        "writer_mean_write_ms": round(write_s[0] / write_s[1] * 1000, 1),
        "writer_share_of_time_writing": round(write_s[0] / elapsed, 3),
        "points_in_influxdb": written, "mean_line_bytes": round(sum(map(len, lines)) / len(lines)),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=500_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="homeiq-bench-") as tmp:
        print(json.dumps(asyncio.run(main(args.entries, Path(tmp))), indent=2))
