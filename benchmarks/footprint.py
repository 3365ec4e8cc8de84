"""What a home pays for the pipeline: CPU (share of one core) and resident memory of every process, run as
`./scripts/start` runs it (`python -m homeiq.local`: Redis, InfluxDB 1.x, ha-sim, and the collector, one writer and
the replayer: in one process, `all-in-one run`, or with `--processes per-service` each in its own), at a home's
rate; then idle (HA connected, no events). Latency from `time_fired` to the ack (the writer's histogram) over the
same window. Not a test: numbers on a shared machine vary; CPU is CPU time from /proc (what the process used, not
wall time), so a busy neighbour inflates it less than it inflates latency.

    python benchmarks/footprint.py --rate 50 --entities 2000 --seconds 240 --idle-seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_bench import quantile
from writer_bench import cpu_s

from homeiq.local.services import free_port

OURS = ("all-in-one", "collector", "writer", "replayer", "local")
LATENCY = "homeiq_event_age_at_ack_seconds"
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def children(pid: int) -> list[int]:
    """Direct children of a process (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return found


def role(pid: int) -> str:
    """Which part of the pipeline a process is, from its command line."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    words = [Path(word).name for a in argv for word in a.decode().split()]  # redis-server rewrites its title
    for name in ("redis-server", "influxd", "ha-sim", "all-in-one", "collector", "writer", "replayer"):
        if name in words:
            return name
    return "local" if "homeiq.local" in words else words[0]


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB / 1024


def pss_mb(pid: int) -> float:
    """Proportional set size: pages shared with other processes (libraries mapped by each) counted by share."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def histogram(port: int) -> dict[float, float]:
    import urllib.request  # noqa: PLC0415

    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{LATENCY}_bucket":
                le = sample.labels["le"]
                buckets[float("inf") if le == "+Inf" else float(le)] = float(sample.value)
    return buckets


def window(pids: dict[str, int], seconds: float, writer_port: int | None) -> dict[str, Any]:
    """CPU share of one core and mean/peak RSS per process over `seconds`; latency quantiles if a port is given."""
    cpu0 = {name: cpu_s(pid) for name, pid in pids.items()}
    hist0 = histogram(writer_port) if writer_port else {}
    rss: dict[str, list[float]] = {name: [] for name in pids}
    pss: dict[str, list[float]] = {name: [] for name in pids}
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        for name, pid in pids.items():
            rss[name].append(rss_mb(pid))
            pss[name].append(pss_mb(pid))
        time.sleep(min(1.0, seconds - elapsed))
    elapsed = time.monotonic() - started
    rows = {name: {"cpu_pct": 100 * (cpu_s(pid) - cpu0[name]) / elapsed, "rss_mb": sum(rss[name]) / len(rss[name]),
                   "rss_peak_mb": max(rss[name]), "pss_mb": sum(pss[name]) / len(pss[name])}
            for name, pid in pids.items()}
    out: dict[str, Any] = {"seconds": round(elapsed, 1), "processes": rows}
    if writer_port:
        hist1 = histogram(writer_port)
        out["acked"] = hist1.get(float("inf"), 0.0) - hist0.get(float("inf"), 0.0)
        out["latency_s"] = {f"p{int(q * 100)}": quantile(hist0, hist1, q) for q in (0.5, 0.9, 0.99)}
        # The target itself, read off its bucket (a quantile is interpolated within one).
        out["within_250ms"] = (hist1.get(0.25, 0.0) - hist0.get(0.25, 0.0)) / max(out["acked"], 1.0)
    return out


def main(rate: float, entities: int, seconds: float, idle_s: float, warmup_s: float,
         processes: str) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="homeiq-footprint-"))
    ports = {"HOMEIQ_REDIS_PORT": free_port(), "HOMEIQ_INFLUXDB_PORT": free_port(), "HA_SIM_PORT": free_port(),
             "HOMEIQ_COLLECTOR_METRICS_PORT": free_port(), "HOMEIQ_WRITER_METRICS_PORT": free_port(),
             "HOMEIQ_REPLAYER_METRICS_PORT": free_port()}
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "HOMEIQ_DATA_DIR": str(workdir),
           "HA_SIM_ENTITIES": str(entities), "HA_SIM_RATE": str(rate),
           "HA_SIM_EVENTS": str(int(rate * (warmup_s + seconds + 5))), "LOG_LEVEL": "WARNING",
           "HOMEIQ_PROCESSES": processes}
    for name in ("REDIS_URL", "INFLUXDB_URL", "HA_URL"):
        env.pop(name, None)
    log = (workdir / "local.log").open("wb")
    local = subprocess.Popen([sys.executable, "-m", "homeiq.local"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        pids: dict[str, int] = {}
        expected = 5 if processes == "one" else 7  # local, redis-server, influxd, ha-sim and ours
        while time.monotonic() < deadline and len(pids) < expected:
            if local.poll() is not None:
                raise SystemExit(f"homeiq.local exited: see {workdir / 'local.log'}")
            pids = {"local": local.pid} | {role(pid): pid for pid in children(local.pid)}
            time.sleep(0.5)
        writer_port = ports["HOMEIQ_WRITER_METRICS_PORT"]
        while time.monotonic() < deadline:
            try:
                histogram(writer_port)
                break
            except OSError:
                time.sleep(0.5)
        time.sleep(warmup_s)
        print(f"footprint: measuring {seconds:g} s at {rate:g} events/s over {entities} entities", file=sys.stderr)
        busy = window(pids, seconds, writer_port)
        # ha-sim stops firing after its event count: wait for it, then measure the idle pipeline.
        time.sleep(10)
        print(f"footprint: measuring {idle_s:g} s idle", file=sys.stderr)
        idle = window(pids, idle_s, None)
    finally:
        local.send_signal(signal.SIGINT)
        try:
            local.wait(60)
        except subprocess.TimeoutExpired:
            local.kill()
        log.close()
    return {"rate": rate, "entities": entities, "processes": processes, "busy": busy, "idle": idle}


def table(report: dict[str, Any]) -> str:
    busy, idle = report["busy"], report["idle"]
    order = [name for name in (*OURS, "redis-server", "influxd", "ha-sim") if name in busy["processes"]]
    ours = [name for name in OURS if name in busy["processes"]]
    lines = [f"{'process':<14}{'CPU % (busy)':>14}{'RSS MB':>9}{'peak':>7}{'PSS MB':>9}{'CPU % (idle)':>14}"]
    for name in order:
        b, i = busy["processes"][name], idle["processes"][name]
        lines.append(f"{name:<14}{b['cpu_pct']:>14.2f}{b['rss_mb']:>9.1f}{b['rss_peak_mb']:>7.1f}{b['pss_mb']:>9.1f}{i['cpu_pct']:>14.2f}")
    ours_busy = sum(busy["processes"][n]["cpu_pct"] for n in ours)
    ours_idle = sum(idle["processes"][n]["cpu_pct"] for n in ours)
    ours_rss = sum(busy["processes"][n]["rss_mb"] for n in ours)
    ours_pss = sum(busy["processes"][n]["pss_mb"] for n in ours)
    lines.append(f"{'ours':<14}{ours_busy:>14.2f}{ours_rss:>9.1f}{'':>7}{ours_pss:>9.1f}{ours_idle:>14.2f}")
    lat = busy["latency_s"]
    lines.append(f"{report['rate']:g} events/s over {report['entities']} entities, {busy['seconds']} s: "
                 f"{busy['acked']:.0f} acked; latency p50 {_ms(lat['p50'])}, p90 {_ms(lat['p90'])}, "
                 f"p99 {_ms(lat['p99'])}, {100 * busy['within_250ms']:.2f} % within 250 ms; "
                 f"idle {idle['seconds']} s; services: {report['processes']} process"
                 f"{'' if report['processes'] == 'one' else ' each'}")
    return "\n".join(lines)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="state changes per second")
    parser.add_argument("--entities", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=240.0, help="the measured window at the rate")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="the measured idle window")
    parser.add_argument("--warmup-seconds", type=float, default=20.0)
    parser.add_argument("--processes", choices=("one", "per-service"), default="one",
                        help="the collector, writer and replayer in one process (./scripts/start's default) or each "
                        "in its own")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = main(args.rate, args.entities, args.seconds, args.idle_seconds, args.warmup_seconds, args.processes)
    print(json.dumps(result, indent=2) if args.json else table(result))
