"""`collector` console script."""

from __future__ import annotations

from typing import Annotated

import typer

from homeiq_shared.cli import ServiceMain, run_service
from homeiq_shared.options import (
    DEFAULT_REDIS_URL,
    LogFormat,
    LogLevel,
    MetricsHost,
    MetricsPort,
    RedisUrl,
    RequireAof,
    StreamName,
)
from homeiq_shared.settings import read_secret
from homeiq_shared.stream import DEFAULT_NAMES, StreamNames

app = typer.Typer(help="Keep the Home Assistant WebSocket connection and XADD every event to the stream.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


@app.callback()
def _main() -> None:
    """Keep the Home Assistant WebSocket connection and XADD every event to the stream."""


@app.command()
def run(
    ha_url: Annotated[
        str, typer.Option(envvar="HA_URL", help="HA base URL or ws(s)://host:8123/api/websocket.")
    ] = "ws://127.0.0.1:8123/api/websocket",
    connect_timeout_s: Annotated[
        float, typer.Option(envvar="HA_CONNECT_TIMEOUT_S", help="TCP + WebSocket handshake timeout, s.")
    ] = 10.0,
    auth_timeout_s: Annotated[
        float, typer.Option(envvar="HA_AUTH_TIMEOUT_S", help="Timeout of each receive during auth, s.")
    ] = 10.0,
    command_timeout_s: Annotated[
        float, typer.Option(envvar="HA_COMMAND_TIMEOUT_S", help="Timeout of one command (registries), s.")
    ] = 60.0,
    ping_interval_s: Annotated[
        float, typer.Option(envvar="HA_PING_INTERVAL_S", help="App-level ping interval, s.")
    ] = 30.0,
    ping_timeout_s: Annotated[
        float, typer.Option(envvar="HA_PING_TIMEOUT_S", help="Reconnect when no pong within this, s.")
    ] = 10.0,
    max_message_mb: Annotated[
        int, typer.Option(envvar="HA_MAX_MESSAGE_MB", help="Largest WebSocket message accepted, MiB (>= 16).")
    ] = 64,
    backoff_base_s: Annotated[
        float, typer.Option(envvar="HA_BACKOFF_BASE_S", help="First reconnect backoff ceiling, s (doubles).")
    ] = 1.0,
    backoff_max_s: Annotated[
        float, typer.Option(envvar="HA_BACKOFF_MAX_S", help="Cap of the reconnect backoff, s.")
    ] = 60.0,
    auth_retry_s: Annotated[
        float, typer.Option(envvar="HA_AUTH_RETRY_S", help="After HA refused the token (auth_invalid), stay up and "
                            "unready and log in again after this long, s; doubles each time, up to 6 h (HA's IP "
                            "ban counts failed logins).")
    ] = 900.0,
    buffer_events: Annotated[
        int, typer.Option(envvar="COLLECTOR_BUFFER_EVENTS", help="Events buffered in memory before XADD.")
    ] = 2_000,
    publish_batch: Annotated[
        int, typer.Option(envvar="COLLECTOR_PUBLISH_BATCH", help="Most XADDs in one pipeline.")
    ] = 1_000,
    spool_dir: Annotated[
        str, typer.Option(envvar="COLLECTOR_SPOOL_DIR", help="Directory of the disk spool used while Redis is down.")
    ] = "spool",
    spool_max_mb: Annotated[
        int, typer.Option(envvar="COLLECTOR_SPOOL_MAX_MB", help="Most MiB the spool may hold.")
    ] = 1024,
    spool_policy: Annotated[
        str, typer.Option(envvar="COLLECTOR_SPOOL_POLICY", help="When the spool is full: drop_oldest, drop_newest "
                          "or block (stop reading; HA then drops us and backfill covers recorded entities).")
    ] = "drop_oldest",
    backfill: Annotated[
        bool, typer.Option(envvar="HA_BACKFILL", help="After a reconnect, publish the recorder's states of the gap.")
    ] = True,
    backfill_delay_s: Annotated[
        float, typer.Option(envvar="HA_BACKFILL_DELAY_S", help="Wait before the backfill (recorder commit), s.")
    ] = 2.0,
    verify_ssl: Annotated[
        bool, typer.Option("--ha-verify-ssl/--no-ha-verify-ssl", envvar="HA_VERIFY_SSL",
                           help="With wss:// (https://): check HA's certificate and host name.")
    ] = True,
    ssl_ca_cert: Annotated[
        str, typer.Option("--ha-ssl-ca-cert", envvar="HA_SSL_CA_CERT",
                          help="With wss://: CA file that signs HA's certificate (instead of the system's).")
    ] = "",
    config: Annotated[
        str, typer.Option("--config", envvar="HOMEIQ_CONFIG",
                          help="YAML file whose influxdb: block's include/exclude (entities, entity_globs, domains: "
                               "Home Assistant's own words) says which entities are published.")
    ] = "",
    entity_filter: Annotated[
        str, typer.Option(envvar="ENTITY_FILTER_CONFIG",
                          help="Deprecated (use HOMEIQ_CONFIG): entity filter as JSON: mode, patterns, exceptions.")
    ] = "",
    entity_filter_file: Annotated[
        str, typer.Option(envvar="ENTITY_FILTER_CONFIG_FILE",
                          help="Deprecated (use HOMEIQ_CONFIG): entity filter JSON file.")
    ] = "",
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    require_aof: RequireAof = True,
    stream: StreamName = DEFAULT_NAMES.stream,
    metrics_host: MetricsHost = "0.0.0.0",  # noqa: S104 - scraped from other containers
    metrics_port: MetricsPort = 8001,
    log_level: LogLevel = "INFO",
    log_format: LogFormat = "auto",
) -> None:
    """Connect to Home Assistant, subscribe to all events and publish them to the Redis stream.

    The token comes from HA_TOKEN or HA_TOKEN_FILE (a long-lived access token), never from a flag.
    """
    from homeiq_collector.entity_filter import EntityFilter  # noqa: PLC0415 - keep --help fast
    from homeiq_collector.service import Collector  # noqa: PLC0415
    from homeiq_collector.settings import CollectorSettings  # noqa: PLC0415
    from homeiq_shared.config import load_config  # noqa: PLC0415

    def build() -> ServiceMain:
        settings = CollectorSettings(
            ha_url=ha_url, redis_url=redis_url, names=StreamNames(stream=stream),
            connect_timeout_s=connect_timeout_s, auth_timeout_s=auth_timeout_s,
            command_timeout_s=command_timeout_s, ping_interval_s=ping_interval_s, ping_timeout_s=ping_timeout_s,
            max_message_mb=max_message_mb, backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s,
            auth_retry_s=auth_retry_s, buffer_events=buffer_events, publish_batch=publish_batch, spool_dir=spool_dir,
            spool_max_mb=spool_max_mb, spool_policy=spool_policy,  # type: ignore[arg-type]  # validated below
            backfill=backfill, backfill_delay_s=backfill_delay_s, metrics_host=metrics_host,
            metrics_port=metrics_port, require_aof=require_aof, verify_ssl=verify_ssl, ssl_ca_cert=ssl_ca_cert,
        ).validate()
        rules = EntityFilter.from_settings(entity_filter, entity_filter_file, load_config(config))
        return Collector(settings, read_secret("HA_TOKEN"), rules).run

    run_service("collector", log_level, log_format, build)
