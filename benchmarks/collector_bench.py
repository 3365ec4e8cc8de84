"""Collector throughput: ha-sim as fast as the collector reads → `collector run` → redis-server (AOF on).

Prints events/s, collector CPU seconds per 100k events and peak RSS, beside a raw pipelined XADD of the
same payloads into the same Redis in the same run. Not a test: numbers on a shared machine vary.

    python benchmarks/collector_bench.py --events 300000 --entities 10000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis
from workload import prerendered
from writer_bench import cpu_s

from homeiq.ha_sim.hub import Hub
from homeiq.ha_sim.messages import event_message
from homeiq.ha_sim.runner import SimServer
from homeiq.local.processes import ScriptProcess
from homeiq.local.services import RedisServer
from homeiq.local.waiting import wait_for
from homeiq.shared.packing import events_or_none

TOKEN = "bench-token"  # noqa: S105 - a private simulator


def redis_pid(server: RedisServer) -> int:
    if server.process is None:
        raise RuntimeError("redis-server is not running")
    return server.process.pid


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def blast(sim: SimServer, partials: list[bytes]) -> None:
    """Queue the pre-built events to the collector's connection, as fast as it reads (HA's own limits hold)."""
    (connection,) = sim.hub.connections
    (subscription,) = connection.subscriptions
    for partial in partials:
        while connection.queued > 2048:  # noqa: ASYNC110 - the simulator's queue has no event to wait on
            await asyncio.sleep(0.001)
        connection.send(event_message(partial, subscription))


async def stream_payloads(client: aioredis.Redis, stream: str, page: int = 10_000) -> list[bytes]:
    """Every entry's payload, read a page at a time (one reply of a million entries outlasts a read timeout)."""
    payloads: list[bytes] = []
    start = "-"
    while True:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(  # type: ignore[assignment]
            stream, min=start, count=page)
        if not entries:
            return payloads
        payloads.extend(event for _, fields in entries for event in events_or_none(fields))
        start = "(" + entries[-1][0].decode()


async def raw_xadd(client: aioredis.Redis, payloads: list[bytes], batch: int) -> float:
    """Events/s of pipelined XADD of `payloads` (the baseline the collector is compared with)."""
    started = time.perf_counter()
    for first in range(0, len(payloads), batch):
        async with client.pipeline(transaction=False) as pipe:
            for payload in payloads[first:first + batch]:
                pipe.execute_command("XADD", "bench:raw", "*", b"v", b"1", b"e", payload)
            await pipe.execute()
    return len(payloads) / (time.perf_counter() - started)


async def main(events: int, entities: int, workdir: Path) -> dict[str, object]:
    redis_server = RedisServer(workdir / "redis", None).start()
    client = aioredis.Redis.from_url(redis_server.url)
    hub = Hub.create(entities, TOKEN)
    partials = prerendered(hub, events)
    gc.freeze()  # the pre-built events are kept for the whole run: no collection needs to scan them
    sim = SimServer(hub)
    env = {"REDIS_URL": redis_server.url, "HA_URL": await sim.start(), "HA_TOKEN": TOKEN, "LOG_FORMAT": "json",
           "COLLECTOR_SPOOL_DIR": str(workdir / "spool"), "METRICS_HOST": "127.0.0.1"}
    collector = ScriptProcess("collector", env, workdir / "collector.log")
    try:
        await wait_for(lambda: hub.subscribed, 30, "the collector to subscribe")
        idle_rss = peak_rss_mb(collector.process.pid)
        pids = {"collector": collector.process.pid, "ha_sim": os.getpid(), "redis": redis_pid(redis_server)}
        cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
        started = time.perf_counter()
        sender = asyncio.create_task(blast(sim, partials))

        async def all_in_redis() -> bool:
            if sender.done():
                sender.result()  # the sender's failure ends the run now, not at the timeout
            published = await asyncio.to_thread(collector.scrape, "homeiq_events_published_total")
            return published >= events

        await wait_for(all_in_redis, 600, "every event in Redis", interval_s=0.05)
        elapsed = time.perf_counter() - started
        await sender
        cpu = {name: cpu_s(pid) - cpu_before[name] for name, pid in pids.items()}
        peak_rss = peak_rss_mb(collector.process.pid)
        payloads = await stream_payloads(client, "homeiq:events")
        baseline = await raw_xadd(client, payloads, 1000)
    finally:
        collector.terminate()
        await client.aclose()
        await sim.stop()
        redis_server.stop()
    return {
        "events": events, "entities": entities, "collector_events_per_s": round(events / elapsed),
        **{f"{name}_cpu_s_per_100k": round(seconds / events * 100_000, 2) for name, seconds in cpu.items()},
        "collector_rss_mb_connected_idle": round(idle_rss, 1), "collector_rss_mb_peak": round(peak_rss, 1),
        "raw_pipelined_xadd_events_per_s": round(baseline),
        "payload_bytes_mean": round(sum(map(len, payloads)) / len(payloads)),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--entities", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="homeiq-bench-") as tmp:
        print(json.dumps(asyncio.run(main(args.events, args.entities, Path(tmp))), indent=2))
