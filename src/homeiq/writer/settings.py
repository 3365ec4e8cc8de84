"""Writer settings, validated once at start."""

from __future__ import annotations

import socket
from typing import Annotated

from homeiq.shared.influx.settings import InfluxSettings
from homeiq.shared.options import MetricsPort, ServiceSettings
from homeiq.shared.settings import ConfigError, Nested, Var, between, positive
from homeiq.shared.stream import DEFAULT_SOCKET_TIMEOUT_S, StreamNames

# A blocked read returns after BLOCK plus Redis's and the network's delay; this much time must be left for that.
BLOCK_MARGIN_MS = 1000


def _hostname_if_empty(name: str, value: str) -> str:
    return value or socket.gethostname()


class WriterSettings(ServiceSettings, frozen=True, kw_only=True):
    """Everything `writer run` needs."""

    names: StreamNames = StreamNames()
    consumer: Annotated[str, Var(
        "WRITER_CONSUMER", "Consumer name; stable per replica.", _hostname_if_empty,
        default_text="the host name")] = ""
    influx: Annotated[InfluxSettings, Nested(prefix="influxdb_")] = InfluxSettings()
    batch_size: Annotated[int, Var(
        "WRITER_BATCH_SIZE", "Events per read and per InfluxDB write (max 5000; a read of packed entries asks for "
        "as many entries as hold about this many events).", between(1, 5000))] = 5000
    block_ms: Annotated[int, Var(
        "WRITER_BLOCK_MS", "How long one read waits for new entries, ms (at least 1 s below the socket timeout).",
        positive)] = 1000
    write_interval_ms: Annotated[int, Var(
        "WRITER_WRITE_INTERVAL_MS", "While the writer keeps up (its batches are not full), each batch gathers this "
        "long, ms; 0: each batch the collector added is written as it arrives (its events gathered "
        "COLLECTOR_LINGER_MS there already). A writer that falls behind writes full batches back to back.",
        between(0, 10_000))] = 0
    redis_socket_timeout_s: Annotated[float, Var(
        "REDIS_SOCKET_TIMEOUT_S", "How long any Redis command, a blocked read included, may take, s.",
        positive)] = DEFAULT_SOCKET_TIMEOUT_S
    metrics_port: MetricsPort = 8002

    def check_together(self) -> None:
        """A blocked read must end well before the socket timeout."""
        if self.block_ms + BLOCK_MARGIN_MS > self.redis_socket_timeout_s * 1000:
            # Otherwise every read of an idle stream times out as if Redis were down (unready, reconnects).
            raise ConfigError(
                f"WRITER_BLOCK_MS ({self.block_ms}) must be at least {BLOCK_MARGIN_MS} ms below "
                f"REDIS_SOCKET_TIMEOUT_S ({self.redis_socket_timeout_s:g} s): lower WRITER_BLOCK_MS or raise "
                "REDIS_SOCKET_TIMEOUT_S")
