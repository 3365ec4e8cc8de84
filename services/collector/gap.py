"""Which span of time a backfill must cover, and which states already arrived live inside it."""

from __future__ import annotations

from typing import Final

MAX_SEEN: Final = 1_000_000  # past this, live keys are not recorded (a duplicate point is harmless)


class Watermark:
    """The newest live state time whose event (and every one before it) is durable: in Redis or the spool.

    Persisted, it lets a restarted collector backfill the time it was down. `offered` counts events given
    to the publisher, `settled` the ones it made durable, both in order.
    """

    def __init__(self) -> None:
        self._marks: list[tuple[int, int]] = []  # (offered count, last live ns) at that moment
        self.durable_ns = 0

    def mark(self, offered: int, last_live_ns: int) -> None:
        """Remember where the live stream stood after `offered` events."""
        if not self._marks or self._marks[-1] != (offered, last_live_ns):
            self._marks.append((offered, last_live_ns))

    def advance(self, settled: int) -> int:
        """The newest last-live time whose events are all settled; 0 when none is yet."""
        while self._marks and self._marks[0][0] <= settled:
            self.durable_ns = max(self.durable_ns, self._marks.pop(0)[1])
        return self.durable_ns


class GapTracker:
    """`last_live_ns` is the newest state time published live; a gap opens at a reconnect and closes
    when its backfill completed, so a backfill cut short by another disconnect is retried whole."""

    def __init__(self) -> None:
        self.last_live_ns = 0
        self.pending_start_ns: int | None = None
        self.seen: set[tuple[str, int]] = set()

    def live(self, entity_id: str, time_ns: int) -> None:
        """A state change was published live."""
        self.last_live_ns = max(self.last_live_ns, time_ns)
        if self.pending_start_ns is not None and len(self.seen) < MAX_SEEN:
            self.seen.add((entity_id, time_ns))

    def begin(self) -> int | None:
        """Call before subscribing: the start of the time to backfill, or None on the very first connect."""
        if self.pending_start_ns is None and self.last_live_ns:
            self.pending_start_ns = self.last_live_ns + 1000  # the next microsecond
        return self.pending_start_ns

    def end(self) -> None:
        """The backfill completed."""
        self.pending_start_ns = None
        self.seen = set()
