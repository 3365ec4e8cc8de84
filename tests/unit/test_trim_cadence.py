"""When the replayer daemon trims again: every second while a stream is busy, else every interval."""

from __future__ import annotations

import pytest

from homeiq.replayer.service import TrimCadence


@pytest.mark.parametrize(("removed", "since_s", "expected_s"), [
    (157, 10.0, 1.0),  # 1,000 events a second in entries of 64 (a busy stream's batches fill theirs): busy
    (310, 10.0, 1.0),  # 2,000 events a second (the soak's rate: it was trimmed every 10 s, 100-190 entries held)
    (155, 10.0, 10.0),  # just under
    (55, 10.0, 10.0),  # a home's batches, one an entry at most every COLLECTOR_LINGER_MS (180 ms): not busy
    (10, 0.01, 10.0),  # the first pass, moments after the start: measured over a second at least (not 1,000/s)
    (0, 10.0, 10.0),  # nothing acked
])
def test_a_stream_acked_at_1000_events_a_second_or_more_is_trimmed_every_second(
        removed: int, since_s: float, expected_s: float) -> None:
    assert TrimCadence(10.0, now=100.0).next_in_s(removed, now=100.0 + since_s) == expected_s


def test_a_busy_stream_stays_busy_through_passes_that_cut_nothing_until_five_quiet_seconds() -> None:
    # The collector's resume id moves every 2 s: every other pass of a busy stream can cut nothing.
    cadence = TrimCadence(10.0, now=0.0)
    assert cadence.next_in_s(100_000, now=10.0) == 1.0
    assert [cadence.next_in_s(removed, now=t) for t, removed in
            [(11.0, 0), (12.0, 20_000), (13.0, 0), (14.0, 20_000)]] == [1.0, 1.0, 1.0, 1.0]
    assert [cadence.next_in_s(0, now=t) for t in (15.0, 16.0, 17.0, 18.0)] == [1.0] * 4
    assert cadence.next_in_s(0, now=19.0) == 10.0  # five seconds since the last busy pass
    assert cadence.next_in_s(15, now=20.0) == 10.0  # under 1,000 events a second


def test_an_interval_shorter_than_a_second_is_kept_when_busy() -> None:
    cadence = TrimCadence(0.2, now=0.0)
    assert cadence.next_in_s(50_000, now=1.0) == 0.2
