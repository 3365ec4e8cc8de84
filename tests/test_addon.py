"""The Home Assistant add-on (addon/homeiq_ingest): its options as the services' environment (unit), its manifest
against the Supervisor's rules, and the add-on for real: the image built from the folder `scripts/addon-export`
writes (as the Supervisor builds it: that folder alone is the context), run with a /data holding an options.json,
ha-sim behind the host name `supervisor` serving `ws://supervisor/core/websocket` (the Supervisor's proxy, which
checks the add-on's SUPERVISOR_TOKEN in the auth message), and InfluxDB 1.6 behind `a0d7b954-influxdb` (the
community InfluxDB add-on's host name). Points arrive, a restart resumes from /data with nothing lost and no extra
point, and bad options stop the start with a message naming the option (exit 2), no secret in it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from homeiq.local import addon
from homeiq.shared.settings import ConfigError
from tests.test_stack import engine_problem, wait_until

ROOT = Path(__file__).resolve().parents[1]
ADDON = ROOT / "addon" / "homeiq_ingest"
TOKEN_ENV = {"SUPERVISOR_TOKEN": "f" * 112}
BASE = {"influxdb_host": "a0d7b954-influxdb", "influxdb_port": 8086, "influxdb_ssl": False,
        "influxdb_verify_ssl": True, "influxdb_api": "v1", "influxdb_database": "homeassistant",
        "influxdb_username": "homeassistant", "influxdb_password": "pw-s3cret", "schema": "homeiq",
        "log_level": "info"}


def setup_of(tmp_path: Path, **options: Any) -> addon.AddonSetup:
    given = {k: v for k, v in {**BASE, **options}.items() if v is not None}
    return addon.addon_setup(given, TOKEN_ENV, tmp_path / "run", tmp_path / "data", tmp_path / "no-secrets.yaml")


def error_of(tmp_path: Path, **options: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        setup_of(tmp_path, **options)
    message = str(caught.value)
    assert "pw-s3cret" not in message and "tok-s3cret" not in message
    return message


def test_the_fields_make_the_services_environment(tmp_path: Path) -> None:
    env = setup_of(tmp_path).env
    assert env == {
        "HOMEIQ_DATA_DIR": str(tmp_path / "data"), "COLLECTOR_SPOOL_DIR": str(tmp_path / "data" / "spool"),
        "HA_URL": "ws://supervisor/core/websocket", "HA_TOKEN": "f" * 112, "LOG_LEVEL": "INFO", "LOG_FORMAT": "text",
        "INFLUXDB_URL": "http://a0d7b954-influxdb:8086", "INFLUXDB_API": "v1", "INFLUXDB_VERIFY_SSL": "true",
        "INFLUXDB_BUCKET": "homeassistant", "INFLUXDB_USERNAME": "homeassistant", "INFLUXDB_PASSWORD": "pw-s3cret",
        "INFLUXDB_TOKEN": "", "INFLUXDB_SCHEMA": "homeiq", "REDIS_MAXMEMORY": "256mb"}
    assert setup_of(tmp_path, redis_maxmemory="1GB").env["REDIS_MAXMEMORY"] == "1gb"
    v2 = setup_of(tmp_path, influxdb_api="v2", influxdb_ssl=True, influxdb_username=None, influxdb_password=None,
                  influxdb_token="tok-s3cret", influxdb_organization="home", schema="ha").env
    assert (v2["INFLUXDB_URL"], v2["INFLUXDB_TOKEN"], v2["INFLUXDB_ORG"], v2["INFLUXDB_SCHEMA"]) == (
        "https://a0d7b954-influxdb:8086", "tok-s3cret", "home", "ha")


@pytest.mark.parametrize(("options", "named"), [
    ({"influxdb_host": None}, "option influxdb_host: missing"),
    ({"influxdb_host": "  "}, "option influxdb_host: missing"),
    ({"influxdb_host": "http://influx:8086"}, "option influxdb_host: expected a host name"),
    ({"influxdb_port": 0}, "option influxdb_port: expected a port number"),
    ({"influxdb_api": "v3"}, "option influxdb_api: expected one of v1, v2"),
    ({"influxdb_database": ""}, "option influxdb_database: missing"),
    ({"influxdb_username": ""}, "option influxdb_username: missing: influxdb_password is set"),
    ({"influxdb_password": ""}, "option influxdb_password: missing: the password of influxdb_username"),
    ({"influxdb_token": "tok-s3cret"}, "option influxdb_token: only with influxdb_api v2"),
    ({"influxdb_api": "v2", "influxdb_username": None, "influxdb_password": None}, "option influxdb_token: missing"),
    ({"influxdb_api": "v2", "influxdb_username": None, "influxdb_password": None, "influxdb_token": "tok-s3cret"},
     "option influxdb_organization: missing"),
    ({"influxdb_api": "v2", "influxdb_token": "tok-s3cret", "influxdb_organization": "o"},
     "option influxdb_username: only with influxdb_api v1"),
    ({"influxdb_ssl": "yes"}, "option influxdb_ssl: expected true or false"),
    ({"schema": "flux"}, "option schema: expected one of homeiq, ha"),
    ({"log_level": "loud"}, "option log_level: expected one of debug"),
    ({"redis_maxmemory": "lots"}, "option redis_maxmemory: expected a size such as 256mb"),
    ({"redis_maxmemory": "0"}, "option redis_maxmemory: expected a size such as 256mb"),
    ({"influxdb_yaml": "influxdb:\n  hots: influx\n"}, "option influxdb_yaml: influxdb.hots: unknown key"),
    ({"influxdb_yaml": "host: [a\n"}, "option influxdb_yaml: not valid YAML"),
    ({"influxdb_yaml": "homeiq:\n  schema: ha\n"}, "option influxdb_yaml: has no influxdb: block"),
    ({"influxdb_yaml": "password: !secret influx_pw\nusername: u\n"}, "option influxdb_yaml: !secret influx_pw: not "
                                                                       "found"),
])
def test_a_wrong_option_is_named(tmp_path: Path, options: dict[str, Any], named: str) -> None:
    assert error_of(tmp_path, **options).startswith(named)


def test_without_the_supervisor_token_the_start_stops(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"SUPERVISOR_TOKEN is not set.*homeassistant_api: true"):
        addon.addon_setup(BASE, {}, tmp_path / "run")


@pytest.mark.parametrize("pasted", [
    "influxdb:\n  host: influx.local\n  port: 8087\n  database: ha\n  username: u\n  password: !secret influx_pw\n",
    "# from configuration.yaml\nhost: influx.local\nport: 8087\ndatabase: ha\nusername: u\n"
    "password: !secret influx_pw\n",
])
def test_a_pasted_block_is_read_as_home_assistant_reads_it(tmp_path: Path, pasted: str) -> None:
    secrets_file = tmp_path / "homeassistant" / "secrets.yaml"
    secrets_file.parent.mkdir()
    secrets_file.write_text("influx_pw: pw-s3cret\n")
    setup = addon.addon_setup({**BASE, "influxdb_host": "ignored", "influxdb_yaml": pasted}, TOKEN_ENV,
                              tmp_path / "run", tmp_path / "data", secrets_file)
    config = tmp_path / "run" / "influxdb.yaml"
    assert setup.env["HOMEIQ_CONFIG"] == str(config)
    assert setup.env["INFLUXDB_URL"] == "http://influx.local:8087"  # the block's, not influxdb_host
    assert not any(name in setup.env for name in ("INFLUXDB_USERNAME", "INFLUXDB_PASSWORD", "INFLUXDB_BUCKET"))
    assert (tmp_path / "run" / "secrets.yaml").resolve() == secrets_file
    assert "influxdb_* connection options are not used" in " ".join(setup.notes)
    # What the services will read: the written document, through the same reader, with the secret resolved.
    config.write_text(setup.files[config])
    from homeiq.shared.config_reader import load_config  # noqa: PLC0415

    read = load_config(str(config))
    assert read is not None and read.integration is not None
    assert (read.integration.database, read.integration.password.value) == ("ha", "pw-s3cret")


def test_main_exits_2_naming_the_option_and_no_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    options = tmp_path / "options.json"
    options.write_text(json.dumps({**BASE, "influxdb_host": ""}))
    monkeypatch.setenv("HOMEIQ_ADDON_OPTIONS", str(options))
    monkeypatch.setenv("SUPERVISOR_TOKEN", "f" * 112)
    assert addon.main() == 2
    err = capsys.readouterr().err
    assert err.startswith("error: option influxdb_host: missing") and "pw-s3cret" not in err
    options.write_text("{")
    assert addon.main() == 2
    assert "options.json: not valid JSON" in capsys.readouterr().err


def test_prepare_writes_the_pasted_block_for_our_eyes_only(tmp_path: Path) -> None:
    options = tmp_path / "options.json"
    options.write_text(json.dumps({**BASE, "influxdb_yaml": "host: influx\nusername: u\npassword: pw-s3cret\n"}))
    environ = {**TOKEN_ENV, "HOMEIQ_ADDON_OPTIONS": str(options), "HOMEIQ_ADDON_CONFIG_DIR": str(tmp_path / "run")}
    setup = addon.prepare(environ)
    written = Path(setup.env["HOMEIQ_CONFIG"])
    assert written.read_text() == "influxdb:\n  host: influx\n  username: u\n  password: pw-s3cret\n"
    assert (written.stat().st_mode & 0o777, written.parent.stat().st_mode & 0o777) == (0o600, 0o700)


async def test_ha_sim_answers_on_the_supervisors_proxy_path() -> None:
    """ws://supervisor/core/websocket: the stand-in serves the path the add-on uses, with the auth phase the
    Supervisor runs (auth_required, then the add-on's token as access_token)."""
    import aiohttp  # noqa: PLC0415

    from homeiq.ha_sim.hub import Hub  # noqa: PLC0415
    from homeiq.ha_sim.runner import SimServer  # noqa: PLC0415

    server = SimServer(Hub.create(entity_count=3, token="f" * 112, commit_interval_s=0))
    url = (await server.start()).replace("/api/websocket", "/core/websocket")
    try:
        for token, answer in (("f" * 112, "auth_ok"), ("wrong", "auth_invalid")):
            async with aiohttp.ClientSession() as session, session.ws_connect(url) as socket:
                assert json.loads(await socket.receive_str(timeout=5))["type"] == "auth_required"
                await socket.send_str(json.dumps({"type": "auth", "access_token": token}))
                assert json.loads(await socket.receive_str(timeout=5))["type"] == answer
    finally:
        await server.stop()


# The Supervisor's option types (home-assistant/supervisor supervisor/apps/options.py RE_SCHEMA_ELEMENT @090ef31).
RE_SCHEMA_ELEMENT = re.compile(
    r"^(?:|bool|email|url|port|device(?:\((?P<filter>subsystem=[a-z]+)\))?|str(?:\((?P<s_min>\d+)?,(?P<s_max>\d+)?\))?"
    r"|password(?:\((?P<p_min>\d+)?,(?P<p_max>\d+)?\))?|int(?:\((?P<i_min>-?\d+)?,(?P<i_max>-?\d+)?\))?"
    r"|float(?:\((?P<f_min>-?\d*\.?\d+)?,(?P<f_max>-?\d*\.?\d+)?\))?|match\((?P<match>.*)\)|list\((?P<list>.+)\))\??$")


def test_the_manifest_follows_the_supervisors_rules() -> None:
    config = yaml.safe_load((ADDON / "config.yaml").read_text())
    assert {"name", "version", "slug", "description", "arch"} <= set(config)
    assert isinstance(config["version"], str) and re.fullmatch(r"[-_.A-Za-z0-9]+", config["slug"])
    assert set(config["arch"]) <= {"amd64", "aarch64"}  # the others are deprecated
    assert config["homeassistant_api"] is True and config["init"] is True and "image" not in config
    schema, options = config["schema"], config["options"]
    assert all(RE_SCHEMA_ELEMENT.match(kind) for kind in schema.values())
    assert set(options) <= set(schema) and set(schema) == set(addon.KNOWN_OPTIONS)
    required = {k for k, kind in schema.items() if not kind.endswith("?")}
    assert required <= set(options)  # a required option without a default would stop the first start
    assert schema["influxdb_password"].startswith("password") and schema["influxdb_token"].startswith("password")
    translations = yaml.safe_load((ADDON / "translations" / "en.yaml").read_text())
    assert set(translations["configuration"]) == set(schema)
    assert yaml.safe_load((ROOT / "addon" / "repository.yaml").read_text())["name"]
    for name in ("DOCS.md", "README.md", "CHANGELOG.md", "Dockerfile", "run.sh"):
        assert (ADDON / name).is_file(), name
    assert os.access(ADDON / "run.sh", os.X_OK)
    # The Supervisor finds add-ons by **/config.{yaml,yml,json}: no other file in the repository may be one.
    found = [p for p in (ROOT / "addon").rglob("config.*") if p.suffix in (".yaml", ".yml", ".json")]
    assert found == [ADDON / "config.yaml"]
    # The defaults start nothing but a named error (a password is needed): the user sees what to set.
    assert error_setup(options).startswith("option influxdb_password: missing")


def test_the_export_is_a_repository_the_supervisor_can_build_from_the_addon_folder(tmp_path: Path) -> None:
    out = subprocess.run([str(ROOT / "scripts" / "addon-export"), str(tmp_path / "repo")], capture_output=True,
                         text=True, check=True).stdout.strip()
    repo = Path(out)
    folder = repo / "homeiq_ingest"
    assert (repo / "repository.yaml").read_text() == (ROOT / "addon" / "repository.yaml").read_text()
    assert (folder / "README.md").read_text() == (ADDON / "README.md").read_text()  # the store's, not the project's
    for name in ("requirements.lock", "pyproject.toml", "README.md", "src/homeiq/local/addon.py"):
        assert (folder / "homeiq" / name).read_bytes() == (ROOT / name).read_bytes(), name
    assert os.access(folder / "run.sh", os.X_OK)
    assert not list(folder.rglob("__pycache__")) and not list(folder.rglob("*.pyc"))
    assert [p for p in repo.rglob("config.*") if p.suffix in (".yaml", ".yml", ".json")] == [folder / "config.yaml"]
    # Every file the Dockerfile copies is in the folder (the build context).
    copied = re.findall(r"^COPY (.+) \S+$", (folder / "Dockerfile").read_text(), re.MULTILINE)
    for source in " ".join(copied).split():
        assert (folder / source).exists(), source


def error_setup(options: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        addon.addon_setup(options, TOKEN_ENV, Path("/nonexistent"))
    return str(caught.value)


# ---- The add-on for real, in Docker -------------------------------------------------------------------------------

EVENTS, RATE = 3000, 50  # 60 s of events: the restart falls well inside them on a slow machine


def docker(*args: str, check: bool = True, timeout: float = 600, stdin: str | None = None) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=timeout,
                          input=stdin)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout.strip()


def addon_image() -> tuple[str, float]:
    """The add-on image, tagged by a hash of its inputs (built only when missing); and the build's seconds."""
    if not docker("images", "-q", "homeiq/debian:bookworm") or not docker("images", "-q", "homeiq/influxdb"):
        subprocess.run([str(ROOT / "scripts" / "stack-images")], capture_output=True, check=True)
    export = Path(subprocess.run([str(ROOT / "scripts" / "addon-export"), f"/tmp/homeiq-addon-{os.getpid()}"],
                                 capture_output=True, text=True, check=True).stdout.strip())
    try:
        digest = hashlib.sha256(docker("image", "inspect", "-f", "{{.Id}}", "homeiq/debian:bookworm").encode())
        for path in sorted(p for p in export.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(export)).encode() + path.read_bytes())
        tag = f"homeiq/addon:{digest.hexdigest()[:12]}"
        if docker("images", "-q", tag):
            return tag, 0.0
        started = time.monotonic()
        extra_ca = "".join(p.read_text() for p in Path("/usr/local/share/ca-certificates").glob("*.crt"))
        subprocess.run(["docker", "build", "-q", "--force-rm", "-t", tag,
                        "--build-arg", "BUILD_FROM=homeiq/debian:bookworm", "--build-arg", f"EXTRA_CA_CERTS={extra_ca}",
                        str(export / "homeiq_ingest")],
                       env={**os.environ, "DOCKER_BUILDKIT": "0"}, capture_output=True, text=True, check=True,
                       timeout=3600)
        built_s = time.monotonic() - started
        tags = docker("images", "homeiq/addon", "--format", "{{.Repository}}:{{.Tag}}").split()
        older = [t for t in tags if t != tag]
        if older:  # each is a full copy with the vfs storage driver
            docker("rmi", *older, check=False)
        return tag, built_s
    finally:
        shutil.rmtree(export, ignore_errors=True)


def container_logs(container: str) -> str:
    """Everything the container wrote (`docker logs` replays its stderr on its own stderr)."""
    done = subprocess.run(["docker", "logs", container], capture_output=True, text=True, check=False, timeout=60)
    return done.stdout + done.stderr


class Influx:
    """InfluxDB 1.6 (auth on) on the test's network, queried with the influx CLI inside its container."""

    def __init__(self, container: str, password: str) -> None:
        self.container, self.password = container, password

    def query(self, statement: str) -> Any:
        out = docker("exec", self.container, "influx", "-username", "admin", "-password", self.password,
                     "-database", "homeassistant", "-format", "json", "-precision", "ns", "-execute", statement,
                     check=False)
        return json.loads(out) if out.startswith("{") else None

    def points(self) -> list[dict[str, Any]]:
        answer = self.query("SELECT entity_id, state_value, source FROM home_assistant_events")
        series = ((answer or {}).get("results") or [{}])[0].get("series") or []
        return [dict(zip(s["columns"], row, strict=True)) for s in series for row in s["values"]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    problem = engine_problem()
    if problem:
        pytest.skip(problem)
    image, build_s = addon_image()
    influx_image = docker("images", "homeiq/influxdb", "--format", "{{.Repository}}:{{.Tag}}").split()[0]
    name = f"homeiq-addontest-{os.getpid()}"
    made: list[str] = []
    networks = [docker("network", "create", name) and name]
    try:
        password, token = secrets.token_hex(12), secrets.token_hex(56)
        made.append(docker("run", "-d", "--name", f"{name}-influxdb", "--network", name, "--network-alias",
                           "a0d7b954-influxdb", influx_image))
        influx = Influx(made[-1], password)
        container = made[-1]
        wait_until(lambda: subprocess.run(["docker", "exec", container, "wget", "-q", "-O", "/dev/null",
                                           "http://127.0.0.1:8086/ping"], capture_output=True, check=False
                                          ).returncode == 0, 60, "influxd answering /ping")
        docker("exec", made[-1], "influx", "-execute",
               f"CREATE USER admin WITH PASSWORD '{password}' WITH ALL PRIVILEGES")
        for statement in ('CREATE DATABASE "homeassistant"', 'CREATE DATABASE "pasted"',
                          f"CREATE USER homeassistant WITH PASSWORD '{password}'",
                          'GRANT ALL ON "homeassistant" TO homeassistant', 'GRANT ALL ON "pasted" TO homeassistant'):
            docker("exec", made[-1], "influx", "-username", "admin", "-password", password, "-execute", statement)
        made.append(start_sim(image, name, token, EVENTS))
        yield {"image": image, "build_s": build_s, "network": name, "influx": influx, "password": password,
               "token": token, "sim": made[-1], "data": tmp_path_factory.mktemp("addon-data"), "made": made,
               "networks": networks}
    finally:
        for container in made:
            docker("rm", "-f", "-v", container, check=False)
        for network in reversed(networks):
            docker("network", "rm", network, check=False)


def start_sim(image: str, network: str, token: str, events: int) -> str:
    """ha-sim as the Supervisor's proxy: host name `supervisor`, port 80, /core/websocket, the add-on's token."""
    return docker("run", "-d", "--name", f"{network}-supervisor", "--network", network, "--network-alias",
                  "supervisor", "-e", f"HA_TOKEN={token}", "-e", "HA_SIM_HOST=0.0.0.0", "-e", "HA_SIM_PORT=80",
                  "-e", "HA_SIM_ENTITIES=60", "-e", f"HA_SIM_EVENTS={events}", "-e", f"HA_SIM_RATE={RATE}",
                  "-e", "HA_SIM_RECORD=/tmp/sent.jsonl", "-e", "LOG_FORMAT=json", image, "ha-sim", "run")


def run_addon(world: dict[str, Any], data: Path, options: dict[str, Any], *, detach: bool,
              network: str | None = None, homeassistant: Path | None = None) -> subprocess.CompletedProcess[str]:
    data.mkdir(parents=True, exist_ok=True)
    (data / "options.json").write_text(json.dumps(options))
    network = network or world["network"]
    args = ["run", "--init", "--network", network, "-v", f"{data}:/data",
            "-e", f"SUPERVISOR_TOKEN={world['token']}"]
    if homeassistant is not None:  # map: homeassistant_config (read-only)
        args += ["-v", f"{homeassistant}:/homeassistant:ro"]
    if detach:
        args += ["-d", "--name", f"{network}-addon"]
    else:
        args += ["--rm"]
    return subprocess.run(["docker", *args, world["image"]], capture_output=True, text=True, check=False, timeout=300)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_the_addon_writes_every_event_and_resumes_from_data_after_a_restart(world: dict[str, Any]) -> None:
    influx: Influx = world["influx"]
    options = {**BASE, "influxdb_password": world["password"]}
    started = time.monotonic()
    run = run_addon(world, world["data"], options, detach=True)
    assert run.returncode == 0, run.stderr
    container = run.stdout.strip()
    world["made"].append(container)
    wait_until(influx.points, 180, "the first point in InfluxDB")
    first_point_s = time.monotonic() - started
    # Restart while ha-sim still fires: what HA recorded meanwhile comes back from its history.
    wait_until(lambda: len(influx.points()) >= EVENTS // 4, 180, "a quarter of the events in InfluxDB")
    stream_before = docker("exec", container, "redis-cli", "-p", "16379", "XLEN", "homeiq:events", check=False)
    assert not docker("exec", world["sim"], "cat", "/tmp/sent.jsonl", check=False), "ha-sim done before the restart"
    restarted = time.monotonic()
    docker("restart", "-t", "60", container)
    assert (world["data"] / "redis" / "appendonlydir").is_dir() or list((world["data"] / "redis").glob("*.aof*"))
    assert (world["data"] / "spool").is_dir()
    # The collector's watermark came back from Redis's append-only file in /data: it resumes from there.
    resumed = wait_until(lambda: [line for line in container_logs(container).splitlines()
                                  if "resuming" in line and "backfill_from_ns" in line], 120, "the collector resuming")
    resume_s = time.monotonic() - restarted
    record = wait_until(lambda: docker("exec", world["sim"], "cat", "/tmp/sent.jsonl", check=False), 300,
                        "ha-sim's record of what it fired")
    expected = {(e["entity_id"], e["time_ns"]): e["state"] for e in map(json.loads, record.splitlines())}
    assert len(expected) == EVENTS

    def fired_points() -> dict[tuple[str, int], str] | None:
        found = {(p["entity_id"], p["time"]): p["state_value"] for p in influx.points() if p["source"] != "snapshot"}
        return found if set(expected) <= set(found) else None

    found = wait_until(fired_points, 300, f"{EVENTS} fired events in InfluxDB")
    assert found == expected  # every event, its state right, and no point HA did not fire
    # What HA fired while the add-on restarted came from its recorder's history.
    assert any(p["source"] == "backfill" for p in influx.points()), resumed
    stream_after = docker("exec", container, "redis-cli", "-p", "16379", "XLEN", "homeiq:events", check=False)
    logs = container_logs(container)
    assert "redis_started" in logs and "pipeline_running" in logs  # the logs were read
    assert world["password"] not in logs and world["token"] not in logs
    print(f"add-on image build {world['build_s']:.0f} s (0: cached); first point {first_point_s:.1f} s after "
          f"`docker run`; resumed {resume_s:.1f} s after `docker restart`; "
          f"stream length {stream_before} before the restart, {stream_after} after; "
          f"{len(expected)} of {EVENTS} events found")


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_a_pasted_block_with_a_secret_from_home_assistant_writes(world: dict[str, Any], tmp_path: Path) -> None:
    homeassistant = tmp_path / "homeassistant"
    homeassistant.mkdir()
    (homeassistant / "secrets.yaml").write_text(f"influxdb_password: {world['password']}\n")
    homeassistant.chmod(0o755)
    block = ("host: a0d7b954-influxdb\nport: 8086\ndatabase: pasted\nusername: homeassistant\n"
             "password: !secret influxdb_password\n")
    # A home of its own (ha-sim fires for its first subscriber), reaching the same InfluxDB by the same name.
    network = f"{world['network']}-pasted"
    world["networks"].append(docker("network", "create", network) and network)
    docker("network", "connect", "--alias", "a0d7b954-influxdb", network, world["influx"].container)
    world["made"].append(start_sim(world["image"], network, world["token"], 200))
    run = run_addon(world, tmp_path / "data", {**BASE, "influxdb_host": "unused", "influxdb_password": "",
                                                "influxdb_yaml": block}, detach=True, network=network,
                    homeassistant=homeassistant)
    assert run.returncode == 0, run.stderr
    world["made"].append(run.stdout.strip())
    influx: Influx = world["influx"]
    try:
        count = wait_until(lambda: (influx.query('SELECT COUNT(source) FROM "pasted".."home_assistant_events"')
                                    or {}).get("results", [{}])[0].get("series"), 180,
                           "points in the pasted block's database")
    except TimeoutError:
        raise AssertionError(container_logs(run.stdout.strip())[-5000:]) from None
    assert count[0]["values"][0][1] > 0
    logs = container_logs(run.stdout.strip())
    assert "influxdb_* connection options are not used" in logs and world["password"] not in logs


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.parametrize(("options", "named"), [
    ({"influxdb_host": ""}, "error: option influxdb_host: missing"),
    ({"influxdb_yaml": "influxdb:\n  hots: a0d7b954-influxdb\n  password: pw-s3cret\n  username: u\n"},
     "error: option influxdb_yaml: influxdb.hots: unknown key"),
])
def test_bad_options_stop_the_start_naming_the_option(world: dict[str, Any], tmp_path: Path, options: dict[str, Any],
                                                     named: str) -> None:
    run = run_addon(world, tmp_path / "data", {**BASE, **options}, detach=False)
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert run.stderr.startswith(named), run.stderr
    assert "pw-s3cret" not in run.stderr + run.stdout

