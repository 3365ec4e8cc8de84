"""The benchmarks are not tests, but they must keep running: each at a tiny size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_the_audit_benchmark_runs_and_finds_the_loaded_history_complete() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "audit_bench.py"), "--entities", "20",
                             "--days", "1", "--per-day", "24"], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["states"] == report["points"] == 20 * 24
    assert report["missing"] == report["extra"] == report["wrong"] == 0
