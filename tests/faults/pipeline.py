"""The whole pipeline as real processes, for fault injection: private redis-server (AOF) and influxd, ha-sim in
this event loop, a collector, two writers and a replayer as console scripts, and the ways to hurt each."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from homeiq.ha_sim.hub import Hub
from homeiq.ha_sim.runner import SimServer
from homeiq.local.processes import ScriptProcess
from homeiq.local.services import InfluxServer, RedisServer, free_port
from homeiq.local.waiting import wait_for
from homeiq.shared import acl
from homeiq.shared.packing import events_or_none
from homeiq.shared.stream import DEFAULT_NAMES, fetch_entries
from tests.acl_harness import AclUsers, acl_on
from tests.faults.truth import Row, Verdict, compare, record

TOKEN = "fault-suite-token-5be1"
DATABASE = "home_assistant_events"
# Short enough for a suite that must finish in minutes, long enough to be realistic.
FAST_ENV = {"HA_PING_INTERVAL_S": "5", "HA_PING_TIMEOUT_S": "5",
            "HA_BACKOFF_BASE_S": "0.2", "HA_BACKOFF_MAX_S": "2", "REPLAYER_INTERVAL_S": "1",
            "REPLAYER_MIN_IDLE_MS": "5000", "WRITER_BLOCK_MS": "500", "INFLUXDB_TIMEOUT_S": "5",
            "LOG_FORMAT": "json", "METRICS_HOST": "127.0.0.1"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample a process serves on /metrics now."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): float(sample.value)
            for family in text_string_to_metric_families(text) for sample in family.samples}


class FaultPipeline:
    """Start with `async with FaultPipeline(...) as pipeline`; every process's counters survive its restarts
    (they are read before each stop) in `totals`."""

    def __init__(self, workdir: Path, entities: int = 100, writers: int = 2, env: dict[str, str] | None = None,
                 influx_port: int | None = None, commit_interval_s: float = 5.0, collectors: int = 1) -> None:
        self.workdir = workdir
        self.users = AclUsers(workdir / "acl") if acl_on() else None  # HOMEIQ_REDIS_ACL=1: a user per role
        self.redis = RedisServer(workdir / "redis", None, aclfile=self.users.aclfile if self.users else None,
                                 login=self.users.login if self.users else None)
        self.influx = InfluxServer(workdir / "influxdb", None)
        self.hub = Hub.create(entities, TOKEN, commit_interval_s=commit_interval_s)  # HA's recorder: 5 s by default
        self.sim_port = free_port()
        self.sim = SimServer(self.hub, port=self.sim_port)
        self.writer_names = [f"writer-{n}" for n in range(writers)]
        # Two collectors on one HA (as on two machines): each its own spool, the broker adding each event once.
        self.collector_names = ["collector"] if collectors == 1 else [f"collector-{n}" for n in "ab"[:collectors]]
        self._extra_env = env or {}
        self._influx_port = influx_port  # a proxy in front of influxd, when a scenario needs one
        self.processes: dict[str, ScriptProcess] = {}
        self.totals: defaultdict[tuple[str, str, frozenset[tuple[str, str]]], float] = defaultdict(float)
        self.client: aioredis.Redis | None = None
        self._starts: Counter[str] = Counter()

    def redis_url(self, role: str) -> str:
        """Redis's URL for `role` (collector, writer, replayer, operator: a `replayer` command; admin: the test)."""
        if self.users is None:
            return self.redis.url
        return self.users.url(self.redis, next((r for r in acl.ROLES if r == role), "operator"))

    @property
    def env(self) -> dict[str, str]:
        """What every process of this pipeline shares (Redis as the operator: `replayer` commands)."""
        influx_url = f"http://127.0.0.1:{self._influx_port or self.influx.port}"
        return {**FAST_ENV, "REDIS_URL": self.redis_url("operator"), "INFLUXDB_URL": influx_url, "INFLUXDB_API": "v1",
                "INFLUXDB_BUCKET": DATABASE, "HA_TOKEN": TOKEN, "HA_URL": f"ws://127.0.0.1:{self.sim_port}/api/websocket",
                "COLLECTOR_SPOOL_DIR": str(self.workdir / "spool"), **self._extra_env}

    async def __aenter__(self) -> FaultPipeline:
        self.redis.start()
        self.influx.start()
        self.influx.create_database(DATABASE)
        await self.sim.start()
        self.client = aioredis.Redis.from_url(self.redis_url("admin"))
        for name in self.writer_names:
            self.start("writer", name, {"WRITER_CONSUMER": name})
        self.start("replayer")
        for name in self.collector_names:
            self.start("collector", name)
        await wait_for(lambda: self.hub.subscribed == len(self.collector_names), 30,
                       "the collectors to subscribe (see collector*.log)")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for name in list(self.processes):
            await self.stop(name)
        refused: Any = []
        if self.client is not None:
            if self.users is not None and exc[0] is None:
                refused = await self.client.execute_command("ACL", "LOG")  # type: ignore[no-untyped-call]
            await self.client.aclose()
        await self.sim.stop()
        self.influx.stop()
        self.redis.stop()
        assert not refused, f"Redis refused a role something it does (its ACL LOG): {refused}"

    # -- processes -------------------------------------------------------------------------------------------

    def start(self, script: str, name: str | None = None, env: dict[str, str] | None = None) -> ScriptProcess:
        """Start (or start again) `script run` as `name`; its log goes to `<name>-<n>.log`."""
        name = name or script
        self._starts[name] += 1
        log_path = self.workdir / f"{name}-{self._starts[name]}.log"
        own = {}
        if script == "collector" and len(self.collector_names) > 1:
            own = {"COLLECTOR_SPOOL_DIR": str(self.workdir / f"spool-{name}"), "COLLECTOR_DEDUP_WINDOW_S": "3600"}
        process = ScriptProcess(script, {**self.env, "REDIS_URL": self.redis_url(script), **own, **(env or {})},
                                log_path, name)
        self.processes[name] = process
        return process

    def _remember(self, name: str, samples: Samples) -> None:
        for (metric, labels), value in samples.items():
            if metric.endswith("_total"):
                self.totals[(name.split("-", maxsplit=1)[0], metric, labels)] += value

    async def stop(self, name: str) -> int:
        """SIGTERM `name` and wait (ha-sim goes on serving meanwhile, as HA would); returns its exit code. Its
        counters are those its stop line logs (what it counted while stopping included), else its last scrape."""
        process = self.processes.pop(name)
        last = _safe_scrape(process)
        code = await asyncio.to_thread(process.terminate)
        self._remember(name, _stop_counters(process) or last)
        return code

    def kill(self, name: str) -> None:
        """SIGKILL `name`, as a crash would; counters since its last scrape are lost with it."""
        process = self.processes.pop(name)
        self._remember(name, _safe_scrape(process))
        process.kill()

    def total(self, role: str, metric: str, **labels: str) -> float:
        """A counter summed over every run of every process of `role` (collector, writer, replayer)."""
        wanted = frozenset(labels.items())
        live = sum(value for name, process in self.processes.items() if name.split("-")[0] == role
                   for (sample, sample_labels), value in _safe_scrape(process).items()
                   if sample == metric and wanted <= sample_labels)
        return live + sum(value for (r, sample, sample_labels), value in self.totals.items()
                          if r == role and sample == metric and wanted <= sample_labels)

    def by_reason(self, role: str, metric: str) -> dict[str, float]:
        """A counter's non-zero values by their `reason` label, over every run of `role`."""
        reasons: defaultdict[str, float] = defaultdict(float)
        for name, process in self.processes.items():
            if name.split("-")[0] == role:
                for (sample, labels), value in _safe_scrape(process).items():
                    if sample == metric:
                        reasons[dict(labels).get("reason", "")] += value
        for (r, sample, labels), value in self.totals.items():
            if r == role and sample == metric:
                reasons[dict(labels).get("reason", "")] += value
        return {reason: value for reason, value in reasons.items() if value}

    def gauge(self, name: str, metric: str) -> float:
        """A gauge of one running process now (0 when absent)."""
        return sum(value for (sample, _), value in _safe_scrape(self.processes[name]).items() if sample == metric)

    def readiness(self, name: str) -> dict[str, Any]:
        """`/readyz` of a running process: `{"status": …, "reason": …}`."""
        url = f"http://127.0.0.1:{self.processes[name].metrics_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:  # 503: not ready, with its reason
            return dict(json.loads(exc.read()))

    # -- waiting ---------------------------------------------------------------------------------------------

    async def stream_state(self) -> dict[str, Any]:
        """The group as XINFO tells it: delivered-up-to vs the last id added, pending, entries added, and the
        entries not acked yet (pending or not delivered)."""
        assert self.client is not None
        stream: Any = await self.client.xinfo_stream(DEFAULT_NAMES.stream)
        groups: Any = await self.client.xinfo_groups(DEFAULT_NAMES.stream)
        group = next(g for g in groups if g["name"] == DEFAULT_NAMES.group.encode())
        undelivered: Any = await self.client.xrange(DEFAULT_NAMES.stream, b"(" + group["last-delivered-id"], b"+")
        return {"behind": group["last-delivered-id"] != stream["last-generated-id"], "pending": int(group["pending"]),
                "added": int(stream["entries-added"]), "unacked": int(group["pending"]) + len(undelivered)}

    async def unacked_events(self) -> int:
        """The events not acked yet (pending or not delivered), however many an entry holds."""
        assert self.client is not None
        groups: Any = await self.client.xinfo_groups(DEFAULT_NAMES.stream)
        group = next(g for g in groups if g["name"] == DEFAULT_NAMES.group.encode())
        rows: Any = await self.client.xpending_range(DEFAULT_NAMES.stream, DEFAULT_NAMES.group, "-", "+", 1_000_000)
        pending = await fetch_entries(self.client, DEFAULT_NAMES, [row["message_id"] for row in rows])
        undelivered: Any = await self.client.xrange(DEFAULT_NAMES.stream, b"(" + group["last-delivered-id"], b"+")
        return sum(len(events_or_none(fields)) for fields in [f for _, f in pending] + [f for _, f in undelivered])

    async def drained(self, timeout_s: float = 60.0) -> float:
        """Wait until everything the collector took is written or dead-lettered: no gap open, nothing buffered
        or spooled, nothing undelivered or pending, and the counts still for a second. Returns the seconds."""
        started = time.monotonic()
        last: tuple[int, int] | None = None
        steady = 0

        async def settled() -> bool:
            nonlocal last, steady
            try:
                state = await self.stream_state()
            except Exception:  # Redis down, or the stream not there yet: not drained
                return False
            busy = any(self.gauge(name, metric) for name in self.collector_names if name in self.processes
                       for metric in
                       ("homeiq_backfill_gap_open", "homeiq_collector_buffered_events", "homeiq_spool_bytes"))
            if busy or state["behind"] or state["pending"]:
                steady = 0
                return False
            snapshot = (state["added"], await asyncio.to_thread(self.influx.count, DATABASE))
            steady = steady + 1 if snapshot == last else 0
            last = snapshot
            return steady >= 2

        await wait_for(settled, timeout_s, "the pipeline to drain", interval_s=0.5)
        return time.monotonic() - started

    def dropped(self) -> dict[str, float]:
        """Every counted drop and loss of every process, by reason."""
        return {**self.by_reason("collector", "homeiq_events_dropped_total"),
                **{f"lost_{k}": v for role in ("writer", "replayer")
                   for k, v in self.by_reason(role, "homeiq_entries_lost_total").items()}}

    async def verdict(self, scenario: str, fault_ended: float, explained: str = "",
                      ignore: frozenset[str] = frozenset(), drain_timeout_s: float = 60.0) -> tuple[Verdict, Row]:
        """Drain, compare InfluxDB with the ground truth, and add the scenario's row to the report;
        the recovery time counts from `fault_ended` (a `time.monotonic()`)."""
        await self.drained(drain_timeout_s)
        recovery_s = time.monotonic() - fault_ended
        verdict = compare(self.hub, await self.points(), await self.dead_letters(), ignore)
        return verdict, record(scenario, verdict, self.dropped(), recovery_s, explained)

    async def points(self) -> list[dict[str, Any]]:
        """Every point InfluxDB holds."""
        return await asyncio.to_thread(self.influx.points, DATABASE)

    async def dead_letters(self) -> list[dict[bytes, bytes]]:
        """Every entry of the dead-letter stream (fields as Redis holds them)."""
        assert self.client is not None
        entries: Any = await self.client.xrange(DEFAULT_NAMES.dead)
        return [fields for _, fields in entries]


def _stop_counters(process: ScriptProcess) -> Samples:
    """The counters a process logged in its `*_stopped` line (empty when it logged none)."""
    for line in reversed(process.logs().splitlines()):
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("event", "").endswith("_stopped") and "counters" in entry:
                return {_parse_sample(key): float(value) for key, value in entry["counters"].items()}
    return {}


def _parse_sample(key: str) -> tuple[str, frozenset[tuple[str, str]]]:
    name, _, labels = key.partition("{")
    pairs = (pair.split("=", 1) for pair in labels.rstrip("}").split(",") if pair)
    return name, frozenset((k, v.strip('"')) for k, v in pairs)


def _safe_scrape(process: ScriptProcess) -> Samples:
    try:
        return scrape(process.metrics_port)
    except OSError:
        return {}


@contextlib.asynccontextmanager
async def steady_traffic(hub: Hub, rate_per_s: float) -> AsyncIterator[asyncio.Event]:
    """State changes at `rate_per_s` in the background until the block ends (or the event is set)."""
    stop = asyncio.Event()
    task = asyncio.create_task(hub.emit(None, rate_per_s, stop))
    try:
        yield stop
    finally:
        stop.set()
        await task


@contextlib.asynccontextmanager
async def service_calls(hub: Hub, every_s: float, custom: str | None = None
                        ) -> AsyncIterator[dict[str, tuple[float, bool]]]:
    """`call_service` events (no state, so no recorder history; or `custom` events of that type, whose data
    repeats) every `every_s` in the background; yields context id → when it was fired (`time.time()`) and whether a
    subscriber was there to be sent it."""
    fired: dict[str, tuple[float, bool]] = {}
    stop = asyncio.Event()

    async def fire() -> None:
        n = 0
        while not stop.is_set():
            context_id, stamp = (hub.fire_event(custom, {"n": n % 5, "event_type": "call_service"}) if custom
                                 else hub.fire_service_call(n))
            fired[context_id] = stamp, bool(hub.subscribed)
            n += 1
            await asyncio.sleep(every_s)

    task = asyncio.create_task(fire())
    try:
        yield fired
    finally:
        stop.set()
        await task
