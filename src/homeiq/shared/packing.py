"""Entries of several events: how the collector packs them, and how every reader gets the events back.

Version 1 (`v`=1): one event, its JSON in field `e`. Version 2 (`v`=2): several, a JSON array of them (each exactly
a version-1 `e`) deflated raw (no header, ISA-L level 1) in field `z`. The events of one burst repeat their keys,
entity ids, registry facts and times, and deflate finds them: 64 an entry take a fifth of the bytes, and Redis's CPU
follows the bytes (docs/design-entries-of-several-events.md)."""

from __future__ import annotations

from typing import Final

import msgspec
import redis.asyncio as aioredis
from isal import isal_zlib

from homeiq.shared.events import PAYLOAD_VERSION
from homeiq.shared.scripts import XADD_BATCH_SCRIPT
from homeiq.shared.stream import FIELD_EVENT, FIELD_PACKED, FIELD_VERSION

PACKED_VERSION: Final = b"2"
SINGLE_VERSION: Final = PAYLOAD_VERSION.encode()
_WBITS: Final = -15  # raw deflate
DEFAULT_EVENTS_PER_ENTRY: Final = 64  # COLLECTOR_EVENTS_PER_ENTRY's default
MOST_EVENTS_PER_ENTRY: Final = 256  # its largest: Redis's saving is spent by 64, a writer's first read is bounded
MAX_UNPACKED_BYTES: Final = 256 * 1024 * 1024  # more is no entry of ours: refused, not held in memory
_raw_list = msgspec.json.Decoder(list[msgspec.Raw])


class BadEntry(Exception):
    """An entry whose events cannot be read; `reason` is its dead-letter reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def pack(payloads: list[bytes]) -> bytes:
    """The `z` value of an entry holding these encoded events."""
    return isal_zlib.compress(b"[" + b",".join(payloads) + b"]", 1, _WBITS)


def unpack(packed: bytes) -> list[bytes]:
    """The encoded events of a `z` value; BadEntry(undecodable) when it is none."""
    return split(inflate(packed))


def split(array: bytes) -> list[bytes]:
    """The encoded events of an inflated `z` value (a JSON array of them); BadEntry(undecodable) when it is none."""
    try:
        events = [bytes(raw) for raw in _raw_list.decode(array)]
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadEntry("undecodable", f"packed events: {type(exc).__name__}: {exc}"[:300]) from None
    if not events:
        raise BadEntry("undecodable", "a packed entry of no events")
    return events


def inflate(packed: bytes) -> bytes:
    """A `z` value inflated: the JSON array of its events; BadEntry(undecodable) when it is no deflate stream."""
    try:
        inflater = isal_zlib.decompressobj(_WBITS)
        text = inflater.decompress(packed, MAX_UNPACKED_BYTES)
        if not inflater.eof:
            if inflater.unconsumed_tail or len(text) >= MAX_UNPACKED_BYTES:
                raise BadEntry("undecodable", f"packed events inflate to more than {MAX_UNPACKED_BYTES} bytes")
            raise BadEntry("undecodable", "packed events are cut short")
        if inflater.unused_data:
            raise BadEntry("undecodable", f"packed events followed by {len(inflater.unused_data)} bytes more")
        return text
    except isal_zlib.error as exc:  # type: ignore[misc]
        raise BadEntry("undecodable", f"packed events: {type(exc).__name__}: {exc}"[:300]) from None


def events_in(fields: list[bytes]) -> tuple[bool, list[bytes]]:
    """Whether the entry with these fields is packed (version 2), and its encoded events (one for version 1);
    BadEntry names why there are none to read."""
    packed, payload = payload_in(fields)
    return packed, split(payload) if packed else [payload]


def payload_in(fields: list[bytes]) -> tuple[bool, bytes]:
    """Whether the entry with these fields is packed (version 2), and its payload: its one event (version 1), or
    the JSON array of its events, inflated; BadEntry names why there is none to read."""
    if len(fields) == 4 and fields[0] == FIELD_VERSION:  # as the collector adds them
        version, field, value = fields[1], fields[2], fields[3]
        if version == PACKED_VERSION and field == FIELD_PACKED:
            return True, inflate(value)
        if version == SINGLE_VERSION and field == FIELD_EVENT:
            return False, value
    pairs = dict(zip(fields[::2], fields[1::2], strict=False))
    found = pairs.get(FIELD_VERSION)
    if found == PACKED_VERSION:
        if FIELD_PACKED not in pairs:
            raise BadEntry("undecodable", "no packed events field `z`")
        return True, inflate(pairs[FIELD_PACKED])
    if found != SINGLE_VERSION:
        raise BadEntry("unknown_version", f"payload version {found!r}")
    if FIELD_EVENT not in pairs:
        raise BadEntry("undecodable", "no event field `e`")
    return False, pairs[FIELD_EVENT]


def events_or_none(fields: list[bytes] | dict[bytes, bytes]) -> list[bytes]:
    """The encoded events of an entry, none when it cannot be read (for readers that only look: the writers
    dead-letter such an entry)."""
    flat = fields if isinstance(fields, list) else [part for pair in fields.items() for part in pair]
    try:
        return events_in(flat)[1]
    except BadEntry:
        return []


def event_id(entry_id: bytes, index: int | None) -> bytes:
    """How one event is named: its entry's id, and for a packed entry its position in it (`<id>#<n>`, from 0)."""
    return entry_id if index is None else b"%s#%d" % (entry_id, index)


def single_fields(payload: bytes) -> list[bytes]:
    """The fields of a version-1 entry holding one event (a packed entry's event dead-lettered alone)."""
    return [FIELD_VERSION, SINGLE_VERSION, FIELD_EVENT, payload]


def xadd_batch_args(expected_tail: bytes, payloads: list[bytes], window_s: int = 0,
                    identities: list[tuple[bytes, bytes]] | None = None, events_per_entry: int = 1) -> list[bytes]:
    """The arguments of XADD_BATCH_SCRIPT for these encoded events, after the entry id the caller added last (b"":
    none): one version-1 entry each, or packed entries of up to `events_per_entry` (more than 1); with a window,
    each event's (bucket, identity) from `identities`."""
    args = [expected_tail, FIELD_VERSION, str(window_s).encode()]
    if window_s:
        assert identities is not None and len(identities) == len(payloads)
    for first in range(0, len(payloads), events_per_entry):
        events = payloads[first:first + events_per_entry]
        if events_per_entry == 1:
            args += (SINGLE_VERSION, FIELD_EVENT, b"1")
        else:
            args += (PACKED_VERSION, FIELD_PACKED, str(len(events)).encode())
        if window_s and identities is not None:
            args += (part for pair in identities[first:first + len(events)] for part in pair)
        args.append(events[0] if events_per_entry == 1 else pack(events))
    return args


async def xadd_events(client: aioredis.Redis, stream: str, payloads: list[bytes], batch: int = 1000,
                      events_per_entry: int = 1) -> None:
    """XADD encoded events as the collector does (the same script: each batch all or none, version-1 entries unless
    packed `events_per_entry` to an entry), for publishers that are not the collector: they leave its tail alone."""
    script = client.register_script(XADD_BATCH_SCRIPT)
    for first in range(0, len(payloads), batch):
        await script(keys=[stream], args=xadd_batch_args(b"", payloads[first:first + batch],
                                                         events_per_entry=events_per_entry))
