"""compose.yaml (and compose.local.yaml, compose.try.yaml on top of it): valid against the Compose specification,
consistent with what the code reads, hardened, and startable offline. tests/test_stack.py runs it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from homeiq.collector.cli import app as collector_app
from homeiq.replayer.cli import app as replayer_app
from homeiq.writer.cli import app as writer_app

ROOT = Path(__file__).resolve().parents[1]
APPS = {"collector": collector_app, "writer": writer_app, "replayer": replayer_app}
SECRETS = {"HA_TOKEN", "INFLUXDB_TOKEN", "INFLUXDB_PASSWORD"}
FILES = ["compose.yaml", "compose.local.yaml", "compose.try.yaml"]  # scripts/stack-up --try's, in its order
# scripts/stack-up --try --failover's: Redis with Sentinel and a second collector.
FAILOVER = [*FILES, "compose.failover.yaml", "compose.failover.try.yaml"]
APPS_WITH_REDIS = ("collector", "collector-b", "writer", "replayer")


def compose(name: str = "compose.yaml") -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return loaded


def rendered(*files: str, profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    """`docker-compose config` of these files, with .env.example's values: what compose itself makes of them."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (scripts/bootstrap --test installs it)")
    args = [a for f in files for a in ("-f", str(ROOT / f))] + [a for p in profiles for a in ("--profile", p)]
    done = subprocess.run(["docker-compose", "--project-directory", str(ROOT), "--env-file",
                           str(ROOT / ".env.example"), *args, "config"],
                          capture_output=True, text=True, check=False, env={"PATH": os.environ["PATH"]}, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    loaded: dict[str, Any] = yaml.safe_load(done.stdout)
    return loaded


def envvars(script: str, subcommand: str) -> set[str]:
    """Every environment variable `<script> <subcommand>` reads: its options, its group's, its secrets."""
    group: Any = get_command(APPS[script])  # typer's own group class (it may vendor click)
    command = group.commands[subcommand]
    names = {p.envvar for p in (*group.params, *command.params) if isinstance(p.envvar, str)}
    return names | SECRETS | {f"{s}_FILE" for s in SECRETS} | {"ENTITY_FILTER_CONFIG_FILE"}


def test_compose_files_are_valid_against_the_compose_specification() -> None:
    done = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                           *(str(ROOT / f) for f in FAILOVER)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_service_runs_a_real_command_with_variables_the_code_reads() -> None:
    services = compose()["services"]
    scripts = {name: target for name, target in _console_scripts().items()}
    for name in APPS:
        service = services[name]
        script, subcommand = service["command"]
        assert script in scripts and subcommand == "run", service["command"]
        # The replayer's container is also where the operator runs its commands (`exec replayer replayer status`).
        reads = envvars(script, subcommand) | (envvars(script, "status") if name == "replayer" else set())
        unknown = set(service["environment"]) - reads
        assert not unknown, f"{name} sets variables the code never reads: {unknown}"
        port = service["environment"]["METRICS_PORT"]
        assert service["expose"] == [port]


def test_prometheus_scrapes_each_service_on_its_metrics_port() -> None:
    services = compose()["services"]
    prometheus = yaml.safe_load((ROOT / "ops" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["homeiq-collector"]["static_configs"][0]["targets"] == [
        f"collector:{services['collector']['environment']['METRICS_PORT']}"]
    assert jobs["homeiq-replayer"]["static_configs"][0]["targets"] == [
        f"replayer:{services['replayer']['environment']['METRICS_PORT']}"]
    writer_sd = jobs["homeiq-writer"]["dns_sd_configs"][0]
    assert writer_sd["names"] == ["writer"]
    assert str(writer_sd["port"]) == services["writer"]["environment"]["METRICS_PORT"]


def test_env_example_documents_exactly_the_variables_compose_uses() -> None:
    used = {v for f in FAILOVER for v in re.findall(r"(?<!\$)\$\{([A-Z_]+)", (ROOT / f).read_text())}
    documented = set(re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert used == documented


def _console_scripts() -> dict[str, str]:
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+) = "([^"]+)"', section, re.MULTILINE))


def test_the_stack_is_hardened() -> None:
    services = compose()["services"]
    for name, service in services.items():
        assert service["image"].startswith("${"), f"{name}: its image must be overridable"
        for port in service.get("ports", []):
            assert port.startswith("${BIND_ADDRESS:-127.0.0.1}:"), f"{name} publishes {port} beyond loopback"
    redis = " ".join(services["redis"]["command"])
    assert "--maxmemory-policy noeviction" in redis and "--maxmemory ${REDIS_MAXMEMORY:?" in redis
    for name in ("writer", "replayer"):
        env = services[name]["environment"]
        assert "INFLUXDB_TOKEN" not in env and env["INFLUXDB_TOKEN_FILE"] == "/run/homeiq/influxdb-token"
        assert services[name]["depends_on"]["influxdb-setup"] == {"condition": "service_completed_successfully"}
        assert services[name]["depends_on"]["influxdb"] == {"condition": "service_healthy"}
    assert "INFLUXDB_ADMIN_TOKEN" not in str(services["writer"]) + str(services["replayer"])
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "HEALTHCHECK" in dockerfile and "/readyz" in dockerfile


def _locally_built() -> set[str]:
    """The image variables scripts/stack-images prints (NAME_IMAGE=...): the images that need no registry."""
    text = (ROOT / "scripts" / "stack-images").read_text()
    services = re.search(r"^for service in ([a-z ]+); do", text, re.MULTILINE)
    assert services, "scripts/stack-images: its loop over the images it builds moved"
    names = {f"{s.upper()}_IMAGE" for s in services.group(1).split()}
    assert 'echo "HOMEIQ_IMAGE=$homeiq_image"' in text
    return names | {"HOMEIQ_IMAGE"}


def test_every_service_outside_an_opt_in_profile_runs_on_a_locally_built_image() -> None:
    """The offline `up` (scripts/stack-up): no service may pull; an opt-in profile says it needs a registry."""
    local = _locally_built()
    for name in FAILOVER:
        text = (ROOT / name).read_text()
        for service_name, service in compose(name)["services"].items():
            if "image" not in service:
                continue  # an override of a service another file defines
            variable = re.fullmatch(r"\$\{([A-Z_]+)(:-[^}]*)?\}", service["image"])
            assert variable, f"{name}: {service_name}'s image must be a variable: {service['image']}"
            if variable.group(1) in local:
                continue
            assert service.get("profiles"), f"{name}: {service_name} needs {service['image']}, which " \
                f"scripts/stack-images does not build, and is not in an opt-in profile"
            said = text[:text.index(f"  {service_name}:\n")].rsplit("\n\n", 1)[-1]
            assert "registry" in said and variable.group(1) in said, \
                f"{name}: the comment above {service_name} must say it needs a registry or your {variable.group(1)}"
    services = rendered(*FILES)["services"]
    offline = {name for name, service in services.items() if not service.get("profiles")}
    assert offline == {"redis", "influxdb", "influxdb-setup", "collector", "writer", "replayer", "prometheus",
                       "alertmanager", "ha-sim"}
    assert services["grafana"]["profiles"] == ["grafana"]
    added = set(rendered(*FAILOVER)["services"]) - set(services)
    assert added == {"redis-replica", "redis-replica-2", "sentinel-1", "sentinel-2", "sentinel-3", "collector-b"}


def test_home_assistants_token_is_a_file_secret_never_a_variable() -> None:
    for files in (["compose.yaml"], FILES, FAILOVER):
        config = rendered(*files)
        secret = config["secrets"]["ha_token"]
        assert set(secret) == {"file"}, secret
        readers = {"collector", "replayer"} | ({"ha-sim"} if "compose.try.yaml" in files else set()) \
            | ({"collector-b"} if "compose.failover.yaml" in files else set())
        for name, service in config["services"].items():
            env = service.get("environment") or {}
            assert "HA_TOKEN" not in env, f"{name} gets HA's token as a variable"
            if name in readers:
                assert env["HA_TOKEN_FILE"] == "/run/secrets/ha_token", name
                assert [s["source"] for s in service["secrets"]] == ["ha_token"], name
            else:
                assert "secrets" not in service and "HA_TOKEN_FILE" not in env, f"{name} has no use for HA's token"
    assert compose()["secrets"]["ha_token"]["file"] == "${HA_TOKEN_FILE:-./secrets/ha-token}"
    assert "HA_TOKEN=" not in (ROOT / ".env.example").read_text()


def test_the_replayer_gets_everything_its_periodic_audit_needs() -> None:
    for files in (["compose.yaml"], FILES, FAILOVER):
        services = rendered(*files)["services"]
        replayer, collector = services["replayer"]["environment"], services["collector"]["environment"]
        assert float(replayer["REPLAYER_AUDIT_INTERVAL_S"]) > 0  # on by default: the HomeiqAudit* alerts can fire
        for same in ("HA_URL", "HA_TOKEN_FILE", "ENTITY_FILTER_CONFIG"):  # the HA and the entities the collector has
            assert replayer[same] == collector[same], same
    needed = {"HA_URL", "HA_TOKEN_FILE", "REPLAYER_AUDIT_INTERVAL_S", "ENTITY_FILTER_CONFIG"}
    assert needed <= envvars("replayer", "run")


def test_alertmanager_keeps_its_silences_in_a_volume() -> None:
    config = compose()
    alertmanager = config["services"]["alertmanager"]
    path = next(a.split("=", 1)[1] for a in alertmanager["command"] if a.startswith("--storage.path="))
    volumes = {v.split(":")[1]: v.split(":")[0] for v in alertmanager["volumes"]}
    assert path in volumes, f"Alertmanager's --storage.path {path} is not a volume: silences die with the container"
    assert volumes[path] in config["volumes"]  # a named volume: `down` keeps it, `down -v` removes it


def test_consumer_names_survive_a_down_and_up() -> None:
    """A name of the container id leaves one stale consumer per writer (and one for the replayer) at each
    down/up; tests/test_stack.py counts them for real."""
    services = compose()["services"]
    assert services["replayer"]["environment"]["REPLAYER_CONSUMER"] == "replayer"
    entrypoint = services["writer"]["entrypoint"]
    assert entrypoint[:2] == ["/bin/sh", "-c"] and 'exec "$$@"' in entrypoint[2], entrypoint
    assert 'WRITER_CONSUMER="$${WRITER_CONSUMER:-' in entrypoint[2]  # an operator's own name still wins


def test_grafanas_data_sources_fit_the_influxdb_in_use() -> None:
    """Each set-up's InfluxDB data source reads a credential that its influxdb-setup writes, from the volume
    Grafana mounts, for the user it creates; its dashboards' data sources are all provisioned."""
    cases = {("compose.yaml",): ("datasources.yml", "ops/influxdb/setup-v2.sh"),
             ("compose.yaml", "compose.local.yaml"): ("datasources-influxdb1.yml", "ops/influxdb/setup-v1.sh")}
    for files, (source_file, setup_script) in cases.items():
        services = rendered(*files, profiles=("grafana",))["services"]
        grafana, setup = services["grafana"], services["influxdb-setup"]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
        provisioned = Path(mounts["/etc/grafana/provisioning/datasources/homeiq.yml"])
        assert provisioned == ROOT / "ops" / "grafana" / "provisioning" / "datasources" / source_file
        assert not [m for m in mounts if m.startswith("/etc/grafana/provisioning/datasources/") and
                    m != "/etc/grafana/provisioning/datasources/homeiq.yml"], "one InfluxDB data source only"
        setup_mounts = {v.split(":")[1]: v.split(":")[0] for v in setup["volumes"]}
        assert Path(setup_mounts["/setup.sh"]) == ROOT / setup_script
        sources = {s["uid"]: s for s in yaml.safe_load(provisioned.read_text())["datasources"]}
        influx = sources["influxdb"]
        credential = json.dumps(influx.get("secureJsonData", {}))
        files_read = re.findall(r"\$__file\{([^}]+)\}", credential)
        assert len(files_read) == 1, credential
        directory, filename = files_read[0].rsplit("/", 1)
        assert mounts[directory] == setup_mounts[directory] == "influxdb-token"  # the volume setup writes
        assert re.search(rf"^out={re.escape(files_read[0])}$", (ROOT / setup_script).read_text(), re.MULTILINE), \
            f"{setup_script} does not write {filename}, which Grafana's data source reads"
        if influx.get("user"):
            assert influx["user"] == setup["environment"]["INFLUXDB_USERNAME"]
            assert services["writer"]["environment"]["INFLUXDB_USERNAME"] == influx["user"]
        assert influx["url"] == services["writer"]["environment"]["INFLUXDB_URL"]
        assert influx["jsonData"]["dbName"] == "$INFLUXDB_BUCKET" and "INFLUXDB_BUCKET" in grafana["environment"]
        for dashboard in (ROOT / "ops" / "grafana" / "dashboards").glob("*.json"):
            used = set(re.findall(r'"datasource":\s*\{[^}]*"uid":\s*"([^"$]+)"', dashboard.read_text()))
            assert used <= set(sources), f"{dashboard.name} uses data sources nobody provisions: {used - set(sources)}"


def test_the_readme_starts_the_stack_offline_with_one_command() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Run it with Docker", 1)[1].split("\n## ", 1)[0]
    first_block = section.split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["scripts/stack-up --try"], first_block
    assert "--profile grafana" in section and "registry" in section
    script = (ROOT / "scripts" / "stack-up").read_text()
    assert "compose.try.yaml" in script and "scripts/stack-images" in script


def test_with_failover_every_app_reaches_redis_through_the_sentinels() -> None:
    """compose.failover.yaml: each app asks the three sentinels (each a service with a volume of its own for the
    configuration it rewrites), the collectors wait for a replica and deduplicate at the broker, every data node
    refuses writes without a replica in reach, and the second collector is the first one's twin but for its spool."""
    for files in (["compose.yaml", "compose.failover.yaml"], FAILOVER):
        config = rendered(*files)
        services = config["services"]
        sentinels = [s for s in services if s.startswith("sentinel-")]
        data_nodes = ["redis", "redis-replica", "redis-replica-2"]
        for name in APPS_WITH_REDIS:
            env = services[name]["environment"]
            assert env["REDIS_SENTINELS"] == ",".join(f"{s}:26379" for s in sentinels), name
            assert env["REDIS_SENTINEL_SERVICE"] == "homeiq", name
            assert set(services[name]["depends_on"]) >= {*sentinels, *data_nodes}, name
            script = name.removesuffix("-b")
            reads = envvars(script, "run") | (envvars(script, "status") if script == "replayer" else set())
            assert not set(env) - reads, f"{name} sets variables the code never reads: {set(env) - reads}"
        for name in ("collector", "collector-b"):
            env = services[name]["environment"]
            assert env["COLLECTOR_WAIT_REPLICAS"] == "1" and int(env["COLLECTOR_DEDUP_WINDOW_S"]) > 0, name
        assert services["collector-b"]["environment"] == services["collector"]["environment"]
        assert services["collector-b"]["command"] == services["collector"]["command"]
        spools = {n: [v.split(":")[0] for v in services[n]["volumes"]] for n in ("collector", "collector-b")}
        assert spools == {"collector": ["collector-spool"], "collector-b": ["collector-b-spool"]}, spools
        for name in [*data_nodes, *sentinels]:
            service = services[name]
            mode = "sentinel" if name in sentinels else "data"
            assert service["entrypoint"] == ["/bin/sh", "/etc/homeiq/failover-start", mode], name
            volume = next(v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == "/data")
            assert volume in config["volumes"], f"{name}: its configuration (Sentinel's to rewrite) needs a volume"
            if mode == "data":
                env = service["environment"]
                assert env["REDIS_ANNOUNCE"] == name and env.get("REDIS_REPLICA_OF", "redis") == "redis"
                assert int(env["REDIS_MIN_REPLICAS_TO_WRITE"]) >= 1 and int(env["REDIS_MIN_REPLICAS_MAX_LAG"]) > 0
            else:
                assert service["environment"]["SENTINEL_ANNOUNCE"] == name
                assert service["environment"]["SENTINEL_PRIMARY"] == "redis"
        script = (ROOT / "ops" / "redis" / "failover-start").read_text()
        for setting in ("--min-replicas-to-write", "--min-replicas-max-lag", "--replica-announce-ip",
                        "--maxmemory-policy noeviction", "--appendonly yes", "sentinel resolve-hostnames yes",
                        "sentinel announce-hostnames yes"):
            assert setting in script, setting


def test_with_failover_redis_resolves_a_node_that_is_down_without_asking_beyond_docker() -> None:
    """Redis resolves names in its one thread, and Sentinel resolves the primary's name at each vote. Once the
    primary's container is gone, Docker's DNS forwards its name to the host's resolvers, and a lost answer blocked
    the asking node 5 s: the sentinels entered TILT again and again and promoted no replica for minutes (a CI run of
    tests/test_stack_failover.py, then the second of two local runs; 2 % of forwarded queries went unanswered on that
    machine, none of those Docker answered itself). Docker answers a one-word name it does not hold itself, at once,
    when the container sets ndots (moby libnetwork resolver.go); with no search domain, no longer name is asked."""
    services = rendered(*FAILOVER)["services"]
    for name in ("redis", "redis-replica", "redis-replica-2", "sentinel-1", "sentinel-2", "sentinel-3"):
        assert services[name].get("dns_opt") == ["ndots:1"], name
        assert services[name].get("dns_search") in (".", ["."]), name


def test_with_failover_prometheus_scrapes_both_collectors() -> None:
    prometheus = yaml.safe_load((ROOT / "ops" / "prometheus.yml").read_text())
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "homeiq-collector")
    pattern = job["file_sd_configs"][0]["files"][0]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in rendered(*FAILOVER)["services"]["prometheus"]["volumes"]}
    found = [Path(src) for dst, src in mounts.items() if Path(dst).match(pattern)]
    assert [yaml.safe_load(f.read_text()) for f in found] == [[{"targets": ["collector-b:8001"]}]]
    assert not [dst for dst in rendered(*FILES)["services"]["prometheus"]["volumes"]
                if Path(dst.split(":")[1]).match(pattern)], "without failover, no second collector to scrape"
