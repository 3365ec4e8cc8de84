"""Property: whatever text HA sends in a tag or a string field, influxd accepts the line and returns what we wrote.

String fields come back exactly. Tag values come back exactly unless line protocol cannot carry them (a line
break, a trailing backslash) or they look like the encoding used for those (they start and end with a double
quote): those are stored as their JSON string literal (README, "where this differs").
"""

from __future__ import annotations

import json
import urllib.request
from itertools import count

import msgspec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from homeiq.local.services import InfluxServer
from homeiq.shared.events import Context, Enrichment, NormalisedEvent, State, encode_enrichment, enrichment_of
from homeiq.shared.influx.lineprotocol import encode_line, event_category, numeric_value

# Any unicode but surrogates (not UTF-8, so never in HA's JSON), with what line protocol treats specially
# drawn often: line breaks, tabs, backslashes, the separators, quotes, emoji, NUL.
AWKWARD = st.sampled_from(["\n", "\r", "\t", "\\", ",", "=", " ", '"', "'", "😀", "\x00", "\u2028", "é"])
TEXT = st.text(st.one_of(st.characters(exclude_categories=("Cs",)), AWKWARD), max_size=24)
TAG_KEYS = ("area_id", "device_class", "device_id", "entity_category", "entity_id", "event_type", "platform")
times = count(1)


def stored_tag(value: str) -> str:
    """The tag value the README promises: the value itself, or its JSON string literal when it has a line
    break, ends with a backslash, or starts and ends with a double quote."""
    if "\n" in value or value.endswith("\\") or (len(value) > 1 and value[0] == value[-1] == '"'):
        return json.dumps(value, ensure_ascii=False)
    return value


def original_tag(stored: str) -> str:
    """The inverse of stored_tag (so distinct values never share a series)."""
    return json.loads(stored) if len(stored) > 1 and stored[0] == stored[-1] == '"' else stored


def make_event(tags: dict[str, str], text: str, attributes: dict[str, object]) -> NormalisedEvent:
    """An event with `tags`, `text` in every string field and `attributes`, at a time of its own."""
    time_ns = 1_600_000_000_000_000_000 + next(times) * 1000
    return NormalisedEvent(
        event_type=tags["event_type"], time_ns=time_ns, entity_id=tags["entity_id"],
        domain=tags["entity_id"].partition(".")[0],  # as the collector sets it (the encoder's cache relies on it)
        new_state=State(state=text, attributes=msgspec.Raw(msgspec.json.encode(attributes)), last_updated_ns=time_ns),
        old_state=State(state=text[::-1], last_changed_ns=time_ns - 10**9),
        data=msgspec.Raw(msgspec.json.encode({text: text})),
        context=Context(id=text, parent_id=text[1:], user_id=text[:1]),
        enrichment=encode_enrichment(Enrichment(
            area_id=tags["area_id"], device_class=tags["device_class"], device_id=tags["device_id"],
            entity_category=tags["entity_category"], platform=tags["platform"], manufacturer=text, model=text[1:],
            sw_version=text[:1], area_name=text + text, friendly_name=text, unit=text[::-1])),
    )


@st.composite
def events(draw: st.DrawFn) -> NormalisedEvent:
    """An event with arbitrary text in every tag and every string field."""
    tags = {key: draw(TEXT) for key in TAG_KEYS}
    attributes = draw(st.dictionaries(TEXT, TEXT | st.floats(allow_nan=False) | st.integers(), max_size=4))
    return make_event(tags, draw(TEXT), attributes)


# Values line protocol cannot carry as they are, and values that look like their encoding.
AWKWARD_TAGS = {"area_id": "a\\,b", "device_class": '"q"', "device_id": "a\\\nb", "entity_category": "\\ ",
                "entity_id": "a\nb.x\\", "event_type": '"', "platform": "\\"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(events(), min_size=1, max_size=4))
@example(batch=[make_event(AWKWARD_TAGS, "\\", {"\\": "\n"}), make_event(AWKWARD_TAGS, "x\\", {})])
def test_any_text_in_tags_and_fields_is_accepted_and_reads_back_as_documented(
    influx: InfluxServer, influx_db: str, batch: list[NormalisedEvent],
) -> None:
    request = urllib.request.Request(f"{influx.url}/write?db={influx_db}&precision=ns",
                                     data="\n".join(encode_line(e) for e in batch).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 204
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"influxd refused the batch: {exc.code} {exc.read().decode()}") from None
    for event in batch:
        answer = influx.query(f"SELECT * FROM home_assistant_events WHERE time = {event.time_ns} GROUP BY *",
                              influx_db)
        (series,) = answer["results"][0]["series"]
        (row,) = series["values"]
        point = dict(zip(series["columns"], row, strict=True))
        tags = {key: value for key, value in series["tags"].items() if value}  # "" = this series lacks the tag
        enrich = enrichment_of(event.enrichment)
        sent = {"area_id": enrich.area_id, "device_class": enrich.device_class, "device_id": enrich.device_id,
                "domain": event.domain, "entity_category": enrich.entity_category, "entity_id": event.entity_id,
                "event_type": event.event_type, "platform": enrich.platform}
        expected = {key: stored_tag(value) for key, value in sent.items() if value}  # empty: no tag
        expected["event_category"] = event_category(event.domain, enrich.device_class)
        assert tags == expected
        assert {key: original_tag(value) for key, value in tags.items() if key != "event_category"} == {
            key: value for key, value in sent.items() if value}
        assert event.new_state is not None and event.old_state is not None
        assert point["state_value"] == event.new_state.state
        assert point["previous_state"] == event.old_state.state
        assert point.get("value") == numeric_value(event.new_state.state)
        assert point.get("attributes") == (None if bytes(event.new_state.attributes) == b"{}"
                                       else bytes(event.new_state.attributes).decode())
        assert point["event_data"] == bytes(event.data).decode()
        assert (point["context_id"], point["context_parent_id"], point["context_user_id"]) == (
            event.context.id, event.context.parent_id, event.context.user_id)
        for field in ("manufacturer", "model", "sw_version", "area_name", "friendly_name"):
            assert point[field] == getattr(enrich, field)
        assert point["unit_of_measurement"] == enrich.unit
