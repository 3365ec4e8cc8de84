"""Collector metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from homeiq.collector.session_end import DISCONNECT_LABELS
from homeiq.shared.logs import Log, SampledLog

DROP_REASONS = ("malformed_event", "backfill_malformed", "backfill_too_large", "spool_full", "spool_write_failed",
                "shutdown_spool_full", "shutdown_unpublished", "redis_forgot")
REJECT_REASONS = ("malformed_json", "unknown_type", "binary_frame", "unknown_subscription",
                  "unexpected_result", "unexpected_auth", "malformed_registry")


class CollectorMetrics:
    """Counters and gauges of one collector, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._events(registry)
        self._session(registry)
        self._delivery(registry)
        self._clocks(registry)
        self._spool(registry)
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        for reason in REJECT_REASONS:
            self.frames_rejected.labels(reason)
        for direction in ("back", "ahead"):
            self.ha_clock_steps.labels(direction)
        for label in DISCONNECT_LABELS:
            self.disconnects.labels(label)
        self._sampled = SampledLog(Log("homeiq.collector.frames"))

    def _events(self, registry: CollectorRegistry) -> None:
        """What happened to the events HA sent."""
        self.received = Counter("homeiq_events_received_total",
                                "Events received from HA (counted once their frame is read to the end).",
                                registry=registry)
        self.filtered = Counter("homeiq_events_filtered_total", "Events the entity filter left out.",
                                registry=registry)
        self.published = Counter("homeiq_events_published_total", "Events XADDed to the stream.",
                                 registry=registry)
        self.deduplicated = Counter(
            "homeiq_events_deduplicated_total", "Events not XADDed because the stream had them already "
            "(COLLECTOR_DEDUP_WINDOW_S): added by another collector, or by this one before a WAIT timed out.",
            registry=registry)
        self.dropped = Counter("homeiq_events_dropped_total", "Events lost, by reason.", ["reason"],
                               registry=registry)
        self.frames_rejected = Counter("homeiq_frames_rejected_total",
                                       "HA messages that were not usable, by reason.", ["reason"],
                                       registry=registry)

    def _session(self, registry: CollectorRegistry) -> None:
        """The HA session."""
        self.connected = Gauge("homeiq_ha_connected", "1 while connected, authenticated and subscribed.",
                               registry=registry)
        self.auth_rejected = Gauge("homeiq_ha_auth_rejected", "1 while HA refuses the token (auth_invalid).",
                                   registry=registry)
        self.unsubscribed_seconds = Counter(
            "homeiq_ha_unsubscribed_seconds_total",
            "Time between losing HA's event subscription and having it again. State changes of the time are "
            "backfilled from the recorder; other events sent then are lost (HA keeps no history of them).",
            registry=registry)
        self.reconnects = Counter("homeiq_ha_reconnects_total", "Connection attempts after the first.",
                                  registry=registry)
        self.disconnects = Counter("homeiq_ha_disconnects_total", "Sessions ended, by reason.", ["reason"],
                                   registry=registry)

    def _delivery(self, registry: CollectorRegistry) -> None:
        """The buffer, the backfill, and a Redis that forgot."""
        self.buffered = Gauge("homeiq_collector_buffered_events", "Events waiting for XADD in memory.",
                              registry=registry)
        self.backfilled = Counter("homeiq_events_backfilled_total",
                                  "Recorder states published after a reconnect (source=backfill).", registry=registry)
        self.backfill_unconfirmed = Counter(
            "homeiq_backfill_unconfirmed_total", "Backfills done after HA_RECORDER_WAIT_S without proof that HA's "
            "recorder had committed the gap: states it committed later are missing (`replayer audit` finds them).",
            registry=registry)
        self.backfill_failures = Counter(
            "homeiq_backfill_failures_total", "Backfills that could not read HA's recorder (tried again later; the "
            "gap stays open).", registry=registry)
        self.redis_forgot = Counter(
            "homeiq_redis_forgot_total", "Times Redis was found without entries it had acknowledged (an older AOF, "
            "a lagging replica promoted): the gap is backfilled, other events of it counted as dropped.",
            registry=registry)

    def _clocks(self, registry: CollectorRegistry) -> None:
        """HA's and Redis's clocks, and the open gap."""
        self.ha_clock_offset = Gauge(
            "homeiq_ha_clock_offset_seconds", "HA's clock minus the collector's, from live state times (less the "
            "shortest latency of the last 10 min); points carry HA's time.", registry=registry)
        self.ha_clock_skew = Gauge(
            "homeiq_ha_clock_skew_seconds", "HA's clock minus the collector's as estimated from live state times "
            "(the largest state time minus arrival time of the last 10 min); live events carry it when a second or "
            "more, and their latency is measured on our clock.", registry=registry)
        self.tls_cert_expiry = Gauge(
            "homeiq_tls_cert_expiry_timestamp_seconds", "When the certificate the TLS peer last showed expires "
            "(notAfter, Unix seconds): peer home_assistant (wss://) here, influxdb (https://) at the writers.",
            ["peer"], registry=registry)
        self.redis_clock_offset = Gauge("homeiq_redis_clock_offset_seconds",
                                        "Redis's clock minus the collector's (stream ids carry Redis's).",
                                        registry=registry)
        self.ha_clock_steps = Counter("homeiq_ha_clock_steps_total", "Times HA's clock went back, or jumped ahead "
                                      "(by more than a minute), as its state times show.", ["direction"],
                                      registry=registry)
        self.ha_clock_outliers = Counter(
            "homeiq_ha_clock_outliers_total", "Live states stamped over a minute ahead of HA's clock as measured: "
            "published, but they do not move the watermark.", registry=registry)
        self.gap_open = Gauge("homeiq_backfill_gap_open", "1 while a gap in what HA sent is not yet backfilled "
                              "(or a restarted collector does not yet know where it left off).", registry=registry)

    def _spool(self, registry: CollectorRegistry) -> None:
        """The disk spool and the publish script."""
        self.spooled = Counter("homeiq_events_spooled_total", "Events written to the disk spool.",
                               registry=registry)
        self.spool_bytes = Gauge("homeiq_spool_bytes", "Bytes in the disk spool not yet drained.",
                                 registry=registry)
        self.spool_max_bytes = Gauge("homeiq_spool_max_bytes", "The spool's cap (COLLECTOR_SPOOL_MAX_MB) in bytes.",
                                     registry=registry)
        self.cache_entries = Gauge("homeiq_collector_cache_entries", "Entries in one of the collector's "
                                   "in-memory caches, by cache (a soak watches them stay bounded).", ["cache"],
                                   registry=registry)
        self.publish_seconds = Histogram("homeiq_publish_duration_seconds", "One batch XADDed (one script call).",
                                         registry=registry,
                                         buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5))

    def events_received(self, count: int) -> None:
        """`count` events of one frame reached their subscription (ClientMetrics)."""
        self.received.inc(count)

    def frame_rejected(self, reason: str, text: str, sample: str) -> None:
        """An unusable HA message: counted by reason, logged sampled (ClientMetrics)."""
        self.frames_rejected.labels(reason).inc()
        self.log_sampled(reason, text, sample=sample)

    def log_sampled(self, reason: str, text: str, **fields: object) -> None:
        """Log a rejected frame or dropped event, at most once per interval per reason."""
        self._sampled.warning(reason, text, **fields)
