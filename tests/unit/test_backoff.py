"""Backoff: retry delays keep growing until a success, however long the failure lasts."""

from __future__ import annotations

import pytest

from homeiq.shared import backoff as backoff_module
from homeiq.shared.backoff import Backoff


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(backoff_module.time, "monotonic", fake)
    monkeypatch.setattr(backoff_module.random, "uniform", lambda _low, high: high)  # the ceiling itself
    return fake


def test_a_retry_loop_keeps_growing_its_delay_past_the_reset_period(clock: Clock) -> None:
    backoff = Backoff(base_s=0.5, cap_s=30.0, reset_after_s=30.0)
    delays = []
    for _ in range(10):
        delay = backoff.next_delay_s()
        delays.append(delay)
        clock.now += delay + 5  # the failing attempt itself takes time too
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    backoff.reset()
    assert backoff.next_delay_s() == 0.5


def test_a_connection_that_lasted_the_reset_period_starts_again_from_the_base(clock: Clock) -> None:
    backoff = Backoff(base_s=1.0, cap_s=60.0, reset_after_s=60.0)
    for _ in range(4):
        backoff.started()
        backoff.next_delay_s()  # quick failures: 1, 2, 4, 8
    backoff.started()
    clock.now += 59
    assert backoff.next_delay_s() == 16.0  # failed before it was stable
    backoff.started()
    clock.now += 61
    assert backoff.next_delay_s() == 1.0  # failed after a stable minute
