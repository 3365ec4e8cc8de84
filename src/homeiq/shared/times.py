"""Time as Home Assistant shows it (aware datetimes and raw `time.time()` floats) and as operators type it, to
integer nanoseconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

from homeiq.shared.settings import ConfigError

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND: Final = timedelta(microseconds=1)


def datetime_ns(moment: datetime) -> int:
    """A timezone-aware datetime as integer nanoseconds since the epoch, whole microseconds (from the parts of its
    distance to the epoch: a fifth cheaper than dividing it by a microsecond, and it runs for every time of every
    event)."""
    since = moment - EPOCH
    return ((since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds) * 1000


def float_ns(seconds: float) -> int:
    """An HA epoch-second float as a live event shows the same instant: HA renders its raw `time.time()` floats
    with `datetime.fromtimestamp(ts, UTC)`, which rounds to the microsecond (`round(ts * 1e6)` is 1 µs off for
    about one time in eight)."""
    return datetime_ns(datetime.fromtimestamp(seconds, UTC))


def iso_ns(time_ns: int) -> str:
    """An ISO 8601 UTC time for integer nanoseconds (whole microseconds)."""
    return (EPOCH + timedelta(microseconds=time_ns // 1000)).isoformat()


_DURATION: Final = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def operator_time_ns(value: str, now_ns: int, name: str) -> int:
    """A time as an operator gives it: `90m`, `24h`, `7d` (that long before now), an ISO 8601 time with its offset
    (`Z` too), or epoch milliseconds. ConfigError naming the option `name` otherwise."""
    if match := _DURATION.match(value):
        return now_ns - int(float(match[1]) * _UNIT_S[match[2]] * 1e9)
    if value.isdigit():
        return int(value) * 1_000_000
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{name}: expected a duration (24h, 7d, 90m), an ISO 8601 time or epoch milliseconds, "
                          f"got {value!r}") from None
    if moment.tzinfo is None:
        raise ConfigError(f"{name}: the time needs its UTC offset (e.g. +00:00 or Z), got {value!r}")
    return datetime_ns(moment)
