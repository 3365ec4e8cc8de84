"""Where and how to write to InfluxDB: one settings struct for the writer, the replayer and its audit."""

from __future__ import annotations

import os
import ssl
from typing import Annotated, Any, Self

from homeiq.shared.config import DEVICE_FIELDS, ConfigFile
from homeiq.shared.config_reader import load_config
from homeiq.shared.influx.schemas import SCHEMAS
from homeiq.shared.logs import Log
from homeiq.shared.options import ConfigPath
from homeiq.shared.settings import (
    ConfigError,
    Settings,
    Var,
    a_file_or_empty,
    not_empty,
    one_of,
    positive,
    read_secret,
    ssl_context,
    url_of,
)

log = Log(__name__)

InfluxTimeout = Annotated[float, Var("INFLUXDB_TIMEOUT_S", "Timeout of one request to InfluxDB, s.", positive)]


def _from_file(config: ConfigFile | None) -> dict[str, Any]:
    """The InfluxDB settings the configuration file sets."""
    if config is None:
        return {}
    values: dict[str, Any] = {}
    if config.integration is not None:
        words = config.integration
        v1 = words.api_version == "1"
        values.update(url=words.url(), api="v1" if v1 else "v2", bucket=words.database if v1 else (words.bucket or ""),
                      username=words.username or "", verify_ssl=words.verify_ssl, ssl_ca_cert=words.ssl_ca_cert or "")
        if words.organization:
            values["org"] = words.organization
    if config.homeiq.schema is not None:
        values["schema"] = config.homeiq.schema
    return values


class InfluxSettings(Settings, frozen=True, kw_only=True):
    """Where and how to write: `api` v2 (org, bucket, token) or v1 (db = bucket, rp, user/password), in which
    `schema`. Those the HOMEIQ_CONFIG file can set come from a flag or variable when given, else from the file's
    `influxdb:` / `homeiq:` blocks, else the default; `config` is that file (its rules, and secrets the
    environment does not set)."""

    url: Annotated[str, Var(
        "INFLUXDB_URL", "InfluxDB base URL.", url_of("http", "https"),
        default_text="the file's host/port/ssl/path, else http://127.0.0.1:8086")] = "http://127.0.0.1:8086"
    api: Annotated[str, Var(
        "INFLUXDB_API", "v2 (org, bucket, token) or v1 (db, rp, user).", one_of("v1", "v2"),
        default_text="the file's api_version, else v2")] = "v2"
    org: Annotated[str, Var(
        "INFLUXDB_ORG", "v2 organisation.", default_text="the file's organization, else homeiq")] = "homeiq"
    bucket: Annotated[str, Var(
        "INFLUXDB_BUCKET", "v2 bucket, or v1 database.", not_empty,
        default_text="the file's bucket or database, else home_assistant_events")] = "home_assistant_events"
    retention_policy: Annotated[str, Var(
        "INFLUXDB_RETENTION_POLICY", "v1 retention policy (empty: the database's default).")] = ""
    username: Annotated[str, Var(
        "INFLUXDB_USERNAME", "v1 user; the password comes from INFLUXDB_PASSWORD or INFLUXDB_PASSWORD_FILE, else "
        "the file's password.", default_text="the file's username")] = ""
    timeout_s: InfluxTimeout = 10.0
    schema: Annotated[str, Var(
        "INFLUXDB_SCHEMA", "homeiq (one measurement, the HomeIQ services' schema) or ha (Home Assistant's influxdb "
        "integration, point for point).", one_of(*SCHEMAS), default_text="the file's homeiq.schema, else homeiq",
    )] = "homeiq"
    verify_ssl: Annotated[bool, Var(
        "INFLUXDB_VERIFY_SSL", "Check InfluxDB's TLS certificate and host name.",
        default_text="the file's verify_ssl, else on")] = True
    ssl_ca_cert: Annotated[str, Var(
        "INFLUXDB_SSL_CA_CERT", "CA file that signs InfluxDB's certificate (instead of the system's).",
        a_file_or_empty, default_text="the file's ssl_ca_cert")] = ""
    config_path: ConfigPath = ""
    config: ConfigFile | None = None

    @classmethod
    def layered(cls, given: dict[str, Any]) -> Self:
        """What is given, over what the HOMEIQ_CONFIG file says, over the defaults."""
        config = load_config(given.get("config_path", ""))
        return cls(**{**_from_file(config), **given, "config": config})

    def check_together(self) -> None:
        """v2 needs an organisation."""
        if self.api == "v2" and not self.org:
            raise ConfigError("INFLUXDB_ORG: must not be empty with INFLUXDB_API=v2")

    def config_notes(self) -> list[str]:
        """What the configuration file had that we take differently, or that changes the points of the schema in force
        (`schema` may come from INFLUXDB_SCHEMA, over the file's)."""
        if self.config is None:
            return []
        notes = list(self.config.notes)
        if left_out := [name for name in DEVICE_FIELDS if name not in self.config.homeiq.device_fields]:
            notes.append("homeiq.device_fields: no effect with the ha schema (its points carry no device strings)"
                         if self.schema == "ha" else
                         f"homeiq.device_fields: the homeiq schema's points leave out {', '.join(left_out)} "
                         "(HomeIQ's data-api counts manufacturer and model a point)")
        return notes

    def log_config_notes(self) -> None:
        """Log `config_notes` (at start)."""
        for note in self.config_notes():
            log.info("config_note", file=self.config.path if self.config else "", note=note)

    def _secret(self, name: str, from_file: str, required: bool) -> str:
        """NAME or NAME_FILE from the environment; else the configuration file's value."""
        if os.environ.get(name) or os.environ.get(f"{name}_FILE") or not from_file:
            return read_secret(name, required=required)
        return from_file

    def secret(self) -> str:
        """The v2 token, or the v1 user's password (empty without a user)."""
        words = self.config.words if self.config is not None else None
        if self.api == "v2":
            return self._secret("INFLUXDB_TOKEN", words.token.value if words else "", True)
        return self._secret("INFLUXDB_PASSWORD", words.password.value if words else "", bool(self.username))

    def tls(self) -> ssl.SSLContext | None:
        """The TLS context for an https:// URL (verify_ssl, ssl_ca_cert), else None."""
        return ssl_context(self.verify_ssl, self.ssl_ca_cert) if self.url.startswith("https:") else None
