"""Writer settings, validated once at start."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import msgspec

from homeiq_shared.config import ConfigFile, load_config
from homeiq_shared.logs import Log
from homeiq_shared.settings import ConfigError, check_choice, check_positive, check_url, read_secret, ssl_context
from homeiq_shared.stream import DEFAULT_SOCKET_TIMEOUT_S, StreamNames
from homeiq_writer.influx import InfluxSink, v1_sink, v2_sink
from homeiq_writer.schemas import SCHEMAS, Encoder, make_encoder

log = Log(__name__)

# A blocked read returns after BLOCK plus Redis's and the network's delay; this much time must be left for that.
BLOCK_MARGIN_MS = 1000


class InfluxSettings(msgspec.Struct, frozen=True):
    """Where and how to write: `api` v2 (org, bucket, token) or v1 (db = bucket, rp, user/password), in which
    `schema`; `config` is the HOMEIQ_CONFIG file (its rules, and secrets the environment does not set)."""

    url: str
    api: str = "v2"
    org: str = "homeiq"
    bucket: str = "home_assistant_events"
    retention_policy: str = ""
    username: str = ""
    timeout_s: float = 10.0
    schema: str = "homeiq"
    verify_ssl: bool = True
    ssl_ca_cert: str = ""
    config: ConfigFile | None = None

    @classmethod
    def resolve(
        cls, *, url: str | None = None, api: str | None = None, org: str | None = None, bucket: str | None = None,
        retention_policy: str = "", username: str | None = None, timeout_s: float = 10.0, schema: str | None = None,
        verify_ssl: bool | None = None, ssl_ca_cert: str | None = None, config_path: str = "",
    ) -> InfluxSettings:
        """Each setting from its flag or environment variable when given (not None), else from the
        HOMEIQ_CONFIG file's `influxdb:` / `homeiq:` blocks, else its default. Validated."""
        config = load_config(config_path)
        defaults = cls(url="http://127.0.0.1:8086")
        file = cls(url=defaults.url)
        if config is not None:
            for note in config.notes:
                log.info("config_note", file=config.path, note=note)
            if config.integration is not None:
                words = config.integration
                v1 = words.api_version == "1"
                file = cls(url=words.url(), api="v1" if v1 else "v2", org=words.organization or defaults.org,
                           bucket=words.database if v1 else (words.bucket or ""), username=words.username or "",
                           verify_ssl=words.verify_ssl, ssl_ca_cert=words.ssl_ca_cert or "")
            if config.homeiq.schema is not None:
                file = msgspec.structs.replace(file, schema=config.homeiq.schema)
        return cls(
            url=file.url if url is None else url, api=file.api if api is None else api,
            org=file.org if org is None else org, bucket=file.bucket if bucket is None else bucket,
            retention_policy=retention_policy, username=file.username if username is None else username,
            timeout_s=timeout_s, schema=file.schema if schema is None else schema,
            verify_ssl=file.verify_ssl if verify_ssl is None else verify_ssl,
            ssl_ca_cert=file.ssl_ca_cert if ssl_ca_cert is None else ssl_ca_cert, config=config,
        ).validate()

    def validate(self) -> InfluxSettings:
        """Raise ConfigError naming the variable that is wrong."""
        check_url("INFLUXDB_URL", self.url, ("http", "https"))
        check_choice("INFLUXDB_API", self.api, ("v1", "v2"))
        check_choice("INFLUXDB_SCHEMA", self.schema, SCHEMAS)
        check_positive("INFLUXDB_TIMEOUT_S", self.timeout_s)
        if not self.bucket:
            raise ConfigError("INFLUXDB_BUCKET: must not be empty")
        if self.api == "v2" and not self.org:
            raise ConfigError("INFLUXDB_ORG: must not be empty with INFLUXDB_API=v2")
        if self.ssl_ca_cert and not Path(self.ssl_ca_cert).is_file():
            raise ConfigError(f"INFLUXDB_SSL_CA_CERT: {self.ssl_ca_cert!r} is not a file")
        return self

    def _secret(self, name: str, from_file: str, required: bool) -> str:
        """NAME or NAME_FILE from the environment; else the configuration file's value."""
        if os.environ.get(name) or os.environ.get(f"{name}_FILE") or not from_file:
            return read_secret(name, required=required)
        return from_file

    def make_sink(self) -> InfluxSink:
        """Build the sink; secrets are read from INFLUXDB_TOKEN / INFLUXDB_PASSWORD (or their *_FILE), else from
        the configuration file's `token` / `password`."""
        secret, tls = self.secret(), self.tls()
        if self.api == "v2":
            return v2_sink(self.url, self.org, self.bucket, secret, self.timeout_s, tls)
        return v1_sink(self.url, self.bucket, self.retention_policy, self.username, secret, self.timeout_s, tls)

    def secret(self) -> str:
        """The v2 token, or the v1 user's password (empty without a user)."""
        words = self.config.words if self.config is not None else None
        if self.api == "v2":
            return self._secret("INFLUXDB_TOKEN", words.token.value if words else "", True)
        return self._secret("INFLUXDB_PASSWORD", words.password.value if words else "", bool(self.username))

    def tls(self) -> ssl.SSLContext | None:
        """The TLS context for an https:// URL (verify_ssl, ssl_ca_cert), else None."""
        return ssl_context(self.verify_ssl, self.ssl_ca_cert) if self.url.startswith("https:") else None

    def make_encoder(self) -> Encoder:
        """The encoder of the chosen schema, with the configuration file's rules."""
        return make_encoder(self.schema, self.config)


class WriterSettings(msgspec.Struct, frozen=True):
    """Everything `writer run` needs."""

    redis_url: str
    names: StreamNames
    consumer: str
    influx: InfluxSettings
    batch_size: int = 5000
    block_ms: int = 1000
    write_interval_ms: int = 200
    redis_socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S
    metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped from other containers
    metrics_port: int = 8002
    require_aof: bool = True

    def validate(self) -> WriterSettings:
        """Raise ConfigError naming the variable that is wrong."""
        check_url("REDIS_URL", self.redis_url, ("redis", "rediss", "unix"))
        if not self.consumer:
            raise ConfigError("WRITER_CONSUMER: must not be empty")
        if not 1 <= self.batch_size <= 5000:
            raise ConfigError(f"WRITER_BATCH_SIZE: must be between 1 and 5000, got {self.batch_size}")
        check_positive("WRITER_BLOCK_MS", self.block_ms)
        if not 0 <= self.write_interval_ms <= 10_000:
            raise ConfigError(f"WRITER_WRITE_INTERVAL_MS: must be between 0 and 10000, got {self.write_interval_ms}")
        check_positive("REDIS_SOCKET_TIMEOUT_S", self.redis_socket_timeout_s)
        if self.block_ms + BLOCK_MARGIN_MS > self.redis_socket_timeout_s * 1000:
            # Otherwise every read of an idle stream times out as if Redis were down (unready, reconnects).
            raise ConfigError(
                f"WRITER_BLOCK_MS ({self.block_ms}) must be at least {BLOCK_MARGIN_MS} ms below "
                f"REDIS_SOCKET_TIMEOUT_S ({self.redis_socket_timeout_s:g} s): lower WRITER_BLOCK_MS or raise "
                "REDIS_SOCKET_TIMEOUT_S")
        self.influx.validate()
        return self
