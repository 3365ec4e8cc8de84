"""Packed entries (version 2): what the collector packs, every reader gets back, event by event; what is no entry
of ours is named, never half read."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from homeiq.shared.packing import (
    FIELD_PACKED,
    PACKED_VERSION,
    BadEntry,
    event_id,
    events_in,
    events_or_none,
    pack,
    unpack,
    xadd_batch_args,
)
from homeiq.shared.stream import FIELD_EVENT, FIELD_VERSION

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=20)


@given(st.lists(json_values, min_size=1, max_size=80))
def test_packed_events_come_back_byte_for_byte(values: list[object]) -> None:
    payloads = [msgspec.json.encode(value) for value in values]
    assert unpack(pack(payloads)) == payloads
    assert events_in([FIELD_VERSION, PACKED_VERSION, FIELD_PACKED, pack(payloads)]) == (True, payloads)


def test_a_version_1_entry_is_its_one_event_in_any_field_order() -> None:
    assert events_in([FIELD_VERSION, b"1", FIELD_EVENT, b"{}"]) == (False, [b"{}"])
    assert events_in([FIELD_EVENT, b"{}", b"extra", b"x", FIELD_VERSION, b"1"]) == (False, [b"{}"])
    assert events_or_none({FIELD_PACKED: pack([b"1", b"2"]), FIELD_VERSION: PACKED_VERSION}) == [b"1", b"2"]


@pytest.mark.parametrize(("fields", "reason", "says"), [
    ([FIELD_VERSION, b"9", FIELD_EVENT, b"{}"], "unknown_version", "b'9'"),
    ([FIELD_EVENT, b"{}"], "unknown_version", "None"),
    ([FIELD_VERSION, b"1"], "undecodable", "`e`"),
    ([FIELD_VERSION, PACKED_VERSION], "undecodable", "`z`"),
    ([FIELD_VERSION, PACKED_VERSION, FIELD_PACKED, b"not deflate"], "undecodable", "packed events"),
    ([FIELD_VERSION, PACKED_VERSION, FIELD_PACKED, pack([b"{}"])[:-2]], "undecodable", "cut short"),
    ([FIELD_VERSION, PACKED_VERSION, FIELD_PACKED, pack([b'{"a":'])], "undecodable", "DecodeError"),
    ([FIELD_VERSION, PACKED_VERSION, FIELD_PACKED, pack([b'{}']) + b"x"], "undecodable", "packed events"),
])
def test_an_entry_that_is_none_of_ours_is_named_with_its_reason(fields: list[bytes], reason: str, says: str) -> None:
    with pytest.raises(BadEntry) as caught:
        events_in(fields)
    assert caught.value.reason == reason and says in caught.value.detail
    assert events_or_none(fields) == []


def test_a_packed_entry_too_large_to_be_ours_is_refused_unread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("homeiq.shared.packing.MAX_UNPACKED_BYTES", 1000)
    with pytest.raises(BadEntry, match="more than 1000 bytes"):
        unpack(pack([b'"' + b"x" * 2000 + b'"']))


def test_the_script_arguments_pack_a_batch_into_entries_with_their_identities() -> None:
    payloads = [b"%d" % n for n in range(5)]
    identities = [(b"b%d" % n, b"i%d" % n) for n in range(5)]
    single = xadd_batch_args(b"1-1", payloads[:2])
    assert single == [b"1-1", FIELD_VERSION, b"0", b"1", FIELD_EVENT, b"1", b"0", b"1", FIELD_EVENT, b"1", b"1"]
    args = xadd_batch_args(b"", payloads, 60, identities, events_per_entry=3)
    assert args[:3] == [b"", FIELD_VERSION, b"60"]
    first = args[3:3 + 3 + 6 + 1]
    assert first[:3] == [PACKED_VERSION, FIELD_PACKED, b"3"]
    assert first[3:9] == [b"b0", b"i0", b"b1", b"i1", b"b2", b"i2"]
    assert unpack(first[9]) == payloads[:3]
    second = args[13:]
    assert second[:3] == [PACKED_VERSION, FIELD_PACKED, b"2"] and unpack(second[-1]) == payloads[3:]


def test_an_event_is_named_by_its_entry_and_its_place_in_it() -> None:
    assert event_id(b"5-0", None) == b"5-0" and event_id(b"5-0", 63) == b"5-0#63"
