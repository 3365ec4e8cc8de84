"""compose.yaml: valid against the Compose specification, consistent with what the code reads, and hardened.
tests/test_stack.py runs it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from typer.main import get_command

from homeiq.collector.cli import app as collector_app
from homeiq.replayer.cli import app as replayer_app
from homeiq.writer.cli import app as writer_app

ROOT = Path(__file__).resolve().parents[1]
APPS = {"collector": collector_app, "writer": writer_app, "replayer": replayer_app}
SECRETS = {"HA_TOKEN", "INFLUXDB_TOKEN", "INFLUXDB_PASSWORD"}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def envvars(script: str, subcommand: str) -> set[str]:
    """Every environment variable `<script> <subcommand>` reads: its options, its group's, its secrets."""
    group: Any = get_command(APPS[script])  # typer's own group class (it may vendor click)
    command = group.commands[subcommand]
    names = {p.envvar for p in (*group.params, *command.params) if isinstance(p.envvar, str)}
    return names | SECRETS | {f"{s}_FILE" for s in SECRETS} | {"ENTITY_FILTER_CONFIG_FILE"}


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    done = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                           str(ROOT / "compose.yaml")], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_service_runs_a_real_command_with_variables_the_code_reads() -> None:
    services = compose()["services"]
    scripts = {name: target for name, target in _console_scripts().items()}
    for name in APPS:
        service = services[name]
        script, subcommand = service["command"]
        assert script in scripts and subcommand == "run", service["command"]
        unknown = set(service["environment"]) - envvars(script, subcommand)
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
    used = set(re.findall(r"\$\{([A-Z_]+)", (ROOT / "compose.yaml").read_text()))
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
