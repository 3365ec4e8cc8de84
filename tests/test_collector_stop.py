"""A graceful stop keeps every event Home Assistant sent before it: events with no recorder history (service
calls, automation triggers) cannot be backfilled, so one still in the socket at the stop would be gone."""

from __future__ import annotations

import time
from pathlib import Path

import redis.asyncio as aioredis

from homeiq_hasim.messages import iso, ulid
from homeiq_local.services import RedisServer
from tests.collector_harness import running_collector, simulator, stream_events
from tests.helpers import wait_for

BURST = 3000


async def test_a_stop_keeps_every_event_ha_sent_before_it(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        sent = []
        for n in range(BURST):  # queued on HA's side of the socket when the stop comes
            now = time.time()
            context_id = f"{ulid(now)}{n:06d}"
            sim.hub.broadcast("call_service", {
                "event_type": "call_service", "data": {"domain": "light", "service": "toggle", "n": n},
                "origin": "LOCAL", "time_fired": iso(now),
                "context": {"id": context_id, "parent_id": None, "user_id": None}})
            sent.append(context_id)
        await run.finish()
        assert not sim.hub.subscribed  # the collector said it was done with the subscription
    stored = {event.context.id for event in await stream_events(redis_client) if event.event_type == "call_service"}
    missing = [context_id for context_id in sent if context_id not in stored]
    assert not missing, f"{len(missing)} of {BURST} events HA sent before the stop are not in the stream"
    assert run.metric("homeiq_events_published_total") == BURST
