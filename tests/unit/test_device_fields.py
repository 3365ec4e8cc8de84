"""`homeiq.device_fields`: which of the strings describing an entity's device every point of the homeiq schema
repeats (all five unless the file says otherwise: the HomeIQ readers count `manufacturer` and `model`)."""

from __future__ import annotations

import msgspec
import pytest

from homeiq.shared.config import DEVICE_FIELDS
from homeiq.shared.config_reader import parse_config
from homeiq.shared.events import Enrichment, encode_enrichment
from homeiq.shared.influx.schemas import make_encoder
from homeiq.shared.influx.settings import InfluxSettings
from homeiq.shared.settings import ConfigError
from tests.events import state_event

DESCRIBED = Enrichment(device_id="d1", manufacturer="Acme", model="M1", sw_version="1.0", area_id="kitchen",
                       area_name="Kitchen", friendly_name="Kettle", unit="W")


def line(config: str | None) -> str:
    encoder = make_encoder("homeiq", parse_config(config, "t") if config is not None else None)
    text = encoder.encode(state_event(1, state="5", enrichment=encode_enrichment(DESCRIBED)))
    assert text is not None
    return text


def field_names(text: str) -> set[str]:
    fields = text.split(" ")[-2]  # no space inside these test values' fields
    return {part.split("=", 1)[0] for part in fields.split(",")}


def test_every_device_field_by_default() -> None:
    assert set(DEVICE_FIELDS) <= field_names(line(None))
    assert set(DEVICE_FIELDS) <= field_names(line("homeiq: {schema: homeiq}\n"))


def test_only_the_device_fields_named_are_written_and_nothing_else_changes() -> None:
    full, lean = line(None), line("homeiq: {device_fields: [manufacturer, model]}\n")
    assert field_names(full) - field_names(lean) == {"sw_version", "area_name", "friendly_name"}
    assert field_names(lean) >= {"manufacturer", "model", "unit_of_measurement", "state_value", "value", "source"}
    assert lean.split(" ")[0] == full.split(" ")[0]  # the same series: tags untouched
    assert lean.split(" ")[-1] == full.split(" ")[-1]


def test_an_empty_list_writes_none_of_them() -> None:
    assert not set(DEVICE_FIELDS) & field_names(line("homeiq: {device_fields: []}\n"))


def test_null_is_an_error_not_a_silent_default() -> None:
    # Elsewhere in the file null is an empty list: `device_fields:` meant as "none" must not write all five.
    with pytest.raises(ConfigError, match=r"homeiq\.device_fields: .*\[\] for none"):
        parse_config("homeiq:\n  device_fields:\n", "t")


def notes(config: str, schema: str) -> list[str]:
    settings = InfluxSettings(url="http://127.0.0.1:1", api="v1", schema=schema, config=parse_config(config, "t"))
    return settings.config_notes()


def test_what_is_left_out_is_noted_for_the_schema_in_force() -> None:
    assert notes("homeiq: {schema: homeiq}\n", "homeiq") == []
    (note,) = notes("homeiq: {device_fields: [model, manufacturer]}\n", "homeiq")
    assert note.startswith("homeiq.device_fields: the homeiq schema's points leave out sw_version, area_name, "
                           "friendly_name")
    # The ha schema never writes them: the option does nothing there, and the note says so.
    assert notes("homeiq: {device_fields: [model]}\n", "ha") == [
        "homeiq.device_fields: no effect with the ha schema (its points carry no device strings)"]


def test_a_name_that_is_no_device_field_is_an_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"homeiq\.device_fields\[1\]: must be one of manufacturer.* got 'state_"):
        parse_config("homeiq: {device_fields: [model, state_value]}\n", "t")


def test_the_choice_survives_the_encoder_forgetting_its_entities() -> None:
    encoder = make_encoder("homeiq", parse_config("homeiq: {device_fields: [model]}\n", "t"))
    event = state_event(1, state="5", enrichment=msgspec.Raw(encode_enrichment(DESCRIBED)))
    before = encoder.encode(event)
    encoder.forget()
    assert encoder.encode(event) == before
    assert before is not None and "manufacturer=" not in before and 'model="M1"' in before
