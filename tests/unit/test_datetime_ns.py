"""`datetime_ns`: any aware datetime to the integer nanoseconds of its instant, whole microseconds, exactly (it is
called for every time of every event, so it is written for speed: checked here against datetime's own arithmetic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from homeiq.shared.times import datetime_ns

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
OFFSETS = st.builds(lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-23 * 60 - 59, 23 * 60 + 59))


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.one_of(st.just(UTC), OFFSETS)))
def test_any_aware_time_is_its_instant_in_nanoseconds(moment: datetime) -> None:
    assert datetime_ns(moment) == ((moment - EPOCH) // timedelta(microseconds=1)) * 1000


def test_times_before_the_epoch_and_on_it() -> None:
    assert datetime_ns(EPOCH) == 0
    assert datetime_ns(EPOCH - timedelta(microseconds=1)) == -1000
    assert datetime_ns(datetime(2026, 12, 6, 10, 0, 0, 1, tzinfo=timezone(timedelta(hours=1)))) == (
        1796547600_000_001_000)
