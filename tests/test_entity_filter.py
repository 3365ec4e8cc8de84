"""The seed's ENTITY_FILTER_CONFIG format with its quirks fixed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from homeiq.local.services import RedisServer
from homeiq.shared.entity_filter import PatternFilter
from homeiq.shared.events import NormalisedEvent, enrichment_of
from homeiq.shared.settings import ConfigError
from tests.collector_harness import running_collector, simulator, stream_events
from tests.events import state_event
from tests.helpers import wait_for


def event(entity_id: str, device_class: str | None = None, area_id: str | None = None) -> NormalisedEvent:
    return state_event(entity_id=entity_id, device_class=device_class, area_id=area_id)


def rules(config: dict[str, object]) -> PatternFilter:
    built = PatternFilter.from_settings(json.dumps(config), "")
    assert built is not None
    return built


def test_exclude_mode_with_globs_domains_device_classes_and_areas() -> None:
    f = rules({"mode": "exclude", "patterns": [{"entity_id": "sensor.*_battery"}, {"domain": "update"},
                                               {"device_class": "signal_strength"}, {"area_id": "garage"}]})
    assert not f.allows(event("sensor.phone_battery"))
    assert not f.allows(event("update.core"))
    assert not f.allows(event("sensor.rssi", device_class="signal_strength"))  # from the live attributes
    assert not f.allows(event("light.door", area_id="garage"))  # from the registries
    assert f.allows(event("sensor.kitchen_temp", device_class="temperature", area_id="kitchen"))


def test_exceptions_work_with_any_key_in_both_modes() -> None:
    f = rules({"mode": "exclude", "patterns": [{"domain": "sensor"}],
               "exceptions": [{"device_class": "temperature"}, {"area_id": "lab"}]})
    assert f.allows(event("sensor.t", device_class="temperature"))
    assert f.allows(event("sensor.x", area_id="lab"))
    assert not f.allows(event("sensor.x"))
    g = rules({"mode": "include", "patterns": [{"domain": "light"}], "exceptions": [{"entity_id": "switch.keep"}]})
    assert g.allows(event("light.a")) and g.allows(event("switch.keep")) and not g.allows(event("switch.other"))


def test_a_pattern_with_several_keys_needs_all_of_them() -> None:
    f = rules({"patterns": [{"domain": "sensor", "device_class": "battery"}]})
    assert not f.allows(event("sensor.phone", device_class="battery"))
    assert f.allows(event("sensor.temp", device_class="temperature"))
    assert f.allows(event("binary_sensor.low", device_class="battery"))


def test_events_without_an_entity_always_pass() -> None:
    f = rules({"mode": "include", "patterns": [{"domain": "light"}]})
    assert f.allows(NormalisedEvent(event_type="call_service", time_ns=1))


@pytest.mark.parametrize(("text", "message"), [
    ('{"mode": "sometimes"}', "ENTITY_FILTER_CONFIG"),
    ('{"patterns": [{"entity": "x"}]}', "entity"),
    ('{"patterns": [{}]}', "at least one of"),
    ("{not json", "ENTITY_FILTER_CONFIG"),
])
def test_bad_config_is_an_error_naming_the_variable(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PatternFilter.from_settings(text, "")


def test_config_from_file(tmp_path: Path) -> None:
    path = tmp_path / "filter.json"
    path.write_text('{"patterns": [{"domain": "update"}]}')
    built = PatternFilter.from_settings("", str(path))
    assert built is not None and not built.allows(event("update.x"))
    with pytest.raises(ConfigError, match="ENTITY_FILTER_CONFIG_FILE"):
        PatternFilter.from_settings("", str(tmp_path / "missing.json"))


async def test_filtered_events_are_counted_not_published(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    f = rules({"mode": "exclude", "patterns": [{"device_class": "motion"}]})
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path, entity_filter=f) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        await sim.hub.emit(500, rate_per_s=5000)
        motion = sum(1 for s in sim.hub.sent if s.attributes.get("device_class") == "motion")
        assert motion > 0
        await wait_for(lambda: run.metric("homeiq_events_published_total") == 500 - motion, 10, "the rest")
        assert run.metric("homeiq_events_filtered_total") == motion
    published = await stream_events(redis_client)
    assert len(published) == 500 - motion
    assert all(enrichment_of(e.enrichment).device_class != "motion" for e in published)
