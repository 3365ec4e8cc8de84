"""Side by side with Home Assistant's own InfluxDB integration: HA writes database A with its `influxdb:` block, our
`ha`-schema writers write database B from the same events with the same block pasted into HOMEIQ_CONFIG. A and B
must hold the same points (measurements, tag sets, field keys, types and values, times); and where HA's integration
loses points (InfluxDB away longer than its retries), we lose none."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from homeiq.local.waiting import wait_for
from homeiq.shared.stream import DEFAULT_NAMES
from tests.realha.home import HomeAssistant, influxdb_block
from tests.realha.install import Installed
from tests.realha.pipeline import ROWS, RealPipeline, RealRow, steady_changes

Point = tuple[str, frozenset[tuple[str, str]], int, frozenset[tuple[str, Any]]]

RICH = """\
  default_measurement: state
  measurement_attr: domain__device_class
  tags:
    source: hass
  tags_attributes:
    - friendly_name
  ignore_attributes:
    - icon
  include:
    domains: [input_number, input_boolean, sensor]
  exclude:
    entity_globs: ["sensor.level_1*"]
  component_config:
    input_number.level_2:
      override_measurement: level_two
  component_config_domain:
    input_boolean:
      ignore_attributes: [editable]
  component_config_glob:
    sensor.*_doubled:
      override_measurement: power
"""
# The connection and conversion keys a v1 user pastes, beside RICH's: every key of the integration but those of
# TLS (`ssl_ca_cert`: a certificate influxd here does not serve) and of api_version 2 (`bucket`, `organization`,
# `token`: influxd 1.x has no /api/v2). The password comes through `!secret`, the filter through `!include`.
EVERY_KEY = """\
  api_version: 1
  ssl: false
  verify_ssl: false
  path: ""
  username: homeiq
  password: !secret influx_password
  precision: ms
  max_retries: 3
  override_measurement: homeassistant
  tags: {source: hass, site: "home 1"}
  tags_attributes: [friendly_name]
  ignore_attributes: [icon, editable]
  include: !include influx_include.yaml
  exclude: {entity_globs: ["sensor.level_1*"], entities: [input_boolean.switch_2]}
  component_config_glob:
    sensor.*_doubled: {override_measurement: power}
"""
FILES = {"secrets.yaml": "influx_password: not-checked-by-influxd-without-auth\n",
         "influx_include.yaml": "domains: [input_number, input_boolean, sensor]\n"}


async def group_done(pipeline: RealPipeline, group: str) -> bool:
    """Whether a consumer group has been given every entry and acked it."""
    assert pipeline.client is not None
    groups: Any = await pipeline.client.xinfo_groups(DEFAULT_NAMES.stream)
    info = next(g for g in groups if g["name"] == group.encode())
    return not info["pending"] and not info["lag"]


def snapshot(pipeline: RealPipeline, database: str, since_ns: int) -> set[Point]:
    """Every point of a database since `since_ns`: measurement, tags, time, fields with their values."""
    answer = pipeline.influx.query("SHOW MEASUREMENTS", database)
    series = answer["results"][0].get("series") or [{"values": []}]
    points: set[Point] = set()
    for (measurement,) in series[0]["values"]:
        tag_keys = {key for (key,) in (pipeline.influx.query(f'SHOW TAG KEYS FROM "{measurement}"', database)
                                       ["results"][0].get("series") or [{"values": []}])[0]["values"]}
        result = pipeline.influx.query(f'SELECT * FROM "{measurement}" WHERE time >= {since_ns}', database)
        for rows in result["results"][0].get("series", []):
            for row in rows["values"]:
                values = dict(zip(rows["columns"], row, strict=True))
                time_ns = values.pop("time")
                tags = frozenset((k, v) for k, v in values.items() if k in tag_keys and v is not None)
                fields = frozenset((k, v) for k, v in values.items() if k not in tag_keys and v is not None)
                points.add((measurement, tags, time_ns, fields))
    return points


async def side_by_side(ha_installed: Installed, tmp_path: Path, extra: str, scenario: str,
                       influxdb_outage_s: float = 0) -> tuple[set[Point], set[Point]]:
    """Run HA's integration (A) and our `ha` writers (B) from one HA; what each database holds since the start."""
    home = HomeAssistant(ha_installed, tmp_path / "ha")
    pipeline = RealPipeline(tmp_path / "pipeline", home, databases=("ha_own", "ha_homeiq"))
    home.write_configuration(influxdb_block(pipeline.influx.port, "ha_own", extra))
    for name, text in FILES.items():  # beside HA's configuration.yaml and beside ours
        (home.config_dir / name).write_text(text)
        (tmp_path / name).write_text(text)
    config = tmp_path / "homeiq.yaml"
    config.write_text(influxdb_block(pipeline.influx.port, "ha_homeiq", extra) + "homeiq:\n  schema: ha\n")
    async with pipeline:
        assert pipeline.client is not None  # the second group exists before the changes: trimming spares it then
        await pipeline.client.xgroup_create(DEFAULT_NAMES.stream, "writers_ha", id="$", mkstream=True)
        # The pipeline's own INFLUXDB_* variables would override the file's database: name the same one.
        pipeline.start("writer", "writer-ha", {"STREAM_GROUP": "writers_ha", "HOMEIQ_CONFIG": str(config),
                                               "WRITER_CONSUMER": "writer-ha", "INFLUXDB_BUCKET": "ha_homeiq"})
        async with steady_changes(home, 20):
            await asyncio.sleep(6)
            if influxdb_outage_s:
                pipeline.influx.stop()
                await asyncio.sleep(influxdb_outage_s)
                pipeline.influx.start()
            await asyncio.sleep(6)
        await pipeline.drained()
        await wait_for(lambda: group_done(pipeline, "writers_ha"), 60, "the ha-schema writers to catch up")
        await asyncio.sleep(12)  # HA's integration sends what it queued
        own, ours = (snapshot(pipeline, database, pipeline.since_ns) for database in ("ha_own", "ha_homeiq"))
    ROWS.append(RealRow(scenario, ha_installed.release.version, len(own), len(ours), len(own - ours),
                        len(ours - own), 0, "A: HA's integration, B: our writers; missing/extra are B against A"))
    return own, ours


@pytest.mark.parametrize("block", ["", RICH, EVERY_KEY], ids=["defaults", "every-option", "every-key"])
async def test_our_ha_schema_writes_what_has_own_integration_writes(
    block: str, ha_installed: Installed, tmp_path: Path
) -> None:
    name = {"": "defaults", RICH: "measurement_attr, overrides, tags, ignore, include/exclude, component_config*",
            EVERY_KEY: "every v1 key: auth by !secret, precision ms, override_measurement, !include..."}[block]
    own, ours = await side_by_side(ha_installed, tmp_path, block, f"side by side with HA's influxdb: {name}")
    assert own, "HA's own integration wrote nothing"
    assert ours == own, (sorted(own - ours)[:3], sorted(ours - own)[:3])


async def test_an_influxdb_outage_loses_points_of_has_integration_and_none_of_ours(
    ha_installed: Installed, tmp_path: Path
) -> None:
    own, ours = await side_by_side(ha_installed, tmp_path, "", "InfluxDB stopped 40 s: HA's integration (its "
                                   "default max_retries 0) against ours", influxdb_outage_s=40)
    lost = ours - own
    ROWS[-1].explained = f"HA's integration lost {len(lost)} points; ours none (every point of A is in B)"
    assert lost, "HA's own integration lost nothing: the outage did not test anything"
    assert own <= ours
