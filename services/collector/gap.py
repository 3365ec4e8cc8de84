"""Which span of time a backfill must cover, and which states already arrived live inside it."""

from __future__ import annotations

from typing import Final

MAX_SEEN: Final = 1_000_000  # past this, live keys are not recorded (a duplicate point is harmless)


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
