"""The `ha` schema with `precision`: states of one entity cut to the same time overwrite each other in InfluxDB,
as in Home Assistant's integration. A writer counts those it sees (real redis-server and influxd, the writer
service as it runs)."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from homeiq.local.services import InfluxServer, RedisServer
from homeiq.shared.config_reader import parse_config
from homeiq.shared.influx.haschema import cut_to_precision
from homeiq.writer.service import Writer
from homeiq.writer.settings import WriterSettings
from tests.events import BASE_NS, state_payload
from tests.helpers import wait_for
from tests.writer_harness import fill, group_state, metric, running_writer, writer_settings

OVERWRITTEN = "homeiq_writer_points_overwritten_total"
SECOND_NS = 1_000_000_000


def ha_writer(redis_server: RedisServer, influx: InfluxServer, database: str, precision: str) -> WriterSettings:
    config = parse_config(f"influxdb:\n  precision: {precision}\nhomeiq:\n  schema: ha\n", "test")
    settings = writer_settings(redis_server.url, influx.url, database)
    influx_settings = msgspec.structs.replace(settings.influx, schema="ha", config=config)
    return msgspec.structs.replace(settings, influx=influx_settings)


def state(n: int, entity_id: str, value: str, offset_ns: int) -> bytes:
    """A state of `entity_id` fired `offset_ns` after a whole second."""
    return state_payload(n, value, entity_id=entity_id, time_fired_ns=BASE_NS + offset_ns)


async def written(redis_client: aioredis.Redis, count: int) -> bool:
    return await group_state(redis_client) == {"read": count, "pending": 0}


async def write_all(redis_client: aioredis.Redis, redis_server: RedisServer, influx: InfluxServer, database: str,
                    payloads: list[bytes], precision: str) -> Writer:
    """Put `payloads` in the stream, run a writer of the `ha` schema until it wrote and acked them all."""
    await fill(redis_client, payloads)
    async with running_writer(ha_writer(redis_server, influx, database, precision)) as writer:
        await wait_for(lambda: written(redis_client, len(payloads)), 30, "every entry written and acked")
    return writer


async def test_states_of_one_entity_within_one_precision_unit_are_counted_as_overwritten(
    redis_client: aioredis.Redis, redis_server: RedisServer, influx: InfluxServer, influx_db: str
) -> None:
    # Three states of the kitchen within one second (two overwritten), one of the hall beside them (a series of its
    # own), and the kitchen again a second later (a time of its own).
    payloads = [state(0, "sensor.kitchen", "20", 100), state(1, "sensor.kitchen", "21", 400_000_000),
                state(2, "sensor.hall", "18", 500_000_000), state(3, "sensor.kitchen", "22", 900_000_000),
                state(4, "sensor.kitchen", "23", SECOND_NS + 1)]
    writer = await write_all(redis_client, redis_server, influx, influx_db, payloads, "s")
    points = kitchen_points(influx, influx_db)
    assert [time for time, _ in points] == [BASE_NS, BASE_NS + SECOND_NS]
    assert points[0][1] == 22.0  # the last of the three states of the first second is what InfluxDB holds
    assert metric(writer, OVERWRITTEN, reason="precision") == 2
    assert metric(writer, "homeiq_points_written_total") == 5  # what the writer sent, each acked


@pytest.mark.parametrize(("later_ns", "overwritten"), [(100, 0), (500_000_000, 1)],
                         ids=["the same state again (a re-delivery, the backfill's copy) replaces nothing",
                              "an equal state half a second later (force_update: two states in HA) replaces one"])
async def test_only_another_state_counts_as_an_overwrite(
    redis_client: aioredis.Redis, redis_server: RedisServer, influx: InfluxServer, influx_db: str, later_ns: int,
    overwritten: int
) -> None:
    payloads = [state(0, "sensor.kitchen", "20", 100), state(0, "sensor.kitchen", "20", later_ns)]
    writer = await write_all(redis_client, redis_server, influx, influx_db, payloads, "s")
    assert kitchen_points(influx, influx_db) == [(BASE_NS, 20.0)]
    assert metric(writer, OVERWRITTEN, reason="precision") == overwritten


async def test_a_state_overwriting_one_of_the_writers_previous_batch_is_counted(
    redis_client: aioredis.Redis, redis_server: RedisServer, influx: InfluxServer, influx_db: str
) -> None:
    async with running_writer(ha_writer(redis_server, influx, influx_db, "ms")) as writer:
        await fill(redis_client, [state(0, "sensor.kitchen", "20", 100)])
        await wait_for(lambda: written(redis_client, 1), 30, "the first state written and acked")
        await fill(redis_client, [state(1, "sensor.kitchen", "21", 200)])  # the same millisecond
        await wait_for(lambda: written(redis_client, 2), 30, "the second state written and acked")
    assert kitchen_points(influx, influx_db) == [(BASE_NS, 21.0)]
    assert metric(writer, OVERWRITTEN, reason="precision") == 1


async def test_overwrites_are_logged_once_with_how_many_and_an_example(
    redis_client: aioredis.Redis, redis_server: RedisServer, influx: InfluxServer, influx_db: str,
    caplog: pytest.LogCaptureFixture
) -> None:
    payloads = [state(n, "sensor.kitchen", str(n), n * 1000) for n in range(50)]
    caplog.set_level(logging.WARNING, logger="homeiq")
    async with running_writer(ha_writer(redis_server, influx, influx_db, "s")) as writer:
        for first in range(0, 50, 10):  # five batches, each overwriting the one before
            await fill(redis_client, payloads[first:first + 10])
            await wait_for(lambda n=first + 10: written(redis_client, n), 30, f"{first + 10} entries written")
    assert metric(writer, OVERWRITTEN, reason="precision") == 49
    logged = [r for r in caplog.records if r.getMessage() == "points_overwritten"]
    assert len(logged) == 1, [r.__dict__ for r in logged]  # sampled: at most one line every 10 s
    line: Any = logged[0]
    assert line.reason == "precision" and line.count >= 1 and "entity_id=kitchen" in line.example


@pytest.mark.parametrize(("precision", "unit_ns"), [("s", SECOND_NS), ("ms", 1_000_000), ("us", 1000),
                                                     (None, 1), ("ns", 1)])
def test_the_cut_is_to_the_whole_unit_below(precision: str | None, unit_ns: int) -> None:
    time_ns = BASE_NS + 1_234_567_891
    cut = cut_to_precision(time_ns, precision)
    assert cut % unit_ns == 0 and 0 <= time_ns - cut < unit_ns


def kitchen_points(influx: InfluxServer, database: str) -> list[tuple[int, float]]:
    answer = influx.query('SELECT "value" FROM "sensor.kitchen"', database)
    series = answer["results"][0].get("series", [])
    return [(time, value) for time, value in series[0]["values"]] if series else []

