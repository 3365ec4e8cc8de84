"""An encoder that forgets its entities writes the very lines one that remembers them does (the replayer forgets
after each pass)."""

from __future__ import annotations

import pytest

from homeiq.shared.events import NormalisedEvent
from homeiq.shared.influx.schemas import SCHEMAS, make_encoder
from tests.events import state_event

POWER = b'{"friendly_name":"Power %d","unit_of_measurement":"W","device_class":"power"}'


def events(first: int) -> list[NormalisedEvent]:
    """Three entities' states; every third changes its attributes each round, the others keep theirs."""
    return [state_event(n, entity_id=f"sensor.p{n % 3}",
                        attributes=POWER % (n if n % 3 == 0 else n % 3), device_class="power")
            for n in range(first, first + 30)]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_forgetting_changes_no_line(schema: str) -> None:
    remembering, forgetting = make_encoder(schema), make_encoder(schema)
    kept = [remembering.encode(event) for event in events(0) + events(30)]
    before = [forgetting.encode(event) for event in events(0)]
    assert forgetting.remembered() == 3
    forgetting.forget()
    assert forgetting.remembered() == 0
    after = [forgetting.encode(event) for event in events(30)]
    assert before + after == kept and all(kept)
    assert forgetting.remembered() == 3
