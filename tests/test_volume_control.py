"""Volume control: event types, the integration's entity filter and attribute controls in the homeiq schema,
and a property of the ha schema: a field's type is a function of its name, whatever HA sends."""

from __future__ import annotations

import asyncio
import json
import re

import msgspec
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from homeiq.local.services import InfluxServer
from homeiq.shared.config_reader import parse_config
from homeiq.shared.events import NormalisedEvent, State
from homeiq.shared.health import Readiness
from homeiq.shared.influx.batch import BatchWriter
from homeiq.shared.influx.haschema import HaEncoder
from homeiq.shared.influx.metrics import WriterMetrics
from homeiq.shared.influx.schemas import make_encoder
from homeiq.shared.influx.sink import v1_sink
from homeiq.shared.stream import DEFAULT_NAMES, ensure_group, entry_fields, read_group
from tests.events import other_payload, state_payload
from tests.helpers import value

CONFIG = """
influxdb:
  exclude: {domains: [update]}
  ignore_attributes: [entity_picture]
  component_config_glob:
    sensor.*: {ignore_attributes: [icon]}
homeiq:
  event_types: {exclude: [call_service]}
"""


async def test_homeiq_schema_event_types_entities_and_attributes(
    redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str
) -> None:
    names = DEFAULT_NAMES
    await ensure_group(redis_client, names)
    payloads = [
        state_payload(1, entity_id="sensor.a", state="1",
                      attributes=b'{"icon":"mdi:x","entity_picture":"/p.png","friendly_name":"A","unit":1.50}'),
        state_payload(2, entity_id="light.b", state="1", attributes=b'{"icon":"mdi:y","entity_picture":"/q.png"}'),
        state_payload(3, entity_id="update.core", state="1", attributes=b"{}"),
        other_payload("call_service", 4, b'{"domain":"light"}'),
        other_payload("automation_triggered", 5, b'{"name":"x"}'),
    ]
    for payload in payloads:
        await redis_client.xadd(names.stream, entry_fields(payload))
    metrics = WriterMetrics(CollectorRegistry())
    sink = v1_sink(influx.url, influx_db, "", "", "", 10)
    writer = BatchWriter(redis_client, names, sink, metrics, Readiness(), "w1",
                         encoder=make_encoder("homeiq", parse_config(CONFIG, "t")))
    try:
        entries = await read_group(redis_client, names, "w1", b">", 100)
        assert not (await writer.handle(entries, asyncio.Event())).given_up
    finally:
        await sink.close()
    points = {p.get("entity_id") or p["event_type"]: p for p in influx.points(influx_db)}
    assert set(points) == {"sensor.a", "light.b", "automation_triggered"}
    # Each value kept is HA's own text ("1.50" stays "1.50"); only the ignored keys go.
    assert json.loads(points["sensor.a"]["attributes"]) == {"friendly_name": "A", "unit": 1.5}
    assert '"unit":1.50' in points["sensor.a"]["attributes"]
    assert json.loads(points["light.b"]["attributes"]) == {"icon": "mdi:y"}
    assert (await redis_client.xpending(names.stream, names.group))["pending"] == 0  # left out is acked too
    assert value(metrics.skipped, reason="event_type") == 1
    assert value(metrics.skipped, reason="entity_filter") == 1
    assert value(metrics.attributes_dropped, reason="ignore_attributes") == 3
    assert value(metrics.points_written) == 3


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["nan", "inf", "-Infinity", "v12", "1.5.2", "50 %", "", "on", "3"]) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3), max_leaves=5)
_names = st.sampled_from(["state", "value", "time", "x", "x_str", "x_", "state_str", "value_str", "a_str_str", ""])


@settings(max_examples=300, deadline=None)
@given(state_text=st.sampled_from(["21.5", "on", "Away", "nan", "opening", "3"]),
       attributes=st.dictionaries(_names, _values, max_size=6))
def test_ha_field_types_follow_their_names(state_text: str, attributes: dict[str, object]) -> None:
    # `state` and `*_str` are strings, every other field a float: no two points can conflict on a type.
    line = HaEncoder().encode(NormalisedEvent(
        event_type="state_changed", time_ns=1, time_fired_ns=1, entity_id="sensor.x", domain="sensor",
        new_state=State(state=state_text, attributes=msgspec.Raw(json.dumps(attributes).encode()))))
    if line is None:
        return
    field_set = line.split(" ", 1)[1].rsplit(" ", 1)[0]
    for name, field_value in re.findall(r'(?:^|,)((?:[^=,\\]|\\.)+)=("(?:[^"\\]|\\.)*"|[^,]+)', field_set):
        assert name != "time"
        is_string = field_value.startswith('"')
        assert is_string == (name == "state" or name.endswith("_str")), (name, field_value, line)
