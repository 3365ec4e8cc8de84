"""The whole pipeline on this machine: ha-sim → collector → Redis → writers → influxd, the offered rate stepped
up until the pipeline falls behind; then a backlog drain. Beside influxd's own ceiling, measured in the same run.

Per step: offered, published and written events/s, the lag at the end of the step and its trend, HA
disconnects, latency from `time_fired` to ack (p50, p99, from the writers' histogram), and the CPU µs per event
of every process (collector, each writer, replayer, redis-server, influxd, ha-sim = this process), from /proc.
A step's events are rendered before it starts, stamped with the times they will be sent at (HA's cost is not
the pipeline's): ha-sim's column is the sending, and latency still counts from each event's `time_fired`.
A step is sustained when the lag stayed flat, HA never disconnected the collector, and every event of it is in
InfluxDB, checked point by point. Not a test: numbers on a shared machine vary.

    python benchmarks/pipeline_bench.py --rates 2000,5000,10000,15000,20000 --step-seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import redis.asyncio as aioredis

from homeiq.ha_sim.hub import MAX_PER_TICK, TICK_S, Hub
from homeiq.ha_sim.runner import SimServer
from homeiq.local.processes import ScriptProcess
from homeiq.local.services import InfluxServer, RedisServer, SentinelSet
from homeiq.local.waiting import wait_for
from homeiq.shared.stream import DEFAULT_NAMES

sys.path.insert(0, str(Path(__file__).parent))
from workload import payloads, prerendered
from writer_bench import BATCH, ceiling, cpu_s

from homeiq.shared.influx.schemas import make_encoder
from homeiq.shared.influx.sink import gzip_body

TOKEN = "bench-token"  # noqa: S105 - a private simulator
DATABASE = "pipeline"


def samples(process: ScriptProcess) -> dict[str, float]:
    """Every sample of a process's /metrics, keyed `name{labels}`."""
    import urllib.request  # noqa: PLC0415

    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    with urllib.request.urlopen(process.metrics_url, timeout=5) as resp:  # noqa: S310 - loopback
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = float(sample.value)
    return out


def _answers(process: ScriptProcess) -> bool:
    try:
        samples(process)
    except OSError:
        return False
    return True


def summed(processes: list[ScriptProcess], name: str) -> float:
    return sum(value for p in processes for key, value in samples(p).items() if key.split("{")[0] == name)


# Rendering runs before a step at ~15-20 µs an event; the step starts once it surely has.
RENDER_LEAD_S: Final = 2.0
RENDER_S_PER_EVENT: Final = 40e-6
LATENCY: Final = "homeiq_event_age_at_ack_seconds"
WRITE_DURATION: Final = "homeiq_write_duration_seconds"


def latency_buckets(writers: list[ScriptProcess], histogram: str = LATENCY) -> dict[float, float]:
    """Cumulative counts of a writer histogram (the end-to-end latency by default), summed over the writers."""
    buckets: dict[float, float] = {}
    for writer in writers:
        for key, value in samples(writer).items():
            if key.startswith(f"{histogram}_bucket{{"):
                bound = key.split("le=")[1].split(",")[0].rstrip("}")
                le = float("inf") if bound == "+Inf" else float(bound)
                buckets[le] = buckets.get(le, 0.0) + value
    return buckets


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """A quantile of the observations between two snapshots (linear within a bucket)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    rank, lower, previous = q * total, 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - previous) / max(count - previous, 1e-9)
        lower, previous = bound, count
    return None


class Pipeline:
    """Private servers and the four services; the processes whose CPU is measured."""

    def __init__(self, workdir: Path, entities: int, writers: int, collectors: int = 1, sentinel: bool = False,
                 wait_replicas: int = 0) -> None:
        self.workdir = workdir
        self.collectors = collectors  # two: as on two machines, the broker adding each event once
        # Sentinel: a primary, two replicas and three sentinels; every process asks the sentinels for the primary.
        self.sentinels = SentinelSet(workdir / "sentinel").start() if sentinel else None
        self.wait_replicas = wait_replicas
        self.redis = self.sentinels.servers[0] if self.sentinels else RedisServer(workdir / "redis", None).start()
        self.influx = InfluxServer(workdir / "influxdb", None).start()
        self.influx.create_database(DATABASE)
        self.hub = Hub.create(entities, TOKEN)
        self.sim = SimServer(self.hub)
        self.writers: list[ScriptProcess] = []
        self.others: dict[str, ScriptProcess] = {}
        self.writer_count = writers
        self.env: dict[str, str] = {}

    async def start(self) -> None:
        self.env = {"REDIS_URL": self.redis.url, "INFLUXDB_URL": self.influx.url, "INFLUXDB_API": "v1",
                    "INFLUXDB_BUCKET": DATABASE, "HA_TOKEN": TOKEN, "HA_URL": await self.sim.start(),
                    "METRICS_HOST": "127.0.0.1", "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING",
                    "COLLECTOR_SPOOL_DIR": str(self.workdir / "spool"),
                    "COLLECTOR_WAIT_REPLICAS": str(self.wait_replicas)}
        if self.sentinels:
            self.env |= {"REDIS_SENTINELS": self.sentinels.addresses, "REDIS_SENTINEL_SERVICE": self.sentinels.service}
        self.start_writers()
        self.others["replayer"] = ScriptProcess("replayer", self.env, self.workdir / "replayer.log")
        for n in range(self.collectors):
            name = "collector" if n == 0 else f"collector-{n}"
            own = {"COLLECTOR_SPOOL_DIR": str(self.workdir / f"spool-{n}"), "COLLECTOR_DEDUP_WINDOW_S": "3600"}
            self.others[name] = ScriptProcess("collector", {**self.env, **(own if self.collectors > 1 else {})},
                                              self.workdir / f"{name}.log", name)
        await wait_for(lambda: self.hub.subscribed == self.collectors, 30, "the collectors to subscribe")
        await self.serving()

    async def serving(self) -> None:
        """Wait until every process answers on /metrics."""
        for process in [*self.writers, *self.others.values()]:
            await wait_for(functools.partial(_answers, process), 30, f"{process.name}'s /metrics")

    def start_writers(self) -> None:
        self.writers = [ScriptProcess("writer", {**self.env, "WRITER_CONSUMER": f"writer-{n}"},
                                      self.workdir / f"writer-{n}.log", f"writer-{n}")
                        for n in range(self.writer_count)]

    def pids(self) -> dict[str, int]:
        pids = {name: p.process.pid for name, p in self.others.items()}
        pids |= {w.name: w.process.pid for w in self.writers}
        assert self.redis.process is not None and self.influx.process is not None
        return pids | {"redis": self.redis.process.pid, "influxd": self.influx.process.pid, "ha-sim": os.getpid()}

    def collector_processes(self) -> list[ScriptProcess]:
        return [process for name, process in self.others.items() if name.startswith("collector")]

    async def lag(self, client: aioredis.Redis) -> int:
        groups: Any = await client.xinfo_groups(DEFAULT_NAMES.stream)
        group = next(g for g in groups if g["name"] == DEFAULT_NAMES.group.encode())
        return int(group["lag"] or 0) + int(group["pending"])

    def stop(self) -> None:
        for process in [*self.writers, *self.others.values()]:
            process.terminate()
        self.influx.stop()
        if self.sentinels:
            self.sentinels.stop()
        else:
            self.redis.stop()


async def send_on_schedule(hub: Hub, partials: list[bytes], start: float, rate: float) -> int:
    """Send each pre-rendered event when its time comes (its `time_fired`): `rate` a second from `start`."""
    sent = 0
    while sent < len(partials):
        due = min(len(partials), int((time.time() - start) * rate) + 1, sent + MAX_PER_TICK)
        for partial in partials[sent:due]:
            hub.broadcast_rendered("state_changed", partial)
        sent = max(sent, due)
        await asyncio.sleep(TICK_S)
    return sent


async def step(pipeline: Pipeline, client: aioredis.Redis, rate: float, seconds: float) -> dict[str, Any]:
    """Offer `rate` events/s for `seconds`; everything one step reports. The step's events are rendered
    before it starts, stamped with the times they will be sent at: ha-sim's column is the sending."""
    count = int(rate * seconds)
    start = time.time() + RENDER_LEAD_S + count * RENDER_S_PER_EVENT
    schedule = (start + n / rate for n in range(count))
    partials = prerendered(pipeline.hub, count, lambda: next(schedule))
    gc.freeze()  # ha-sim's record of what it sent (millions of objects) need not be scanned again and again
    if (late_s := time.time() - start) > 0:
        print(json.dumps({"rendering_late_s": round(late_s, 2)}), file=sys.stderr)
    await asyncio.sleep(max(0.0, start - time.time()))  # the step, its clock and its CPU count from here
    collectors = pipeline.collector_processes()
    cpu_before = {name: cpu_s(pid) for name, pid in pipeline.pids().items()}
    published_before = summed(collectors, "homeiq_events_published_total")
    disconnects_before = summed(collectors, "homeiq_ha_disconnects_total")
    redis_before = await redis_memory(client)
    written_before = summed(pipeline.writers, "homeiq_points_written_total")
    writes_before = summed(pipeline.writers, "homeiq_write_batches_total")
    latency_before = latency_buckets(pipeline.writers)
    writes_before_s = latency_buckets(pipeline.writers, WRITE_DURATION)
    lags: list[int] = []
    stop = asyncio.Event()

    async def sample_lag() -> None:
        while not stop.is_set():
            lags.append(await pipeline.lag(client))
            await asyncio.sleep(1)

    sampler = asyncio.create_task(sample_lag())
    started = time.perf_counter()
    sent = await send_on_schedule(pipeline.hub, partials, start, rate)
    elapsed = time.perf_counter() - started
    stop.set()
    await sampler
    lag_end = await pipeline.lag(client)
    cpu = {name: cpu_s(pid) - cpu_before[name] for name, pid in pipeline.pids().items()}
    latency_after = latency_buckets(pipeline.writers)
    writes_after_s = latency_buckets(pipeline.writers, WRITE_DURATION)
    third = max(1, len(lags) // 3)
    growing = sum(lags[-third:]) / third > sum(lags[:third]) / third + rate  # > 1 s more behind at the end
    disconnects = summed(collectors, "homeiq_ha_disconnects_total") - disconnects_before
    redis_after = await redis_memory(client)
    writes = summed(pipeline.writers, "homeiq_write_batches_total") - writes_before
    report: dict[str, Any] = {
        "offered_per_s": rate, "sent": sent, "seconds": round(elapsed, 1),
        "published_per_s": round((summed(collectors, "homeiq_events_published_total") - published_before) / elapsed),
        "written_per_s": round((summed(pipeline.writers, "homeiq_points_written_total") - written_before) / elapsed),
        "mean_batch": round(sent / max(writes, 1)), "lag_end": lag_end, "lag_growing": growing,
        "ha_disconnects": int(disconnects),
        "latency_p50_s": _round(quantile(latency_before, latency_after, 0.5)),
        "latency_p99_s": _round(quantile(latency_before, latency_after, 0.99)),
        "influx_write_p99_s": _round(quantile(writes_before_s, writes_after_s, 0.99)),  # one request's duration
        "cpu_us_per_event": {name: round(seconds_used / max(sent, 1) * 1e6, 1) for name, seconds_used in cpu.items()},
        # What Redis holds more per event sent (the identities two collectors share, when they run; the stream
        # is trimmed behind the writers): bytes.
        "redis_bytes_per_event": {k: round((redis_after[k] - redis_before[k]) / max(sent, 1), 1) for k in redis_after},
    }
    # Our CPU per event (collector, writers, Redis, replayer) against influxd's per point written: what the
    # pipeline adds to the cost InfluxDB has anyway.
    ours_s = sum(used for name, used in cpu.items() if name not in ("influxd", "ha-sim"))
    points = report["written_per_s"] * elapsed
    report["ours_to_influxd"] = round((ours_s / max(sent, 1)) / max(cpu["influxd"] / max(points, 1), 1e-9), 2)
    # ha-sim's sending is the same work an event at a rate (the frames are rendered before the step): our CPU against
    # it is our cost with the machine's speed of the moment divided out, for comparing runs of one rate.
    report["ours_to_ha_sim"] = round(ours_s / max(cpu.get("ha-sim", 0.0), 1e-9), 2)
    # Kept up: the source ran at the rate, the collector published it, the lag did not grow, HA never dropped us.
    report["sustained"] = (not growing and not disconnects and elapsed <= seconds * 1.03
                           and report["published_per_s"] >= rate * 0.98)
    return report


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def drained(pipeline: Pipeline, client: aioredis.Redis, timeout_s: float) -> bool:
    try:
        await wait_for(lambda: _zero(pipeline, client), timeout_s, "the lag to drain", interval_s=0.2)
    except TimeoutError:
        return False
    return True


async def _zero(pipeline: Pipeline, client: aioredis.Redis) -> bool:
    return await pipeline.lag(client) == 0


async def backlog_drain(pipeline: Pipeline, client: aioredis.Redis, events: int, rate: float) -> dict[str, Any]:
    """Writers stopped while `events` arrive, then started: points/s until the lag is 0."""
    for writer in pipeline.writers:
        writer.terminate()
    await pipeline.hub.emit(events, rate)
    await wait_for(lambda: _published(pipeline, len(pipeline.hub.sent)), 120, "the backlog in the stream")
    pipeline.start_writers()
    started = time.perf_counter()  # their start-up counts: a restart after an outage is what this measures
    await wait_for(lambda: _zero(pipeline, client), 900, "the backlog to drain", interval_s=0.05)
    elapsed = time.perf_counter() - started
    return {"backlog": events, "seconds": round(elapsed, 1), "points_per_s": round(events / elapsed)}


def _published(pipeline: Pipeline, total: int) -> bool:
    return summed(pipeline.collector_processes(), "homeiq_events_published_total") >= total


async def redis_memory(client: aioredis.Redis) -> dict[str, float]:
    """Redis's used memory, and what the collectors' identity buckets take of it (MEMORY USAGE, every sample)."""
    info: Any = await client.info("memory")
    seen = 0
    async for key in client.scan_iter(match=DEFAULT_NAMES.collector_seen + "*", count=1000):
        seen += int(await client.memory_usage(key, samples=0) or 0)
    return {"used": float(info["used_memory"]), "identities": float(seen)}


# What the processes counted that bears on a point missing: drops, dead letters, entries lost, points overwritten.
COUNTED: Final = ("homeiq_events_dropped_total", "homeiq_dead_lettered_total", "homeiq_entries_lost_total",
                  "homeiq_writer_points_overwritten_total", "homeiq_writer_skipped_total", "homeiq_redis_forgot_total",
                  "homeiq_events_deduplicated_total", "homeiq_events_filtered_total")
REREADS: Final = 3  # a point missing is looked for again, 5 s apart, before it counts as lost


def exact(pipeline: Pipeline, reread_s: float = 5.0) -> dict[str, Any]:
    """Every event sent against InfluxDB, point by point. A point missing from the first answer is asked for again
    (`lost_first_read`, `lost` after the rereads tell InfluxDB's answer from our loss), with the processes' counts
    of what they dropped or dead-lettered and a few of the missing (entity, time) beside them."""
    expected = {(e.entity_id, e.last_updated_us * 1000) for e in pipeline.hub.sent}
    found = [(p["entity_id"], p["time"]) for p in pipeline.influx.points(DATABASE)]
    missing = expected - set(found)
    report: dict[str, Any] = {"sent": len(expected), "points": len(found), "lost": len(missing),
                              "duplicated": len(found) - len(set(found)), "unexpected": len(set(found) - expected)}
    if not missing:
        return report
    report["lost_first_read"] = len(missing)
    for _ in range(REREADS):
        time.sleep(reread_s)
        missing -= {(p["entity_id"], p["time"]) for p in pipeline.influx.points(DATABASE)}
        if not missing:
            break
    report["lost"] = len(missing)
    report["missing_examples"] = sorted(missing, key=lambda key: key[1])[:10]
    processes = [*pipeline.writers, *pipeline.others.values()]
    report["counted"] = {f"{p.name} {key}": value for p in processes for key, value in samples(p).items()
                         if key.split("{")[0] in COUNTED and value}
    return report


async def main(rates: list[float], step_s: float, entities: int, writers: int, backlog: int,
               workdir: Path, ceiling_points: int = 100_000, collectors: int = 1, sentinel: bool = False,
               wait_replicas: int = 0) -> dict[str, Any]:
    entries = payloads(ceiling_points)
    encoder = make_encoder("homeiq")
    from homeiq.shared.events import decode_event  # noqa: PLC0415

    lines = [line.encode() for p in entries if (line := encoder.encode(decode_event(p))) is not None]
    bodies = [gzip_body(b"\n".join(lines[i:i + BATCH])) for i in range(0, len(lines), BATCH)]
    influx_ceiling = await ceiling(workdir / "ceiling", bodies, len(lines), False)
    print(json.dumps({"influxd_ceiling": influx_ceiling}), file=sys.stderr)
    pipeline = Pipeline(workdir / "pipeline", entities, writers, collectors, sentinel, wait_replicas)
    steps: list[dict[str, Any]] = []
    try:
        await pipeline.start()
        client = aioredis.Redis.from_url(pipeline.redis.url)
        try:
            for rate in rates:
                result = await step(pipeline, client, rate, step_s)
                result["drained"] = await drained(pipeline, client, 60)
                steps.append(result)
                print(json.dumps(result), file=sys.stderr)
                if not (result["sustained"] and result["drained"]):
                    break
            check = await asyncio.to_thread(exact, pipeline)
            sustained = [s["offered_per_s"] for s in steps if s["sustained"] and s["drained"]]
            drain = await backlog_drain(pipeline, client, backlog, max(sustained or [rates[0]]))
        finally:
            await client.aclose()
    finally:
        pipeline.stop()
        await pipeline.sim.stop()
    ceiling_rate = influx_ceiling["points_per_s"]
    best = max(sustained, default=0.0) if not (check["lost"] or check["duplicated"]) else 0.0
    return {"influxd_ceiling_points_per_s": round(ceiling_rate), "steps": steps, "point_by_point": check,
            "highest_sustained_per_s": best, "sustained_share_of_ceiling": round(best / ceiling_rate, 3),
            "backlog_drain": drain, "drain_share_of_ceiling": round(drain["points_per_s"] / ceiling_rate, 3),
            "entities": entities, "writers": writers, "collectors": collectors, "sentinel": sentinel,
            "wait_replicas": wait_replicas, "step_seconds": step_s}


def table(report: dict[str, Any]) -> str:
    """The steps as text: one row per step, CPU µs per event per process."""
    names = sorted({name for s in report["steps"] for name in s["cpu_us_per_event"]})
    header = ["offered", "published", "written", "lag end", "growing", "disc.", "p50 s", "p99 s", "write p99 s",
              "ours/influxd", "ours/ha-sim", "ids B/ev", *names]
    columns = ["offered_per_s", "published_per_s", "written_per_s", "lag_end", "lag_growing", "ha_disconnects",
               "latency_p50_s", "latency_p99_s", "influx_write_p99_s", "ours_to_influxd", "ours_to_ha_sim"]
    rows = [header] + [[*(str(s[c]) for c in columns), str(s["redis_bytes_per_event"]["identities"]),
                        *(str(s["cpu_us_per_event"].get(n, "")) for n in names)] for s in report["steps"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="2000,5000,10000,15000,20000,25000",
                        help="offered events/s, one step each, comma-separated")
    parser.add_argument("--step-seconds", type=float, default=60)
    parser.add_argument("--entities", type=int, default=2000)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--backlog", type=int, default=200_000, help="events for the backlog drain")
    parser.add_argument("--ceiling-points", type=int, default=100_000, help="points of the ceiling measurement")
    parser.add_argument("--collectors", type=int, default=1, choices=(1, 2),
                        help="2: two collectors on the one ha-sim, with COLLECTOR_DEDUP_WINDOW_S=3600")
    parser.add_argument("--sentinel", action="store_true",
                        help="Redis as a primary, two replicas and three sentinels (REDIS_SENTINELS)")
    parser.add_argument("--wait-replicas", type=int, default=0, help="COLLECTOR_WAIT_REPLICAS")
    parser.add_argument("--config", type=Path, help="HOMEIQ_CONFIG for every process (its homeiq: block; an "
                        "influxdb: block would point the writers elsewhere)")
    args = parser.parse_args()
    if args.config is not None:
        os.environ["HOMEIQ_CONFIG"] = str(args.config.resolve())  # the processes inherit our environment
    with tempfile.TemporaryDirectory(prefix="homeiq-pipeline-bench-") as tmp:
        result = asyncio.run(main([float(r) for r in args.rates.split(",")], args.step_seconds, args.entities,
                                  args.writers, args.backlog, Path(tmp), args.ceiling_points, args.collectors,
                                  args.sentinel, args.wait_replicas))
    print(table(result), file=sys.stderr)
    print(json.dumps(result, indent=2))
