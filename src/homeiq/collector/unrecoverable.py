"""The events no backfill can bring back (service calls, automation triggers, removals: HA's recorder keeps only
states), told apart once, where they are encoded, and remembered for a Redis that forgets what it acknowledged."""

from __future__ import annotations

import array

from homeiq.shared.events import NormalisedEvent, encode_event
from homeiq.shared.stream import id_key

UNRECOVERABLE_BATCHES = 20_000

# An encoded state change starts so (msgspec writes a Struct's fields in order); one with no new state (a removal)
# has no `new_state`.
_STATE_CHANGE = b'{"event_type":"state_changed",'
_NEW_STATE = b'"new_state":'


class Unrecoverable(bytes):
    """An encoded event no backfill can bring back. Marked where it is encoded, which knows, so that counting a
    batch's is a type check an event: reading it from the bytes (`recoverable`) cost half a microsecond an event
    (a byte search through a quarter of the JSON: a twentieth of all the collector did with one)."""

    __slots__ = ()


def recoverable(payload: bytes) -> bool:
    """Whether HA's recorder keeps this event (a state change with a new state) for a backfill to bring back, read
    from its encoding."""
    return payload.startswith(_STATE_CHANGE) and _NEW_STATE in payload


def encoded(event: NormalisedEvent) -> bytes:
    """`event` as the stream's payload, marked `Unrecoverable` when it is."""
    payload = encode_event(event)
    return payload if event.new_state is not None and event.event_type == "state_changed" else Unrecoverable(payload)


def marked(payloads: list[bytes]) -> list[bytes]:
    """Payloads that lost their mark (read back from the spool), marked again from their bytes."""
    return [payload if recoverable(payload) else Unrecoverable(payload) for payload in payloads]


class UnrecoverableLog:
    """For each recent batch with events no backfill can bring back, its last id and how many: what is lost when
    Redis forgets the entries after an id. Three machine words a batch in an array, no Python object: it is full
    after an hour at a home's rate."""

    def __init__(self, capacity: int = UNRECOVERABLE_BATCHES) -> None:
        self._capacity = capacity
        self._entries = array.array("Q")  # ms, seq, count of each batch remembered, oldest first
        self._fell_out: tuple[int, int] | None = None  # the newest id no longer remembered (None: none fell out)

    def added(self, last_id: bytes, batch: list[bytes]) -> None:
        """A batch ending at `last_id` is in Redis (its unrecoverable events marked)."""
        count = sum(1 for payload in batch if type(payload) is Unrecoverable)
        if count:
            if len(self._entries) >= 3 * self._capacity:  # an eighth at a time: a shift per batch would cost more
                gone = 3 * max(1, self._capacity // 8)
                self._fell_out = (self._entries[gone - 3], self._entries[gone - 2])
                del self._entries[:gone]
            self._entries.extend((*id_key(last_id), count))

    def after(self, kept: bytes | None) -> tuple[int, bool]:
        """How many such events came after id `kept` (None: all remembered), and whether that is all of them."""
        kept_id = id_key(kept) if kept else (0, 0)
        entries, lost = self._entries, 0
        remembered = array.array("Q")
        for n in range(0, len(entries), 3):
            if (entries[n], entries[n + 1]) > kept_id:
                lost += entries[n + 2]
            else:
                remembered.extend(entries[n:n + 3])
        self._entries = remembered
        return lost, self._fell_out is None or kept_id >= self._fell_out
