"""HaClock keeps its offset as it notes states: always the largest of the last ten minutes' (as recomputed)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from homeiq.collector.clock import BUCKET_NS, HaClock

# (seconds our clock moved since the last state (back too: a wall clock steps), HA's time minus ours in seconds)
STEPS = st.lists(st.tuples(st.integers(-120, 400), st.integers(-3600, 3600)), max_size=60)


@given(steps=STEPS)
def test_the_offset_kept_is_the_largest_of_the_buckets_it_keeps(steps: list[tuple[int, int]]) -> None:
    clock = HaClock(lambda finding, size: None)
    received_ns = 1_700_000_000 * 10**9
    for moved_s, offset_s in steps:
        received_ns += moved_s * 10**9
        clock.trust(received_ns + offset_s * 10**9, received_ns)
        buckets = clock._buckets  # the model: the largest offset of the buckets kept
        assert clock.offset_ns == (max(offset for _, offset in buckets) if buckets else None)
        assert all(start % BUCKET_NS == 0 for start, _ in buckets)
