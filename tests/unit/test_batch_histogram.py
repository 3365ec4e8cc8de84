"""The writer's latency histogram, observed a batch at a time, exposes what prometheus_client's Histogram does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from homeiq.shared.influx.metrics import BatchHistogram

BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
# Values on the bounds themselves (a bucket's `le` includes them), between them and beyond the last.
VALUES = st.lists(st.one_of(st.sampled_from([0.0, *BUCKETS]), st.floats(0, 10_000, allow_nan=False)), max_size=50)


def exposition(registry: CollectorRegistry) -> list[str]:
    """Every sample but the Histogram's `_created`, which ours does not expose."""
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


@given(batches=st.lists(VALUES, max_size=5))
def test_a_batch_histogram_exposes_the_samples_of_a_histogram_observed_one_value_at_a_time(
        batches: list[list[float]]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batched = BatchHistogram("age_seconds", "Age.", ours, BUCKETS)
    single = Histogram("age_seconds", "Age.", registry=theirs, buckets=BUCKETS)
    for batch in batches:
        batched.observe_many(batch)
        for value in batch:
            single.observe(value)
    assert exposition(ours) == exposition(theirs)
