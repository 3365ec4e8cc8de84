"""Property: whatever text a state, an attribute or a name holds, what we write is what influxd returns."""

from __future__ import annotations

import urllib.request
from itertools import count

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homeiq_local.services import InfluxServer
from homeiq_shared.events import Context, Enrichment, NormalisedEvent, State
from homeiq_writer.lineprotocol import encode_line

# Any unicode but surrogates and NUL (JSON and InfluxDB both refuse those); strings InfluxDB stores.
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)
# Tag values: HA's ids and slugs in practice, so any printable text without line breaks or a trailing backslash.
TAG = st.text(st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=20).filter(
    lambda s: not s.endswith("\\") and s.strip() == s)
times = count(1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=TEXT, name=TEXT, attributes=st.dictionaries(TEXT, TEXT | st.floats(allow_nan=False) | st.integers(),
                                                           max_size=4),
       context_id=TEXT, area=TAG, device_class=TAG)
def test_strings_round_trip_through_influxd(
    influx: InfluxServer, influx_db: str, state: str, name: str, attributes: dict[str, object], context_id: str,
    area: str, device_class: str,
) -> None:
    time_ns = 1_600_000_000_000_000_000 + next(times) * 1000
    raw_attributes = msgspec.json.encode(attributes)
    event = NormalisedEvent(
        event_type="state_changed", time_ns=time_ns, entity_id="sensor.x", domain="sensor",
        new_state=State(state=state, attributes=msgspec.Raw(raw_attributes)), context=Context(id=context_id),
        enrichment=Enrichment(area_id=area, device_class=device_class, friendly_name=name),
    )
    request = urllib.request.Request(f"{influx.url}/write?db={influx_db}&precision=ns",
                                     data=encode_line(event).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 204
    answer = influx.query(f"SELECT * FROM home_assistant_events WHERE time = {time_ns}", influx_db)
    (point,) = [dict(zip(s["columns"], row, strict=True)) for s in answer["results"][0]["series"]
                for row in s["values"]]
    assert point["state_value"] == state
    assert point["friendly_name"] == name
    assert point["context_id"] == context_id
    assert point["area_id"] == area and point["device_class"] == device_class
    if attributes:
        assert msgspec.json.decode(point["attributes"]) == msgspec.json.decode(raw_attributes)
