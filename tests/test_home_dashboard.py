"""The home dashboard (`homeiq-home.json`) against a real influxd holding a home written by our real writer (the
default `homeiq` schema): each variable's query, each panel's query with Grafana's substitutions for a time range,
an interval and the variables' selections, and the panels' units against Home Assistant's units."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import pytest
import redis.asyncio as aioredis

from homeiq.local.services import InfluxServer, RedisServer
from homeiq.shared.events import Enrichment, encode_enrichment, encode_event
from homeiq.shared.influx.settings import InfluxSettings
from tests.dashboards import DASHBOARDS, dashboard_json, targets
from tests.dashboards import HOME as DASHBOARD
from tests.events import BASE_NS, other_payload, state_event
from tests.helpers import wait_for
from tests.writer_harness import fill, metric, running_writer, writer_settings

MINUTE_NS: Final = 60 * 10**9
# The dashboard's time range: BASE_NS is 2023-11-14T22:13:20Z.
TIME_FILTER: Final = "time >= '2023-11-14T21:00:00Z' AND time <= '2023-11-14T23:00:00Z'"
IN_RANGE: Final = range(BASE_NS - 73 * MINUTE_NS, BASE_NS + 46 * MINUTE_NS)


@dataclass(frozen=True)
class Entity:
    entity_id: str
    area: str | None
    device_class: str | None
    unit: str | None
    states: tuple[tuple[int, str], ...]  # (minutes from BASE_NS, state)
    removed: int | None = None  # minutes from BASE_NS: HA removed the entity then (a state_changed without new state)


THE_HOME: Final = (
    Entity("sensor.kitchen_temperature", "kitchen", "temperature", "°C", ((-30, "21.0"), (-10, "21.5"), (10, "22.0"))),
    Entity("sensor.porch_temperature", "porch", "temperature", "°F", ((-20, "70.5"),)),
    Entity("sensor.bathroom_humidity", "bathroom", "humidity", "%", ((-15, "55"), (5, "60"))),
    Entity("sensor.washer_power", "laundry", "power", "W", ((-25, "0"), (-5, "1500"), (15, "0"))),
    Entity("sensor.house_energy", None, "energy", "kWh", ((-40, "100.0"), (-20, "101.5"), (0, "103.0"))),
    Entity("sensor.phone_battery", None, "battery", "%", ((-30, "80"),)),
    Entity("sensor.hall_illuminance", "hall", "illuminance", "lx", ((-10, "300"),)),
    Entity("sensor.porch_pressure", "porch", "pressure", "hPa", ((-10, "1013.2"),)),
    Entity("binary_sensor.front_door", "hall", "door", None, ((-50, "off"), (-12, "on"), (-11, "off"))),
    Entity("light.kitchen", "kitchen", None, None, ((-35, "on"), (20, "off"))),
    Entity("switch.old_plug", "laundry", None, None, ((-40, "on"),), removed=-8),
    # Last changed a month before the time range: only the last-state table shows it.
    Entity("sensor.attic_temperature", "attic", "temperature", "°C", ((-30 * 24 * 60, "15.0"),)),
)
ATTIC: Final = THE_HOME[-1]
AREAS: Final = {entity.area for entity in THE_HOME} - {None}

# Home Assistant's units per sensor device class (homeassistant/components/sensor/const.py DEVICE_CLASS_UNITS, the
# classes the dashboard draws), and the Grafana unit of each.
HA_UNITS: Final = {
    "temperature": {"°C", "°F", "K"}, "humidity": {"%"}, "power": {"W", "kW", "mW", "MW", "GW", "TW", "BTU/h"},
    "energy": {"Wh", "kWh", "MWh", "GWh", "TWh", "MJ", "GJ", "cal", "kcal", "Mcal", "Gcal", "mWh"},
    "battery": {"%"}, "illuminance": {"lx"}, "pressure": {"Pa", "hPa", "kPa", "bar", "cbar", "mbar", "mmHg",
                                                           "inHg", "psi"},
    "voltage": {"V", "mV", "µV", "kV", "MV"}, "current": {"A", "mA"},
}
GRAFANA_UNITS: Final = {
    "°C": {"celsius"}, "°F": {"fahrenheit"}, "K": {"kelvin"}, "%": {"percent", "humidity"}, "W": {"watt"},
    "kW": {"kwatt"}, "Wh": {"watth"}, "kWh": {"kwatth"}, "lx": {"lux"}, "hPa": {"pressurehpa"},
    "mbar": {"pressurembar"}, "bar": {"pressurebar"}, "kPa": {"pressurekpa"}, "V": {"volt"}, "A": {"amp"},
}
# How a query selects one device class in one unit: in our schema by tag and field; in the ha schema the measurement
# is the unit and the device class a `_str` field.
FILTER: Final = re.compile(
    r"\"device_class\" = '(?P<device_class>[^']*)' AND \"unit_of_measurement\" = '(?P<unit>[^']*)'")
HA_FILTER: Final = re.compile(
    r"FROM \"(?P<unit>[^\"]+)\" WHERE \$timeFilter AND \"device_class_str\" = '(?P<device_class>[^']*)'")


def payloads() -> Iterator[bytes]:
    n = 0
    for entity in THE_HOME:
        for minutes, state in entity.states:
            n += 1
            name = entity.entity_id.partition(".")[2].replace("_", " ")
            attributes = {"friendly_name": name, "device_class": entity.device_class,
                          "unit_of_measurement": entity.unit}
            event = state_event(n, state=state, entity_id=entity.entity_id, attributes=json.dumps(
                {key: value for key, value in attributes.items() if value is not None}).encode())
            time_ns = BASE_NS + minutes * MINUTE_NS
            enrichment = encode_enrichment(Enrichment(area_id=entity.area, device_class=entity.device_class,
                                                      unit=entity.unit, friendly_name=name))
            yield encode_event(msgspec.structs.replace(event, time_ns=time_ns, time_fired_ns=time_ns,
                                                       enrichment=enrichment))
        if entity.removed is not None:
            n += 1
            assert event.new_state is not None
            time_ns = BASE_NS + entity.removed * MINUTE_NS
            yield encode_event(msgspec.structs.replace(event, time_ns=time_ns, time_fired_ns=time_ns, new_state=None,
                                                       old_state=event.new_state, enrichment=enrichment))
    yield other_payload("call_service", 999, b'{"domain":"light","service":"turn_on"}')


@pytest.fixture
async def home_db(redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str) -> str:
    """A database holding THE_HOME, written by our writer (the homeiq schema)."""
    written = list(payloads())
    await fill(redis_client, written)
    async with running_writer(writer_settings(redis_server.url, influx.url, influx_db)) as running:
        await wait_for(lambda: metric(running, "homeiq_points_written_total") == len(written), 10, "points written")
    return influx_db


@pytest.fixture
async def ha_db(redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str) -> str:
    """A database holding THE_HOME as Home Assistant's integration writes it (our writer, the `ha` schema)."""
    states = sum(len(entity.states) for entity in THE_HOME)
    await fill(redis_client, list(payloads()))
    ha = InfluxSettings(url=influx.url, api="v1", bucket=influx_db, timeout_s=2, schema="ha")
    async with running_writer(writer_settings(redis_server.url, influx.url, influx_db, influx=ha)) as running:
        await wait_for(lambda: metric(running, "homeiq_points_written_total") == states, 10, "points written")
    return influx_db


def escape_regex(value: str) -> str:
    """Grafana's escapeRegex, which its InfluxDB data source applies to each selected value."""
    return re.sub(r"[\\^$*+?.()|{}\[\]/]", lambda match: "\\" + match.group(0), value)


def grafana(query: str, **selected: list[str]) -> str:
    """The statement Grafana sends: the time range, a 1 min interval, each variable All (its allValue `.*`) unless
    `selected`, one value escaped, several as (a|b)."""
    variables = {variable["name"]: variable for variable in dashboard_json(DASHBOARD)["templating"]["list"]}

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "timeFilter":
            return TIME_FILTER
        if name == "__interval":
            return "1m"
        variable = variables[name]
        if name not in selected:
            return str(variable["allValue"])
        values = [escape_regex(each) for each in selected[name]]
        return values[0] if len(values) == 1 else "(" + "|".join(values) + ")"

    return re.sub(r"\$(timeFilter|__interval|\w+)", value, query)


def run(influx: InfluxServer, database: str, statement: str) -> list[dict[str, Any]]:
    answer: dict[str, Any] = influx.query(statement, database, epoch="ns")["results"][0]
    assert "error" not in answer, (statement, answer)
    series: list[dict[str, Any]] = answer.get("series", [])
    return series


def schema_of(query: str) -> str:
    """The schema a query reads: ours has one measurement; in the `ha` schema the measurement is the unit."""
    return "homeiq" if 'FROM "home_assistant_events"' in query else "ha"


def panel(title: str, schema: str = "homeiq") -> tuple[dict[str, Any], str]:
    found = [(each, query) for each, query in targets(DASHBOARD, "influxdb")
             if each["title"].startswith(title) and schema_of(query) == schema]
    assert len(found) == 1, title
    return found[0]


def variable_values(influx: InfluxServer, database: str, name: str, **selected: list[str]) -> set[str]:
    [variable] = [each for each in dashboard_json(DASHBOARD)["templating"]["list"] if each["name"] == name]
    return {row[1] for series in run(influx, database, grafana(variable["query"], **selected))
            for row in series["values"]}


async def test_the_variables_offer_the_areas_device_classes_and_entities_written(
    home_db: str, influx: InfluxServer
) -> None:
    names = [each["name"] for each in dashboard_json(DASHBOARD)["templating"]["list"]]
    assert names == ["area", "device_class", "entity"]
    assert variable_values(influx, home_db, "area") == AREAS
    assert variable_values(influx, home_db, "device_class") == {entity.device_class for entity in THE_HOME} - {None}
    assert variable_values(influx, home_db, "device_class", area=["kitchen"]) == {"temperature"}
    assert variable_values(influx, home_db, "entity") == {entity.entity_id for entity in THE_HOME}
    # An entity without a device class (the light) is in its area's list while the class is All.
    assert variable_values(influx, home_db, "entity", area=["kitchen"]) == {"sensor.kitchen_temperature",
                                                                           "light.kitchen"}
    assert variable_values(influx, home_db, "entity", area=["kitchen", "hall"], device_class=["door"]) == {
        "binary_sensor.front_door"}
    assert variable_values(influx, home_db, "entity", device_class=["temperature"]) == {
        "sensor.kitchen_temperature", "sensor.porch_temperature", "sensor.attic_temperature"}


def last_states(influx: InfluxServer, database: str, **selected: list[str]) -> dict[str, dict[str, Any]]:
    _, query = panel("Last state of every entity")
    return {series["tags"]["entity_id"]: dict(zip(series["columns"], series["values"][-1], strict=True))
            for series in run(influx, database, grafana(query, **selected))}


async def test_the_last_state_of_every_entity_is_shown_whatever_the_time_range(
    home_db: str, influx: InfluxServer
) -> None:
    states = last_states(influx, home_db)
    assert states.keys() == {entity.entity_id for entity in THE_HOME}  # the call_service event is no entity
    for entity in THE_HOME:
        minutes, state = entity.states[-1]
        last: tuple[int, str | None] = (minutes, state) if entity.removed is None else (entity.removed, None)
        row = states[entity.entity_id]  # a removed entity: no state since its removal
        assert (row["state"], row["unit"], row["time"]) == (last[1], entity.unit, BASE_NS + last[0] * MINUTE_NS)
    assert states[ATTIC.entity_id]["time"] not in IN_RANGE  # last changed a month before the range: still shown
    assert last_states(influx, home_db, area=["kitchen"]).keys() == {"sensor.kitchen_temperature", "light.kitchen"}
    assert states["switch.old_plug"]["name"] == "old plug"
    assert last_states(influx, home_db, device_class=["temperature"], area=["attic", "porch"]).keys() == {
        ATTIC.entity_id, "sensor.porch_temperature"}
    assert last_states(influx, home_db, entity=["sensor.washer_power"]).keys() == {"sensor.washer_power"}


def drawn(influx: InfluxServer, database: str, query: str, **selected: list[str]) -> dict[str, list[Any]]:
    """The values of each entity (the `ha` schema's tags carry the object id and the domain apart)."""
    return {(f"{series['tags']['domain']}.{series['tags']['entity_id']}" if schema_of(query) == "ha"
             else series["tags"]["entity_id"]): [row[1] for row in series["values"]]
            for series in run(influx, database, grafana(query, **selected))}


def device_class_panels(schema: str) -> Iterator[tuple[dict[str, Any], str, str, str]]:
    """(panel, query, device class, unit) of every panel of `schema` drawing numbers of one device class in one
    unit."""
    for each, query in targets(DASHBOARD, "influxdb"):
        if each["type"] == "timeseries" and schema_of(query) == schema:
            yield each, query, *device_class_and_unit(each, query)


def device_class_and_unit(each: dict[str, Any], query: str) -> tuple[str, str]:
    """The one device class and unit a panel of numbers draws, as its query selects them."""
    match = FILTER.search(query) or HA_FILTER.search(query)
    assert match, (each["title"], "numbers of every device class and unit on one axis")
    return (match["device_class"], match["unit"])


def expected_numbers(device_class: str, unit: str) -> dict[str, list[float]]:
    """What a panel of one device class and unit draws of THE_HOME in the time range, in 1 min intervals."""
    expected = {entity.entity_id: [float(state) for minutes, state in entity.states
                                   if BASE_NS + minutes * MINUTE_NS in IN_RANGE]
                for entity in THE_HOME if (entity.device_class, entity.unit) == (device_class, unit)}
    expected = {entity_id: values for entity_id, values in expected.items() if values}
    if device_class == "energy":  # what each meter used between its readings
        expected = {entity_id: [b - a for a, b in itertools.pairwise(values)]
                    for entity_id, values in expected.items()}
    return expected


async def test_each_device_class_panel_draws_its_entities_in_its_unit_and_no_other(
    home_db: str, influx: InfluxServer
) -> None:
    classes = set()
    for each, query, device_class, unit in device_class_panels("homeiq"):
        classes.add(device_class)
        expected = expected_numbers(device_class, unit)
        assert expected, each["title"]
        assert drawn(influx, home_db, query) == expected, each["title"]
        area = next(entity.area for entity in THE_HOME if entity.entity_id in expected)
        if area is not None:  # the area variable narrows it; another area leaves it out
            assert drawn(influx, home_db, query, area=[area]).keys() == {
                entity.entity_id for entity in THE_HOME if entity.entity_id in expected and entity.area == area}
            assert not drawn(influx, home_db, query, area=["nowhere"])
    # The °C panel has the kitchen's temperature, not the porch's °F one nor the attic's (no change in the range).
    _, celsius = panel("Temperature")
    assert drawn(influx, home_db, celsius).keys() == {"sensor.kitchen_temperature"}
    assert classes == {entity.device_class for entity in THE_HOME if entity.unit}
    for _, query, _, _ in device_class_panels("ha"):  # the ha schema's panels: nothing here
        assert not drawn(influx, home_db, query)


async def test_the_ha_schema_panels_draw_home_assistants_points_by_unit(ha_db: str, influx: InfluxServer) -> None:
    drawing = list(device_class_panels("ha"))
    assert {device_class for _, _, device_class, _ in drawing} == {"temperature", "humidity", "power", "energy"}
    for each, query, device_class, unit in drawing:
        expected = expected_numbers(device_class, unit)
        assert expected and drawn(influx, ha_db, query) == expected, each["title"]
    _, celsius = panel("Temperature", "ha")
    assert drawn(influx, ha_db, celsius).keys() == {"sensor.kitchen_temperature"}
    for _, query, _, _ in device_class_panels("homeiq"):  # our schema's panels: nothing here
        assert not drawn(influx, ha_db, query)


async def test_the_on_off_timeline_shows_doors_lights_and_switches_not_sensors(
    home_db: str, influx: InfluxServer
) -> None:
    _, query = panel("Doors, windows")
    states = drawn(influx, home_db, query)
    assert states.keys() == {"binary_sensor.front_door", "light.kitchen", "switch.old_plug"}
    # Empty (null) before an entity's first change in the range: its state then is not known to the query.
    assert set(states["binary_sensor.front_door"]) - {None} == {"on", "off"}
    assert set(states["light.kitchen"]) - {None} == {"on", "off"}
    assert drawn(influx, home_db, query, area=["kitchen"]).keys() == {"light.kitchen"}


def test_every_influxql_query_of_the_home_dashboard_is_run_by_a_test_above() -> None:
    run_above = {panel("Last state of every entity")[1], panel("Doors, windows")[1]} | {
        query for schema in ("homeiq", "ha") for _, query, _, _ in device_class_panels(schema)}
    assert {query for _, query in targets(DASHBOARD, "influxdb")} == run_above


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda path: path.name)
def test_a_panel_of_numbers_states_the_unit_of_the_one_device_class_it_draws(dashboard: Any) -> None:
    numeric = [(each, query) for each, query in targets(dashboard, "influxdb") if each["type"] == "timeseries"]
    for each, query in numeric:
        device_class, unit = device_class_and_unit(each, query)
        assert unit in HA_UNITS[device_class], (each["title"], "a unit Home Assistant has for the class")
        assert each["fieldConfig"]["defaults"]["unit"] in GRAFANA_UNITS[unit], (each["title"], unit)
    if dashboard == DASHBOARD:
        assert len(numeric) >= 11
