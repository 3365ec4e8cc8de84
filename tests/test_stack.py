"""The compose stack, for real: compose.yaml with two writers on local images built from Debian packages
(scripts/stack-images; no image registry is needed), ha-sim as Home Assistant, InfluxDB 1.6 through the v1 API.

Every service turns healthy, the writers' InfluxDB user can write and read its database and nothing else, Prometheus
finds both writers through its DNS discovery, every event ha-sim fires is one point in InfluxDB, and a writer stopped
while events flow loses nothing. Traffic goes only to the containers this test started (a project of its own, on
loopback ports of its own); they, their network and volumes are removed at the end. The images stay, tagged by a
hash of their inputs, so the next run builds nothing.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from homeiq.local.services import free_port

ROOT = Path(__file__).resolve().parents[1]
EVENTS, RATE = 4000, 100
SERVICES = ["redis", "influxdb", "influxdb-setup", "ha-sim", "collector", "writer", "replayer", "prometheus",
            "alertmanager"]


def engine_problem() -> str | None:
    """Why the stack cannot run here (None when a Docker engine answers and docker-compose is installed)."""
    if shutil.which("docker-compose") is None or shutil.which("docker") is None:
        return "docker and docker-compose are not installed (scripts/bootstrap --test installs them)"
    done = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"no Docker engine answers (docker info: {done.stderr.strip()[-200:]})"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


class Stack:
    """One docker-compose project of this test's own."""

    def __init__(self, env: dict[str, str]) -> None:
        self.project = f"homeiq-stacktest-{os.getpid()}"
        # docker-compose v1 gives dockerd 60 s per API call; a vfs-backed dockerd creating ten containers on a
        # busy 2-core machine took longer once (a prometheus container, "Read timed out").
        self.env = {**os.environ, "COMPOSE_HTTP_TIMEOUT": "300", **env}

    def compose(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            ["docker-compose", "-p", self.project, "-f", str(ROOT / "compose.yaml"),
             "-f", str(ROOT / "tests" / "stack" / "compose.test.yaml"), *args],
            cwd=ROOT, env=self.env, capture_output=True, text=True, check=False, timeout=600)
        if check and done.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service).split()

    def inspect(self, container: str) -> dict[str, Any]:
        out = subprocess.run(["docker", "inspect", container], capture_output=True, text=True, check=True).stdout
        state: dict[str, Any] = json.loads(out)[0]["State"]
        return state

    def exec(self, container: str, *command: str) -> str:
        return subprocess.run(["docker", "exec", container, *command], capture_output=True, text=True,
                              check=True).stdout


def wait_until(condition: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.5)
    return value


def http_json(url: str, params: dict[str, str], user: str | None = None, password: str = "") -> Any:
    request = urllib.request.Request(f"{url}?{urllib.parse.urlencode(params)}")
    if user:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    problem = engine_problem()
    if problem:
        pytest.skip(problem)
    built = subprocess.run([str(ROOT / "scripts" / "stack-images")], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr[-3000:]
    images = dict(line.split("=", 1) for line in built.stdout.split())
    ports = {name: str(free_port()) for name in ("INFLUXDB_PORT", "PROMETHEUS_PORT", "ALERTMANAGER_PORT")}
    env = {**images, **ports, "BIND_ADDRESS": "127.0.0.1", "REDIS_MAXMEMORY": "256mb",
           "INFLUXDB_ADMIN_PASSWORD": secrets.token_hex(12), "INFLUXDB_ADMIN_TOKEN": "unused-by-influxdb-1",
           "HA_URL": "ws://ha-sim:8123", "HA_TOKEN": secrets.token_hex(12), "GRAFANA_ADMIN_PASSWORD": "unused",
           "HA_SIM_EVENTS": str(EVENTS), "HA_SIM_RATE": str(RATE)}
    stack = Stack(env)
    try:
        stack.compose("up", "-d", "--no-build", "--scale", "writer=2", *SERVICES)
        yield stack
    finally:
        logs = stack.compose("logs", "--no-color", "--tail", "30", check=False)
        stack.compose("down", "-v", "--remove-orphans", "--timeout", "30", check=False)
        print(logs[-20000:])  # shown by pytest only when a test failed


def influx_points(stack: Stack) -> list[dict[str, Any]]:
    answer = http_json(f"http://127.0.0.1:{stack.env['INFLUXDB_PORT']}/query",
                       {"db": "home_assistant_events", "epoch": "ns",
                        "q": "SELECT entity_id, state_value, source FROM home_assistant_events"},
                       "admin", stack.env["INFLUXDB_ADMIN_PASSWORD"])
    series = ((answer or {}).get("results") or [{}])[0].get("series") or []
    return [dict(zip(s["columns"], row, strict=True)) for s in series for row in s["values"]]


def test_the_stack_turns_healthy_and_writes_every_event_once_while_a_writer_stops(stack: Stack) -> None:
    started = time.monotonic()
    apps = {name: stack.containers(name) for name in SERVICES}
    assert len(apps["writer"]) == 2

    def unhealthy() -> list[str]:
        waiting = []
        for name, containers in apps.items():
            for container in containers:
                state = stack.inspect(container)
                if name == "influxdb-setup":  # a one-shot: done and exited 0
                    ok = state["Status"] == "exited" and state["ExitCode"] == 0
                else:
                    ok = state.get("Health", {}).get("Status") == "healthy"
                if not ok:
                    waiting.append(f"{name}:{state['Status']}/{state.get('Health', {}).get('Status')}")
        return waiting

    try:
        wait_until(lambda: not unhealthy(), 300, "every service healthy")
    except TimeoutError:
        raise AssertionError(f"not healthy after 300 s: {unhealthy()}") from None
    healthy_s = time.monotonic() - started

    # The writers' own user: writes and reads its database, may not administer anything.
    password = stack.exec(apps["writer"][0], "cat", "/run/homeiq/influxdb-password")
    influx = f"http://127.0.0.1:{stack.env['INFLUXDB_PORT']}/query"
    shown = http_json(influx, {"q": "SHOW DATABASES"}, "homeiq_writer", password)
    assert shown["results"][0]["series"][0]["values"] == [["home_assistant_events"]]
    refused = http_json(influx, {"q": "CREATE DATABASE other"}, "homeiq_writer", password)
    assert refused is None  # InfluxDB answers 403: requires admin privilege

    # While ha-sim fires, stop one writer (SIGTERM: it finishes its batch); the other and the replayer carry on.
    sim = apps["ha-sim"][0]
    wait_until(lambda: len(influx_points(stack)) >= EVENTS // 5, 120, "a fifth of the events in InfluxDB")
    subprocess.run(["docker", "stop", "-t", "30", apps["writer"][1]], check=True, capture_output=True)
    assert _read_record(stack, sim) is None, "ha-sim was done before the writer stopped: raise EVENTS"
    assert stack.inspect(apps["writer"][1])["ExitCode"] == 0
    record = wait_until(lambda: _read_record(stack, sim), 120, "ha-sim's record of what it fired")
    expected = {(e["entity_id"], e["time_ns"]): e["state"] for e in map(json.loads, record.splitlines())}
    assert len(expected) == EVENTS

    def live_points() -> dict[tuple[str, int], str] | None:
        live = {(p["entity_id"], p["time"]): p["state_value"] for p in influx_points(stack) if p["source"] == "live"}
        return live if len(live) >= EVENTS else None

    found = wait_until(live_points, 180, f"{EVENTS} live points in InfluxDB")
    assert found == expected  # point for point: none lost, none extra, every state right

    # Prometheus finds both writer replicas through its DNS discovery, as configured for production.
    subprocess.run(["docker", "start", apps["writer"][1]], check=True, capture_output=True)
    prometheus = f"http://127.0.0.1:{stack.env['PROMETHEUS_PORT']}/api/v1/query"

    def writers_up() -> bool:
        answer = http_json(prometheus, {"query": 'up{job="homeiq-writer"} == 1'})
        return bool(answer) and len(answer["data"]["result"]) == 2

    wait_until(writers_up, 120, "Prometheus scraping both writers")
    print(f"stack healthy {healthy_s:.0f} s after `up` returned; all checked after {time.monotonic() - started:.0f} s")


def _read_record(stack: Stack, container: str) -> str | None:
    try:
        return stack.exec(container, "cat", "/var/lib/homeiq/sent.jsonl") or None
    except subprocess.CalledProcessError:
        return None
