"""CLI options every process shares; each reads the matching environment variable."""

from __future__ import annotations

from typing import Annotated

import typer

RedisUrl = Annotated[
    str,
    typer.Option("--redis-url", envvar="REDIS_URL", help="Redis URL, redis://[:password@]host:port/db or unix:///path/redis.sock?db=0."),
]
RequireAof = Annotated[
    bool,
    typer.Option("--require-aof/--no-require-aof", envvar="REDIS_REQUIRE_AOF",
                 help="Refuse a Redis whose append-only file is off (a restart would lose the stream). Turn off "
                      "only for a Redis that persists every write another way."),
]
StreamName = Annotated[str, typer.Option("--stream", envvar="STREAM_NAME", help="The events stream.")]
GroupName = Annotated[str, typer.Option("--group", envvar="STREAM_GROUP", help="The writers' consumer group.")]
DeadStreamName = Annotated[
    str, typer.Option("--dead-stream", envvar="STREAM_DEAD", help="The dead-letter stream.")
]
MetricsHost = Annotated[
    str, typer.Option("--metrics-host", envvar="METRICS_HOST", help="Address of /metrics, /healthz, /readyz.")
]
MetricsPort = Annotated[
    int, typer.Option("--metrics-port", envvar="METRICS_PORT", help="Port of /metrics, /healthz, /readyz.")
]
LogLevel = Annotated[
    str, typer.Option("--log-level", envvar="LOG_LEVEL", help="DEBUG, INFO, WARNING or ERROR.")
]
LogFormat = Annotated[
    str,
    typer.Option("--log-format", envvar="LOG_FORMAT", help="json, text, or auto (json unless a terminal)."),
]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
