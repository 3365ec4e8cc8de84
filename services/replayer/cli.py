"""`replayer` console script: the daemon and the operator's incident tools."""

from __future__ import annotations

from typing import Annotated

import typer

from homeiq_shared.cli import ServiceMain, run_service
from homeiq_shared.options import (
    DEFAULT_REDIS_URL,
    DeadStreamName,
    GroupName,
    LogFormat,
    LogLevel,
    MetricsHost,
    MetricsPort,
    RedisUrl,
    StreamName,
)
from homeiq_shared.stream import DEFAULT_NAMES, StreamNames
from homeiq_writer.options import (
    DEFAULTS,
    InfluxApi,
    InfluxBucket,
    InfluxOrg,
    InfluxRetentionPolicy,
    InfluxTimeout,
    InfluxUrl,
    InfluxUsername,
)
from homeiq_writer.settings import InfluxSettings

app = typer.Typer(help="Reclaim entries left pending by dead or stuck writers; incident tools.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

MinIdleMs = Annotated[
    int, typer.Option(envvar="REPLAYER_MIN_IDLE_MS",
                      help="Reclaim entries idle longer than this, ms (above a writer's worst write + retry).")
]


@app.callback()
def _main() -> None:
    """Reclaim entries left pending by dead or stuck writers; incident tools."""


@app.command()
def run(
    min_idle_ms: MinIdleMs = 60_000,
    interval_s: Annotated[
        float, typer.Option(envvar="REPLAYER_INTERVAL_S", help="Pause between reclaim passes, s.")
    ] = 10.0,
    count: Annotated[int, typer.Option(envvar="REPLAYER_COUNT", help="Entries per XAUTOCLAIM call.")] = 500,
    consumer: Annotated[
        str, typer.Option(envvar="REPLAYER_CONSUMER", help="Consumer name the reclaimed entries move to.")
    ] = "replayer",
    influxdb_url: InfluxUrl = DEFAULTS.url,
    influxdb_api: InfluxApi = DEFAULTS.api,
    influxdb_org: InfluxOrg = DEFAULTS.org,
    influxdb_bucket: InfluxBucket = DEFAULTS.bucket,
    influxdb_retention_policy: InfluxRetentionPolicy = DEFAULTS.retention_policy,
    influxdb_username: InfluxUsername = DEFAULTS.username,
    influxdb_timeout_s: InfluxTimeout = DEFAULTS.timeout_s,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    stream: StreamName = DEFAULT_NAMES.stream,
    group: GroupName = DEFAULT_NAMES.group,
    dead_stream: DeadStreamName = DEFAULT_NAMES.dead,
    metrics_host: MetricsHost = "0.0.0.0",  # noqa: S104 - scraped from other containers
    metrics_port: MetricsPort = 8003,
    log_level: LogLevel = "INFO",
    log_format: LogFormat = "auto",
) -> None:
    """Reclaim idle pending entries periodically and write them through the writer's code.

    The InfluxDB token comes from INFLUXDB_TOKEN or INFLUXDB_TOKEN_FILE, never from a flag.
    """
    from homeiq_replayer.service import Replayer, ReplayerSettings  # noqa: PLC0415 - keep --help fast

    def build() -> ServiceMain:
        settings = ReplayerSettings(
            redis_url=redis_url,
            names=StreamNames(stream=stream, group=group, dead=dead_stream),
            influx=InfluxSettings(
                url=influxdb_url, api=influxdb_api, org=influxdb_org, bucket=influxdb_bucket,
                retention_policy=influxdb_retention_policy, username=influxdb_username,
                timeout_s=influxdb_timeout_s,
            ),
            consumer=consumer, min_idle_ms=min_idle_ms, interval_s=interval_s, count=count,
            metrics_host=metrics_host, metrics_port=metrics_port,
        ).validate()
        return Replayer(settings).run

    run_service("replayer", log_level, log_format, build)
