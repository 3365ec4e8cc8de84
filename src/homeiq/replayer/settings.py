"""Replayer settings: the daemon's, `replayer reclaim`'s and `replayer audit`'s; each declared once."""

from __future__ import annotations

import os
import secrets
import socket
import ssl
from typing import Annotated, Final

from homeiq.shared.entity_filter import EntityFilterFile, EntityFilterJson
from homeiq.shared.ha.settings import (
    DEFAULT_HA_URL,
    HaCommandTimeout,
    HaSslCaCert,
    HaUrl,
    HaUrlOrNone,
    HaVerifySsl,
    ha_tls,
)
from homeiq.shared.influx.settings import InfluxSettings, InfluxTimeout
from homeiq.shared.options import (
    DEFAULT_REDIS_URL,
    DEFAULT_SENTINEL_SERVICE,
    MetricsPort,
    RedisSentinels,
    RedisSentinelService,
    RedisSentinelTls,
    RedisUrl,
    ServiceSettings,
)
from homeiq.shared.settings import (
    ConfigError,
    Nested,
    Settings,
    Var,
    at_least,
    between,
    check_url,
    not_empty,
    positive,
)
from homeiq.shared.stream import DEFAULT_NAMES, StreamNames

# One per host (a container's host name is its own): daemons on two hosts never share a consumer, and a restart
# keeps its name.
DAEMON_CONSUMER: Final = f"{socket.gethostname()}-replayer"


class Connection(Settings, frozen=True, kw_only=True):
    """What every replayer command shares: the group's options."""

    redis_url: RedisUrl = DEFAULT_REDIS_URL
    redis_sentinels: RedisSentinels = ""
    redis_sentinel_service: RedisSentinelService = DEFAULT_SENTINEL_SERVICE
    redis_sentinel_tls: RedisSentinelTls = "auto"
    names: StreamNames = DEFAULT_NAMES


class ReclaimSettings(Settings, frozen=True, kw_only=True):
    """How a reclaim pass claims, and when an entry is a suspect; the daemon's and `replayer reclaim`'s."""

    min_idle_ms: Annotated[int, Var(
        "REPLAYER_MIN_IDLE_MS", "Reclaim entries idle longer than this, ms (above a writer's worst write + retry).",
        at_least(0), flag="--min-idle")] = 60_000
    max_deliveries: Annotated[int, Var(
        "REPLAYER_MAX_DELIVERIES", "An entry delivered (read or claimed) more often than this is a suspect: it is "
        "written alone, under the crash ledger. Outages and restarts raise delivery counts too, so this alone "
        "dead-letters nothing.", positive, flag="--max-deliveries")] = 10
    max_crashes: Annotated[int, Var(
        "REPLAYER_MAX_CRASHES", "A suspect that replayers died (or hung) while decoding and encoding this many times "
        "goes to dead-letter as crashed_reader.", positive, flag="--max-crashes")] = 2
    count: Annotated[int, Var(
        "REPLAYER_COUNT", "Entries per XAUTOCLAIM call.", between(1, 5000), flag="--count")] = 500
    consumer: Annotated[str, Var(
        "REPLAYER_CONSUMER", "The daemon's consumer name, which the reclaimed entries move to; stable across "
        "restarts. `replayer reclaim` claims as <this>-reclaim-<pid>-<random>, a name of its own per run.",
        not_empty, flag="--consumer", default_text="<host>-replayer")] = DAEMON_CONSUMER

    def one_shot_consumer(self) -> str:
        """A consumer name for one `replayer reclaim` run: never the daemon's, nor another run's."""
        return f"{self.consumer}-reclaim-{os.getpid()}-{secrets.token_hex(3)}"


class AuditSettings(Settings, frozen=True, kw_only=True):
    """The daemon's periodic audit; `interval_s` 0 turns it off."""

    interval_s: Annotated[float, Var(
        "REPLAYER_AUDIT_INTERVAL_S", "Audit HA's recorder against InfluxDB this often, s (0: off); needs HA_URL and "
        "HA_TOKEN.", at_least(0))] = 0.0
    repair: Annotated[bool, Var(
        "REPLAYER_AUDIT_REPAIR", "Publish what a periodic audit finds missing (never deletes).")] = False
    ha_url: HaUrlOrNone = ""
    verify_ssl: HaVerifySsl = True
    ssl_ca_cert: HaSslCaCert = ""
    entity_filter: EntityFilterJson = ""
    entity_filter_file: EntityFilterFile = ""
    settle_s: float = 120.0  # the newest states may still be on their way to InfluxDB
    concurrency: int = 2
    timeout_s: float = 120.0

    def check_together(self) -> None:
        """The audit needs HA."""
        if self.interval_s and not self.ha_url:
            raise ConfigError("HA_URL: must be set when REPLAYER_AUDIT_INTERVAL_S turns the periodic audit on")

    def tls(self) -> ssl.SSLContext | None:
        """The TLS settings of a wss:// HA_URL, as the collector's."""
        return ha_tls(self.ha_url, self.verify_ssl, self.ssl_ca_cert)


class ReplayerSettings(ServiceSettings, frozen=True, kw_only=True):
    """Everything `replayer run` needs."""

    names: StreamNames = DEFAULT_NAMES
    reclaim: ReclaimSettings = ReclaimSettings()
    interval_s: Annotated[float, Var("REPLAYER_INTERVAL_S", "Pause between reclaim passes, s.", positive)] = 10.0
    trim: Annotated[bool, Var("REPLAYER_TRIM", "XTRIM MINID below what is still needed, every REPLAYER_INTERVAL_S "
                              "(every second while 1,000 or more events a second are acked).")] = True
    prune_idle_s: Annotated[float, Var(
        "REPLAYER_PRUNE_IDLE_S", "Delete consumers idle this long with nothing pending, s.", positive)] = 86_400.0
    influx: Annotated[InfluxSettings, Nested(prefix="influxdb_")] = InfluxSettings()
    audit: Annotated[AuditSettings, Nested(prefix="audit_")] = AuditSettings()
    metrics_port: MetricsPort = 8003

    def check_together(self) -> None:
        """The daemon leaves live writers their entries."""
        if self.reclaim.min_idle_ms <= 0:
            raise ConfigError("REPLAYER_MIN_IDLE_MS: must be greater than 0 for `replayer run` (0 would claim what "
                              "live writers are writing); `replayer reclaim --min-idle 0` takes everything at once")


class ReclaimCommandSettings(Settings, frozen=True, kw_only=True):
    """What `replayer reclaim` needs besides the connection."""

    reclaim: ReclaimSettings = ReclaimSettings()
    give_up_after_s: Annotated[float, Var(
        "REPLAYER_GIVE_UP_AFTER_S", "Give up (exit 1, everything not written stays pending) when InfluxDB has taken "
        "nothing for this long, s; a request in flight may add up to INFLUXDB_TIMEOUT_S.", positive,
        flag="--give-up-after")] = 60.0
    influx: Annotated[InfluxSettings, Nested(prefix="influxdb_")] = InfluxSettings()


def _metrics_url_or_empty(name: str, value: str) -> str:
    return check_url(name, value, ("http", "https")) if value else value


class StatusSettings(Settings, frozen=True, kw_only=True):
    """What `replayer status` reads besides Redis."""

    collector_metrics_url: Annotated[str, Var(
        "COLLECTOR_METRICS_URL", "The collector's /metrics, for HA's connection and the spool (empty: ask only "
        "Redis). ./scripts/start's collector serves :9101.", _metrics_url_or_empty,
        flag="--collector-metrics")] = "http://127.0.0.1:8001/metrics"


class AuditInflux(InfluxSettings, frozen=True, kw_only=True):
    """An audit reads whole days back: its requests may take longer than a write."""

    timeout_s: InfluxTimeout = 60.0


class AuditCommandSettings(Settings, frozen=True, kw_only=True):
    """What `replayer audit` reads: HA's recorder and InfluxDB, and the collector's entity filter."""

    ha_url: HaUrl = DEFAULT_HA_URL
    verify_ssl: HaVerifySsl = True
    ssl_ca_cert: HaSslCaCert = ""
    ha_timeout_s: HaCommandTimeout = 120.0
    entity_filter: EntityFilterJson = ""
    entity_filter_file: EntityFilterFile = ""
    influx: Annotated[AuditInflux, Nested(prefix="influxdb_")] = AuditInflux()

    def tls(self) -> ssl.SSLContext | None:
        """The TLS settings of a wss:// HA_URL, as the collector's."""
        return ha_tls(self.ha_url, self.verify_ssl, self.ssl_ca_cert)
