"""The compose stack, for real, started as the README says: `scripts/stack-up --try` (local images built from
Debian packages, no image registry; InfluxDB 1.6 through the v1 API; ha-sim as Home Assistant), two writers, and
tests/stack/compose.test.yaml (ha-sim fires a known number of events; a replayer that reclaims after 5 s).

Every service turns healthy, the writers' InfluxDB user can write and read its database and nothing else (and is
what Grafana's data source reads), Prometheus finds both writers through its DNS discovery, every event ha-sim fires
is one point in InfluxDB, and a writer stopped while events flow loses nothing. `docker-compose exec replayer
replayer pending` works as the README says, HA's token is in no container's environment, the periodic audit reaches
HA, and a down/up keeps Alertmanager's silences and leaves no stale consumer. The test runs in a copy of the work
tree (its directory name is the project's: containers, network and volumes of its own, on loopback ports of its
own), all removed at the end. The images stay, tagged by a hash of their inputs, so the next run builds nothing.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from homeiq.local.services import free_port

ROOT = Path(__file__).resolve().parents[1]
EVENTS, RATE, WRITERS = 4000, 50, 2
STACK_UP = ["scripts/stack-up", "--try", "--writers", str(WRITERS), "-f", "tests/stack/compose.test.yaml"]


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
    """A copy of the work tree, as a fresh clone is, where the test runs what the README says."""

    def __init__(self, workdir: Path, env: dict[str, str], command: list[str] | None = None) -> None:
        self.workdir, self.command = workdir, command or STACK_UP
        # The caller's environment, less what would steer compose away from what stack-up wrote in .env.
        steering = ("COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "HA_TOKEN", "HA_TOKEN_FILE")
        self.env = {k: v for k, v in os.environ.items() if k not in steering and not k.endswith("_IMAGE")} | env
        self.up_seconds: list[float] = []

    def up(self) -> str:
        """The README's one command (with the test's file added); returns what it said."""
        started = time.monotonic()
        done = subprocess.run(self.command, cwd=self.workdir, env=self.env, capture_output=True, text=True,
                              check=False, timeout=1800)
        assert done.returncode == 0, f"scripts/stack-up failed:\n{done.stdout}\n{done.stderr[-6000:]}"
        self.up_seconds.append(time.monotonic() - started)
        return done.stderr

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Plain docker-compose in the stack's directory: .env names the files and the images, as for a user."""
        done = subprocess.run(["docker-compose", *args], cwd=self.workdir, env=self.env, capture_output=True,
                              text=True, check=False, timeout=600)
        if check and done.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def containers(self, service: str | None = None) -> list[str]:
        return self.compose("ps", "-q", *([service] if service else [])).stdout.split()

    def inspect(self, container: str) -> dict[str, Any]:
        out = subprocess.run(["docker", "inspect", container], capture_output=True, text=True, check=True).stdout
        found: dict[str, Any] = json.loads(out)[0]
        return found

    def exec(self, service: str, *command: str) -> str:
        return self.compose("exec", "-T", service, *command).stdout

    def consumers(self) -> dict[str, int]:
        """The group's consumers: name -> ms since each last read or claimed."""
        out = self.exec("redis", "redis-cli", "--json", "XINFO", "CONSUMERS", "homeiq:events", "writers")
        return {c["name"]: c["idle"] for c in json.loads(out)}


def wait_until(condition: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.5)
    return value


def http_json(url: str, params: dict[str, str], user: str | None = None, password: str = "",
              data: bytes | None = None) -> Any:
    request = urllib.request.Request(f"{url}?{urllib.parse.urlencode(params)}" if params else url, data=data)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if user:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


@contextlib.contextmanager
def running(command: list[str], env: dict[str, str]) -> Iterator[Stack]:
    """`command` (scripts/stack-up ...) in a copy of the work tree, with `env` added; all removed at the end."""
    problem = engine_problem()
    if problem:
        pytest.skip(problem)
    workdir = Path(tempfile.mkdtemp(prefix=f"hqstack{os.getpid()}"))
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (workdir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, workdir / name)
    ports = {name: str(free_port()) for name in ("INFLUXDB_PORT", "PROMETHEUS_PORT", "ALERTMANAGER_PORT")}
    # Only what a user could set to move the stack aside; stack-up writes everything else (.env, the token).
    env = {**ports, "BIND_ADDRESS": "127.0.0.1", "REDIS_MAXMEMORY": "256mb", "COMPOSE_HTTP_TIMEOUT": "300", **env}
    stack = Stack(workdir, env, command)
    try:
        stack.up()
        yield stack
    finally:
        logs = stack.compose("logs", "--no-color", "--tail", "30", check=False).stdout
        stack.compose("down", "-v", "--remove-orphans", "--timeout", "30", check=False)
        shutil.rmtree(workdir, ignore_errors=True)
        print(logs[-20000:])  # shown by pytest only when a test failed
        print(f"scripts/stack-up took {', then '.join(f'{s:.0f} s' for s in stack.up_seconds)}")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running(STACK_UP, {"HA_SIM_EVENTS": str(EVENTS), "HA_SIM_RATE": str(RATE)}) as started:
        yield started


def influx_points(stack: Stack) -> list[dict[str, Any]]:
    answer = http_json(f"http://127.0.0.1:{stack.env['INFLUXDB_PORT']}/query",
                       {"db": "home_assistant_events", "epoch": "ns",
                        "q": "SELECT entity_id, state_value, source FROM home_assistant_events"},
                       "admin", dotenv(stack)["INFLUXDB_ADMIN_PASSWORD"])
    series = ((answer or {}).get("results") or [{}])[0].get("series") or []
    return [dict(zip(s["columns"], row, strict=True)) for s in series for row in s["values"]]


def dotenv(stack: Stack) -> dict[str, str]:
    return dict(re.findall(r"^([A-Z_]+)=(.*)$", (stack.workdir / ".env").read_text(), re.MULTILINE))


def test_the_stack_turns_healthy_and_writes_every_event_once_while_a_writer_stops(stack: Stack) -> None:
    started = time.monotonic()
    apps = {name: stack.containers(name) for name in ("writer", "ha-sim", "grafana")}
    assert len(apps["writer"]) == WRITERS and not apps["grafana"]  # Grafana is opt-in: it needs a registry
    for container in stack.containers():  # stack-up returned: every service healthy, the one-shot done
        state = stack.inspect(container)["State"]
        assert state.get("Health", {}).get("Status", "exited") in ("healthy", "exited"), state

    # The writers' own user: writes and reads its database, may not administer anything.
    password = stack.exec("writer", "cat", "/run/homeiq/influxdb-password")
    influx = f"http://127.0.0.1:{stack.env['INFLUXDB_PORT']}/query"
    shown = http_json(influx, {"q": "SHOW DATABASES"}, "homeiq_writer", password)
    assert shown["results"][0]["series"][0]["values"] == [["home_assistant_events"]]
    refused = http_json(influx, {"q": "CREATE DATABASE other"}, "homeiq_writer", password)
    assert refused is None  # InfluxDB answers 403: requires admin privilege

    # While ha-sim fires, stop one writer (SIGTERM: it finishes its batch); the other and the replayer carry on.
    sim = apps["ha-sim"][0]
    wait_until(lambda: len(influx_points(stack)) >= EVENTS // 5, 120, "a fifth of the events in InfluxDB")
    subprocess.run(["docker", "stop", "-t", "30", apps["writer"][1]], check=True, capture_output=True)
    assert _read_record(sim) is None, "ha-sim was done before the writer stopped: raise EVENTS"
    assert stack.inspect(apps["writer"][1])["State"]["ExitCode"] == 0
    record = wait_until(lambda: _read_record(sim), 120, "ha-sim's record of what it fired")
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
        return bool(answer) and len(answer["data"]["result"]) == WRITERS

    wait_until(writers_up, 120, "Prometheus scraping both writers")
    print(f"stack-up to healthy {stack.up_seconds[0]:.0f} s; all checked {time.monotonic() - started:.0f} s later")


def _read_record(container: str) -> str | None:
    done = subprocess.run(["docker", "exec", container, "cat", "/var/lib/homeiq/sent.jsonl"], capture_output=True,
                          text=True, check=False)
    return done.stdout if done.returncode == 0 and done.stdout else None


def test_operators_commands_secrets_audit_and_grafanas_source_work_in_the_stack(stack: Stack) -> None:
    # The README's way to run a replayer command in the stack.
    done = stack.compose("exec", "-T", "replayer", "replayer", "pending")
    assert re.search(r"group writers: lag \d+", done.stdout), done.stdout

    # HA's token: a file secret, readable where it is needed, in no container's environment.
    token = (stack.workdir / "secrets" / "ha-sim-token").read_text().strip()
    assert len(token) >= 32
    for service in ("collector", "replayer", "ha-sim"):
        assert stack.exec(service, "cat", "/run/secrets/ha_token").strip() == token, service
    containers = stack.containers()
    assert len(containers) >= 9
    for container in containers:
        config = stack.inspect(container)["Config"]
        leaked = [e.split("=", 1)[0] for e in config["Env"] if token in e or e.startswith("HA_TOKEN=")]
        assert not leaked, f"{config['Hostname']}: HA's token in its environment ({leaked})"

    # The replayer's periodic audit reached HA (ha-sim's recorder) with that token: HomeiqAudit* can fire.
    def audited() -> bool:
        metrics = stack.exec("replayer", "python3", "-c", "import urllib.request; print(urllib.request.urlopen("
                             "'http://127.0.0.1:8003/metrics', timeout=5).read().decode())")
        done = re.search(r"^homeiq_audit_last_complete_timestamp_seconds (\S+)$", metrics, re.MULTILINE)
        return done is not None and float(done.group(1)) > 0

    wait_until(audited, 180, "the replayer's first periodic audit to complete")

    # Grafana's InfluxDB data source (it is opt-in, so not running here): the user and the file it names, read
    # from the volume Grafana mounts, query the database it names.
    provisioned = stack.workdir / "ops" / "grafana" / "provisioning" / "datasources" / "datasources-influxdb1.yml"
    source = next(s for s in yaml.safe_load(provisioned.read_text())["datasources"] if s["uid"] == "influxdb")
    path = re.fullmatch(r"\$__file\{(.+)\}", source["secureJsonData"]["password"])
    assert path
    password = stack.exec("writer", "cat", path.group(1))
    database = source["jsonData"]["dbName"].replace("$INFLUXDB_BUCKET", dotenv(stack)["INFLUXDB_BUCKET"])
    answer = http_json(f"http://127.0.0.1:{stack.env['INFLUXDB_PORT']}/query",
                       {"db": database, "q": "SELECT count(state_value) FROM home_assistant_events"},
                       source["user"], password)
    assert answer and answer["results"][0]["series"][0]["values"][0][1] > 0, answer

    # Alertmanager's data is a volume of its own.
    mounts = stack.inspect(stack.containers("alertmanager")[0])["Mounts"]
    assert [m["Type"] for m in mounts if m["Destination"] == "/alertmanager"] == ["volume"], mounts


def test_a_down_and_up_keeps_silences_and_leaves_no_stale_consumer(stack: Stack) -> None:
    # Each writer reads as its container's name (<project>_writer_<n>), which a down/up gives it again.
    writers = {stack.inspect(c)["Name"].lstrip("/") for c in stack.containers("writer")}
    assert len(writers) == WRITERS and all(re.fullmatch(r".+_writer_\d", name) for name in writers), writers
    before = wait_until(lambda: (c if writers <= set(c := stack.consumers()) else None), 120, "both writers' names")
    # The replayer shows only once it has claimed something; then under its own stable name.
    assert set(before) <= writers | {"replayer"}, before
    alertmanager = f"http://127.0.0.1:{stack.env['ALERTMANAGER_PORT']}/api/v2/silences"
    now = time.time()
    silence = http_json(alertmanager, {}, data=json.dumps({
        "matchers": [{"name": "alertname", "value": "HomeiqNoEvents", "isRegex": False}],
        "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60)),
        "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600)),
        "createdBy": "test_stack", "comment": "survives a down/up"}).encode())
    assert silence and silence["silenceID"]

    stack.compose("down", "--timeout", "30")
    down_at = time.monotonic()
    stack.up()

    def read_since_up() -> dict[str, int] | None:
        # Every new writer has read from the group since the down (under whatever name it reads as).
        consumers = stack.consumers()
        fresh = [name for name, idle_ms in consumers.items() if idle_ms / 1000 < time.monotonic() - down_at]
        return consumers if len(fresh) >= WRITERS else None

    after = wait_until(read_since_up, 120, "the new writers reading")
    assert sorted(after) == sorted(before), f"stale consumers after a down/up: {sorted(set(after) - set(before))}"
    kept = http_json(alertmanager, {})
    assert silence["silenceID"] in [s["id"] for s in kept if s["status"]["state"] == "active"], kept
