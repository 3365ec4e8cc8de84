"""`./scripts/start`'s runner (`python -m homeiq.local`) as a new user runs it: its own Redis and InfluxDB in the
data directory, ha-sim as the source; every event reaches InfluxDB and Ctrl-C stops everything cleanly. By default
the collector, the writer and the replayer share one process (`all-in-one run`); HOMEIQ_PROCESSES=per-service runs
each in its own."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from homeiq.local.processes import scrape
from homeiq.local.services import InfluxServer, free_port
from tests.test_stack import wait_until

EVENTS = 600


def local_env(tmp_path: Path) -> tuple[dict[str, str], dict[str, int]]:
    """What a new user's shell would pass, with free ports of our own."""
    ports = {name: free_port() for name in ("HOMEIQ_REDIS_PORT", "HOMEIQ_INFLUXDB_PORT", "HA_SIM_PORT",
                                            "HOMEIQ_COLLECTOR_METRICS_PORT", "HOMEIQ_WRITER_METRICS_PORT",
                                            "HOMEIQ_REPLAYER_METRICS_PORT")}
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "INFLUXDB_URL", "HA_URL")}
    env.update({key: str(port) for key, port in ports.items()}, HOMEIQ_DATA_DIR=str(tmp_path / "data"),
               HA_SIM_ENTITIES="100", HA_SIM_RATE="200", HA_SIM_EVENTS=str(EVENTS), LOG_FORMAT="json")
    return env, ports


def children_of(pid: int) -> dict[int, str]:
    """The live child processes of `pid`, by pid, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    return found


@pytest.mark.parametrize(("processes", "children"), [(None, {"all-in-one"}),
                                                      ("per-service", {"collector", "writer", "replayer"})])
def test_the_local_runner_writes_every_event_and_stops_cleanly(tmp_path: Path, processes: str | None,
                                                               children: set[str]) -> None:
    env, ports = local_env(tmp_path)
    if processes:
        env["HOMEIQ_PROCESSES"] = processes
    log_path = tmp_path / "local.log"
    with log_path.open("wb") as log:
        local = subprocess.Popen([sys.executable, "-m", "homeiq.local"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            influx = InfluxServer(tmp_path / "unused", ports["HOMEIQ_INFLUXDB_PORT"])

            def all_written() -> int:
                assert local.poll() is None, log_path.read_text()
                with contextlib.suppress(OSError):  # influxd not up yet
                    count = influx.count("home_assistant_events")
                    return count if count >= EVENTS else 0
                return 0

            assert wait_until(all_written, 120, f"{EVENTS} points in InfluxDB") == EVENTS, log_path.read_text()
            writer_metrics = f"http://127.0.0.1:{ports['HOMEIQ_WRITER_METRICS_PORT']}/metrics"
            assert scrape(writer_metrics, "homeiq_points_written_total") == EVENTS
        finally:
            local.send_signal(signal.SIGINT)
            code = local.wait(60)
    logs = log_path.read_text()
    assert code == 0, logs
    started = {line.split('"child": "')[1].split('"')[0] for line in logs.splitlines() if "process_started" in line}
    assert started == children
    assert '"clean": true' in logs


def test_a_metrics_port_in_use_is_named_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {**os.environ, "HOMEIQ_DATA_DIR": str(tmp_path / "data"), "HOMEIQ_REDIS_PORT": str(free_port()),
               "HOMEIQ_WRITER_METRICS_PORT": str(taken.getsockname()[1])}
        done = subprocess.run([sys.executable, "-m", "homeiq.local"], env=env, capture_output=True, text=True,
                              timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "HOMEIQ_WRITER_METRICS_PORT" in done.stderr and "in use" in done.stderr
    assert not (tmp_path / "data" / "redis").exists()  # checked before Redis started


def test_a_child_that_dies_stops_everything_and_is_named(tmp_path: Path) -> None:
    """The runner watches its children (a look a second: an idle home pays a wakeup for each): one killed, the
    runner stops Redis, InfluxDB and ha-sim, names it and exits 1."""
    env, _ports = local_env(tmp_path)
    log_path = tmp_path / "local.log"
    with log_path.open("wb") as log:
        local = subprocess.Popen([sys.executable, "-m", "homeiq.local"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            ours = wait_until(lambda: [pid for pid, cmd in children_of(local.pid).items() if "all-in-one" in cmd],
                              60, "the all-in-one process")
            others = set(children_of(local.pid)) - set(ours)
            assert len(others) == 3  # redis-server, influxd, ha-sim
            os.kill(ours[0], signal.SIGKILL)
            code = local.wait(30)
        finally:
            if local.poll() is None:
                local.kill()
                local.wait()
    logs = log_path.read_text()
    assert code == 1, logs
    assert '"event": "process_exited", "child": "all-in-one"' in logs, logs
    assert not [pid for pid in others if Path(f"/proc/{pid}").exists()]  # Redis, InfluxDB and ha-sim stopped too
