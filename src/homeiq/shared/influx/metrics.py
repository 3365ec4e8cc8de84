"""Writer metrics (also used by the replayer, which writes through the same code)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from homeiq.shared.influx.schemas import ATTRIBUTE_REASONS, OVERWRITE_REASONS, SKIP_REASONS
from homeiq.shared.influx.sink import Outcome
from homeiq.shared.stream import LOST_REASONS, POISON_REASONS


class WriterMetrics:
    """Counters and histograms of one writing process, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._writes(registry)
        self._left_out(registry)
        for reason in OVERWRITE_REASONS:
            self.points_overwritten.labels(reason)
        for reason in SKIP_REASONS:
            self.skipped.labels(reason)
        for reason in ATTRIBUTE_REASONS:
            self.attributes_dropped.labels(reason)
        for outcome in Outcome:
            self.batches.labels(outcome.value)
        for reason in POISON_REASONS:
            self.dead_lettered.labels(reason)
        for reason in LOST_REASONS:
            self.lost.labels(reason)

    def _writes(self, registry: CollectorRegistry) -> None:
        """What was read, written and how fast."""
        self.entries_read = Counter(
            "homeiq_writer_entries_read_total", "Stream entries delivered to this process.", registry=registry
        )
        self.points_written = Counter(
            "homeiq_points_written_total", "Points InfluxDB accepted (2xx) and that were acked.",
            registry=registry,
        )
        self.batches = Counter(
            "homeiq_write_batches_total", "Write requests by outcome.", ["outcome"], registry=registry
        )
        self.write_seconds = Histogram(
            "homeiq_write_duration_seconds", "Duration of one InfluxDB write request.", registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.tls_cert_expiry = Gauge(
            "homeiq_tls_cert_expiry_timestamp_seconds", "When the certificate the TLS peer last showed expires "
            "(notAfter, Unix seconds): peer influxdb (https://) here, home_assistant (wss://) at the collector.",
            ["peer"], registry=registry)
        self.event_age = BatchHistogram(
            "homeiq_event_age_at_ack_seconds", "Event time to ack of live events: end-to-end latency.",
            registry,
            # 150, 200: a home's batches wait most of the 250 ms target; its p99 needs buckets inside it.
            buckets=(0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
        )

    def _left_out(self, registry: CollectorRegistry) -> None:
        """Entries and attributes that became no point, and points another overwrote."""
        self.dead_lettered = Counter(
            "homeiq_dead_lettered_total", "Entries moved to the dead-letter stream.", ["reason"],
            registry=registry,
        )
        self.lost = Counter(
            "homeiq_entries_lost_total", "Entries whose payload was gone from the stream.", ["reason"],
            registry=registry,
        )
        self.skipped = Counter(
            "homeiq_writer_skipped_total",
            "Entries acked without a point: the schema has none for them, or a filter of the configuration file "
            "left them out, by reason.", ["reason"], registry=registry,
        )
        self.attributes_dropped = Counter(
            "homeiq_writer_attributes_dropped_total",
            "Attributes left out of points (ignore_attributes; NaN or infinite in the ha schema), by reason.",
            ["reason"], registry=registry,
        )
        self.points_overwritten = Counter(
            "homeiq_writer_points_overwritten_total",
            "Points written with the series and time of another state's point, which InfluxDB then holds no more: "
            "times cut to the same ha-schema precision unit (precision) or equal to the nanosecond (same_time). Only "
            "those this process wrote both of (README), by reason.", ["reason"], registry=registry,
        )


_go_float = cast(Callable[[float], str], floatToGoString)  # (untyped)


class BatchHistogram:
    """A histogram observed a batch at a time, exposed as prometheus_client's Histogram is (same samples). Its
    `observe` took a lock and walked the buckets per event: a tenth of a writer's CPU (one per event acked); here an
    event costs a bisect. Observed and collected on the event loop only (no lock). Without the `_created` sample
    (nothing reads it)."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry, buckets: Iterable[float]) -> None:
        self._name, self._documentation = name, documentation
        self._bounds = [float(bound) for bound in buckets]
        self._le = [_go_float(bound) for bound in [*self._bounds, float("inf")]]  # as Histogram writes them
        self._counts = [0] * (len(self._bounds) + 1)  # the last: above every bound (+Inf only)
        self._sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        """One value."""
        self.observe_many((value,))

    def observe_many(self, values: Iterable[float]) -> None:
        """Several values (a batch's ages)."""
        counts, bounds, total = self._counts, self._bounds, self._sum
        for value in values:
            counts[bisect_left(bounds, value)] += 1  # the first bound >= value: Prometheus's `le`
            total += value
        self._sum = total

    def describe(self) -> Iterator[Metric]:
        """What `collect` yields, without its values."""
        yield HistogramMetricFamily(self._name, self._documentation)

    def collect(self) -> Iterator[Metric]:
        """The cumulative buckets, sum and count."""
        cumulative, running = [], 0
        for le, count in zip(self._le, self._counts, strict=True):
            running += count
            cumulative.append((le, running))
        yield HistogramMetricFamily(self._name, self._documentation, buckets=cumulative, sum_value=self._sum)
