"""Point identity: distinct events never share a point, a re-delivered event overwrites its own."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis

from homeiq.ha_sim.messages import iso, now_ts, ulid
from homeiq.local.services import InfluxServer, RedisServer
from homeiq.shared.stream import DEFAULT_NAMES
from tests.collector_harness import running_collector, simulator
from tests.helpers import wait_for
from tests.writer_harness import running_writer, writer_settings


def service_call(time_fired: str, context_id: str, service: str = "turn_on") -> dict[str, object]:
    return {"event_type": "call_service", "data": {"domain": "light", "service": service},
            "origin": "LOCAL", "time_fired": time_fired, "context": {"id": context_id, "parent_id": None,
                                                                      "user_id": None}}


async def test_distinct_events_in_one_microsecond_are_distinct_points_and_a_redelivery_overwrites(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    fired = iso(now_ts())
    async with simulator() as sim, running_writer(writer_settings(redis_server.url, influx.url, influx_db)), \
            running_collector(sim, redis_server.url, tmp_path) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        # 200 service calls of one type in one microsecond: their own context ids, some with the same data.
        for n in range(200):
            sim.hub.broadcast("call_service", service_call(fired, ulid(now_ts()) + str(n), f"s{n % 3}"))
        await wait_for(lambda: run.metric("homeiq_events_published_total") == 200, 10, "200 events published")
        await wait_for(lambda: influx.count(influx_db) >= 200, 10, "200 points")
        entries = await redis_client.xrange(DEFAULT_NAMES.stream)
        for _, fields in entries[:50]:  # delivered again, as after a writer crash
            await redis_client.xadd(DEFAULT_NAMES.stream, fields)
        await wait_for(lambda: run.metric("homeiq_events_published_total") == 200, 1, "nothing more published")

        async def all_acked() -> bool:  # every entry, the copies too (packed: fewer than 50 copied)
            group = (await redis_client.xinfo_groups(DEFAULT_NAMES.stream))[0]
            return int(group["entries-read"]) == len(entries) + len(entries[:50]) and int(group["pending"]) == 0

        await wait_for(all_acked, 10, "the re-delivered entries written")
    points = influx.points(influx_db)
    assert len(points) == 200
    assert len({p["context_id"] for p in points}) == 200
    assert {p["time"] // 1000 for p in points} == {points[0]["time"] // 1000}  # HA's microsecond is kept
