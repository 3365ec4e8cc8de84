"""Two collectors subscribed to one Home Assistant: what makes two copies of an event the same event.

A state change is its entity and `last_updated` (the same rule that makes its point: a live copy, a backfilled one
and the other collector's coincide). Any other event is its type, `time_fired`, context id, entity and data, as HA
sent them (HA serialises an event once for all its subscribers). What a collector adds of its own (registry
enrichment, its measure of HA's clock, live or backfill, a point time moved off a collision) is left out.
"""

from __future__ import annotations

import hashlib
from typing import Final

import msgspec

from homeiq.shared.events import NO_DATA, Context

# Identities are kept in one hash per second of event time: up to 128 a second (a home's rates) Redis keeps such a
# hash as a listpack, ~22-33 bytes an identity; beyond, a hashtable, ~80 (measured on Redis 7.0).
BUCKET_NS: Final = 1_000_000_000


class _State(msgspec.Struct):
    last_updated_ns: int = 0


class _Event(msgspec.Struct):
    """The fields of a stream payload (`NormalisedEvent`) that say which event it is; the rest is skipped unread."""

    event_type: str = ""
    time_fired_ns: int = 0
    context: Context = Context()
    entity_id: str | None = None
    new_state: _State | None = None
    data: msgspec.Raw = NO_DATA


_decoder = msgspec.json.Decoder(_Event)


def identity(payload: bytes) -> tuple[bytes, bytes]:
    """The bucket (the second of the event's own time, as decimal text) and a 16-byte digest of the event's identity. A
    payload that is not an event (never written by a collector) is its own identity: always new."""
    try:
        event = _decoder.decode(payload)
    except msgspec.DecodeError:
        return b"0", hashlib.blake2b(b"raw\x00" + payload, digest_size=16).digest()
    if event.new_state is not None and event.entity_id:
        time_ns = event.new_state.last_updated_ns
        parts = [b"state", event.entity_id.encode(), str(time_ns).encode()]
    else:
        time_ns = event.time_fired_ns
        parts = [b"event", event.event_type.encode(), str(time_ns).encode(), (event.context.id or "").encode(),
                 (event.entity_id or "").encode(), bytes(event.data)]
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(len(part).to_bytes(8, "big") + part)
    return str(time_ns // BUCKET_NS).encode(), digest.digest()
