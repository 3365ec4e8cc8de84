"""Which span of time a backfill must cover, and which states already arrived live inside it."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from typing import Final

import msgspec

from homeiq.collector.clock import BACK_STEP_NS
from homeiq.shared.events import decode_event

MAX_SEEN: Final = 1_000_000  # past this, live keys are not recorded (a duplicate point is harmless)
MAX_PROBES: Final = 64  # live states of distinct entities kept to see the recorder's progress
MAX_UNTRUSTED: Final = 10_000  # live states whose time was far ahead, remembered so no backfill repeats them

Key = tuple[str, int]  # entity id, state time (ns)


class Watermark:
    """The last live state time whose event (and every one before it) is durable: in Redis or the spool; and the
    stream id after which the events offered since are (what a restart reads back).

    Persisted, it lets a restarted collector backfill the time it was down. `offered` counts events given
    to the publisher, `settled` the ones it made durable, both in order.
    """

    def __init__(self, durable_ns: int = 0, resume_from: bytes = b"") -> None:
        self._marks: deque[tuple[int, int, bytes]] = deque()  # (offered count, last live ns, stream tail) then
        self.durable_ns, self.resume_from = durable_ns, resume_from

    def mark(self, offered: int, last_live_ns: int, tail: bytes) -> None:
        """Remember where the live stream stood after `offered` events, and the id of the last entry added then
        (every later event gets a later id)."""
        if not self._marks or self._marks[-1] != (offered, last_live_ns, tail):
            self._marks.append((offered, last_live_ns, tail))

    def advance(self, settled: int) -> tuple[int, bytes]:
        """The last live time whose events are all settled (0 while none is) and the id to read back from."""
        while self._marks and self._marks[0][0] <= settled:
            _, self.durable_ns, self.resume_from = self._marks.popleft()
        return self.durable_ns, self.resume_from


class GapTracker:
    """`last_live_ns` is the time of the last state published live (not the largest: HA's clock can step back);
    a gap opens at a reconnect (or when a restart, or a Redis that forgot, makes the collector learn again where it
    left off) and closes when its backfill completed, so a backfill cut short by another disconnect or a restart is
    retried whole. Until then the watermark stays before the gap."""

    def __init__(self) -> None:
        self.last_live_ns = 0
        self.pending_start_ns: int | None = None
        self._pending_from = b""  # the stream's tail when the gap opened: what follows holds what came after it
        self.seen: set[Key] = set()
        self.resume_known = False  # the saved watermark has been read (or there is none to read)
        # The first live state of each of a few entities since the subscription (entity id → its time): once the
        # recorder's history holds one, it has committed everything HA fired before it, the gap included.
        self.probes: dict[str, int] = {}
        self._probes_offered = 0  # entities offered as probes since the probes were last emptied
        self._rng = random.Random(0)  # where a probe goes: no secret
        self._untrusted: deque[Key] = deque(maxlen=MAX_UNTRUSTED)
        self._renames: dict[str, str] = {}  # old id → new id, of the renames seen while the gap is open
        self._rename_log: list[tuple[str, str]] = []  # the same, in order
        self._unstepped_ns = 0  # the gap's start before any step of HA's clock moved it
        # A reconnect's gap whose first live state has not shown yet whether HA's clock went back meanwhile; the last
        # such gap closed (its start and stream tail), for one that shows it only after its backfill.
        self.clock_unchecked = False
        self._last_closed: tuple[int, bytes] | None = None

    @property
    def open(self) -> bool:
        """A gap is waiting for its backfill, or the collector does not yet know where it left off."""
        return self.pending_start_ns is not None or not self.resume_known

    def probe(self, entity_id: str, time_ns: int) -> None:
        """A state arrived live (whether or not our filter keeps it: the recorder's progress is the point). Full,
        a new entity takes a random place with the chance every one offered so far had (a reservoir): the probes
        stay spread over the whole time since the subscription, so a recorder that commits every few seconds holds
        some of them after its next commit however busy the home (the oldest making room kept only the last 64
        entities' changes, at 1,000 states/s newer than any commit), and entities the recorder excludes (never
        shown) hold only their share of the places."""
        if self.open and entity_id not in self.probes:
            self._probes_offered += 1
            if len(self.probes) < MAX_PROBES:
                self.probes[entity_id] = time_ns
                return
            place = self._rng.randrange(self._probes_offered)
            if place < MAX_PROBES:
                del self.probes[list(self.probes)[place]]
                self.probes[entity_id] = time_ns

    def live(self, entity_id: str, time_ns: int) -> None:
        """A state change was published live, its time trusted (see `HaClock`)."""
        self.last_live_ns = time_ns
        self.published(entity_id, time_ns)

    def untrusted(self, entity_id: str, time_ns: int) -> None:
        """A state change was published live with a time far ahead of HA's clock: it moves no watermark, and no
        backfill (which would find it after the last trusted time) publishes it again."""
        self._untrusted.append((entity_id, time_ns))
        self.published(entity_id, time_ns)

    def published(self, entity_id: str, time_ns: int) -> None:
        """A state is in the stream already: a backfill must not publish it again (nor, under the id it has now,
        when its entity was renamed: a backfill may read it under the old id before HA's recorder moved it)."""
        if self.open and len(self.seen) < MAX_SEEN:
            self.seen.add((entity_id, time_ns))
            while entity_id in self._renames and (self._renames[entity_id], time_ns) not in self.seen:
                entity_id = self._renames[entity_id]
                self.seen.add((entity_id, time_ns))

    def renamed(self, old: str, new: str) -> None:
        """HA's recorder moved `old`'s history to `new`: what was published under the old id comes back from it
        under the new one (and a probe of the old id is found under the new one)."""
        if self.open:
            self._renames[old] = new
            self._rename_log.append((old, new))
        self.seen |= {(new, time_ns) for entity_id, time_ns in self.seen if entity_id == old}
        self._untrusted.extend([(new, time_ns) for entity_id, time_ns in self._untrusted if entity_id == old])
        if old in self.probes and new not in self.probes:
            self.probes[new] = self.probes.pop(old)

    @property
    def renames(self) -> int:
        """Renames seen while the gap is open so far: a mark for `renamed_since`."""
        return len(self._rename_log)

    def renamed_since(self, asked_at: dict[str, int]) -> set[str]:
        """The ids that entities asked for (entity id → `renames` when it was last asked) were given while the gap is
        open, and not asked for since: their history, the gap's states included, is under those now (an id asked
        before a rename moved history onto it, a rename back among them, is asked again)."""
        return {new for mark, (old, new) in enumerate(self._rename_log)
                if old in asked_at and asked_at.get(new, -1) <= mark}

    def stepped_back(self, step_ns: int) -> None:
        """HA's clock went back `step_ns`: a gap waiting for its backfill starts that much earlier, for the states HA
        stamped on its new clock while no collector listened are before its start (what arrived live in the extra
        time comes again with the same point keys: the same points). The same step told twice moves it once."""
        if self.pending_start_ns is not None:
            self._open(self._unstepped_ns - step_ns, self._pending_from, stepped=True)

    def clock_shown(self, shortfall_ns: int) -> bool:
        """The first live state since a reconnect's gap opened is `shortfall_ns` behind HA's clock as it was before
        (see `HaClock`): HA's clock went back during the outage, however long it was, and the gap starts that much
        earlier; if its backfill is done already (a quiet home), the gap opens again from there. True then."""
        self.clock_unchecked = False
        closed, self._last_closed = self._last_closed, None
        if self.pending_start_ns is not None:
            if shortfall_ns > BACK_STEP_NS:
                self.stepped_back(shortfall_ns + BACK_STEP_NS)
            return False
        if closed is None or shortfall_ns <= BACK_STEP_NS:
            if self.resume_known:
                self.seen = set()  # kept by `end` until now, for the gap's states not to be published twice
            return False
        self._open(*closed)
        self.stepped_back(shortfall_ns + BACK_STEP_NS)
        return True

    def unknown(self) -> None:
        """Where the collector left off must be read again (Redis forgot what it had acknowledged): states
        published from now on are recorded, as after a restart, until `resume`. What was recorded before may be
        what Redis lost: the read-back tells again what it holds."""
        self.resume_known = False
        self.seen = set(self._untrusted)

    def resume(self, saved_ns: int | None, read_from: bytes = b"") -> None:
        """Where the last run left off is known (and after which stream id it read back): a gap from there, unless
        there was no last run."""
        self.resume_known = True
        if saved_ns:
            self._open(saved_ns + 1000, read_from)
        elif self.pending_start_ns is None:
            self.seen = set()

    def begin(self, tail: bytes, subscribed_ns: int = 0) -> int | None:
        """Call before subscribing, with the id of the last entry added so far and, after an earlier subscription,
        the time it began (used when no state since was trusted): the start of the time to backfill, or None when
        nothing is missing yet."""
        self.probes, self._probes_offered = {}, 0
        start_ns = self.last_live_ns or subscribed_ns
        if start_ns:
            if self._last_closed is not None and self.pending_start_ns is None and self.resume_known:
                self.seen = set()  # kept for a check of HA's clock that never came (`end`)
            self._open(start_ns + 1000, tail)  # the next microsecond
            self.clock_unchecked, self._last_closed = True, None
        return self.pending_start_ns

    def _open(self, start_ns: int, read_from: bytes, stepped: bool = False) -> None:
        if self.pending_start_ns is None:
            self.probes, self._probes_offered = {}, 0  # proof of the recorder's progress must come from after the gap
            self.seen.update(self._untrusted)
            self._unstepped_ns = start_ns
        elif not stepped:
            self._unstepped_ns = min(self._unstepped_ns, start_ns)
        if self.pending_start_ns is None or start_ns < self.pending_start_ns:
            self.pending_start_ns, self._pending_from = start_ns, read_from

    def durable_until(self, last_live_ns: int, tail: bytes) -> tuple[int, bytes]:
        """How far the watermark may go, never past the start of a gap not yet backfilled, and after which stream
        id a restart must read back the states published since (`tail`: the last id added now)."""
        if self.pending_start_ns is None:
            return last_live_ns, tail
        return min(last_live_ns, self.pending_start_ns - 1000), self._pending_from

    def end(self, start_ns: int) -> None:
        """The backfill from `start_ns` completed (a gap opened earlier meanwhile stays open)."""
        if self.pending_start_ns == start_ns:
            if self.clock_unchecked:
                self._last_closed = self._unstepped_ns, self._pending_from
            self.pending_start_ns = None
            self._renames, self._rename_log = {}, []
            # Else it holds what was published since Redis forgot (still needed), or a first live state may still
            # show HA's clock went back and open the gap again (`clock_shown`).
            if self.resume_known and not self.clock_unchecked:
                self.seen = set()


def state_keys(payloads: Iterable[bytes]) -> list[Key]:
    """The (entity, time) of every state change among encoded events; what cannot be decoded is not ours to judge
    here (the writers dead-letter it)."""
    found: list[Key] = []
    for payload in payloads:
        try:
            event = decode_event(payload)
        except msgspec.DecodeError:
            continue
        if event.new_state is not None and event.entity_id:
            found.append((event.entity_id, event.time_ns))
    return found
