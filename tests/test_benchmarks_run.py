"""The benchmarks are not tests, but they must keep running: each at a tiny size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# The benchmarks at a tiny size: ~15 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

ROOT = Path(__file__).parent.parent


def test_the_audit_benchmark_runs_and_finds_the_loaded_history_complete() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "audit_bench.py"), "--entities", "20",
                             "--days", "1", "--per-day", "24"], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["states"] == report["points"] == 20 * 24
    assert report["missing"] == report["extra"] == report["wrong"] == 0


def test_the_pipeline_benchmark_runs_and_loses_nothing() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pipeline_bench.py"), "--rates", "200,400",
                             "--step-seconds", "2", "--backlog", "1000", "--entities", "50", "--ceiling-points",
                             "5000"], capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["point_by_point"]["lost"] == report["point_by_point"]["duplicated"] == 0
    # Stepping stops at the first step not sustained: a 2-s step on a busy machine may be the first.
    assert [s["offered_per_s"] for s in report["steps"]] in ([200], [200, 400])
    assert report["backlog_drain"]["backlog"] == 1000 and report["influxd_ceiling_points_per_s"] > 0
    assert set(report["steps"][0]["cpu_us_per_event"]) >= {"collector", "writer-0", "redis", "influxd", "ha-sim"}


def test_the_collector_benchmark_runs_beside_its_raw_xadd_baseline() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "collector_bench.py"), "--events", "3000",
                             "--entities", "50"], capture_output=True, text=True, timeout=80, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["events"] == 3000
    assert report["collector_events_per_s"] > 0 and report["raw_pipelined_xadd_events_per_s"] > 0


def test_the_writer_benchmark_runs_beside_influxds_ceiling() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "writer_bench.py"), "--entries", "5000",
                             "--rounds", "1"], capture_output=True, text=True, timeout=80, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["writer_cpu_us_per_point"] > 0 and len(report["share_per_round"]) == 1


def test_the_entry_packing_benchmark_reads_every_entry_it_packed() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "entry_packing.py"), "--events", "1000",
                             "--packings", "1,8,8z"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    # Bursts of 100 events: 100 entries of one, 13 of up to eight.
    assert [(row["events_per_entry"], row["compressed"], row["entries"]) for row in rows] == [
        (1, False, 1000), (8, False, 130), (8, True, 130)]
    plain, packed, compressed = rows
    assert plain["bytes_per_event"] == packed["bytes_per_event"] > 3 * compressed["bytes_per_event"]
    assert plain["codec_us_per_event"] == 0 < compressed["codec_us_per_event"]


def test_the_entry_packing_benchmark_names_a_wrong_packing() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "entry_packing.py"), "--events", "10",
                             "--packings", "1,z8"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "--packings" in result.stderr and "'1,z8'" in result.stderr
