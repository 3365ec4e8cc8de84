"""`python -m homeiq.local.addon`: the Home Assistant add-on's process (addon/homeiq_ingest).

Reads the options the Supervisor wrote to /data/options.json, checks them (an error names the option, exit 2),
turns them into the environment the services read, and runs the local pipeline (`homeiq.local.pipeline`): Redis
with its data in /data/redis (AOF on), the collector (spool in /data/spool), the writer and the replayer. Home
Assistant is reached through the Supervisor's proxy, ws://supervisor/core/websocket, with the SUPERVISOR_TOKEN the
Supervisor gives the container: no user token at all. No option's value is ever logged or put in a message.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from homeiq.shared.config import ENV_NAME
from homeiq.shared.config_reader import parse_config
from homeiq.shared.settings import ConfigError

OPTIONS_FILE: Final = Path("/data/options.json")
DATA_DIR: Final = Path("/data")
SUPERVISOR_WS: Final = "ws://supervisor/core/websocket"
HA_SECRETS: Final = Path("/homeassistant/secrets.yaml")  # map: homeassistant_config (read-only)
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
SCHEMAS: Final = ("homeiq", "ha")
# Options that describe the connection; a pasted influxdb: block replaces them all.
CONNECTION_OPTIONS: Final = ("influxdb_host", "influxdb_port", "influxdb_ssl", "influxdb_verify_ssl", "influxdb_api",
                             "influxdb_database", "influxdb_username", "influxdb_password", "influxdb_token",
                             "influxdb_organization")
KNOWN_OPTIONS: Final = (*CONNECTION_OPTIONS, "influxdb_yaml", "schema", "log_level", "redis_maxmemory")
# Redis's memory cap: what the stream may hold while InfluxDB is away (then XADD is refused and the collector
# spools to /data); a Raspberry Pi's RAM is the limit otherwise.
REDIS_MAXMEMORY: Final = "256mb"
_SIZE: Final = re.compile(r"[1-9][0-9]*(kb|mb|gb)?")


@dataclass
class AddonSetup:
    """What the options make: the services' environment, and the pasted block's file (path → text) if any."""

    env: dict[str, str]
    files: dict[Path, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _fail(option: str, what: str) -> ConfigError:
    return ConfigError(f"option {option}: {what}")


def _text(options: Mapping[str, Any], name: str) -> str:
    value = options.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _fail(name, f"expected text, got {type(value).__name__}")
    return value.strip()


def _choice(options: Mapping[str, Any], name: str, choices: tuple[str, ...], default: str) -> str:
    value = _text(options, name) or default
    if value not in choices:
        raise _fail(name, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def _size(options: Mapping[str, Any], name: str, default: str) -> str:
    value = (_text(options, name) or default).lower()
    if not _SIZE.fullmatch(value):
        raise _fail(name, f"expected a size such as {default} (kb, mb or gb), got {value!r}")
    return value


def _flag(options: Mapping[str, Any], name: str, default: bool) -> bool:
    value = options.get(name, default)
    if not isinstance(value, bool):
        raise _fail(name, f"expected true or false, got {type(value).__name__}")
    return value


def _port(options: Mapping[str, Any], name: str) -> int:
    value = options.get(name, 8086)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _fail(name, "expected a port number, 1 to 65535")
    return value


def read_options(path: Path) -> dict[str, Any]:
    """The options file as a mapping; a missing or broken file is an error naming it."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the add-on's options ({exc.strerror}); the Supervisor writes "
                          f"them at each start") from None
    try:
        options = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno if hasattr(exc, 'lineno') else '?'})") from None
    if not isinstance(options, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(options).__name__}")
    return options


def block_document(text: str) -> str:
    """The pasted text as a configuration document: `influxdb:` and what follows, or only what follows it
    (then indented under `influxdb:`)."""
    lines = text.splitlines()
    first = next((line for line in lines if line.strip() and not line.lstrip().startswith("#")), "")
    if first.startswith(("influxdb:", "homeiq:")):
        return text if text.endswith("\n") else text + "\n"
    return "influxdb:\n" + "".join(f"  {line}\n" for line in lines)


def addon_setup(options: Mapping[str, Any], environ: Mapping[str, str], config_dir: Path,
                data_dir: Path = DATA_DIR, ha_secrets: Path = HA_SECRETS) -> AddonSetup:
    """The environment of the pipeline from the add-on's options (ConfigError names the option).

    `config_dir`: where the pasted block is written (a private folder; secrets.yaml there points at Home
    Assistant's, so `!secret` in the block works as in configuration.yaml)."""
    unknown = sorted(set(options) - set(KNOWN_OPTIONS))
    notes = [f"option {name}: unknown to this version, ignored" for name in unknown]
    token = environ.get("SUPERVISOR_TOKEN", "").strip()
    if not token:
        raise ConfigError("SUPERVISOR_TOKEN is not set: the Supervisor sets it in every add-on that has "
                          "`homeassistant_api: true`; run this image as the add-on")
    env = {"HOMEIQ_DATA_DIR": str(data_dir), "COLLECTOR_SPOOL_DIR": str(data_dir / "spool"),
           "HA_URL": SUPERVISOR_WS, "HA_TOKEN": token,
           "LOG_LEVEL": _choice(options, "log_level", LOG_LEVELS, "info").upper(),
           "LOG_FORMAT": environ.get("LOG_FORMAT", "text"),  # the add-on's Log tab is read by people
           "REDIS_MAXMEMORY": _size(options, "redis_maxmemory", REDIS_MAXMEMORY)}
    schema = _choice(options, "schema", SCHEMAS, "homeiq")
    setup = AddonSetup(env, notes=notes)
    pasted = _text(options, "influxdb_yaml")
    if pasted:
        _from_block(setup, pasted, schema, config_dir, ha_secrets)
    else:
        _from_fields(setup, options)
        env["INFLUXDB_SCHEMA"] = schema
    return setup


def _from_block(setup: AddonSetup, pasted: str, schema: str, config_dir: Path, ha_secrets: Path) -> None:
    path = config_dir / "influxdb.yaml"
    document = block_document(pasted)
    try:
        config = parse_config(document, str(path)) if not ha_secrets.is_file() else None
        if config is None:  # read !secret from Home Assistant's secrets.yaml: parse where the file will be
            config_dir.mkdir(parents=True, exist_ok=True)
            link = config_dir / "secrets.yaml"
            if not link.is_symlink():
                link.symlink_to(ha_secrets)
            config = parse_config(document, str(path))
    except ConfigError as exc:
        what = str(exc).removeprefix(f"{ENV_NAME} ({path}): ")
        raise _fail("influxdb_yaml", what) from None
    if config.integration is None:
        raise _fail("influxdb_yaml", "has no influxdb: block; paste the block from your configuration.yaml")
    setup.files[path] = document
    setup.env.update(HOMEIQ_CONFIG=str(path), INFLUXDB_URL=config.integration.url())
    if config.homeiq.schema is None:
        setup.env["INFLUXDB_SCHEMA"] = schema
    else:
        setup.notes.append(f"option schema: not used, influxdb_yaml's homeiq.schema says {config.homeiq.schema}")
    setup.notes.append("option influxdb_yaml is set: the influxdb_* connection options are not used")
    setup.notes.extend(config.notes)


def _from_fields(setup: AddonSetup, options: Mapping[str, Any]) -> None:
    host = _text(options, "influxdb_host")
    if not host:
        raise _fail("influxdb_host", "missing: set InfluxDB's host name (the community InfluxDB add-on's is "
                                     "a0d7b954-influxdb), or paste your influxdb: block into influxdb_yaml")
    if any(c in host for c in "/:@ ") and not host.startswith("["):
        raise _fail("influxdb_host", "expected a host name or address alone (no scheme, port or path)")
    api = _choice(options, "influxdb_api", ("v1", "v2"), "v1")
    scheme = "https" if _flag(options, "influxdb_ssl", False) else "http"
    env = setup.env
    env.update(INFLUXDB_URL=f"{scheme}://{host}:{_port(options, 'influxdb_port')}", INFLUXDB_API=api,
               INFLUXDB_VERIFY_SSL="true" if _flag(options, "influxdb_verify_ssl", True) else "false")
    database = _text(options, "influxdb_database")
    if not database:
        raise _fail("influxdb_database", "missing: the v1 database (v2: the bucket) to write to")
    env["INFLUXDB_BUCKET"] = database
    username, password = _text(options, "influxdb_username"), _text(options, "influxdb_password")
    token, org = _text(options, "influxdb_token"), _text(options, "influxdb_organization")
    if api == "v1":
        if password and not username:
            raise _fail("influxdb_username", "missing: influxdb_password is set, so is the user it belongs to")
        if username and not password:
            raise _fail("influxdb_password", f"missing: the password of influxdb_username {username!r}")
        if token:
            raise _fail("influxdb_token", "only with influxdb_api v2 (v1 uses influxdb_username/influxdb_password)")
        env.update(INFLUXDB_USERNAME=username, INFLUXDB_PASSWORD=password, INFLUXDB_TOKEN="")
    else:
        if not token:
            raise _fail("influxdb_token", "missing: InfluxDB 2's API token (influxdb_api is v2)")
        if not org:
            raise _fail("influxdb_organization", "missing: InfluxDB 2's organization (influxdb_api is v2)")
        if username or password:
            raise _fail("influxdb_username", "only with influxdb_api v1 (v2 uses influxdb_token)")
        env.update(INFLUXDB_TOKEN=token, INFLUXDB_ORG=org, INFLUXDB_PASSWORD="")


def prepare(environ: Mapping[str, str]) -> AddonSetup:
    """Read and check the options, write the pasted block (readable by us alone); ConfigError names the option."""
    options_file = Path(environ.get("HOMEIQ_ADDON_OPTIONS", str(OPTIONS_FILE)))
    config_dir = Path(environ.get("HOMEIQ_ADDON_CONFIG_DIR", "/run/homeiq"))
    setup = addon_setup(read_options(options_file), environ, config_dir)
    for path, text in setup.files.items():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
    return setup


def main() -> int:
    """Check the options, then run the pipeline until the Supervisor stops the add-on."""
    try:
        setup = prepare(os.environ)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    os.environ.update(setup.env)
    from homeiq.local import pipeline  # noqa: PLC0415 - reads the environment set above
    from homeiq.shared.logs import Log, setup_logging  # noqa: PLC0415

    setup_logging(setup.env["LOG_LEVEL"], setup.env["LOG_FORMAT"], "addon")
    for note in setup.notes:
        Log("homeiq.addon").info("option_note", note=note)
    return pipeline.main()


if __name__ == "__main__":
    sys.exit(main())
