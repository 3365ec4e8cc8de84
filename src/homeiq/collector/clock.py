"""HA's clock as the collector sees it through live state times: its offset from ours, its steps, and the times so
far ahead that they must not move the watermark.

HA stamps a state with its own clock; latency only makes a state look older when it arrives. So the offset is the
largest `state time - arrival time` of the last minutes, a state much further ahead than that is suspect (one
bogus time, or HA's clock jumping ahead), and a state earlier than the last one means HA's clock went back. After
either step the offset starts afresh: the old one, carried to the writers, would skew their latency for minutes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final, Literal

Finding = Literal["outliers", "step_back", "step_ahead"]

AHEAD_TOLERANCE_NS: Final = 60 * 10**9  # further ahead of the offset than this: not trusted to move the watermark
CONFIRMATIONS: Final = 5  # consecutive states agreeing on a new offset make it a step, not an outlier
BACK_STEP_NS: Final = 10**9  # a state this much before the previous one: HA's clock went back
BUCKET_NS: Final = 60 * 10**9
BUCKETS: Final = 10  # the offset is the largest seen in the last ten minutes


class HaClock:
    """Judges each live state time (`trust`), keeps the offset, and reports each step and outlier to `found`
    (with the step's size in ns, or how many states were outliers)."""

    def __init__(self, found: Callable[[Finding, int], None]) -> None:
        self._found = found
        self._buckets: deque[tuple[int, int]] = deque(maxlen=BUCKETS)  # (bucket start, largest offset in it)
        self._offset: int | None = None  # the largest of the buckets' (read twice an event: kept, not recomputed)
        self._last_ns: int | None = None
        self._candidates: list[int] = []  # offsets of consecutive states too far ahead
        # How far the last trusted state was behind the offset known before it: HA's clock went back by about this
        # (or the state was that much later than the quickest: latency), whatever the order of the states.
        self.shortfall_ns = 0

    @property
    def offset_ns(self) -> int | None:
        """HA's clock minus ours, less the shortest latency seen (None before the first state)."""
        return self._offset

    def trust(self, time_ns: int, received_ns: int) -> bool:
        """Whether a live state stamped `time_ns`, received at `received_ns` (our clock), may move the watermark."""
        offset = time_ns - received_ns
        known = self.offset_ns
        # Before any offset is known, ours is the reference: a first state far ahead of it needs confirming too.
        if offset > (known or 0) + AHEAD_TOLERANCE_NS and not self._step_ahead(offset):
            return False
        self.shortfall_ns = known - offset if known is not None else 0
        if self._candidates:  # a normal state after a few far ahead: those were outliers
            self._found("outliers", len(self._candidates))
            self._candidates.clear()
        if self._last_ns is not None and time_ns < self._last_ns - BACK_STEP_NS:
            self._found("step_back", offset - (known or 0))
            self._forget()  # the old offset no longer says anything (carried on, it inflates latency)
        self._last_ns = time_ns
        self._note(offset, received_ns)
        return True

    def _step_ahead(self, offset: int) -> bool:
        """A state far ahead: an outlier, unless the last few agree on the new offset (HA's clock jumped ahead)."""
        if self._candidates and abs(offset - self._candidates[0]) > AHEAD_TOLERANCE_NS:
            self._found("outliers", len(self._candidates))
            self._candidates.clear()
        self._candidates.append(offset)
        if len(self._candidates) < CONFIRMATIONS:
            return False
        self._found("step_ahead", offset - (self.offset_ns or 0))
        self._candidates.clear()
        self._forget()  # the old offset no longer says anything
        return True

    def _forget(self) -> None:
        self._buckets.clear()
        self._offset = None

    def _note(self, offset: int, received_ns: int) -> None:
        bucket = received_ns - received_ns % BUCKET_NS
        buckets = self._buckets
        if buckets and buckets[-1][0] == bucket:  # most states: within the current minute
            if offset > buckets[-1][1]:
                buckets[-1] = (bucket, offset)
        else:
            while buckets and buckets[0][0] <= bucket - BUCKETS * BUCKET_NS:  # older than ten minutes
                buckets.popleft()
            buckets.append((bucket, offset))  # (maxlen: the eleventh minute's pushes the first out)
            self._offset = max(largest for _, largest in buckets)
            return
        if self._offset is None or offset > self._offset:
            self._offset = offset
