"""What the replayer daemon holds between passes, against real redis-server and influxd: a pass's entities are
remembered only while it runs. A daemon that kept the encoder's parts of every entity it ever reclaimed grew its
live heap at each InfluxDB outage of a soak (3,000-6,500 blocks at each of four restarts, 7 blocks an entity with the
homeiq schema, 10 with HA's) until it had met every entity of the home."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from homeiq.local.services import InfluxServer, RedisServer
from homeiq.local.waiting import wait_for
from homeiq.replayer.service import Replayer
from homeiq.replayer.settings import ReclaimSettings, ReplayerSettings
from homeiq.shared.influx.settings import InfluxSettings
from homeiq.shared.stream import DEFAULT_NAMES, ensure_group, entry_fields
from tests.events import state_payload

STREAM, GROUP = DEFAULT_NAMES.stream, DEFAULT_NAMES.group
ENTITIES = 300


@pytest.mark.parametrize("schema", ["homeiq", "ha"])
async def test_the_replayer_forgets_the_entities_of_a_pass_once_it_is_over(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str, schema: str
) -> None:
    await ensure_group(redis_client, DEFAULT_NAMES)
    for n in range(ENTITIES):
        await redis_client.xadd(STREAM, entry_fields(state_payload(n, entity_id=f"sensor.e{n}")))
    await redis_client.xreadgroup(GROUP, "dead-writer", {STREAM: ">"}, count=ENTITIES)  # died holding them
    settings = ReplayerSettings(
        redis_url=redis_server.url, names=DEFAULT_NAMES, metrics_host="127.0.0.1", metrics_port=0, interval_s=0.2,
        influx=InfluxSettings(url=influx.url, api="v1", bucket=influx_db, timeout_s=5, schema=schema),
        reclaim=ReclaimSettings(min_idle_ms=1)).validate()
    replayer = Replayer(settings, CollectorRegistry())
    stop = asyncio.Event()
    task = asyncio.create_task(replayer.run(stop))
    try:
        async def written() -> bool:
            return int((await redis_client.xpending(STREAM, GROUP))["pending"]) == 0

        await wait_for(lambda: task.done() or written(), 20, "every entry reclaimed and written")
        assert not task.done()
        await asyncio.sleep(0.5)  # more passes, finding nothing
        assert replayer.batches.encoder.remembered() == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    # Each state a point of its own (the homeiq schema: one measurement; HA's: one an entity, its state a number)
    answer = influx.query("SELECT COUNT(value) FROM /.*/", influx_db)
    assert sum(series["values"][0][1] for series in answer["results"][0]["series"]) == ENTITIES
