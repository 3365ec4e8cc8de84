"""The pipeline's console scripts as child processes (the local runner, the pipeline check, the tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import IO

from prometheus_client.parser import text_string_to_metric_families

from homeiq.local.services import free_port


class ScriptProcess:
    """`<script> run` with `env` added to ours; output to `log_path`, or to our stderr when None."""

    def __init__(self, script: str, env: dict[str, str], log_path: Path | None = None, name: str | None = None,
                 metrics_port: int | None = None) -> None:
        self.name = name or script
        self.metrics_port = metrics_port or free_port()
        self.log_path = log_path
        full_env = {**os.environ, **env, "METRICS_PORT": str(self.metrics_port)}
        self._log: IO[bytes] | None = log_path.open("wb") if log_path else None
        executable = Path(sys.executable).parent / script
        self.process = subprocess.Popen([str(executable), "run"], env=full_env, stdout=self._log or sys.stderr,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def metrics_url(self) -> str:
        """Where its /metrics is served."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def scrape(self, name: str, **labels: str) -> float:
        """The value of sample `name` (with `labels`) on its /metrics now (0 when absent)."""
        return scrape(self.metrics_url, name, **labels)

    def poll(self) -> int | None:
        """The exit code, or None while running."""
        return self.process.poll()

    def terminate(self, timeout_s: float = 20.0) -> int:
        """SIGTERM and wait (SIGKILL after `timeout_s`); returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            self._close_log()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.process.kill()
        self.process.wait()
        self._close_log()

    def logs(self) -> str:
        """Everything the process wrote so far (empty when it writes to our stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def scrape(metrics_url: str, name: str, **labels: str) -> float:
    """The value of sample `name` (with `labels`) on the /metrics at `metrics_url` now (0 when absent)."""
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:  # noqa: S310 - loopback
        text = resp.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0
