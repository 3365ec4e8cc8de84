"""An event whose `enrichment` is no Enrichment is poison in every schema (the field is kept as JSON, so decoding
the event no longer refuses it): dead-lettered as undecodable, saying where, never written half-checked."""

from __future__ import annotations

import msgspec
import pytest

from homeiq.shared.config import EventTypes
from homeiq.shared.events import encode_event
from homeiq.shared.influx.batch import encode_entries
from homeiq.shared.influx.haschema import HaEncoder
from homeiq.shared.influx.lineprotocol import LineEncoder
from homeiq.shared.influx.schemas import Encoder
from homeiq.shared.packing import pack
from tests.events import state_event

BAD = [b"5", b'"s"', b"null", b"[]", b"true", b'{"area_id":5}', b'{"area_id":[1]}', b'{"area_id":{"x":1}}']
ENCODERS = {"homeiq": LineEncoder, "ha": HaEncoder,
            "homeiq, its type filtered out": lambda: LineEncoder(event_types=EventTypes(exclude=("state_changed",)))}


def payload(n: int, enrichment: bytes) -> bytes:
    return encode_event(msgspec.structs.replace(state_event(n), enrichment=msgspec.Raw(enrichment)))


@pytest.mark.parametrize("schema", ENCODERS)
def test_each_malformed_enrichment_is_poison_and_its_good_neighbours_are_written(schema: str) -> None:
    encoder: Encoder = ENCODERS[schema]()
    good_before, good_after = payload(0, b'{"area_id":"kitchen"}'), payload(0, b'{"area_id":"hall"}')
    singles = [(f"{n}-0".encode(), [b"v", b"1", b"e", payload(0, bad)]) for n, bad in enumerate(BAD, 1)]
    packed = (b"99-0", [b"v", b"2", b"z", pack([good_before, *(payload(0, bad) for bad in BAD), good_after])])
    written, poison = encode_entries([(b"0-0", [b"v", b"1", b"e", good_before]), *singles, packed], encoder)
    assert [(p.entry_id, p.index, p.reason) for p in poison] == [
        *((f"{n}-0".encode(), None, "undecodable") for n in range(1, len(BAD) + 1)),
        *((b"99-0", n, "undecodable") for n in range(1, len(BAD) + 1))]
    assert all("$.enrichment" in p.detail for p in poison), [p.detail for p in poison]
    assert [(w.entry_id, w.index) for w in written] == [(b"0-0", None), (b"99-0", 0), (b"99-0", len(BAD) + 1)]
