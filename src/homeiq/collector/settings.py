"""Collector settings: each declared once, with its variable, default, check and help; validated at start."""

from __future__ import annotations

import ssl
from typing import Annotated

from homeiq.collector.spool import POLICIES, Policy
from homeiq.shared.entity_filter import EntityFilterFile, EntityFilterJson
from homeiq.shared.ha.settings import DEFAULT_HA_URL, HaCommandTimeout, HaSslCaCert, HaUrl, HaVerifySsl, ha_tls
from homeiq.shared.options import ConfigPath, MetricsPort, ServiceSettings
from homeiq.shared.packing import DEFAULT_EVENTS_PER_ENTRY, MOST_EVENTS_PER_ENTRY
from homeiq.shared.settings import Nested, Var, at_least, between, not_empty, one_of, positive
from homeiq.shared.stream import StreamNames


class CollectorSettings(ServiceSettings, frozen=True, kw_only=True):
    """Everything `collector run` needs; the token is read separately and never stored here."""

    ha_url: HaUrl = DEFAULT_HA_URL
    names: Annotated[StreamNames, Nested(only=("stream",))] = StreamNames()
    connect_timeout_s: Annotated[float, Var(
        "HA_CONNECT_TIMEOUT_S", "TCP + WebSocket handshake timeout, s.", positive)] = 10.0
    auth_timeout_s: Annotated[float, Var(
        "HA_AUTH_TIMEOUT_S", "Timeout of each receive during auth, s.", positive)] = 10.0
    command_timeout_s: HaCommandTimeout = 60.0
    ping_interval_s: Annotated[float, Var("HA_PING_INTERVAL_S", "App-level ping interval, s.", positive)] = 30.0
    ping_timeout_s: Annotated[float, Var(
        "HA_PING_TIMEOUT_S", "Reconnect when neither the pong nor any other frame came within this, s.",
        positive)] = 10.0
    max_message_mb: Annotated[int, Var(
        "HA_MAX_MESSAGE_MB", "Largest WebSocket message accepted, MiB (at least 16: get_states on large installs).",
        at_least(16))] = 64
    backoff_base_s: Annotated[float, Var(
        "HA_BACKOFF_BASE_S", "First reconnect backoff ceiling, s (doubles).", positive)] = 1.0
    backoff_max_s: Annotated[float, Var("HA_BACKOFF_MAX_S", "Cap of the reconnect backoff, s.", positive)] = 60.0
    auth_retry_s: Annotated[float, Var(
        "HA_AUTH_RETRY_S", "After HA refused the token (auth_invalid), stay up and unready and log in again after "
        "this long, s; doubles each time, up to 6 h (HA's IP ban counts failed logins).", positive)] = 900.0
    buffer_events: Annotated[int, Var(
        "COLLECTOR_BUFFER_EVENTS", "Events buffered in memory before XADD.", positive)] = 2_000
    publish_batch: Annotated[int, Var("COLLECTOR_PUBLISH_BATCH", "Most events XADDed by one script call.",
                                      positive)] = 1_000
    events_per_entry: Annotated[int, Var(
        "COLLECTOR_EVENTS_PER_ENTRY", "Most events one stream entry holds: a batch's events are packed this many to an "
        "entry and deflated together (entry version 2), which costs Redis a fifth of the bytes and of the CPU. 1: one "
        "event an entry, uncompressed (version 1, which writers before 2026-12 read; deploy writers first).",
        between(1, MOST_EVENTS_PER_ENTRY))] = DEFAULT_EVENTS_PER_ENTRY
    linger_ms: Annotated[int, Var(
        "COLLECTOR_LINGER_MS", "How long a batch gathers events before its XADD, ms: while events trickle in, HA's "
        "socket rests this long after each burst it read, and each burst is one batch (one wakeup, one Redis call, "
        "one InfluxDB write for a home's few events a second, not one each); a full batch goes at once. The "
        "longest an event waits for its batch: the writers write each batch as it arrives.", between(0, 1000))] = 180
    spool_dir: Annotated[str, Var(
        "COLLECTOR_SPOOL_DIR", "Directory of the disk spool used while Redis is down.", not_empty)] = "spool"
    spool_max_mb: Annotated[int, Var("COLLECTOR_SPOOL_MAX_MB", "Most MiB the spool may hold.", positive)] = 1024
    spool_policy: Annotated[Policy, Var(
        "COLLECTOR_SPOOL_POLICY", "When the spool is full: drop_oldest, drop_newest or block (stop reading; HA then "
        "drops us and backfill covers recorded entities).", one_of(*POLICIES))] = "drop_oldest"
    wait_replicas: Annotated[int, Var(
        "COLLECTOR_WAIT_REPLICAS", "A batch counts as durable (its spool records dropped, the watermark moved) only "
        "once this many replicas have it too (Redis WAIT after the XADDs); what they do not confirm in time stays "
        "in the spool. 0: once the primary has it. 1 with Sentinel, so that a failover cannot take it back.",
        between(0, 16))] = 0
    wait_timeout_ms: Annotated[int, Var(
        "COLLECTOR_WAIT_TIMEOUT_MS", "Longest wait for those replicas per batch, ms (below the 15 s Redis "
        "command timeout).", between(1, 10_000))] = 1000
    dedup_window_s: Annotated[int, Var(
        "COLLECTOR_DEDUP_WINDOW_S", "Two collectors on one HA (one per machine): set this on both, and Redis adds "
        "each event once, remembering the identities of the events added in the last this many seconds (a few MB "
        "an hour at a home's rate). Keep it above the longest a collector may hold events in its spool. 0: one "
        "collector, nothing remembered.", between(0, 7 * 86_400))] = 0
    backfill: Annotated[bool, Var(
        "HA_BACKFILL", "After a reconnect, publish the recorder's states of the gap.")] = True
    recorder_wait_s: Annotated[float, Var(
        "HA_RECORDER_WAIT_S", "Longest wait for HA's recorder to commit a gap before it is backfilled anyway (and "
        "counted as unconfirmed); keep it above the recorder's commit_interval, s.", positive)] = 120.0
    verify_ssl: HaVerifySsl = True
    ssl_ca_cert: HaSslCaCert = ""
    config_path: ConfigPath = ""
    entity_filter: EntityFilterJson = ""
    entity_filter_file: EntityFilterFile = ""
    metrics_port: MetricsPort = 8001

    def tls(self) -> ssl.SSLContext | None:
        """The TLS settings of a wss:// connection (None for ws://)."""
        return ha_tls(self.ha_url, self.verify_ssl, self.ssl_ca_cert)
