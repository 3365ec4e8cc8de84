"""When the replayer daemon trims again: every second while a stream is busy, else every interval."""

from __future__ import annotations

import pytest

from homeiq.replayer.service import next_trim_in_s


@pytest.mark.parametrize(("removed", "since_s", "expected_s"), [
    (10_000, 10.0, 1.0),  # 1,000 a second over the interval: busy
    (9_999, 10.0, 10.0),  # just under
    (1_000, 1.0, 1.0),  # busy passes stay busy at 1,000 a second
    (999, 1.0, 10.0),  # and end below it
    (500, 0.01, 10.0),  # the first pass, moments after the start: a rate over less than a second means nothing
    (0, 1.0, 10.0),  # nothing acked
])
def test_a_stream_acked_at_1000_entries_a_second_or_more_is_trimmed_every_second(
        removed: int, since_s: float, expected_s: float) -> None:
    assert next_trim_in_s(removed, since_s, interval_s=10.0) == expected_s


def test_an_interval_shorter_than_a_second_is_kept_when_busy() -> None:
    assert next_trim_in_s(50_000, 0.2, interval_s=0.2) == 0.2
