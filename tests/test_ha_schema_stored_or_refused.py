"""Property: every line of the `ha` schema is either stored by influxd with all its fields, or refused (and then
dead-lettered by the writer): never answered 204 and stored in part or not at all. Every name here has a form
influxd keeps, so none is refused either. Names come from users (a unit
is the measurement, attribute names are field keys), so they hold backslashes, quotes, separators, `#`, tabs and
line breaks."""

from __future__ import annotations

import urllib.error
import urllib.request
from itertools import count
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from homeiq.local.services import InfluxServer
from homeiq.shared.config import Integration
from homeiq.shared.events import NormalisedEvent, State
from homeiq.shared.influx.haschema import HaEncoder

# What line protocol treats specially, drawn often; no digits (a numeric tail would add a field of its own).
AWKWARD = st.sampled_from(["\\", '"', ",", "=", " ", "#", "\t", "\r", "\n", "'", "é", "😀", "a", "b"])
NAME = st.text(st.one_of(AWKWARD, st.characters(exclude_categories=("Cs", "Nd"))), min_size=1, max_size=8)
databases = count(1)


def not_a_number(text: str) -> bool:
    """HA's float() takes `inf`, `nan`, ` 1 `…: such a value is a number field (or left out), not a string one."""
    try:
        float(text)
    except ValueError:
        return True
    return False


T0 = 1_700_000_000_000_000_000


@pytest.fixture(params=["1", "2"], ids=lambda v: f"api_version-{v}")
def api_version(request: pytest.FixtureRequest) -> str:
    """Names are written as the user's client writes them: each api_version's forms are checked."""
    return str(request.param)


def state_event(unit: str, attributes: dict[str, str | float], n: int) -> NormalisedEvent:
    time_ns = T0 + n * 1000
    raw = msgspec.json.encode({"unit_of_measurement": unit, **attributes})
    return NormalisedEvent(event_type="state_changed", time_ns=time_ns, time_fired_ns=time_ns,
                           entity_id="sensor.probe", domain="sensor",
                           new_state=State(state="12.5", attributes=msgspec.Raw(raw), last_updated_ns=time_ns))


def write(influx: InfluxServer, database: str, line: str) -> int:
    request = urllib.request.Request(f"{influx.url}/write?db={database}&precision=ns", data=line.encode(),
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return refused.code


def stored_fields(influx: InfluxServer, database: str) -> list[dict[str, Any]]:
    """Each stored point's non-null fields (tags left out), whatever its measurement is called."""
    answer = influx.query("SELECT * FROM /.*/", database)
    keys = {row[0] for result in influx.query("SHOW TAG KEYS", database)["results"]
            for series in result.get("series", []) for row in series["values"]}
    points = []
    for result in answer["results"]:
        assert "error" not in result, result
        for series in result.get("series", []):
            for values in series["values"]:
                row = dict(zip(series["columns"], values, strict=True))
                points.append({k: v for k, v in row.items() if v is not None and k != "time" and k not in keys})
    return points


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(unit=NAME, attributes=st.dictionaries(NAME, NAME.filter(not_a_number) | st.floats(-1e6, 1e6), max_size=3))
@example(unit="trail\\", attributes={})
@example(unit="a\\ b", attributes={})
@example(unit="#comment", attributes={"x\\ y": 1.5, "z\\": "w"})
@example(unit="a\\\"b", attributes={"k\\": "v"})
@example(unit="°C", attributes={"a\\\\": "x\\", '"q"': "\"y\"", "k\\": 1.5, "#": 2.0})
@example(unit="\x00", attributes={"\t": "\t"})
@example(unit="\tx", attributes={"\tk": "v", "a\"b": '"q"'})
def test_every_line_is_stored_whole_or_refused(influx: InfluxServer, api_version: str, unit: str,
                                               attributes: dict[str, str | float]) -> None:
    encoder = HaEncoder(Integration(api_version=api_version))
    line = encoder.encode(state_event(unit, attributes, next(databases)))
    assert line is not None
    with influx.scratch_database(f"stored_or_refused_{next(databases)}") as database:
        status = write(influx, database, line)
        assert status == 204, (status, line)  # every name here has a form influxd keeps: none need be refused
        fields = 1 + len(attributes)  # value, and a field for each attribute (the unit is the measurement)
        points = stored_fields(influx, database)
        assert [len(p) for p in points] == [fields], (line, points)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tags=st.dictionaries(NAME.filter(lambda k: k != "time"), NAME.filter(not_a_number), min_size=1, max_size=3))
@example(tags={"x\\ y": "v\\ w", "k\\": "v\\", "#": '"q"'})
def test_attributes_as_tags_are_stored_whole(influx: InfluxServer, api_version: str, tags: dict[str, str]) -> None:
    encoder = HaEncoder(Integration(api_version=api_version, tags_attributes=tuple(tags)))
    line = encoder.encode(state_event("u", dict(tags), next(databases)))
    assert line is not None
    with influx.scratch_database(f"stored_or_refused_{next(databases)}") as database:
        assert write(influx, database, line) == 204, line
        assert [len(p) for p in stored_fields(influx, database)] == [1], line  # value
        series = influx.query("SELECT * FROM /.*/ GROUP BY *", database)["results"][0]["series"]
        assert [len(s["tags"]) for s in series] == [2 + len(tags)], (line, series)  # domain, entity_id and these


def _event(unit: str, attributes: dict[str, str | float], n: int, state: str = "12.5") -> NormalisedEvent:
    event = state_event(unit, attributes, n)
    assert event.new_state is not None
    return msgspec.structs.replace(event, new_state=msgspec.structs.replace(event.new_state, state=state))


@pytest.mark.parametrize("units", [["\x00a", "a"], ["\x00#k", "k"], ["\x00\t", "t"], ["#,", '"\\u0022#,\\u0022"'],
                                   ["#a\n", '"#a\n"'], ["\\\n", "x"]], ids=repr)
def test_two_units_never_share_a_measurement(influx: InfluxServer, api_version: str, units: list[str]) -> None:
    """influxd skips NULs (and tabs) at a line's start: `\\x00a` would be stored as `a`, `\\x00#k` as a comment;
    our literal of a name must not equal a raw name either."""
    encoder = HaEncoder(Integration(api_version=api_version))
    with influx.scratch_database(f"stored_or_refused_{next(databases)}") as database:
        for n, unit in enumerate(units):
            line = encoder.encode(state_event(unit, {}, next(databases) + n))
            assert line is not None
            assert write(influx, database, line) == 204, line
        measurements = influx.query("SHOW MEASUREMENTS", database)["results"][0]["series"][0]["values"]
        assert len(measurements) == len(units), measurements


@pytest.mark.parametrize(("state", "attributes"), [
    ("nan", {"\x00a": 1.5, "a": 2.0}),  # no state field: the first attribute comes right after the space
    ("nan", {"\x00": 1.5, "b": 2.0}),
    ("12.5", {"\\": 1.0, '"\\u0022\\u005c\\u005c\\u0022"': 2.0}),  # a literal of ours and a raw name alike
    ("12.5", {"a\\ ": 1.0, '"a\\u005c "': 2.0}),
    ("12.5", {"\t\\": 1.0, '"\t\\u005c"': 2.0}),  # a raw tab inside a quote-wrapped name
], ids=repr)
def test_every_attribute_keeps_a_field_of_its_own(influx: InfluxServer, api_version: str, state: str,
                                                  attributes: dict[str, str | float]) -> None:
    encoder = HaEncoder(Integration(api_version=api_version))
    line = encoder.encode(_event("u", attributes, next(databases), state))
    assert line is not None
    with influx.scratch_database(f"stored_or_refused_{next(databases)}") as database:
        assert write(influx, database, line) == 204, line
        fields = len(attributes) + (state != "nan")
        assert [len(p) for p in stored_fields(influx, database)] == [fields], line
