"""scripts/install-systemd as shipped, on a clean Debian 12 that boots systemd as PID 1 (a container of the stack
test's local base image plus Debian's systemd, tests/systemd/Dockerfile): the install, the units' sandbox, the
secrets as credentials only where there are any, HomeIQ's own Redis, InfluxDB on 127.0.0.1 and its database, points
from ha-sim in InfluxDB with every unit active, `homeiqctl` and its exit codes, and a configuration error that does
not restart forever. Then the same machine as machine A of two (`--role primary`), two more containers as B
(`--role replica`) and C (`--role sentinel`), and A frozen: B's Redis promoted, A's back as its replica. The
exposure of each unit (`systemd-analyze security --offline=yes`) is checked without Docker.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.test_stack import engine_problem

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "ops" / "systemd"
SERVICES = ["homeiq-collector", "homeiq-writer@1", "homeiq-writer@2", "homeiq-replayer"]
BASE = "homeiq/debian:bookworm"
T = TypeVar("T")


def exposures(directory: Path) -> dict[str, float]:
    """`systemd-analyze security --offline=yes` of each shipped unit (the writer as instance 1)."""
    for unit in UNITS.glob("*.service"):
        shutil.copy(unit, directory / unit.name.replace("@.", "@1."))
    scores = {}
    for name in ("homeiq-collector.service", "homeiq-writer@1.service", "homeiq-replayer.service"):
        done = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(directory / name)],
                              capture_output=True, text=True, check=False)
        found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
        assert found, done.stdout[-2000:] + done.stderr
        scores[name] = float(found[1])
    return scores


def test_each_unit_is_exposed_under_3(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package)")
    scores = exposures(tmp_path)
    print(f"exposure: {scores}")
    assert all(score < 3.0 for score in scores.values()), scores


def test_each_unit_stops_on_a_configuration_error() -> None:
    for unit in UNITS.glob("*.service"):
        assert re.search(r"^RestartPreventExitStatus=2\b", unit.read_text(), re.MULTILINE), unit.name


def wait_until(condition: Callable[[], T | None], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(1)
    return value


class Machine:
    """One container booting systemd, removed at the end."""

    def __init__(self, container: str) -> None:
        self.container = container

    def run(self, *command: str, check: bool = True, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        flags = [f"--env={name}={value}" for name, value in (env or {}).items()]
        done = subprocess.run(["docker", "exec", *flags, self.container, *command], capture_output=True, text=True,
                              check=False, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(command)}: exit {done.returncode}\n{done.stdout[-3000:]}\n"
                                 f"{done.stderr[-3000:]}")
        return done

    def sh(self, script: str, **kwargs: object) -> str:
        return self.run("bash", "-c", script, **kwargs).stdout  # type: ignore[arg-type]

    def active(self, unit: str) -> str:
        return self.run("systemctl", "is-active", unit, check=False).stdout.strip()

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def image() -> str:
    """The test's image, tagged by a hash of the base image and the Dockerfile; built when missing."""
    if subprocess.run(["docker", "image", "inspect", BASE], capture_output=True, check=False).returncode != 0:
        built = subprocess.run([str(ROOT / "scripts" / "stack-images")], capture_output=True, text=True, check=False)
        assert built.returncode == 0, built.stderr[-3000:]
    base_id = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", BASE], capture_output=True, text=True,
                             check=True).stdout.strip()
    dockerfile = ROOT / "tests" / "systemd" / "Dockerfile"
    tag = "homeiq/systemd-test:" + hashlib.sha256(base_id.encode() + dockerfile.read_bytes()).hexdigest()[:12]
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False).returncode != 0:
        built = subprocess.run(["docker", "build", "-q", "--force-rm", "-t", tag, "--build-arg", f"BASE_IMAGE={BASE}",
                                str(dockerfile.parent)], capture_output=True, text=True, check=False,
                               env={**os.environ, "DOCKER_BUILDKIT": "0"}, timeout=1500)
        assert built.returncode == 0, built.stderr[-3000:]
        older = subprocess.run(["docker", "images", "homeiq/systemd-test", "--format", "{{.Repository}}:{{.Tag}}"],
                               capture_output=True, text=True, check=True).stdout.split()
        subprocess.run(["docker", "rmi", *(name for name in older if name != tag)], capture_output=True, check=False)
    return tag


def source_tar() -> bytes:
    """The tree as committed plus what is changed, without the host's .venv and build/."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in files:
            if (ROOT / name).is_file():
                tar.add(ROOT / name, arcname=name)
    return buffer.getvalue()


TIMES: dict[str, float] = {}


def _running(box: Machine) -> bool:
    return box.run("systemctl", "is-system-running", check=False).stdout.strip() in ("running", "degraded")


@contextlib.contextmanager
def booted(names: list[str]) -> Iterator[list[Machine]]:
    """Containers booting systemd, the source in /src of each; removed at the end (the journal shown on failure)."""
    problem = engine_problem()
    if problem:
        pytest.skip(problem)
    tag = image()
    # pip trusts what this host trusts (a TLS-intercepting proxy's CA, where there is one); nothing else is given.
    ca = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
    boxes = [Machine(f"homeiq-systemd-test-{os.getpid()}{name}") for name in names]
    try:
        for box in boxes:
            # Every capability but CAP_SYS_RESOURCE (--privileged asks for all of them: "unable to apply caps" where
            # dockerd itself runs without it, as here; systemd and the units need none of it), no seccomp or
            # AppArmor profile (systemd sets up the units' own), the host's cgroups for systemd to manage, /run a
            # tmpfs as on a machine.
            subprocess.run(["docker", "run", "-d", "--name", box.container, "--cap-add=ALL", "--cap-drop=SYS_RESOURCE",
                            "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
                            "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
                            "-v", "/sys/fs/cgroup:/sys/fs/cgroup", "-v", f"{ca}:/host-ca.pem:ro", tag],
                           capture_output=True, text=True, check=True)
        for box in boxes:
            wait_until(functools.partial(_running, box), 120, "systemd in the container to boot")
            # On a machine systemd makes / a shared mount at boot; in a container it leaves that to the engine, and
            # Docker's mounts are private: a unit's credentials (a ramfs systemd mounts in a namespace of its own
            # and moves under /run/credentials) would stay invisible to it ("Permission denied" on an empty 0700 dir).
            box.run("mount", "--make-rshared", "/")
            box.run("mkdir", "-p", "/src")
            subprocess.run(["docker", "exec", "-i", box.container, "tar", "-x", "-C", "/src"], input=source_tar(),
                           check=True, capture_output=True)
        yield boxes
    finally:
        for box in boxes:
            journal = subprocess.run(["docker", "exec", box.container, "journalctl", "--no-pager", "-n", "80", "-u",
                                      "homeiq-*", "-u", "redis-*", "-u", "influxdb"], capture_output=True, text=True,
                                     check=False)
            subprocess.run(["docker", "rm", "-f", box.container], capture_output=True, check=False)
            print(f"{box.container}:\n{journal.stdout[-8000:]}")  # shown by pytest only when a test failed
        print(f"times: {TIMES}")


@pytest.fixture(scope="module")
def machine() -> Iterator[Machine]:
    with booted([""]) as (box,):
        box.sh("sha256sum /etc/redis/redis.conf > /root/redis.conf.sum")
        started = time.monotonic()
        box.run("/src/scripts/install-systemd", env={"PIP_CERT": "/host-ca.pem"}, timeout=1200)
        TIMES["install_s"] = time.monotonic() - started
        yield box


def point_count(machine: Machine) -> int:
    """The points in its InfluxDB (0 while it does not answer)."""
    out = machine.run("influx", "-host", "127.0.0.1", "-database", "home_assistant_events", "-format", "json",
                      "-execute", "SELECT count(state_value) FROM home_assistant_events", check=False).stdout
    series = (json.loads(out or "{}").get("results") or [{}])[0].get("series") or []
    return int(series[0]["values"][0][1]) if series else 0


def address(machine: Machine) -> str:
    """Its address on Docker's bridge: how the other machines reach it."""
    return subprocess.run(["docker", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", machine.container],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_the_install_writes_no_empty_secret_and_leaves_the_system_redis_alone(machine: Machine) -> None:
    assert machine.sh("find /etc/homeiq -type f -empty") == ""
    assert machine.sh("ls /etc/homeiq").split() == ["homeiq.env"]  # no secret yet: none created
    # No user, no secret: no credential, no *_FILE variable pointing at one.
    assert machine.sh("ls /etc/systemd/system/homeiq-writer@.service.d /etc/systemd/system/homeiq-replayer.service.d"
                      " 2>/dev/null || true") == ""
    assert "INFLUXDB_PASSWORD_FILE" not in machine.show("homeiq-writer@1", "Environment")["Environment"]
    for unit in ("homeiq-writer@1", "homeiq-replayer"):
        assert not re.search(r"^LoadCredential=", machine.sh(f"systemctl cat {unit}"), re.MULTILINE), unit
    print(f"install: {TIMES['install_s']:.0f} s")
    machine.sh("sha256sum -c --quiet /root/redis.conf.sum")  # the system's Redis: untouched
    assert machine.active("redis-server@homeiq") == "active"
    assert "aof_enabled:1" in machine.sh("redis-cli -s /run/redis-homeiq/redis-server.sock info persistence")
    policy = machine.sh("redis-cli -s /run/redis-homeiq/redis-server.sock config get maxmemory-policy")
    assert policy.split() == ["maxmemory-policy", "noeviction"]


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_influxdb_listens_on_loopback_only_with_the_database_created(machine: Machine) -> None:
    assert machine.active("influxdb") == "active"
    answer = json.loads(machine.sh("influx -host 127.0.0.1 -format json -execute 'SHOW DATABASES'"))
    assert ["home_assistant_events"] in answer["results"][0]["series"][0]["values"]
    # Not on the container's own address (its other interface).
    probe = ("import socket,sys; s=socket.socket(); s.settimeout(3); "
             "print(s.connect_ex((socket.gethostbyname(socket.gethostname()), 8086)))")
    assert machine.run("python3", "-c", probe).stdout.strip() != "0"


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_the_units_run_and_write_points_and_homeiqctl_runs_the_replayer(machine: Machine) -> None:
    token = secrets.token_hex(16)
    machine.sh(f"umask 077; printf '%s\\n' {token} > /etc/homeiq/ha-token")
    started = time.monotonic()
    machine.run("/src/scripts/install-systemd", env={"PIP_CERT": "/host-ca.pem"}, timeout=1200)  # hands it over
    TIMES["reinstall_s"] = time.monotonic() - started
    assert "LoadCredential=ha-token:" in machine.sh("cat /etc/systemd/system/homeiq-replayer.service.d/*.conf")
    # ha-sim as Home Assistant, in the same machine (the test's own unit; its token in its environment).
    machine.run("systemd-run", "--unit=ha-sim", "-E", f"HA_TOKEN={token}", "-E", "HA_SIM_PORT=8123", "-E",
                "HA_SIM_RATE=20", "-E", "HA_SIM_ENTITIES=50", "/opt/homeiq/bin/ha-sim", "run")
    machine.sh("sed -i 's|^HA_URL=.*|HA_URL=http://127.0.0.1:8123|' /etc/homeiq/homeiq.env")
    started = time.monotonic()
    machine.run("systemctl", "enable", "--now", *SERVICES)

    def points() -> int:
        return point_count(machine)

    wait_until(points, 120, "the first points in InfluxDB")
    TIMES["first_points_s"] = time.monotonic() - started
    time.sleep(max(0.0, 60 - (time.monotonic() - started)))
    states = {unit: machine.active(unit) for unit in [*SERVICES, "redis-server@homeiq", "influxdb"]}
    assert set(states.values()) == {"active"}, states
    restarts = {unit: machine.show(unit, "NRestarts")["NRestarts"] for unit in SERVICES}
    assert set(restarts.values()) == {"0"}, restarts
    before = points()
    time.sleep(5)
    assert points() > before > 0  # still flowing

    # homeiqctl: on PATH, the installed environment and credentials, the replayer's exit codes.
    pending = machine.run("bash", "-lc", "homeiqctl pending --json", check=False)
    assert pending.returncode == 0, pending.stderr
    assert json.loads(pending.stdout)
    assert machine.run("homeiqctl", "pending", "--no-such-option", check=False).returncode == 2
    # No secret in any argument or in a service's environment (only the path of its credential).
    assert token not in machine.sh("ps -eo args")
    for unit in SERVICES:
        pid = machine.show(unit, "MainPID")["MainPID"]
        environ = machine.sh(f"tr '\\0' '\\n' < /proc/{pid}/environ")
        assert token not in environ and "REDIS_URL=unix:///run/redis-homeiq/" in environ, unit
    scores = {unit: machine.sh(f"systemd-analyze security {unit} | tail -n1") for unit in SERVICES}
    print(f"times: {TIMES}; exposure in the machine: {scores}")


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_a_configuration_error_stops_instead_of_restarting(machine: Machine) -> None:
    # A variable homeiq.env does not set (what EnvironmentFile= sets wins over Environment=).
    machine.sh("mkdir -p /etc/systemd/system/homeiq-writer@9.service.d && printf '[Service]\\n"
               "Environment=INFLUXDB_TIMEOUT_S=-1\\n' > /etc/systemd/system/homeiq-writer@9.service.d/broken.conf"
               " && systemctl daemon-reload")
    machine.run("systemctl", "start", "homeiq-writer@9", check=False)
    time.sleep(12)  # beyond RestartSec=5 twice
    state = machine.show("homeiq-writer@9", "ActiveState", "NRestarts", "ExecMainStatus")
    assert state == {"ActiveState": "failed", "NRestarts": "0", "ExecMainStatus": "2"}, state


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_a_secret_is_handed_over_once_it_is_there(machine: Machine) -> None:
    # An empty secret file, as earlier installs made: removed, nothing handed over.
    machine.sh("install -m 0600 /dev/null /etc/homeiq/influxdb-secret")
    machine.run("/src/scripts/install-systemd", env={"PIP_CERT": "/host-ca.pem"}, timeout=1200)
    assert machine.sh("ls /etc/homeiq").split() == ["ha-token", "homeiq.env"]
    assert "influxdb-secret" not in machine.sh("cat /etc/systemd/system/homeiq-replayer.service.d/credentials.conf")
    password = secrets.token_hex(12)
    machine.sh(f"umask 077; printf '%s\\n' {password} > /etc/homeiq/influxdb-secret; "
               "sed -i 's|^INFLUXDB_USERNAME=.*|INFLUXDB_USERNAME=homeiq_writer|' /etc/homeiq/homeiq.env")
    machine.run("/src/scripts/install-systemd", env={"PIP_CERT": "/host-ca.pem"}, timeout=1200)
    machine.run("systemctl", "restart", "homeiq-writer@1", "homeiq-replayer")
    time.sleep(8)
    for unit in ("homeiq-writer@1", "homeiq-replayer"):
        state = machine.show(unit, "ActiveState", "NRestarts", "MainPID")
        assert (state["ActiveState"], state["NRestarts"]) == ("active", "0"), (unit, state)
        environ = machine.sh(f"tr '\\0' '\\n' < /proc/{state['MainPID']}/environ")
        assert f"INFLUXDB_PASSWORD_FILE=/run/credentials/{unit}.service/influxdb-secret" in environ, unit
        assert password not in environ, unit
    assert machine.run("homeiqctl", "pending", check=False).returncode == 0
    assert password not in machine.sh("ps -eo args; systemctl show 'homeiq-*'")


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_the_install_names_the_url_of_an_influxdb_that_does_not_answer(machine: Machine) -> None:
    machine.sh("cp /etc/homeiq/homeiq.env /root/homeiq.env && "
               "sed -i 's|^INFLUXDB_URL=.*|INFLUXDB_URL=http://127.0.0.1:9|' /etc/homeiq/homeiq.env")
    try:
        done = machine.run("/src/scripts/install-systemd", env={"PIP_CERT": "/host-ca.pem", "INFLUXDB_WAIT_S": "3"},
                           check=False, timeout=1200)
    finally:
        machine.sh("cp /root/homeiq.env /etc/homeiq/homeiq.env")
    assert done.returncode != 0
    assert "InfluxDB at http://127.0.0.1:9/ping did not answer within 3 s" in done.stderr, done.stderr[-2000:]


@pytest.fixture(scope="module")
def others() -> Iterator[tuple[Machine, Machine]]:
    """Machines B and C of two machines and a third (the InfluxDB host's sentinel), beside `machine` as A."""
    with booted(["-b", "-c"]) as (b, c):
        yield b, c


PASSWORD = secrets.token_hex(16)  # Redis's, the same on the three machines


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_the_primary_role_adds_a_sentinel_and_the_units_find_redis_through_it(
        machine: Machine, others: tuple[Machine, Machine]) -> None:
    """Machine A (`--role primary`), the machine of the tests above: HomeIQ's Redis on its address with a password,
    Debian's redis-sentinel@homeiq watching it, the units asking the sentinels with the password as a credential.
    min-replicas-to-write 0: the third machine holds a sentinel only, and until B joins no replica runs."""
    a_ip, b_ip, c_ip = (address(box) for box in (machine, *others))
    for box in (machine, *others):
        box.sh(f"mkdir -p /etc/homeiq && umask 077 && printf '%s\\n' {PASSWORD} > /etc/homeiq/redis-password")
    role = ["--role", "primary", "--address", a_ip, "--primary", a_ip, "--sentinels", f"{a_ip},{b_ip},{c_ip}"]
    env = {"PIP_CERT": "/host-ca.pem", "REDIS_MIN_REPLICAS_TO_WRITE": "0"}
    started = time.monotonic()
    for flags in (role, role, []):  # the second run changes nothing; one without the flags (after adding a secret,
        machine.run("/src/scripts/install-systemd", *flags, env=env, timeout=1200)  # say) keeps the role's
    TIMES["primary_role_s"] = time.monotonic() - started
    for unit in ("homeiq-collector", "homeiq-writer@", "homeiq-replayer"):
        assert "LoadCredential=redis-password:" in machine.sh(f"cat /etc/systemd/system/{unit}.service.d/*.conf"), unit
    conf = machine.sh("cat /etc/redis/redis-homeiq.conf")
    assert conf.count("# Two machines") == 1 and "\nport 6380\n" in conf and "\nmin-replicas-to-write 0\n" in conf
    assert machine.active("redis-sentinel@homeiq") == "active"
    assert machine.sh("stat -c '%U %a' /etc/redis/sentinel-homeiq.conf").split() == ["redis", "640"]
    named = machine.sh("redis-cli -p 26380 sentinel get-master-addr-by-name homeiq").split()
    assert named == [a_ip, "6380"], named
    assert "NOAUTH" in machine.sh("redis-cli -p 6380 ping")
    assert redis(machine, "ping").strip() == "PONG"
    settings = machine.sh("cat /etc/homeiq/homeiq.env")
    for line in (f"REDIS_SENTINELS={a_ip}:26380,{b_ip}:26380,{c_ip}:26380", "REDIS_SENTINEL_SERVICE=homeiq",
                 "COLLECTOR_WAIT_REPLICAS=1", "COLLECTOR_DEDUP_WINDOW_S=3600"):
        assert f"\n{line}\n" in f"\n{settings}", line
    assert PASSWORD not in settings

    machine.run("systemctl", "restart", *SERVICES)
    time.sleep(10)
    for unit in SERVICES:
        state = machine.show(unit, "ActiveState", "MainPID")
        assert state["ActiveState"] == "active", (unit, state)
        environ = machine.sh(f"tr '\\0' '\\n' < /proc/{state['MainPID']}/environ")
        assert f"REDIS_PASSWORD_FILE=/run/credentials/{unit}.service/redis-password" in environ, unit
        assert PASSWORD not in environ, unit
    clients = redis(machine, "client list")
    assert clients.count(f"addr={a_ip}:") >= len(SERVICES), clients  # every unit on the address the sentinel names
    wait_until(lambda: stream_grows(machine), 60, "the collector XADDing through the sentinel")
    assert machine.run("homeiqctl", "pending", check=False).returncode == 0
    verify = machine.run("systemd-analyze", "verify", *(f"{u}.service" for u in SERVICES), check=False)
    assert verify.returncode == 0, verify.stderr
    scores = {unit: machine.sh(f"systemd-analyze security {unit} | tail -n1") for unit in SERVICES}
    print(f"times: {TIMES}; exposure with the primary role: {scores}")
    assert all(float(re.search(r"(\d+\.\d+)", s)[1]) < 3.0 for s in scores.values()), scores  # type: ignore[index]


def redis(box: Machine, command: str) -> str:
    """redis-cli of HomeIQ's Redis on `box` (port 6380, with the password)."""
    return box.sh(f"REDISCLI_AUTH={PASSWORD} redis-cli -p 6380 {command}")


def stream_grows(box: Machine) -> bool:
    def added() -> int:
        return int(redis(box, "xinfo stream homeiq:events | sed -n '/^entries-added$/{n;p}'") or 0)
    before = added()
    time.sleep(3)
    return added() > before


def sentinel_view(box: Machine) -> dict[str, str]:
    lines = box.sh("redis-cli -p 26380 sentinel master homeiq").splitlines()
    return dict(zip(lines[::2], lines[1::2], strict=False))


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_two_machines_and_a_third_sentinel_survive_machine_a_hanging(
        machine: Machine, others: tuple[Machine, Machine]) -> None:
    """B (`--role replica`) and C (`--role sentinel`) join A; both collectors subscribe to Home Assistant (ha-sim,
    moved to B so that it outlives A). A frozen (docker pause: every process hangs, as a hung machine): B's and C's
    sentinels promote B's Redis and B's collector publishes to it. A back: its Redis a replica of B's (its
    configuration rewritten by Sentinel), its units following the sentinels to B, points arriving again."""
    b, c = others
    a_ip, b_ip, c_ip = (address(box) for box in (machine, b, c))
    sentinels = f"{a_ip},{b_ip},{c_ip}"
    started = time.monotonic()
    c.run("/src/scripts/install-systemd", "--role", "sentinel", "--address", c_ip, "--primary", a_ip, "--sentinels",
          sentinels)
    assert c.sh("ls /opt; ls /etc/systemd/system | grep -c homeiq || true").split() == ["0"]  # nothing of HomeIQ
    token = machine.sh("cat /etc/homeiq/ha-token").strip()
    b.sh(f"umask 077; printf '%s\\n' {token} > /etc/homeiq/ha-token")
    b.run("/src/scripts/install-systemd", "--role", "replica", "--address", b_ip, "--primary", a_ip, "--sentinels",
          sentinels, "--influxdb", f"http://{a_ip}:8086",
          env={"PIP_CERT": "/host-ca.pem", "REDIS_MIN_REPLICAS_TO_WRITE": "0"}, timeout=1200)
    TIMES["b_and_c_install_s"] = time.monotonic() - started
    assert "replicaof" in b.sh("grep ^replicaof /etc/redis/redis-homeiq.conf")
    assert f"\nINFLUXDB_URL=http://{a_ip}:8086\n" in b.sh("cat /etc/homeiq/homeiq.env")  # A's (none set up on B)
    b.run("systemd-run", "--unit=ha-sim", "-E", f"HA_TOKEN={token}", "-E", "HA_SIM_PORT=8123", "-E",
          "HA_SIM_HOST=0.0.0.0", "-E", "HA_SIM_RATE=20", "-E", "HA_SIM_ENTITIES=50", "/opt/homeiq/bin/ha-sim", "run")
    for box in (machine, b):
        box.sh(f"sed -i 's|^HA_URL=.*|HA_URL=http://{b_ip}:8123|' /etc/homeiq/homeiq.env")
    machine.run("systemctl", "restart", "homeiq-collector")
    b.run("systemctl", "enable", "--now", "homeiq-collector")

    wait_until(lambda: f"ip={b_ip},port=6380,state=online" in redis(machine, "info replication"), 60,
               "B's Redis in sync with A's")
    wait_until(lambda: all((v := sentinel_view(box)).get("num-slaves") == "1" and v.get("num-other-sentinels") == "2"
                           for box in (machine, b, c)), 60, "each sentinel to know the replica and the two others")
    wait_until(lambda: stream_grows(machine), 60, "both collectors publishing")
    assert b.active("homeiq-collector") == "active"

    subprocess.run(["docker", "pause", machine.container], check=True, capture_output=True)
    paused = time.monotonic()
    try:
        wait_until(lambda: b.sh("redis-cli -p 26380 sentinel get-master-addr-by-name homeiq").split()[:1] == [b_ip],
                   60, "B's and C's sentinels to promote B's Redis")
        TIMES["promoted_after_s"] = time.monotonic() - paused
        assert "role:master" in redis(b, "info replication")
        wait_until(lambda: stream_grows(b), 60, "B's collector publishing to B's Redis")
    finally:
        subprocess.run(["docker", "unpause", machine.container], check=True, capture_output=True)
    wait_until(lambda: f"master_host:{b_ip}" in redis(machine, "info replication"), 90,
               "A's Redis to follow B's")
    assert f"\nreplicaof {b_ip} 6380" in machine.sh("cat /etc/redis/redis-homeiq.conf")
    before = point_count(machine)
    wait_until(lambda: point_count(machine) > before, 90, "A's writers writing again, from B's Redis")
    TIMES["two_machines_s"] = time.monotonic() - started
    print(f"times: {TIMES}")
