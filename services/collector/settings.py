"""Collector settings, validated once at start."""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import msgspec

from homeiq_collector.spool import POLICIES, Policy
from homeiq_shared.settings import ConfigError, check_choice, check_positive, check_url, ssl_context
from homeiq_shared.stream import StreamNames


def websocket_url(url: str) -> str:
    """Accept HA's base URL or its WebSocket URL; return the ws(s)://…/api/websocket URL."""
    check_url("HA_URL", url, ("ws", "wss", "http", "https"))
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path.rstrip("/") else "/api/websocket"
    return urlunsplit(parts._replace(scheme=scheme, path=path))


class CollectorSettings(msgspec.Struct, frozen=True):
    """Everything `collector run` needs; the token is passed separately and never stored here."""

    ha_url: str
    redis_url: str
    names: StreamNames
    connect_timeout_s: float = 10.0
    auth_timeout_s: float = 10.0
    command_timeout_s: float = 60.0
    ping_interval_s: float = 30.0
    ping_timeout_s: float = 10.0
    max_message_mb: int = 64
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    auth_retry_s: float = 900.0
    buffer_events: int = 2_000
    publish_batch: int = 1_000
    spool_dir: str = "spool"
    spool_max_mb: int = 1024
    spool_policy: Policy = "drop_oldest"
    backfill: bool = True
    backfill_delay_s: float = 2.0
    metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped from other containers
    metrics_port: int = 8001
    require_aof: bool = True
    verify_ssl: bool = True
    ssl_ca_cert: str = ""

    def tls(self) -> ssl.SSLContext | None:
        """The TLS settings of a wss:// connection (None for ws://)."""
        if not self.ha_url.startswith("wss:"):
            return None
        return ssl_context(self.verify_ssl, self.ssl_ca_cert)

    def validate(self) -> CollectorSettings:
        """Raise ConfigError naming the variable that is wrong."""
        check_url("REDIS_URL", self.redis_url, ("redis", "rediss", "unix"))
        for name, value in (
            ("HA_CONNECT_TIMEOUT_S", self.connect_timeout_s), ("HA_AUTH_TIMEOUT_S", self.auth_timeout_s),
            ("HA_COMMAND_TIMEOUT_S", self.command_timeout_s), ("HA_PING_INTERVAL_S", self.ping_interval_s),
            ("HA_PING_TIMEOUT_S", self.ping_timeout_s), ("HA_BACKOFF_MAX_S", self.backoff_max_s),
            ("HA_BACKOFF_BASE_S", self.backoff_base_s), ("HA_AUTH_RETRY_S", self.auth_retry_s),
            ("COLLECTOR_BUFFER_EVENTS", self.buffer_events),
            ("COLLECTOR_PUBLISH_BATCH", self.publish_batch), ("COLLECTOR_SPOOL_MAX_MB", self.spool_max_mb),
        ):
            check_positive(name, value)
        if self.backfill_delay_s < 0:
            raise ConfigError(f"HA_BACKFILL_DELAY_S: must be 0 or more, got {self.backfill_delay_s}")
        check_choice("COLLECTOR_SPOOL_POLICY", self.spool_policy, POLICIES)
        if not self.spool_dir:
            raise ConfigError("COLLECTOR_SPOOL_DIR: must not be empty")
        if self.ssl_ca_cert and not Path(self.ssl_ca_cert).is_file():
            raise ConfigError(f"HA_SSL_CA_CERT: {self.ssl_ca_cert!r} is not a file")
        if self.max_message_mb < 16:
            raise ConfigError(f"HA_MAX_MESSAGE_MB: must be at least 16 (get_states on large installs), "
                              f"got {self.max_message_mb}")
        return msgspec.structs.replace(self, ha_url=websocket_url(self.ha_url))
