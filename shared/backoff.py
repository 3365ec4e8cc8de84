"""Exponential backoff with full jitter, a cap, and a reset after a stable period."""

from __future__ import annotations

import random
import time


class Backoff:
    """Delays of `uniform(0, min(cap, base * 2**n))`; `n` resets once a run lasted `reset_after_s`."""

    def __init__(self, base_s: float = 1.0, cap_s: float = 60.0, reset_after_s: float = 60.0) -> None:
        self.base_s, self.cap_s, self.reset_after_s = base_s, cap_s, reset_after_s
        self.attempt = 0
        self._started = time.monotonic()

    def started(self) -> None:
        """Record that an attempt (a connection, a write) has just begun."""
        self._started = time.monotonic()

    def next_delay_s(self) -> float:
        """The delay before the next attempt; resets the exponent after a stable run."""
        if time.monotonic() - self._started >= self.reset_after_s:
            self.attempt = 0
        ceiling = min(self.cap_s, self.base_s * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return random.uniform(0, ceiling)

    def reset(self) -> None:
        """Forget past failures."""
        self.attempt = 0
