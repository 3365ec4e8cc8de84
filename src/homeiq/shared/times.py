"""Time as Home Assistant shows it: aware datetimes and raw `time.time()` floats, to integer nanoseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND: Final = timedelta(microseconds=1)


def datetime_ns(moment: datetime) -> int:
    """A timezone-aware datetime as integer nanoseconds since the epoch, whole microseconds."""
    return ((moment - EPOCH) // MICROSECOND) * 1000


def float_ns(seconds: float) -> int:
    """An HA epoch-second float as a live event shows the same instant: HA renders its raw `time.time()` floats
    with `datetime.fromtimestamp(ts, UTC)`, which rounds to the microsecond (`round(ts * 1e6)` is 1 µs off for
    about one time in eight)."""
    return datetime_ns(datetime.fromtimestamp(seconds, UTC))


def iso_ns(time_ns: int) -> str:
    """An ISO 8601 UTC time for integer nanoseconds (whole microseconds)."""
    return (EPOCH + timedelta(microseconds=time_ns // 1000)).isoformat()
