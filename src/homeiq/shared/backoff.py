"""Exponential backoff with full jitter, a cap, and (for connections) a reset after a stable period."""

from __future__ import annotations

import random
import time


class Backoff:
    """Delays of `uniform(0, min(cap, base * 2**n))`; `n` grows with every delay until `reset()` (a success).

    A long-lived connection calls `started()` when it begins; a failure after it lasted `reset_after_s` starts
    again from the base delay. Retry loops that never call `started()` keep growing until they succeed."""

    def __init__(self, base_s: float = 1.0, cap_s: float = 60.0, reset_after_s: float = 60.0) -> None:
        self.base_s, self.cap_s, self.reset_after_s = base_s, cap_s, reset_after_s
        self.attempt = 0
        self._started: float | None = None

    def started(self) -> None:
        """Record that a connection has just begun (a stable one resets the exponent when it fails)."""
        self._started = time.monotonic()

    def next_delay_s(self) -> float:
        """The delay before the next attempt."""
        if self._started is not None and time.monotonic() - self._started >= self.reset_after_s:
            self.attempt = 0
        self._started = None
        ceiling = min(self.cap_s, self.base_s * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return random.uniform(0, ceiling)

    def reset(self) -> None:
        """Forget past failures."""
        self.attempt = 0
