"""Writer settings, validated once at start."""

from __future__ import annotations

import msgspec

from homeiq_shared.settings import ConfigError, check_choice, check_positive, check_url, read_secret
from homeiq_shared.stream import DEFAULT_SOCKET_TIMEOUT_S, StreamNames
from homeiq_writer.influx import InfluxSink, V1Sink, V2Sink

# A blocked read returns after BLOCK plus Redis's and the network's delay; this much time must be left for that.
BLOCK_MARGIN_MS = 1000


class InfluxSettings(msgspec.Struct, frozen=True):
    """Where and how to write: `api` v2 (org, bucket, token) or v1 (db = bucket, rp, user/password)."""

    url: str
    api: str = "v2"
    org: str = "homeiq"
    bucket: str = "home_assistant_events"
    retention_policy: str = ""
    username: str = ""
    timeout_s: float = 10.0

    def validate(self) -> InfluxSettings:
        """Raise ConfigError naming the variable that is wrong."""
        check_url("INFLUXDB_URL", self.url, ("http", "https"))
        check_choice("INFLUXDB_API", self.api, ("v1", "v2"))
        check_positive("INFLUXDB_TIMEOUT_S", self.timeout_s)
        if not self.bucket:
            raise ConfigError("INFLUXDB_BUCKET: must not be empty")
        if self.api == "v2" and not self.org:
            raise ConfigError("INFLUXDB_ORG: must not be empty with INFLUXDB_API=v2")
        return self

    def make_sink(self) -> InfluxSink:
        """Build the sink; secrets are read from INFLUXDB_TOKEN / INFLUXDB_PASSWORD (or their *_FILE)."""
        if self.api == "v2":
            return V2Sink(self.url, self.org, self.bucket, read_secret("INFLUXDB_TOKEN"), self.timeout_s)
        password = read_secret("INFLUXDB_PASSWORD", required=bool(self.username))
        return V1Sink(self.url, self.bucket, self.retention_policy, self.username, password, self.timeout_s)


class WriterSettings(msgspec.Struct, frozen=True):
    """Everything `writer run` needs."""

    redis_url: str
    names: StreamNames
    consumer: str
    influx: InfluxSettings
    batch_size: int = 5000
    block_ms: int = 1000
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
        check_positive("REDIS_SOCKET_TIMEOUT_S", self.redis_socket_timeout_s)
        if self.block_ms + BLOCK_MARGIN_MS > self.redis_socket_timeout_s * 1000:
            # Otherwise every read of an idle stream times out as if Redis were down (unready, reconnects).
            raise ConfigError(
                f"WRITER_BLOCK_MS ({self.block_ms}) must be at least {BLOCK_MARGIN_MS} ms below "
                f"REDIS_SOCKET_TIMEOUT_S ({self.redis_socket_timeout_s:g} s): lower WRITER_BLOCK_MS or raise "
                "REDIS_SOCKET_TIMEOUT_S")
        self.influx.validate()
        return self
