"""Which span of time a backfill must cover, and which states already arrived live inside it."""

from __future__ import annotations

from typing import Final

MAX_SEEN: Final = 1_000_000  # past this, live keys are not recorded (a duplicate point is harmless)
MAX_PROBES: Final = 64  # live states of distinct entities kept to see the recorder's progress


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
    """`last_live_ns` is the newest state time published live; a gap opens at a reconnect (or when a restart
    learns where it left off) and closes when its backfill completed, so a backfill cut short by another
    disconnect or a restart is retried whole. Until then the watermark stays before the gap."""

    def __init__(self) -> None:
        self.last_live_ns = 0
        self.pending_start_ns: int | None = None
        self.seen: set[tuple[str, int]] = set()
        self.resume_known = False  # the saved watermark has been read (or there is none to read)
        # The first live state of each of a few entities since the subscription (entity id → its time): once the
        # recorder's history holds one, it has committed everything HA fired before it, the gap included.
        self.probes: dict[str, int] = {}

    @property
    def open(self) -> bool:
        """A gap is waiting for its backfill, or a restart does not yet know where the last run stopped."""
        return self.pending_start_ns is not None or not self.resume_known

    def probe(self, entity_id: str, time_ns: int) -> None:
        """A state arrived live (whether or not our filter keeps it: the recorder's progress is the point)."""
        if self.open and len(self.probes) < MAX_PROBES and entity_id not in self.probes:
            self.probes[entity_id] = time_ns

    def live(self, entity_id: str, time_ns: int) -> None:
        """A state change was published live."""
        self.last_live_ns = max(self.last_live_ns, time_ns)
        self.published(entity_id, time_ns)

    def published(self, entity_id: str, time_ns: int) -> None:
        """A state is in the stream already: a backfill must not publish it again."""
        if self.open and len(self.seen) < MAX_SEEN:
            self.seen.add((entity_id, time_ns))

    def resume(self, saved_ns: int | None) -> None:
        """Where the last run left off is known: a gap from there, unless there was no last run."""
        self.resume_known = True
        if saved_ns:
            self._open(saved_ns + 1000)
        elif self.pending_start_ns is None:
            self.seen = set()

    def begin(self) -> int | None:
        """Call before subscribing: the start of the time to backfill, or None when nothing is missing yet."""
        self.probes = {}
        if self.last_live_ns:
            self._open(self.last_live_ns + 1000)  # the next microsecond
        return self.pending_start_ns

    def _open(self, start_ns: int) -> None:
        if self.pending_start_ns is None:
            self.probes = {}  # proof of the recorder's progress must come from after the gap
        if self.pending_start_ns is None or start_ns < self.pending_start_ns:
            self.pending_start_ns = start_ns

    def durable_until(self, last_live_ns: int) -> int:
        """How far the watermark may go: never past the start of a gap not yet backfilled."""
        if self.pending_start_ns is None:
            return last_live_ns
        return min(last_live_ns, self.pending_start_ns - 1000)

    def end(self, start_ns: int) -> None:
        """The backfill from `start_ns` completed (a gap opened earlier meanwhile stays open)."""
        if self.pending_start_ns == start_ns:
            self.pending_start_ns = None
            self.seen = set()
