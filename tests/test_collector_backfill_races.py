"""The backfill beside a live connection that is behind, ends, or outlives a removed entity: a review found each of
these losing or duplicating states (ha-sim and a private redis-server)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from homeiq.local.services import RedisServer
from tests.collector_harness import drop_for, every_state_once, running_collector, simulator, subscribed_with
from tests.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@contextmanager
def redis_hung(redis_server: RedisServer) -> Iterator[None]:
    """Redis neither answers nor fails (SIGSTOP): nothing is spooled, the collector's buffer fills."""
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)


async def test_a_session_ending_while_the_backfill_waits_for_room_leaves_that_state_to_the_retry(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with simulator(commit_interval_s=0) as sim, running_collector(
            sim, redis_server.url, tmp_path, buffer_events=100, publish_batch=50) as run:
        await subscribed_with(sim, run, 50)
        await drop_for(sim, 500)
        with redis_hung(redis_server):
            await wait_for(lambda: len(run.collector.publisher._queue) >= 100, 15, "the backfill filling the buffer")
            await asyncio.sleep(0.5)
            sim.drop_connections()  # the session, and the backfill waiting in put(), end
            await asyncio.sleep(1)
        await every_state_once(redis_client, sim.hub, 30)


async def test_states_the_live_reader_has_not_read_yet_are_not_backfilled_too(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """The history comes on the backfill's own connection; states HA sent on the live one before it must be read
    there first (the reader waits for room while Redis hangs)."""
    async with simulator(commit_interval_s=5) as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await subscribed_with(sim, run, 50)
        await drop_for(sim, 300)
        stop = asyncio.Event()
        busy = asyncio.create_task(sim.hub.emit(None, rate_per_s=700, stop=stop))
        await wait_for(lambda: sim.hub.subscribes == 2 and sim.hub.subscribed, 10, "the reconnect")
        await wait_for(lambda: any(not c.subscriptions for c in sim.hub.connections), 10, "the backfill's connection")
        with redis_hung(redis_server):
            await asyncio.sleep(6)
        await wait_for(lambda: not run.metric("homeiq_backfill_gap_open"), 30, "the gap closed")
        stop.set()
        await busy
        await every_state_once(redis_client, sim.hub, 30)


async def test_an_entity_known_only_from_the_registry_and_removed_while_no_collector_ran_is_backfilled(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with simulator(commit_interval_s=0) as sim:
        removed, others = sim.hub.population.entities[0], sim.hub.population.entities[1:]
        async with running_collector(sim, redis_server.url, tmp_path) as first:
            await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
            for n in range(50):  # the entity to be removed does not change while this collector runs
                sim.hub.fire_state_change(others[n % len(others)])
            await wait_for(lambda: first.metric("homeiq_events_published_total") == 50, 10, "the first 50")
        for _ in range(10):
            sim.hub.fire_state_change(removed)
        sim.hub.remove_entity(removed)
        async with running_collector(sim, redis_server.url, tmp_path):
            await wait_for(lambda: sim.hub.subscribed, 10, "the second collector")
            await sim.hub.emit(40, rate_per_s=20)
            await every_state_once(redis_client, sim.hub, 30)


async def test_an_entity_removed_live_while_its_gap_waits_for_the_backfill_has_its_gap_backfilled(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """The soak found it (benchmarks/soak.py, state changes per entity): HA came back, the entity was removed before
    the recorder had committed the gap, and its removal arriving live made the collector forget it, so the backfill
    asked the recorder for every entity but that one (once the registry no longer had it either, as with a backfill
    cut short by another drop): the states it changed to while no collector listened were never published, and
    nothing counted them."""
    async with simulator(commit_interval_s=3) as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await subscribed_with(sim, run, 50)
        removed = sim.hub.population.entities[0]
        await drop_for(sim, 100, removed, 10)
        await wait_for(lambda: sim.hub.subscribes == 2 and sim.hub.subscribed, 10, "the reconnect")
        assert run.metric("homeiq_backfill_gap_open")  # the recorder has not committed the gap yet
        sim.hub.remove_entity(removed)  # as HA removes one: the state machine, then the registry
        sim.hub.fire_event("entity_registry_updated", {"action": "remove", "entity_id": removed.entity_id})
        collector = run.collector
        await wait_for(lambda: removed.entity_id not in collector.ha_registry.entities, 5, "the registry re-read")
        sim.drop_connections()  # the backfill under way ends with the session; the next one starts after the removal
        await wait_for(lambda: sim.hub.subscribes == 3 and sim.hub.subscribed, 10, "the second reconnect")
        await sim.hub.emit(50, rate_per_s=200)
        await wait_for(lambda: not run.metric("homeiq_backfill_gap_open"), 30, "the gap closed")
        await every_state_once(redis_client, sim.hub, 30)


async def test_an_idle_gap_holding_only_a_removed_entity_waits_for_the_recorder(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """Nothing present changed, so no current state can show the recorder's progress: the removed entity's states
    are not there before its commit, and the backfill must not take their absence for completeness."""
    async with simulator(commit_interval_s=30) as sim:
        removed = sim.hub.population.entities[0]
        async with running_collector(sim, redis_server.url, tmp_path) as first:
            await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
            sim.hub.fire_state_change(removed)
            await sim.hub.emit(20, rate_per_s=500)
            await wait_for(lambda: first.metric("homeiq_events_published_total") == 21, 10, "the first 21")
            await asyncio.sleep(2.5)  # the watermark saved
        for _ in range(5):
            sim.hub.fire_state_change(removed)
        sim.hub.remove_entity(removed)
        async with running_collector(sim, redis_server.url, tmp_path, recorder_wait_s=40) as second:
            await wait_for(lambda: not second.metric("homeiq_backfill_gap_open"), 60, "the gap closed")
        await every_state_once(redis_client, sim.hub, 5)


async def test_entities_the_recorder_excludes_do_not_hold_every_probe(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with simulator(entity_count=150, commit_interval_s=0) as sim, running_collector(
            sim, redis_server.url, tmp_path, recorder_wait_s=20) as run:
        excluded = {e.entity_id for e in sim.hub.population.entities[:70]}
        recorded = sim.hub.population.entities[70:]
        record = sim.hub.recorder.record
        sim.hub.recorder.record = lambda entity_id, row: None if entity_id in excluded else record(entity_id, row)
        await wait_for(lambda: sim.hub.subscribed and not run.metric("homeiq_backfill_gap_open"), 10, "a subscription")
        sim.hub.faults.refuse_connections = True
        sim.drop_connections()
        for n in range(100):
            sim.hub.fire_state_change(recorded[n % len(recorded)])
        sim.hub.faults.refuse_connections = False
        await wait_for(lambda: sim.hub.subscribes == 2 and sim.hub.subscribed, 10, "the reconnect")
        for entity in sim.hub.population.entities[:70]:  # 70 excluded entities change first
            sim.hub.fire_state_change(entity)
        for n in range(60):
            sim.hub.fire_state_change(recorded[n % len(recorded)])
            await asyncio.sleep(0.05)
        await wait_for(lambda: not run.metric("homeiq_backfill_gap_open"), 30, "the gap closed")
        assert run.metric("homeiq_backfill_unconfirmed_total") == 0


async def test_a_token_refused_to_the_backfill_is_not_tried_again_at_once(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """HA's IP ban counts failed logins: the backfill's own connection waits as long as the live one would."""
    async with simulator(commit_interval_s=0) as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await subscribed_with(sim, run, 50)
        await drop_for(sim, 50)
        await wait_for(lambda: sim.hub.subscribes == 2, 10, "the reconnect")
        token, sim.hub.token = sim.hub.token, "revoked"
        try:
            await wait_for(lambda: run.metric("homeiq_backfill_failures_total") == 1, 10, "a refused backfill login")
            connects = sim.hub.connects
            await asyncio.sleep(5)
            assert sim.hub.connects == connects  # no second attempt within HA_AUTH_RETRY_S
            assert run.metric("homeiq_ha_auth_rejected") == 1
        finally:
            sim.hub.token = token
