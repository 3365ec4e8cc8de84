"""Both schemas from one stream: ha-sim → collector → one stream → two writer groups → two databases.

This is the migration path of the README: the `homeiq` writers keep their group and database; a second group
writes the `ha` schema from a pasted `influxdb:` block. The `ha` side must hold one point for every state the
`homeiq` side holds, except those the integration never writes (unknown, unavailable), at the same time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from homeiq.ha_sim.hub import Hub
from homeiq.ha_sim.runner import SimServer
from homeiq.local.services import InfluxServer, RedisServer
from tests.helpers import Service, wait_for

TOKEN = "test-token-side-by-side-42"
SKIPPED_STATES = ("unknown", "unavailable", "")


def rows(answer: dict[str, Any], statement: int = 0) -> list[dict[str, Any]]:
    result = answer["results"][statement]
    assert "error" not in result, result
    return [{"_measurement": series["name"], **series.get("tags", {}), **dict(zip(series["columns"], v, strict=True))}
            for series in result.get("series", []) for v in series["values"]]


async def test_one_stream_two_groups_both_schemas(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, log_dir: Path, tmp_path: Path
) -> None:
    homeiq_db, ha_db = "side_homeiq", "side_ha"
    influx.create_database(homeiq_db)
    influx.create_database(ha_db)
    config = tmp_path / "ha.yaml"
    host, port = influx.url.removeprefix("http://").split(":")
    config.write_text(f"influxdb:\n  host: {host}\n  port: {port}\n  database: {ha_db}\n"
                      "  max_retries: 3\nhomeiq:\n  schema: ha\n")
    hub = Hub.create(entity_count=60, token=TOKEN)
    sim = SimServer(hub)
    base = {"REDIS_URL": redis_server.url, "HA_TOKEN": TOKEN, "HA_URL": await sim.start()}
    writer_homeiq = Service("writer", {**base, "INFLUXDB_URL": influx.url, "INFLUXDB_API": "v1",
                                       "INFLUXDB_BUCKET": homeiq_db, "WRITER_CONSUMER": "w-homeiq"}, log_dir,
                            "writer-homeiq")
    writer_ha = Service("writer", {**base, "HOMEIQ_CONFIG": str(config), "STREAM_GROUP": "writers_ha",
                                   "WRITER_CONSUMER": "w-ha"}, log_dir, "writer-ha")
    collector = Service("collector", base, log_dir)
    try:
        await wait_for(lambda: hub.subscribed, 30, "the collector to subscribe")
        await hub.emit(1500, rate_per_s=1000)
        sent = list(hub.sent)
        wanted = [s for s in sent if s.state not in SKIPPED_STATES]
        await wait_for(lambda: influx.count(homeiq_db) >= len(sent), 60, "the homeiq side")

        def ha_points() -> list[dict[str, Any]]:
            return rows(influx.query('SELECT * FROM /.*/', ha_db))

        await wait_for(lambda: len(ha_points()) >= len(wanted), 60, "the ha side")
        # The comparison: the same states, one query per database; keyed by entity and time.
        homeiq = rows(influx.query("SELECT entity_id, state_value, value FROM home_assistant_events "
                                   "WHERE event_type = 'state_changed'", homeiq_db))
        ha = ha_points()
        homeiq_by_key = {(p["entity_id"], p["time"]): p for p in homeiq if p["state_value"] not in SKIPPED_STATES}
        ha_by_key = {(f"{p['domain']}.{p['entity_id']}", p["time"]): p for p in ha}
        assert len(ha_by_key) == len(ha) == len(wanted)  # one point per state, no two in one series and time
        assert ha_by_key.keys() == homeiq_by_key.keys()
        for key, point in ha_by_key.items():
            mine = homeiq_by_key[key]
            if mine["value"] is not None:  # a finite number: the same float on both sides
                assert point["value"] == mine["value"] and point.get("state") is None, key
            else:  # a string: HA's `state`, and on/off, open/closed... as 1/0 in `value`
                assert point["state"] == mine["state_value"], key
        skipped = sum(writer_ha.scrape("homeiq_writer_skipped_total", reason=r) for r in
                      ("state_unknown", "state_unavailable", "state_empty"))
        assert skipped == len(sent) - len(wanted)
        # No field ever has two types: SHOW FIELD KEYS lists each (measurement, field) once.
        keys = rows(influx.query("SHOW FIELD KEYS", ha_db))
        assert len({(k["_measurement"], k["fieldKey"]) for k in keys}) == len(keys)
    finally:
        for service in (collector, writer_ha, writer_homeiq):
            assert service.terminate() == 0, service.logs()
        await sim.stop()
