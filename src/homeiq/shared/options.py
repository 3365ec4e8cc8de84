"""Settings every process shares, declared once; services subclass these."""

from __future__ import annotations

import re
from typing import Annotated

from homeiq.shared.settings import (
    REDIS_URL_CHECK,
    ConfigError,
    Settings,
    Var,
    between,
    check_choice,
    host_port_list,
    not_empty,
    one_of,
)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_SENTINEL_SERVICE = "homeiq"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(name: str, value: str) -> str:
    return check_choice(name, value.upper(), LOG_LEVELS)


RedisUrl = Annotated[str, Var(
    "REDIS_URL", "Redis URL, redis://[user@]host:port/db (rediss:// for TLS) or unix:///path/redis.sock?db=0; the "
    "password from REDIS_PASSWORD_FILE (or in the URL).", REDIS_URL_CHECK)]
RedisSentinels = Annotated[str, Var(
    "REDIS_SENTINELS", "Redis Sentinels to ask for the Redis primary, host:port,host:port (empty: REDIS_URL's host "
    "is the Redis). With them, REDIS_URL gives only the database (and user); the data nodes' password comes from "
    "REDIS_PASSWORD_FILE, the sentinels' own from REDIS_SENTINEL_PASSWORD_FILE.", host_port_list)]
RedisSentinelTls = Annotated[str, Var(
    "REDIS_SENTINEL_TLS", "With a rediss:// REDIS_URL: auto asks the sentinels over TLS too (checked against the "
    "URL's CA), off asks them in plain text (sentinels without a tls-port).", one_of("auto", "off"))]
RedisSentinelService = Annotated[str, Var(
    "REDIS_SENTINEL_SERVICE", "The master name the sentinels monitor (`sentinel monitor <name> ...`).", not_empty)]
ConfigPath = Annotated[str, Var(
    "HOMEIQ_CONFIG", "YAML file with Home Assistant's `influxdb:` block (the integration's keys: connection, "
    "include/exclude) and our `homeiq:` block; flags and environment variables override it.", flag="--config")]
MetricsPort = Annotated[int, Var(
    "METRICS_PORT", "Port of /metrics, /healthz, /readyz (0: any free port).", between(0, 65535))]


def disk_paths(value: str) -> dict[str, str]:
    """DISK_PATHS parsed: `use=/path,use=/path` → {use: path} (empty: none)."""
    pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
    return {use.strip(): path.strip() for use, path in pairs}


def _disk_paths(name: str, value: str) -> str:
    for item in filter(str.strip, value.split(",")):
        use, _, path = item.partition("=")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", use.strip()) or not path.strip().startswith("/"):
            raise ConfigError(f"{name}: {item.strip()!r} is not name=/absolute/path (e.g. redis=/var/lib/redis)")
    return value


class LogSettings(Settings, frozen=True, kw_only=True):
    """How a process logs."""

    log_level: Annotated[str, Var("LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR.", _log_level)] = "INFO"
    log_format: Annotated[str, Var(
        "LOG_FORMAT", "json, text, or auto (json unless a terminal).", one_of("json", "text", "auto"))] = "auto"


class ServiceSettings(LogSettings, frozen=True, kw_only=True):
    """What every pipeline service shares: logging, Redis, the address of its metrics and health."""

    redis_url: RedisUrl = DEFAULT_REDIS_URL
    redis_sentinels: RedisSentinels = ""
    redis_sentinel_service: RedisSentinelService = DEFAULT_SENTINEL_SERVICE
    redis_sentinel_tls: RedisSentinelTls = "auto"
    require_aof: Annotated[bool, Var(
        "REDIS_REQUIRE_AOF", "Refuse a Redis whose append-only file is off (a restart would lose the stream). Turn "
        "off only for a Redis that persists every write another way.", flag="--require-aof/--no-require-aof")] = True
    metrics_host: Annotated[str, Var(
        "METRICS_HOST", "Address of /metrics, /healthz, /readyz.")] = "0.0.0.0"  # noqa: S104 - scraped from others
    metrics_port: MetricsPort = 8000
    disk_paths: Annotated[str, Var(
        "DISK_PATHS", "Directories whose free space /metrics reports, as name=/path,… (e.g. "
        "redis=/var/lib/redis,influxdb=/var/lib/influxdb): homeiq_disk_free_bytes{use=name}. For the disks of "
        "Redis and InfluxDB where this process can see them.", _disk_paths)] = ""
