"""The events no backfill can bring back (service calls, automation triggers, removals: HA's recorder keeps only
states), told apart once, where they are encoded, and remembered for a Redis that forgets what it acknowledged."""

from __future__ import annotations

import array

import msgspec

from homeiq.shared.events import NormalisedEvent, encode_event
from homeiq.shared.stream import id_key

UNRECOVERABLE_BATCHES = 20_000


class Unrecoverable(bytes):
    """An encoded event no backfill can bring back. Marked where it is encoded, which knows, so that counting a
    batch's is a type check an event: reading it from the bytes cost half a microsecond an event (a byte search
    through a quarter of the JSON: a twentieth of all the collector did with one)."""

    __slots__ = ()


_NULL = msgspec.Raw(b"null")


class _Shape(msgspec.Struct):
    """What tells an encoded event apart (the rest skipped, not decoded)."""

    event_type: str
    new_state: msgspec.Raw = _NULL  # left out when there is none (`null` read the same)


_shape = msgspec.json.Decoder(_Shape)


def _recoverable(event_type: str, has_new_state: bool) -> bool:
    """Whether HA's recorder keeps this event (a state change with a new state) for a backfill to bring back."""
    return has_new_state and event_type == "state_changed"


def encoded(event: NormalisedEvent) -> bytes:
    """`event` as the stream's payload, marked `Unrecoverable` when it is."""
    payload = encode_event(event)
    return payload if _recoverable(event.event_type, event.new_state is not None) else Unrecoverable(payload)


def marked(payloads: list[bytes]) -> list[bytes]:
    """Payloads that lost their mark (read back from the spool), marked again by the same rule from their top-level
    fields (a byte search for `"new_state":` also finds a key of that name in a removal's old attributes). One that
    cannot be read is taken for unrecoverable: counted if Redis forgets it, rather than lost silently."""
    return [payload if _readable_and_recoverable(payload) else Unrecoverable(payload) for payload in payloads]


def _readable_and_recoverable(payload: bytes) -> bool:
    try:
        shape = _shape.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    return _recoverable(shape.event_type, shape.new_state != _NULL)


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
