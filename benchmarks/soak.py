"""The soak: the whole pipeline for hours of a home compressed in time, with a home's churn, judged on trends.

ha-sim (in this process) fires state changes at `--rate` over `--entities` entities (`--other-share` of them
service calls: events without a state); the collector, two writers
and the replayer run as their console scripts against a private redis-server (AOF) and influxd (the fault suite's
pipeline, tests/faults/pipeline.py). Every `--churn-period-s` one change of a real home, in turn: an entity added,
one removed, one renamed, one moved to another area, a device moved to another area, a service call. Every
`--reconnect-every-s` HA drops the connection; every `--ha-restart-every-s` HA restarts (down 5 s, its recorder
keeping what happens meanwhile, the collector backfilling it); every `--influx-restart-every-s` InfluxDB restarts
(by default once a "day" of a home at 50 events/s, compressed by the same factor as the rate).

Sampled every `--sample-s`, against the events fired so far: RSS and open fds of every process, asyncio tasks of
ours and what their heaps hold (`homeiq_python_heap_blocks`: RSS also keeps what a burst once took), the
collector's caches, the stream's length, Redis's memory, the spool's bytes, InfluxDB's series count
beside the most series the churn could have made (the entities there were at the start, plus what each change
can add: a new tag set, its registry event).

Verdicts on the trend over the second half of the run (the median slope between the means of eight blocks of
samples against events, per million events: a block averages out a sawtooth's teeth, whose slow rises would tilt
the median of slopes between single samples upwards however flat the teeth's level): memory (RSS of every
process, Redis's memory, the stream's length, the collector's caches) grows
≤ `--limit-pct` % of its mean per million events; counts (fds, tasks, the spool) grow by less than one over the
second half; series never
exceed what the churn can explain, a capped cache its cap. `--floor-mb` / `--floor-count` allow that much growth
over the second half whatever the slope, `--floor-entries` the stream's length: a short run's noise (the smoke
test), 0 for a long one.

    python benchmarks/soak.py --events 3000000 --rate 1000 --out benchmarks/results/soak-2026-12-04

Writes `<out>.txt` (the table and the run's numbers), `<out>.json` (every sample) and `<out>.png` (the curves;
needs matplotlib, a benchmark-only dependency: `pip install matplotlib`). `--rejudge <out>.json` judges and draws
a run's samples again (another limit, another floor) without running it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from homeiq.collector.gap import MAX_PROBES, MAX_SEEN  # noqa: E402
from homeiq.collector.normalise import PointTimes  # noqa: E402
from homeiq.collector.service import REDIS_CHECK_S  # noqa: E402
from homeiq.ha_sim.hub import MAX_PER_TICK, TICK_S, Hub  # noqa: E402
from homeiq.ha_sim.population import AREAS  # noqa: E402
from homeiq.local.services import InfluxServer  # noqa: E402
from homeiq.local.waiting import wait_for  # noqa: E402
from homeiq.shared.ha.registry import CACHE_SIZE as REGISTRY_CACHE_SIZE  # noqa: E402
from homeiq.shared.packing import DEFAULT_EVENTS_PER_ENTRY  # noqa: E402
from homeiq.shared.stream import DEFAULT_NAMES  # noqa: E402
from tests.faults.pipeline import DATABASE, FaultPipeline, Samples, scrape  # noqa: E402

HOME_RATE: Final = 50.0  # state changes a second of a busy home
DAY_S: Final = 86_400.0
OURS: Final = ("collector", "writer-0", "writer-1", "replayer")
JUDGING: Final = ("limit_pct", "floor_mb", "floor_count", "floor_entries")  # what --rejudge takes from the command
CACHES: Final = ("enrichment", "known_entities", "gap_seen", "gap_probes", "point_times")
# The caches with a cap of their own: judged on staying below it (the point times fill for hours at a home's rate).
CAPS: Final = {"enrichment": REGISTRY_CACHE_SIZE, "gap_seen": MAX_SEEN, "gap_probes": MAX_PROBES,
               "point_times": PointTimes().size}
Kind = Literal["memory", "count", "series", "bounded", "shown"]


# -- the verdict (pure) ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Trend:
    """One series' verdict: its first and last values, the slope over the second half per million events
    (Theil-Sen over block means; absolute, and as % of its mean there), and whether that is within the limit."""

    name: str
    kind: Kind
    first: float
    last: float
    slope_per_m: float
    pct_per_m: float
    growth: float  # the fitted growth over the second half
    ok: bool


def theil_sen(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The median of the slopes between every two samples: a restart's dip or a cache's refill does not tilt it as
    it would tilt least squares."""
    slopes = sorted((ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs))
                    if xs[j] > xs[i])
    if not slopes:
        return 0.0
    middle = len(slopes) // 2
    return slopes[middle] if len(slopes) % 2 else (slopes[middle - 1] + slopes[middle]) / 2


BLOCKS = 8


def block_means(xs: Sequence[float], ys: Sequence[float], blocks: int = BLOCKS) -> tuple[list[float], list[float]]:
    """The samples' means in `blocks` consecutive blocks (each sample as it is when there are too few). A stream
    trimmed every few seconds rises slowly and falls at once: between single samples most slopes rise (a flat
    sawtooth measured +2 to +4 % per million events), between block means of several teeth they do not."""
    if len(xs) < 2 * blocks:
        return list(xs), list(ys)
    size = len(xs) / blocks
    cuts = [round(i * size) for i in range(blocks + 1)]
    return ([sum(xs[a:b]) / (b - a) for a, b in itertools.pairwise(cuts)],
            [sum(ys[a:b]) / (b - a) for a, b in itertools.pairwise(cuts)])


def trend(name: str, events: Sequence[float], values: Sequence[float], kind: Kind, limit_pct: float = 1.0,
          floor: float = 0.0, bound: Sequence[float] | None = None) -> Trend:
    """The verdict on `values` sampled at `events` (fired so far). `memory`: slope ≤ `limit_pct` % of the mean per
    million events; `count`: fitted growth over the second half < 1; either passes too when that growth is at most
    `floor`. `series`, `bounded`: never above `bound` (what the churn can explain, a cache's cap) in the second
    half. `shown`: not judged (what is not ours: influxd's files and RSS)."""
    if len(events) != len(values) or len(events) < 4:
        raise ValueError(f"{name}: too few samples to judge a trend ({len(values)})")
    half = events[-1] / 2
    xs = [x / 1e6 for x in events if x >= half]
    ys = list(values[-len(xs):])
    if len(xs) < 2:
        xs, ys = [x / 1e6 for x in events[-2:]], list(values[-2:])
    mean_y = sum(ys) / len(ys)
    slope = theil_sen(*block_means(xs, ys))
    growth = slope * (xs[-1] - xs[0])
    pct = slope / mean_y * 100 if mean_y else (0.0 if slope <= 0 else math.inf)
    if kind == "memory":
        ok = pct <= limit_pct or growth <= floor
    elif kind == "count":
        ok = growth < 1 or growth <= floor
    elif kind == "shown":
        ok = True
    else:
        assert bound is not None
        ok = all(v <= b for v, b in zip(values[-len(xs):], bound[-len(xs):], strict=True))
    return Trend(name, kind, values[0], values[-1], slope, pct, growth, ok)


def verdicts(samples: list[dict[str, Any]], limit_pct: float = 1.0, floor_mb: float = 0.0,
             floor_count: float = 0.0, floor_entries: float = 0.0) -> list[Trend]:
    """Every verdict of a run from its samples (`sample()` dicts)."""
    events = [s["events"] for s in samples]
    out: list[Trend] = []

    def series(*path: str) -> list[float]:
        values = []
        for sample in samples:
            value: Any = sample
            for key in path:
                value = value[key]
            values.append(float(value))
        return values

    # influxd's RSS follows what it holds (its series index, its cache between snapshots: a sawtooth of 150-420 MB
    # over a long run) and is no process of ours: shown. What our writes make it hold is judged: the series (below,
    # against what the churn explains) and our connections to it.
    out.extend(trend(f"RSS {name} (MB)", events, series("rss_mb", name), "shown" if name == "influxd" else "memory",
                     limit_pct, floor_mb) for name in samples[0]["rss_mb"])
    out.append(trend("Redis used memory (MB)", events, series("redis_mb"), "memory", limit_pct,
                     floor_mb))
    out.append(trend("stream length (entries)", events, series("stream_length"), "memory",
                     limit_pct, floor_entries))
    for name in samples[0]["fds"]:
        if name == "influxd" and "sockets" in samples[0]:
            # influxd's own files (TSM files, WAL segments, shards) come and go as it compacts: shown. Its sockets
            # are the connections ours hold to it: judged.
            out.append(trend("fds influxd (its files)", events, series("fds", name), "shown"))
            out.append(trend("sockets influxd (our connections)", events, series("sockets", name), "count",
                             floor=floor_count))
        else:
            out.append(trend(f"fds {name}", events, series("fds", name), "count", floor=floor_count))
    out.extend(trend(f"asyncio tasks {name}", events, series("tasks", name), "count",
                     floor=floor_count) for name in samples[0]["tasks"])
    # What the heap holds beside RSS, which also keeps what a burst once took (runs before this had none). A
    # block is ~100 bytes on average here, so a floor of N MB is N * 10 thousand blocks.
    out.extend(trend(f"heap {name} (thousand blocks)", events, series("heap_kblocks", name), "memory", limit_pct,
                     floor_mb * 10) for name in samples[0].get("heap_kblocks", {}))
    for name in samples[0]["caches"]:
        values = series("caches", name)
        if name in CAPS:
            out.append(trend(f"collector cache {name} (cap {CAPS[name]:,})", events, values, "bounded",
                             bound=[CAPS[name]] * len(values)))
        else:
            out.append(trend(f"collector cache {name}", events, values, "memory", limit_pct, floor_count))
    out.append(trend("spool (bytes)", events, series("spool_bytes"), "count", floor=floor_count))
    out.append(trend("InfluxDB series (<= bound)", events, series("series"), "series",
                     bound=series("series_bound")))
    return out


def table(trends: list[Trend]) -> str:
    """The verdicts as text, one row each."""
    rows = [["", "first", "last", "slope/M events", "%/M events", "verdict"]]
    for t in trends:
        pct = "" if t.kind != "memory" else ("inf" if math.isinf(t.pct_per_m) else f"{t.pct_per_m:+.2f}")
        rows.append([t.name, f"{t.first:.6g}", f"{t.last:.6g}", f"{t.slope_per_m:+.4g}", pct,
                     "shown" if t.kind == "shown" else "ok" if t.ok else "GROWS"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                                   strict=True)))
                     for r in rows)


# -- the run -----------------------------------------------------------------------------------------------------

@dataclass
class Options:
    """What a run does (the command line's options)."""

    events: int = 3_000_000
    rate: float = 1000.0
    entities: int = 2000
    churn_period_s: float = 10.0
    reconnect_every_s: float = 300.0
    ha_restart_every_s: float = 900.0
    influx_restart_every_s: float = 0.0  # 0: a home's day compressed by rate / HOME_RATE
    sample_s: float = 15.0
    faults_until: float = 1.0  # HA's drops and restarts, InfluxDB's restarts, until this share of the events
    other_share: float = 0.05  # of the events, service calls (no state: the collector's point-time cache)
    recorder_keep_s: float = 300.0  # HA's purge: what a backfill after a restart needs, not the whole run
    limit_pct: float = 1.0
    floor_mb: float = 0.0
    floor_count: float = 0.0
    # The stream's length: what it holds swings by seconds of events (the trim keeps what follows the collector's
    # resume point, which a save moves every REDIS_CHECK_S, beating with the trim's own cadence); None: the entries
    # one save's interval brings at the rate (`stream_floor`).
    floor_entries: float | None = None

    def stream_floor(self) -> float:
        """The stream's floor, entries (`floor_entries`)."""
        if self.floor_entries is not None:
            return self.floor_entries
        return self.rate * REDIS_CHECK_S / DEFAULT_EVENTS_PER_ENTRY

    def influx_every_s(self) -> float:
        return self.influx_restart_every_s or DAY_S * HOME_RATE / self.rate


@dataclass
class Run:
    """A run's state while it goes: events fired, churn done, the series bound, what happened when."""

    fired: int = 0
    churn: dict[str, int] = field(default_factory=dict)
    series_bound: int = 0
    happenings: list[tuple[int, str]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    # What the end checks against InfluxDB, event by event where it can: the state changes fired per entity, each
    # service call's context id → (events fired before it, whether a collector was subscribed), and when (events
    # fired) HA dropped the connection or went down.
    states: collections.Counter[str] = field(default_factory=collections.Counter)
    renamed: dict[str, str] = field(default_factory=dict)  # old entity id → new (HA's recorder moves its history)
    calls: dict[str, tuple[int, bool]] = field(default_factory=dict)
    drops: list[int] = field(default_factory=list)
    unplanned: list[tuple[int, str]] = field(default_factory=list)  # (events fired, why) a subscriber was lost

    def lost_subscriber(self, reason: str) -> None:
        """A subscribed connection ended; not a drop the soak made: HA dropped a client behind, or the collector
        gave the connection up (no pong, nothing read)."""
        if reason != PLANNED:
            self.unplanned.append((self.fired, reason))

    def happened(self, what: str) -> None:
        self.churn[what] = self.churn.get(what, 0) + 1
        self.happenings.append((self.fired, what))


async def fire(hub: Hub, run: Run, options: Options) -> None:
    """State changes (and `other_share` service calls) at `options.rate` until `options.events` are fired;
    ha-sim's record of them is cleared as it goes (the soak checks trends, not each point: the fault suite does)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while run.fired < options.events and not run.stop.is_set():
        due = min(options.events, int((loop.time() - started) * options.rate) + 1)
        for _ in range(min(due - run.fired, MAX_PER_TICK)):
            if hub.rng.random() < options.other_share:
                context_id, _ = hub.fire_service_call(run.fired)
                run.calls[context_id] = run.fired, bool(hub.subscribed)
            else:
                run.states[hub.fire_state_change().entity_id] += 1
            run.fired += 1
        if len(hub.sent) > 10_000:
            hub.sent.clear()
        await asyncio.sleep(TICK_S if run.fired >= due else 0)


def churn_once(hub: Hub, run: Run, turn: int) -> None:
    """One change of a real home, in turn; adds what it can add to InfluxDB's series to the bound."""
    rng = hub.rng
    what = ("add", "remove", "rename", "move_entity", "move_device", "service_call")[turn % 6]
    present = hub.present
    if what == "add":
        hub.add_entity()
        run.series_bound += 3  # its registry event, its states before and after the registry is re-read
    elif what == "remove":
        entity = rng.choice(present)
        hub.remove_entity(entity)
        hub.fire_event("entity_registry_updated", {"action": "remove", "entity_id": entity.entity_id})
        run.series_bound += 2  # the state_changed without a new state (no device_class), the registry event
    elif what == "rename":
        entity = rng.choice(present)
        run.renamed[entity.entity_id] = hub.rename_entity(entity, f"{entity.domain}.renamed_{turn}").entity_id
        run.series_bound += 4  # the old id's removal, the registry event, the new id's states (before/after)
    elif what == "move_entity":
        entity = rng.choice(present)
        area = rng.choice([a for a, _, _ in AREAS if a != entity.area_id])
        hub.move_entity(entity, area)
        run.series_bound += 2  # the registry event, the entity's new tag set
    elif what == "move_device":
        device = rng.choice(hub.population.devices)
        hub.move_device(device, rng.choice([a for a, _, _ in AREAS if a != device.area_id]))
        # its entities without an area of their own take the device's: a new tag set each; the registry event
        run.series_bound += 1 + sum(1 for e in present if e.device_id == device.id and e.area_id is None)
    else:
        hub.fire_service_call(turn)  # its series is the service calls' (counted at the start)
    # What HA removed is gone from ha-sim too (its recorder keeps the rows): the soak must not grow by itself.
    if hub.removed:
        hub.population.entities = [e for e in hub.population.entities if e.entity_id not in hub.removed]
        hub.removed.clear()
    run.happened(what)


async def churn(pipeline: FaultPipeline, run: Run, options: Options) -> None:
    """The home's changes, HA's drops and restarts, InfluxDB's daily restart, HA's recorder purge."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    next_at = {"churn": options.churn_period_s, "reconnect": options.reconnect_every_s,
               "ha_restart": options.ha_restart_every_s, "influx_restart": options.influx_every_s(), "purge": 60.0}
    turn = 0
    while not run.stop.is_set():
        await asyncio.sleep(0.5)
        now = loop.time() - start
        if now >= next_at["purge"]:
            next_at["purge"] += 60.0
            pipeline.hub.recorder.purge(time.time() - options.recorder_keep_s)
        if not pipeline.hub.subscribed:
            continue  # HA's events of the time would be lost with no history (the fault suite counts those)
        if now >= next_at["churn"]:
            next_at["churn"] += options.churn_period_s
            churn_once(pipeline.hub, run, turn)
            turn += 1
        elif run.fired > options.faults_until * options.events:
            continue
        elif now >= next_at["reconnect"]:
            next_at["reconnect"] += options.reconnect_every_s
            run.drops.append(run.fired)
            pipeline.sim.drop_connections()
            run.happened("ha_reconnect")
        elif now >= next_at["ha_restart"]:
            next_at["ha_restart"] += options.ha_restart_every_s
            run.drops.append(run.fired)
            await pipeline.sim.stop()
            await asyncio.sleep(5)
            await pipeline.sim.start()
            run.happened("ha_restart")
        elif now >= next_at["influx_restart"]:
            next_at["influx_restart"] += options.influx_every_s()
            await asyncio.to_thread(pipeline.influx.stop)
            await asyncio.sleep(2)
            await asyncio.to_thread(pipeline.influx.start)
            run.happened("influx_restart")


def _proc(pid: int) -> tuple[float, int, int]:
    """RSS (MB), open fds and how many of them are sockets, of a process."""
    rss_kb = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    fds = os.listdir(f"/proc/{pid}/fd")
    sockets = 0
    for fd in fds:
        with contextlib.suppress(OSError):  # closed since it was listed
            sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return rss_kb / 1024, len(fds), sockets


def _gauge(samples: Samples, metric: str, **labels: str) -> float:
    wanted = frozenset(labels.items())
    return sum(v for (name, sample_labels), v in samples.items() if name == metric and wanted <= sample_labels)


def series_count(pipeline: FaultPipeline) -> int:
    """InfluxDB's series in the database (exact, as influxd 1.6 counts them)."""
    answer = pipeline.influx.query("SHOW SERIES EXACT CARDINALITY", DATABASE, epoch=None)
    found = answer["results"][0].get("series") or []
    return sum(int(s["values"][0][0]) for s in found)


def sample(pipeline: FaultPipeline, run: Run, client_info: dict[str, Any], stream_length: int) -> dict[str, Any]:
    """One sample of everything (blocking: run it in a thread)."""
    if pipeline.redis.process is None or pipeline.influx.process is None:
        raise OSError("a server is restarting: no sample now")
    pids = {name: pipeline.processes[name].process.pid for name in OURS}
    pids |= {"redis": pipeline.redis.process.pid, "influxd": pipeline.influx.process.pid}
    procs = {name: _proc(pid) for name, pid in pids.items()}
    scraped = {name: scrape(pipeline.processes[name].metrics_port) for name in OURS}
    collector = scraped["collector"]
    return {
        "events": run.fired, "t": time.time(),
        "rss_mb": {name: round(p[0], 2) for name, p in procs.items()},
        "fds": {name: p[1] for name, p in procs.items()},
        "sockets": {name: p[2] for name, p in procs.items()},
        "tasks": {name: _gauge(s, "homeiq_asyncio_tasks") for name, s in scraped.items()},
        "heap_kblocks": {name: round(_gauge(s, "homeiq_python_heap_blocks") / 1000, 1) for name, s in scraped.items()},
        "caches": {c: _gauge(collector, "homeiq_collector_cache_entries", cache=c) for c in CACHES},
        "spool_bytes": _gauge(collector, "homeiq_spool_bytes"),
        "published": _gauge(collector, "homeiq_events_published_total"),
        "written": sum(_gauge(scraped[w], "homeiq_points_written_total") for w in ("writer-0", "writer-1")),
        "stream_length": stream_length,
        "redis_mb": round(int(client_info["used_memory"]) / 2**20, 3),
        "series": series_count(pipeline), "series_bound": run.series_bound,
        "entities": len(pipeline.hub.present),
    }


async def sampler(pipeline: FaultPipeline, run: Run, options: Options) -> None:
    """A sample every `options.sample_s` until the run stops (an InfluxDB down for its restart: next time)."""
    assert pipeline.client is not None
    while not run.stop.is_set():
        with contextlib.suppress(OSError, KeyError):
            info: Any = await pipeline.client.info("memory")
            length = int(await pipeline.client.xlen(DEFAULT_NAMES.stream))
            run.samples.append(await asyncio.to_thread(sample, pipeline, run, info, length))
            print(json.dumps({k: run.samples[-1][k] for k in ("events", "rss_mb", "stream_length", "series")}),
                  file=sys.stderr, flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.stop.wait(), options.sample_s)


async def soak(options: Options, workdir: Path) -> dict[str, Any]:
    """Run the soak; its report: options, samples, verdicts, what happened, drops."""
    run = Run()
    async with FaultPipeline(workdir, entities=options.entities) as pipeline:
        run.series_bound = options.entities + 1  # every entity's tag set, and the service calls'
        pipeline.hub.on_subscriber_lost = run.lost_subscriber
        await wait_for(lambda: all(_ready(pipeline, name) for name in OURS), 30, "every process's /metrics")
        started = time.monotonic()
        tasks = [asyncio.create_task(sampler(pipeline, run, options)),
                 asyncio.create_task(churn(pipeline, run, options))]
        await fire(pipeline.hub, run, options)
        fired_s = time.monotonic() - started
        run.stop.set()
        await asyncio.gather(*tasks)
        drain_s = await pipeline.drained(300)
        assert pipeline.client is not None
        info: Any = await pipeline.client.info("memory")
        length = int(await pipeline.client.xlen(DEFAULT_NAMES.stream))
        drained = await asyncio.to_thread(sample, pipeline, run, info, length)
        points = await asyncio.to_thread(pipeline.influx.count, DATABASE)
        dropped = pipeline.dropped()
        delivery = await asyncio.to_thread(deliveries, pipeline.influx, run, options.rate)
    trends = verdicts(run.samples, options.limit_pct, options.floor_mb, options.floor_count, options.stream_floor())
    return {"options": asdict(options) | {"floor_entries": options.stream_floor()}, "seconds": round(fired_s, 1),
            "rate_achieved": round(run.fired / fired_s),
            "drain_s": round(drain_s, 1), "events": run.fired, "points": points, "dropped": dropped,
            "delivery": delivery, "churn": run.churn, "happenings": run.happenings, "samples": run.samples,
            "drained": drained, "verdicts": [asdict(t) for t in trends],
            "ok": all(t.ok for t in trends) and delivery["ok"]}


IN_FLIGHT_S: Final = 1.0  # HA's queue for us, the socket's buffers and a paced read: under a second of events
PLANNED: Final = "dropped by the simulator"  # ha-sim's reason for the drops the soak makes
# Before a connection ends unplanned, what HA sent may be stuck unread for up to the collector's ping interval and
# timeout (the test environment's 5 s each), or in HA's queue for a client too slow to read it.
GIVEN_UP_S: Final = 10.0


def _last_id(run: Run, entity_id: str) -> str:
    """The id an entity has now: a rename moves its history in HA's recorder, and what a backfill finds there of
    the old id's states comes under the new one."""
    while entity_id in run.renamed:
        entity_id = run.renamed[entity_id]
    return entity_id


def deliveries(influx: InfluxServer, run: Run, rate: float) -> dict[str, Any]:
    """The run's events against InfluxDB. State changes: per entity, at least one point for each one fired (HA's
    recorder gives back what a drop or a restart kept from us; more points are snapshots and the churn's own; a
    renamed entity's points count with its new id's).
    Service calls, by context id: the only ones allowed missing were fired while no collector was subscribed, or
    were on their way to it when HA dropped the connection (fired within `IN_FLIGHT_S` of a drop): no backfill
    can bring those back, in HA as here."""
    answer = influx.query("SELECT COUNT(source) FROM home_assistant_events WHERE event_type = 'state_changed' "
                          "GROUP BY entity_id", DATABASE)
    points: collections.Counter[str] = collections.Counter()
    fired: collections.Counter[str] = collections.Counter()
    for series in answer["results"][0].get("series", []):
        points[_last_id(run, series["tags"]["entity_id"])] += int(series["values"][0][1])
    for entity, count in run.states.items():
        fired[_last_id(run, entity)] += count
    short = {entity: count - points[entity] for entity, count in fired.items() if points[entity] < count}
    found = {row[1] for chunk in influx.query_chunks(
        "SELECT context_id FROM home_assistant_events WHERE event_type = 'call_service'", DATABASE)
        for result in chunk.get("results", []) for series in result.get("series", []) for row in series["values"]}
    window = rate * IN_FLIGHT_S
    unheard, in_flight, unexplained = 0, 0, []
    unplanned: collections.Counter[str] = collections.Counter()
    for context_id, (at, subscribed) in run.calls.items():
        if context_id in found:
            continue
        if not subscribed:
            unheard += 1
        elif any(abs(at - drop) <= window for drop in run.drops):
            in_flight += 1
        elif reason := next((why for lost, why in run.unplanned if -window <= lost - at <= rate * GIVEN_UP_S), ""):
            unplanned[reason] += 1
        else:
            unexplained.append({"context_id": context_id, "fired_after": at,
                                "events_from_nearest_drop": min((at - d for d in run.drops), key=abs, default=None)})
    return {"states_fired": sum(run.states.values()), "state_points": sum(points.values()),
            "entities_short": len(short), "states_missing": sum(short.values()),
            "short": dict(list(short.items())[:20]),
            "calls_fired": len(run.calls), "calls_missing_unsubscribed": unheard,
            "calls_missing_in_flight_at_a_drop": in_flight, "calls_missing_unexplained": len(unexplained),
            "unplanned_disconnects": collections.Counter(why for _, why in run.unplanned),
            "calls_missing_at_unplanned_disconnects": dict(unplanned),
            "unexplained": unexplained[:20], "ok": not short and not unexplained and not unplanned}


def _ready(pipeline: FaultPipeline, name: str) -> bool:
    try:
        scrape(pipeline.processes[name].metrics_port)
    except OSError:
        return False
    return True


# -- the picture ---------------------------------------------------------------------------------------------------

def picture(report: dict[str, Any], path: Path) -> bool:
    """The curves over events as a PNG; False when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    samples = report["samples"]
    xs = [s["events"] / 1e6 for s in samples]
    figure, axes = plt.subplots(2, 4, figsize=(20, 9), constrained_layout=True)
    panels: list[tuple[str, str, dict[str, list[float]]]] = [
        ("RSS per process", "MB", {n: [s["rss_mb"][n] for s in samples] for n in samples[0]["rss_mb"]}),
        ("open fds", "fds", {n: [s["fds"][n] for s in samples] for n in samples[0]["fds"]}),
        ("asyncio tasks", "tasks", {n: [s["tasks"][n] for s in samples] for n in samples[0]["tasks"]}),
        ("collector caches", "entries", {n: [s["caches"][n] for s in samples] for n in samples[0]["caches"]}),
        ("stream length", "entries", {"stream": [s["stream_length"] for s in samples]}),
        ("Redis used memory", "MB", {"redis": [s["redis_mb"] for s in samples]}),
        ("InfluxDB series", "series", {"series": [s["series"] for s in samples],
                                       "bound (entities + churn)": [s["series_bound"] for s in samples]}),
        ("spool", "bytes", {"spool": [s["spool_bytes"] for s in samples]}),
    ]
    marks = {"ha_restart": "tab:red", "influx_restart": "tab:purple"}
    for ax, (title, unit, curves) in zip(axes.flat, panels, strict=True):
        for label, ys in curves.items():
            ax.plot(xs, ys, label=label, linewidth=1.2)
        for at, what in report["happenings"]:
            if what in marks:
                ax.axvline(at / 1e6, color=marks[what], alpha=0.25, linewidth=0.8)
        ax.axvspan(xs[-1] / 2, xs[-1], color="0.9", zorder=-1)
        ax.set_title(title)
        ax.set_xlabel("events (millions)")
        ax.set_ylabel(unit)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    options = report["options"]
    verdict = "every trend flat" if report["ok"] else "GROWTH: " + ", ".join(
        v["name"] for v in report["verdicts"] if not v["ok"])
    figure.suptitle(f"HomeIQ soak: {report['events']:,} events at {report['rate_achieved']:,}/s over "
                    f"{options['entities']:,} entities, a change of the home every {options['churn_period_s']:g} s "
                    f"— {verdict}\n(grey: the second half, judged; red: HA restarts; purple: InfluxDB restarts)")
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return True


def summary(report: dict[str, Any]) -> str:
    """The run's numbers and the verdict table, as the .txt beside the picture."""
    trends = [Trend(**v) for v in report["verdicts"]]
    o = report["options"]
    lines = [f"events {report['events']:,} at {report['rate_achieved']:,}/s achieved ({o['rate']:g}/s offered) over "
             f"{o['entities']:,} entities in {report['seconds']:,} s; drained in {report['drain_s']} s",
             f"churn: {json.dumps(report['churn'])}",
             f"points in InfluxDB: {report['points']:,}; drops and losses: {json.dumps(report['dropped']) or 'none'}",
             *delivery_lines(report.get("delivery")),
             "drained: " + json.dumps({k: report["drained"][k] for k in ("rss_mb", "stream_length", "redis_mb",
                                                                          "series", "series_bound")}),
             f"limit: memory {o['limit_pct']:g} %/M events over the second half (floor {o['floor_mb']:g} MB), "
             f"counts < 1 over it (floor {o['floor_count']:g}; stream {o.get('floor_entries', 0):g} entries), "
             "series and capped caches <= their bound",
             "", table(trends), "", "verdict: " + ("PASS" if report["ok"] else "FAIL")]
    return "\n".join(lines)


def delivery_lines(delivery: dict[str, Any] | None) -> list[str]:
    """The event-by-event check, as the summary says it."""
    if delivery is None:
        return []
    d = delivery
    return [f"state changes: {d['states_fired']:,} fired, {d['state_points']:,} points of state; "
            f"{d['states_missing']:,} missing ({d['entities_short']} entities short)",
            f"service calls: {d['calls_fired']:,} fired; not in InfluxDB: {d['calls_missing_unsubscribed']:,} fired "
            f"while no collector was subscribed, {d['calls_missing_in_flight_at_a_drop']:,} on their way when HA "
            f"dropped the connection (within {IN_FLIGHT_S:g} s), {d['calls_missing_unexplained']:,} unexplained",
            f"connections ended unplanned: {json.dumps(d.get('unplanned_disconnects', {}))}; service calls lost "
            f"in them: {json.dumps(d.get('calls_missing_at_unplanned_disconnects', {}))}",
            "delivery: " + ("every event accounted for" if d["ok"] else "LOST " + json.dumps(
                {"short": d["short"], "unexplained": d["unexplained"],
                 "at_unplanned_disconnects": d.get("calls_missing_at_unplanned_disconnects", {})}))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Options()
    parser.add_argument("--events", type=int, default=defaults.events)
    parser.add_argument("--rate", type=float, default=defaults.rate, help="events/s")
    parser.add_argument("--entities", type=int, default=defaults.entities)
    parser.add_argument("--churn-period-s", type=float, default=defaults.churn_period_s)
    parser.add_argument("--reconnect-every-s", type=float, default=defaults.reconnect_every_s)
    parser.add_argument("--ha-restart-every-s", type=float, default=defaults.ha_restart_every_s)
    parser.add_argument("--influx-restart-every-s", type=float, default=0.0,
                        help="0: a home's day (50 events/s) compressed by rate/50")
    parser.add_argument("--other-share", type=float, default=defaults.other_share,
                        help="share of the events that are service calls (no state)")
    parser.add_argument("--recorder-keep-s", type=float, default=defaults.recorder_keep_s,
                        help="ha-sim's recorder keeps this much history (HA's purge)")
    parser.add_argument("--sample-s", type=float, default=defaults.sample_s)
    parser.add_argument("--faults-until", type=float, default=defaults.faults_until,
                        help="HA and InfluxDB restarts until this share of the events (1: the whole run)")
    parser.add_argument("--limit-pct", type=float, default=defaults.limit_pct)
    parser.add_argument("--floor-mb", type=float, default=defaults.floor_mb)
    parser.add_argument("--floor-count", type=float, default=defaults.floor_count)
    parser.add_argument("--floor-entries", type=float, default=defaults.floor_entries,
                        help="the stream's length may grow this many entries over the second half whatever the "
                             "slope (default: what one save of the collector's resume point brings at the rate)")
    parser.add_argument("--out", type=Path, default=None, help="write <out>.txt, <out>.json, <out>.png")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the run's logs and data here")
    parser.add_argument("--rejudge", type=Path, default=None, help="judge a run's <out>.json again, not run")
    args = parser.parse_args()
    options = Options(**{k: v for k, v in vars(args).items() if k not in ("out", "rejudge", "workdir")})
    if args.rejudge is not None:
        report = json.loads(args.rejudge.read_text())
        judged = Options(**{**report["options"], **{k: v for k, v in vars(args).items() if k in JUDGING}})
        trends = verdicts(report["samples"], judged.limit_pct, judged.floor_mb, judged.floor_count,
                          judged.stream_floor())
        report["options"].update(limit_pct=judged.limit_pct, floor_mb=judged.floor_mb,
                                 floor_count=judged.floor_count, floor_entries=judged.stream_floor())
        report["verdicts"] = [asdict(t) for t in trends]
        report["ok"] = all(t.ok for t in trends) and report.get("delivery", {}).get("ok", True)
    else:
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # stopped: every process it started stops too
        if args.workdir is not None:
            if args.workdir.exists() and any(args.workdir.iterdir()):  # its Redis and InfluxDB would hold a run's data
                parser.error(f"--workdir {args.workdir} is not empty: a soak starts from nothing")
            args.workdir.mkdir(parents=True, exist_ok=True)
            report = asyncio.run(soak(options, args.workdir))
        else:
            with tempfile.TemporaryDirectory(prefix="homeiq-soak-") as tmp:
                report = asyncio.run(soak(options, Path(tmp)))
    text = summary(report)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".txt").write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
        if not picture(report, args.out.with_suffix(".png")):
            print("no picture: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
