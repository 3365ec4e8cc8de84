"""Times as operators type them, one parser for every command."""

from __future__ import annotations

import pytest

from homeiq.shared.settings import ConfigError
from homeiq.shared.times import operator_time_ns

NOW = 1_800_000_000 * 10**9


@pytest.mark.parametrize(("text", "expected"), [
    ("90m", NOW - 90 * 60 * 10**9),
    ("1.5h", NOW - 5400 * 10**9),
    ("7d", NOW - 7 * 86400 * 10**9),
    ("2026-11-26T10:00:00+00:00", 1_795_687_200 * 10**9),
    ("2026-11-26T10:00:00Z", 1_795_687_200 * 10**9),
    ("2026-11-26T11:00:00.000001+01:00", 1_795_687_200 * 10**9 + 1000),
    ("1795687200000", 1_795_687_200 * 10**9),  # epoch milliseconds
])
def test_each_form_reads_as_one_instant(text: str, expected: int) -> None:
    assert operator_time_ns(text, NOW, "--since") == expected


@pytest.mark.parametrize(("text", "says"), [
    ("yesterday", "expected a duration"),
    ("2026-11-26T10:00:00", "needs its UTC offset"),
    ("10x", "expected a duration"),
])
def test_anything_else_is_refused_naming_the_option(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=rf"^--before: .*{says}"):
        operator_time_ns(text, NOW, "--before")
