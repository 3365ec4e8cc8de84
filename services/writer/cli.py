"""`writer` console script."""

from __future__ import annotations

import socket
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
    RequireAof,
    StreamName,
)
from homeiq_shared.stream import DEFAULT_NAMES, DEFAULT_SOCKET_TIMEOUT_S, StreamNames
from homeiq_writer.options import (
    DEFAULTS,
    HomeiqConfig,
    InfluxApi,
    InfluxBucket,
    InfluxCaCert,
    InfluxOrg,
    InfluxRetentionPolicy,
    InfluxSchema,
    InfluxTimeout,
    InfluxUrl,
    InfluxUsername,
    InfluxVerifySsl,
)
from homeiq_writer.settings import InfluxSettings, WriterSettings

app = typer.Typer(help="Write stream entries to InfluxDB; ack only after InfluxDB accepted them.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


@app.callback()
def _main() -> None:
    """Write stream entries to InfluxDB; ack only after InfluxDB accepted them."""


@app.command()
def run(
    influxdb_url: InfluxUrl = None,
    influxdb_api: InfluxApi = None,
    influxdb_org: InfluxOrg = None,
    influxdb_bucket: InfluxBucket = None,
    influxdb_retention_policy: InfluxRetentionPolicy = DEFAULTS.retention_policy,
    influxdb_username: InfluxUsername = None,
    influxdb_timeout_s: InfluxTimeout = DEFAULTS.timeout_s,
    influxdb_schema: InfluxSchema = None,
    influxdb_verify_ssl: InfluxVerifySsl = None,
    influxdb_ssl_ca_cert: InfluxCaCert = None,
    config: HomeiqConfig = "",
    consumer: Annotated[
        str, typer.Option(envvar="WRITER_CONSUMER", help="Consumer name; stable per replica (default: hostname).")
    ] = "",
    batch_size: Annotated[
        int, typer.Option(envvar="WRITER_BATCH_SIZE", help="Entries per read and per InfluxDB write (max 5000).")
    ] = 5000,
    write_interval_ms: Annotated[
        int, typer.Option(envvar="WRITER_WRITE_INTERVAL_MS",
                          help="While the writer keeps up (its batches are not full), it lets each batch gather "
                               "0.1 ms per entry/s arriving, up to this, ms (0: never): InfluxDB takes bigger batches "
                               "for less CPU per point, and at low rates events stay fresh.")
    ] = 200,
    block_ms: Annotated[
        int, typer.Option(envvar="WRITER_BLOCK_MS",
                          help="How long one read waits for new entries, ms (at least 1 s below the socket timeout).")
    ] = 1000,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    require_aof: RequireAof = True,
    redis_socket_timeout_s: Annotated[
        float, typer.Option(envvar="REDIS_SOCKET_TIMEOUT_S",
                            help="How long any Redis command, a blocked read included, may take, seconds.")
    ] = DEFAULT_SOCKET_TIMEOUT_S,
    stream: StreamName = DEFAULT_NAMES.stream,
    group: GroupName = DEFAULT_NAMES.group,
    dead_stream: DeadStreamName = DEFAULT_NAMES.dead,
    metrics_host: MetricsHost = "0.0.0.0",  # noqa: S104 - scraped from other containers
    metrics_port: MetricsPort = 8002,
    log_level: LogLevel = "INFO",
    log_format: LogFormat = "auto",
) -> None:
    """Consume the stream in the writers' group and write batches to InfluxDB.

    The token comes from INFLUXDB_TOKEN or INFLUXDB_TOKEN_FILE (else the configuration file), never from a flag.
    """
    from homeiq_writer.service import Writer  # noqa: PLC0415 - keep --help fast

    def build() -> ServiceMain:
        settings = WriterSettings(
            redis_url=redis_url,
            names=StreamNames(stream=stream, group=group, dead=dead_stream),
            consumer=consumer or socket.gethostname(),
            influx=InfluxSettings.resolve(
                url=influxdb_url, api=influxdb_api, org=influxdb_org, bucket=influxdb_bucket,
                retention_policy=influxdb_retention_policy, username=influxdb_username,
                timeout_s=influxdb_timeout_s, schema=influxdb_schema, verify_ssl=influxdb_verify_ssl,
                ssl_ca_cert=influxdb_ssl_ca_cert, config_path=config,
            ),
            batch_size=batch_size, block_ms=block_ms, write_interval_ms=write_interval_ms,
            redis_socket_timeout_s=redis_socket_timeout_s,
            metrics_host=metrics_host, metrics_port=metrics_port, require_aof=require_aof,
        ).validate()
        return Writer(settings).run

    run_service("writer", log_level, log_format, build)
