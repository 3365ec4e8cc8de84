"""The backfill sees every state HA's recorder will hold, however late the recorder commits and however much the
gap holds: nothing missed, nothing published twice."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from homeiq.ha_sim.hub import Hub
from homeiq.ha_sim.runner import SimServer
from homeiq.local.services import RedisServer
from homeiq.shared.events import NO_ATTRIBUTES
from tests.collector_harness import Running, every_state_once, running_collector, simulator, stream_events
from tests.helpers import wait_for

# Recorders committing every 30 s: up to a minute a test.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]





@pytest.mark.parametrize("commit_interval_s", [0, 5, 30])
async def test_a_restart_backfills_the_states_the_recorder_commits_after_it_subscribed(
    commit_interval_s: float, redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with simulator(commit_interval_s=commit_interval_s) as sim:
        async with running_collector(sim, redis_server.url, tmp_path) as first:
            await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
            await sim.hub.emit(200, rate_per_s=500)
            await wait_for(lambda: first.metric("homeiq_events_published_total") == 200, 10, "the first 200")
        await sim.hub.emit(300, rate_per_s=300)  # no collector: the recorder keeps them, in its session first
        async with running_collector(sim, redis_server.url, tmp_path) as second:
            await wait_for(lambda: sim.hub.subscribed, 10, "the second collector")
            await sim.hub.emit(int(commit_interval_s + 5) * 20, rate_per_s=20)  # a home goes on changing
            await every_state_once(redis_client, sim.hub, commit_interval_s + 15)
            assert second.metric("homeiq_backfill_unconfirmed_total") == 0


async def test_a_reconnect_backfills_what_the_recorder_commits_only_later(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with simulator(commit_interval_s=5) as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        await sim.hub.emit(100, rate_per_s=500)
        sim.hub.faults.refuse_connections = True
        sim.drop_connections()
        await sim.hub.emit(200, rate_per_s=200)  # recorded (not yet committed), received by nobody
        sim.hub.faults.refuse_connections = False
        await wait_for(lambda: sim.hub.subscribed, 10, "the reconnect")
        await sim.hub.emit(200, rate_per_s=20)
        await every_state_once(redis_client, sim.hub, 20)
        assert run.metric("homeiq_backfill_unconfirmed_total") == 0


async def test_an_idle_home_is_backfilled_once_the_recorder_commits(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """No state changes after the restart, so no live one can show the recorder's progress: each entity's current
    state in the recorder shows it instead."""
    async with simulator(commit_interval_s=5) as sim:
        async with running_collector(sim, redis_server.url, tmp_path) as first:
            await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
            await sim.hub.emit(50, rate_per_s=500)
            await wait_for(lambda: first.metric("homeiq_events_published_total") == 50, 10, "the first 50")
        await sim.hub.emit(100, rate_per_s=200)
        async with running_collector(sim, redis_server.url, tmp_path) as second:
            await every_state_once(redis_client, sim.hub, 20)
            assert second.metric("homeiq_backfill_unconfirmed_total") == 0


def big_states(hub: Hub, count: int, size: int) -> None:
    """`count` state changes of `size` bytes each, over all entities, at once (HA queues them as one frame)."""
    entities = hub.population.entities
    for n in range(count):
        hub.set_state(entities[n % len(entities)], str(n), {"blob": "x" * size})


@contextlib.asynccontextmanager
async def at_the_message_limit(redis_url: str, tmp_path: Path) -> AsyncIterator[tuple[SimServer, Running]]:
    """A collector taking messages of up to 16 MiB (the least it allows), subscribed, 50 states published."""
    async with simulator(commit_interval_s=0) as sim, running_collector(
            sim, redis_url, tmp_path, max_message_mb=16) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        await sim.hub.emit(50, rate_per_s=500)
        yield sim, run


async def test_a_gap_larger_than_one_message_is_backfilled_in_pieces_and_the_live_connection_stays(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with at_the_message_limit(redis_server.url, tmp_path) as (sim, run):
        sim.hub.faults.refuse_connections = True
        sim.drop_connections()
        big_states(sim.hub, 900, 20_000)  # 18 MB of history for 40 entities: over the 16 MiB limit at once
        await sim.hub.emit(30, rate_per_s=300)
        sim.hub.faults.refuse_connections = False
        await wait_for(lambda: sim.hub.subscribed, 10, "the reconnect")
        await sim.hub.emit(60, rate_per_s=20)
        await every_state_once(redis_client, sim.hub, 60)
        assert sim.hub.subscribes == 2  # one drop, one resubscription: the backfill never closed the live connection
        assert run.metric("homeiq_events_dropped_total", reason="backfill_too_large") == 0


async def test_a_frame_over_the_message_limit_is_counted_and_its_states_are_backfilled(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with at_the_message_limit(redis_server.url, tmp_path) as (sim, run):
        big_states(sim.hub, 900, 20_000)  # queued at once: HA coalesces them into one 18 MB frame
        await wait_for(lambda: sim.hub.subscribes == 2 and sim.hub.subscribed, 20, "the reconnect after the close")
        await sim.hub.emit(60, rate_per_s=20)
        await every_state_once(redis_client, sim.hub, 60)
        assert run.metric("homeiq_ha_disconnects_total", reason="message_too_big") == 1


async def test_an_entity_removed_while_no_collector_ran_has_its_last_states_backfilled(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with simulator(commit_interval_s=0) as sim:
        removed = sim.hub.population.entities[0]
        async with running_collector(sim, redis_server.url, tmp_path) as first:
            await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
            sim.hub.fire_state_change(removed)
            await sim.hub.emit(50, rate_per_s=500)
            await wait_for(lambda: first.metric("homeiq_events_published_total") == 51, 10, "the first 51")
        for _ in range(10):
            sim.hub.fire_state_change(removed)  # recorded, received by nobody
        sim.hub.remove_entity(removed)  # gone from get_states and the registry; the recorder keeps its rows
        await sim.hub.emit(30, rate_per_s=300)
        async with running_collector(sim, redis_server.url, tmp_path):
            await wait_for(lambda: sim.hub.subscribed, 10, "the second collector")
            await sim.hub.emit(60, rate_per_s=20)
            await every_state_once(redis_client, sim.hub, 30)


async def test_states_split_by_time_keep_their_previous_state(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """One entity's gap over the message limit is read in pieces of time; each backfilled state still says which
    state it replaced, across the cut too."""
    async with at_the_message_limit(redis_server.url, tmp_path) as (sim, _run):
        entity = sim.hub.population.entities[0]
        sim.hub.faults.refuse_connections = True
        sim.drop_connections()
        for n in range(900):  # 18 MB of one entity's history
            sim.hub.set_state(entity, str(n), {"blob": "x" * 20_000})
        sim.hub.faults.refuse_connections = False
        await wait_for(lambda: sim.hub.subscribed, 10, "the reconnect")
        await sim.hub.emit(40, rate_per_s=20)
        await every_state_once(redis_client, sim.hub, 60)
        backfilled = sorted((e for e in await stream_events(redis_client)
                             if e.source == "backfill" and e.entity_id == entity.entity_id), key=lambda e: e.time_ns)
    assert len(backfilled) == 900
    assert all(event.old_state is not None and event.old_state.last_updated_ns == before.time_ns
               for before, event in itertools.pairwise(backfilled))
    # Each entry carries its 20 KB of attributes once: not again in its old state, which no writer reads.
    assert all(event.old_state is None or event.old_state.attributes == NO_ATTRIBUTES for event in backfilled)
