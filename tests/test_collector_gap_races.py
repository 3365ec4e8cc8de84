"""Decisions the collector takes from live traffic, or from one moment of a backfill, while a gap is still open,
and that an event arriving meanwhile (an entity added, a rename) invalidates (ha-sim and a private redis-server)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from homeiq.ha_sim import commands
from homeiq.ha_sim.commands import Connection
from homeiq.ha_sim.hub import Hub
from homeiq.ha_sim.population import Entity
from homeiq.ha_sim.runner import SimServer
from homeiq.local.services import RedisServer
from tests.collector_harness import (
    all_states_published,
    drop_for,
    every_state_once,
    running_collector,
    sent_keys,
    simulator,
    stream_state_keys,
    subscribed_with,
)
from tests.helpers import DelayProxy, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def test_an_entity_added_while_a_backfill_waits_for_the_recorder_is_not_forgotten(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """The backfill takes the entities HA has (`get_states`, the registry) once, before it waits for the recorder,
    and once done forgets every known entity not among them as removed: one added meanwhile (its first state arrived
    live, so it is known) is forgotten although HA has it. Removed later while no collector listens, its last
    states are then asked of nobody."""
    async with simulator(commit_interval_s=3) as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await subscribed_with(sim, run, 50)
        await drop_for(sim, 50)
        await wait_for(lambda: sim.hub.subscribes == 2 and sim.hub.subscribed, 10, "the reconnect")
        assert run.metric("homeiq_backfill_gap_open")  # the recorder has not committed the gap yet
        added = sim.hub.add_entity()  # as an integration HA is still loading adds one
        await wait_for(lambda: not run.metric("homeiq_backfill_gap_open"), 30, "the gap closed")
        assert added.entity_id in run.collector.known.ids, "an entity HA has was forgotten as removed"


async def test_an_entity_without_a_registry_entry_re_created_while_a_backfill_waits_is_not_forgotten(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """The backfill takes the entities removed (known, and neither in `get_states` nor in the registry) once,
    before it waits for the recorder, and forgets them once done. One without a registry entry (a YAML template
    sensor, reloaded) that comes back meanwhile is forgotten although HA has it again: removed in a later gap
    before it changes live, its last states are asked of nobody."""
    async with simulator(commit_interval_s=3) as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        entity = sim.hub.population.entities[0]
        entity.registry_id = ""
        await subscribed_with(sim, run, 50)
        sim.hub.faults.refuse_connections = True
        sim.drop_connections()
        sim.hub.remove_entity(entity)
        await sim.hub.emit(20, rate_per_s=1000)
        sim.hub.faults.refuse_connections = False
        await wait_for(lambda: sim.hub.subscribes == 2 and sim.hub.subscribed, 10, "the reconnect")
        assert run.metric("homeiq_backfill_gap_open")  # the recorder has not committed the gap yet
        sim.hub.removed.discard(entity.entity_id)  # the template sensor reloaded: the same id again
        sim.hub.fire_state_change(entity)
        await wait_for(lambda: not run.metric("homeiq_backfill_gap_open"), 30, "the gap closed")
        assert entity.entity_id in run.collector.known.ids, "an entity HA has was forgotten as removed"


async def test_an_entity_added_while_a_backfill_waits_and_removed_in_a_later_gap_has_that_gap_backfilled(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """The loss the forgetting above leads to."""
    async with simulator(commit_interval_s=3) as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await subscribed_with(sim, run, 50)
        await drop_for(sim, 50)
        await wait_for(lambda: sim.hub.subscribes == 2 and sim.hub.subscribed, 10, "the reconnect")
        assert run.metric("homeiq_backfill_gap_open")
        added = sim.hub.add_entity()
        await wait_for(lambda: not run.metric("homeiq_backfill_gap_open"), 30, "the gap closed")
        sim.hub.faults.refuse_connections = True
        sim.drop_connections()
        for _ in range(5):
            sim.hub.fire_state_change(added)
        sim.hub.remove_entity(added)
        await sim.hub.emit(20, rate_per_s=1000)
        sim.hub.faults.refuse_connections = False
        await wait_for(lambda: sim.hub.subscribes == 3 and sim.hub.subscribed, 10, "the second reconnect")
        await sim.hub.emit(30, rate_per_s=100)
        await wait_for(lambda: not run.metric("homeiq_backfill_gap_open"), 30, "the second gap closed")
        await every_state_once(redis_client, sim.hub, 15)


def renamed_keys(counts: Counter[tuple[str, int]], renamed: dict[str, str]) -> Counter[tuple[str, int]]:
    """Stream keys with each renamed entity's states under its new id (HA's recorder moves its history there)."""
    moved: Counter[tuple[str, int]] = Counter()
    for (sent_as, time_ns), n in counts.items():
        entity_id = sent_as
        while entity_id in renamed:
            entity_id = renamed[entity_id]
        moved[entity_id, time_ns] += n
    return moved


async def every_state_once_renamed(client: aioredis.Redis, hub: Hub, renamed: dict[str, str],
                                   timeout_s: float = 30) -> None:
    """Every state change fired is in the stream exactly once, under its id or a later one."""
    wanted = renamed_keys(Counter((s.entity_id, s.last_updated_us * 1000) for s in hub.sent), renamed)

    async def complete() -> bool:
        return set(renamed_keys(await stream_state_keys(client), renamed)) >= set(wanted)

    try:
        await wait_for(complete, timeout_s, "every state change in the stream")
    finally:
        counts = renamed_keys(await stream_state_keys(client), renamed)
        missing = set(wanted) - set(counts)
        twice = [key for key, n in counts.items() if n > 1]
        assert not missing, f"{len(missing)} of {len(wanted)} states missing"
        assert not twice, f"{len(twice)} of {len(wanted)} states published twice, e.g. {twice[:3]}"


async def test_states_that_arrived_live_before_a_rename_while_the_gap_waits_are_not_backfilled_again(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """HA's recorder moves a renamed entity's history to its new id. States of the old id that arrived live (and
    were published under it) while the gap waited for its backfill come back from the recorder under the new id:
    the backfill, which skips what arrived live by (entity id, time), publishes them a second time."""
    async with simulator(commit_interval_s=3) as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await subscribed_with(sim, run, 50)
        entity = sim.hub.population.entities[0]
        await drop_for(sim, 50, entity, 3)
        await wait_for(lambda: sim.hub.subscribes == 2 and sim.hub.subscribed, 10, "the reconnect")
        assert run.metric("homeiq_backfill_gap_open")
        live = [sim.hub.fire_state_change(entity) for _ in range(3)]
        gap = run.collector.gap
        await wait_for(lambda: (entity.entity_id, live[-1].last_updated_us * 1000) in gap.seen, 5, "the live states")
        old_id = entity.entity_id
        new_id = sim.hub.rename_entity(entity, f"{entity.domain}.renamed_while_open").entity_id
        await sim.hub.emit(20, rate_per_s=100)
        await wait_for(lambda: not run.metric("homeiq_backfill_gap_open"), 30, "the gap closed")
        await every_state_once_renamed(redis_client, sim.hub, {old_id: new_id}, 15)


@pytest.mark.parametrize("and_back", [False, True], ids=["renamed", "renamed-and-back"])
async def test_an_entity_renamed_after_the_backfill_listed_the_entities_to_ask_for_has_its_gap_states_backfilled(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    and_back: bool
) -> None:
    """The backfill lists the entities to ask the recorder for once, then asks for them a chunk at a time. One
    renamed in between (here: just before HA answers for its chunk) has its history, the gap's states included,
    under the new id, which is not on the list: the old id's answer is empty, and the gap's states are read by no
    one. Renamed back just before the new id is asked for, the history is under the old id again, asked already."""
    async with simulator(commit_interval_s=1) as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await subscribed_with(sim, run, 50)
        entity = sim.hub.population.entities[0]
        old_id, new_id = entity.entity_id, f"{entity.domain}.renamed_while_asked"
        answer = commands.HANDLERS["history/history_during_period"]
        renamed: list[Entity] = []

        def rename_first(conn: Connection, msg_id: int, message: dict[str, Any]) -> None:
            """The rename lands between the listing and the question for the old id's chunk (and back)."""
            asked = message.get("entity_ids", ())
            if not message.get("no_attributes"):
                if old_id in asked and not renamed:
                    renamed.append(sim.hub.rename_entity(entity, new_id))
                elif and_back and new_id in asked and len(renamed) == 1:
                    renamed.append(sim.hub.rename_entity(renamed[0], old_id))
                    sim.hub.population.entities.remove(entity)  # ha-sim kept it as removed: the id is back
                    sim.hub.removed.discard(old_id)
            answer(conn, msg_id, message)

        monkeypatch.setitem(commands.HANDLERS, "history/history_during_period", rename_first)
        await drop_for(sim, 50, entity, 3)
        await wait_for(lambda: sim.hub.subscribes == 2 and sim.hub.subscribed, 10, "the reconnect")
        await sim.hub.emit(20, rate_per_s=100)
        await wait_for(lambda: not run.metric("homeiq_backfill_gap_open"), 30, "the gap closed")
        assert len(renamed) == 1 + and_back, "the renames did not happen during the backfill"
        await every_state_once_renamed(redis_client, sim.hub, {new_id: old_id} if and_back else {old_id: new_id}, 15)


@pytest.mark.parametrize("restarts", [1, 2], ids=["one-restart", "a-second-before-the-backfill-ends"])
async def test_states_read_back_at_a_restart_are_not_backfilled_again_under_a_new_id_after_a_rename(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path, restarts: int
) -> None:
    """The same with a restart between: the collector stops while the gap waits for its backfill (the watermark
    stays before it, the states it published live since are read back from the stream as already published), the
    entity is renamed while no collector runs, and the recorder gives those states back under the new id. With a
    second restart, the run between sees the rename and stops while its backfill waits too: what it saved of the
    registry must not hide the rename from the next."""
    async with simulator() as sim:
        sim.hub.recorder.commit_interval_s = 3600  # the backfill waits
        entity = sim.hub.population.entities[0]
        async with running_collector(sim, redis_server.url, tmp_path) as first:
            await subscribed_with(sim, first, 50)
            await drop_for(sim, 30, entity, 3)
            await wait_for(lambda: sim.hub.subscribes == 2 and sim.hub.subscribed, 10, "the reconnect")
            for _ in range(3):
                sim.hub.fire_state_change(entity)
            await sim.hub.emit(100, rate_per_s=100)
            await wait_for(lambda: first.metric("homeiq_events_published_total") == 153, 10, "the live states")
            assert first.collector.gap.pending_start_ns is not None  # the backfill still waits
        old_id = entity.entity_id
        new_id = sim.hub.rename_entity(entity, f"{entity.domain}.renamed_while_down").entity_id
        if restarts == 2:
            async with running_collector(sim, redis_server.url, tmp_path) as between:
                await wait_for(lambda: sim.hub.subscribed, 10, "the collector between")
                await asyncio.sleep(3)  # more than a save's interval (REDIS_CHECK_S)
                assert between.collector.gap.pending_start_ns is not None  # its backfill still waits
        sim.hub.recorder.commit_interval_s = 0
        async with running_collector(sim, redis_server.url, tmp_path) as last:
            await wait_for(lambda: sim.hub.subscribed, 10, "the last collector")
            await sim.hub.emit(20, rate_per_s=100)
            await wait_for(lambda: not last.metric("homeiq_backfill_gap_open"), 30, "the gap closed")
            await every_state_once_renamed(redis_client, sim.hub, {old_id: new_id}, 15)


async def test_an_entity_removed_live_before_redis_forgot_its_states_has_them_backfilled(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """An entity removed live while no gap was open is forgotten: every state of it arrived live. Redis then loses
    what it had acknowledged (here: comes back empty): a gap reopens from before the removal, and its backfill asks
    the recorder for every entity HA has and every known one, the removed entity not among them."""
    async with simulator(commit_interval_s=0) as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await subscribed_with(sim, run, 50)
        await asyncio.sleep(2.5)  # a watermark saved after the first 50: the loss of those is another test's
        removed = sim.hub.population.entities[0]
        states = [sim.hub.fire_state_change(removed) for _ in range(5)]
        sim.hub.remove_entity(removed)  # as HA removes one: the state machine, then the registry
        sim.hub.fire_event("entity_registry_updated", {"action": "remove", "entity_id": removed.entity_id})
        collector = run.collector
        await wait_for(lambda: removed.entity_id not in collector.ha_registry.entities, 5, "the registry re-read")
        # Forgotten (no gap was open) once its removal is durable:
        await wait_for(lambda: removed.entity_id not in collector.known.ids, 5, "the removed entity forgotten")
        await asyncio.sleep(2.5)  # the watermark saved past the removal
        await redis_client.flushall()  # Redis lost everything (no persistence, a failover to an empty replica)
        await wait_for(lambda: run.metric("homeiq_redis_forgot_total") >= 1, 10, "the loss noticed")
        await sim.hub.emit(20, rate_per_s=100)
        await wait_for(lambda: not run.metric("homeiq_backfill_gap_open"), 30, "the gap closed")
        await asyncio.sleep(1)
        stored = await stream_state_keys(redis_client)
        missing = [s for s in states if (removed.entity_id, s.last_updated_us * 1000) not in stored]
        assert not missing, f"{len(missing)} of the removed entity's {len(states)} states missing"


async def test_states_before_the_first_saved_watermark_are_backfilled_when_redis_comes_back_empty(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """A first run: Redis comes back empty. The backfill starts at the first watermark this process saved (the
    oldest it knows), not at its first live state: the states published before that save are gone from Redis and
    never backfilled (only a warning, `loss_older_than_known_watermarks`, says so)."""
    async with simulator(commit_interval_s=0) as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await subscribed_with(sim, run, 50)
        await asyncio.sleep(2.5)  # watermarks saved
        await redis_client.flushall()
        await wait_for(lambda: run.metric("homeiq_redis_forgot_total") >= 1, 10, "the loss noticed")
        await sim.hub.emit(20, rate_per_s=100)
        await wait_for(lambda: not run.metric("homeiq_backfill_gap_open"), 30, "the gap closed")
        await every_state_once(redis_client, sim.hub, 15)


@pytest.mark.parametrize(("step_s", "then_s", "quiet"), [(60, 0, False), (3, 4, False), (3, 4, True)],
                         ids=["step-longer-than-the-outage", "outage-longer-than-the-step", "the-same-in-a-quiet-home"])
async def test_states_of_a_gap_during_which_ha_s_clock_stepped_back_are_backfilled(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path, step_s: float, then_s: float,
    quiet: bool
) -> None:
    """The gap starts after the last live state, on HA's clock as it was. HA's clock steps back while no collector
    listens (NTP correcting a clock that ran ahead): the gap's first states are stamped before that start, and the
    backfill, which asks the recorder from it, never sees them. The live states after the reconnect show the step,
    by their order when it is longer than the outage, else by being behind HA's clock as it was; the gap then
    starts that much earlier. In a quiet home the backfill is confirmed (by the current states) before any live
    state shows the step: the gap opens again. What arrived live in the extra time is published again: the same
    points (entity, time), which InfluxDB keeps once."""
    async with simulator(commit_interval_s=0) as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await subscribed_with(sim, run, 50)
        before_the_gap = sent_keys(sim.hub)
        sim.hub.faults.refuse_connections = True
        sim.drop_connections()
        sim.hub.clock_offset_s = -step_s
        await sim.hub.emit(30, rate_per_s=100)  # stamped before the last live state
        if then_s:
            await asyncio.sleep(then_s)  # HA's clock passes the gap's start again
            await sim.hub.emit(30, rate_per_s=100)
        sim.hub.faults.refuse_connections = False
        await wait_for(lambda: sim.hub.subscribes == 2 and sim.hub.subscribed, 10, "the reconnect")
        if quiet:
            await wait_for(lambda: not run.metric("homeiq_backfill_gap_open"), 30, "the gap closed")
        await sim.hub.emit(40, rate_per_s=100)
        await wait_for(lambda: not run.metric("homeiq_backfill_gap_open"), 30, "the gap closed")
        counts = await all_states_published(redis_client, sim.hub, 10)
        assert {key for key, n in counts.items() if n > 1} <= before_the_gap


async def test_an_entity_first_seen_just_before_a_stop_and_removed_while_no_collector_runs_is_backfilled(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """Known entities are saved every REDIS_CHECK_S and not at a stop (the watermark is): one first seen in the
    last seconds before a stop is not among those the next run asks the recorder for. Removed while no collector
    runs, its last states are lost."""
    async with simulator(commit_interval_s=0) as sim:
        async with running_collector(sim, redis_server.url, tmp_path) as first:
            await subscribed_with(sim, first, 50)
            await asyncio.sleep(2.5)  # a save of the known entities without the one to come
            added = sim.hub.add_entity()
            await wait_for(lambda: first.metric("homeiq_events_published_total") == 52, 5, "the new entity's state")
        for _ in range(3):
            sim.hub.fire_state_change(added)
        sim.hub.remove_entity(added)
        await sim.hub.emit(20, rate_per_s=1000)
        await a_restart_publishes_every_state(sim, redis_server, redis_client, tmp_path)


async def test_states_that_arrived_live_before_a_rename_during_a_second_disconnect_are_not_backfilled_again(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """The live rename above, but HA drops the connection again before the backfill is done and the rename happens
    while no session is open: its `entity_registry_updated` is never received, and the retried backfill finds the
    states that arrived live under the old id in the recorder under the new one."""
    async with simulator(commit_interval_s=3) as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await subscribed_with(sim, run, 50)
        entity = sim.hub.population.entities[0]
        await drop_for(sim, 50)
        await wait_for(lambda: sim.hub.subscribes == 2 and sim.hub.subscribed, 10, "the reconnect")
        assert run.metric("homeiq_backfill_gap_open")
        live = [sim.hub.fire_state_change(entity) for _ in range(3)]
        gap = run.collector.gap
        await wait_for(lambda: (entity.entity_id, live[-1].last_updated_us * 1000) in gap.seen, 5, "the live states")
        sim.hub.faults.refuse_connections = True
        sim.drop_connections()  # the backfill under way ends with the session
        old_id = entity.entity_id
        new_id = sim.hub.rename_entity(entity, f"{entity.domain}.renamed_while_away").entity_id
        await sim.hub.emit(20, rate_per_s=1000)
        sim.hub.faults.refuse_connections = False
        await wait_for(lambda: sim.hub.subscribes == 3 and sim.hub.subscribed, 10, "the second reconnect")
        await sim.hub.emit(30, rate_per_s=100)
        await wait_for(lambda: not run.metric("homeiq_backfill_gap_open"), 30, "the gap closed")
        await every_state_once_renamed(redis_client, sim.hub, {old_id: new_id}, 15)


async def test_an_entity_removed_live_whose_last_states_are_not_durable_yet_is_not_forgotten(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """An entity removed live is forgotten at once (every state of it arrived live), and the next save of the known
    entities drops it from Redis, while its last states may still wait in memory for the batch before them. The
    collector dies there (Redis slow to answer, then a crash: the stop's own save runs, the buffer is lost): the next
    run backfills its gap, but not for an entity no one knows any more."""
    proxy = DelayProxy(redis_server.port, delay_s=0)
    await proxy.start()
    try:
        async with simulator(commit_interval_s=0) as sim:
            async with running_collector(sim, f"redis://127.0.0.1:{proxy.port}/0", tmp_path) as first:
                await subscribed_with(sim, first, 50)
                await asyncio.sleep(2.5)  # a watermark and the known entities saved
                proxy.delay_s = 2.0  # Redis's answers are late: the next batch waits for the one before
                sim.hub.fire_state_change(sim.hub.population.entities[1])
                await asyncio.sleep(0.5)  # its batch sent (after the linger): its answer takes 2 s
                removed = sim.hub.population.entities[0]
                for _ in range(5):
                    sim.hub.fire_state_change(removed)
                sim.hub.remove_entity(removed)
                sim.hub.fire_event("entity_registry_updated", {"action": "remove", "entity_id": removed.entity_id})
                await wait_for(lambda: removed.entity_id not in first.collector.ha_registry.entities, 10,
                               "the registry re-read")
                assert first.collector.publisher.pending > 0  # its last states are still only in memory
                first.task.cancel()  # a crash: what is in memory is lost (the stop's saves still run)
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(first.task, 30)
            proxy.delay_s = 0
            await sim.hub.emit(20, rate_per_s=1000)
            # Not once: the crash here is a cancel, and the batch on its way lives on in its own task (redis-py
            # retries it when the client closes): the same point twice, which a real SIGKILL would not send.
            await a_restart_publishes_every_state(sim, redis_server, redis_client, tmp_path, once=False)
    finally:
        await proxy.stop()


async def a_restart_publishes_every_state(sim: SimServer, redis_server: RedisServer, redis_client: aioredis.Redis,
                                          tmp_path: Path, once: bool = True) -> None:
    """A collector started now backfills its gap: every state fired is in the stream (`once`: none twice)."""
    async with running_collector(sim, redis_server.url, tmp_path) as second:
        await wait_for(lambda: sim.hub.subscribed, 10, "the second collector")
        await sim.hub.emit(20, rate_per_s=100)
        await wait_for(lambda: not second.metric("homeiq_backfill_gap_open"), 30, "the gap closed")
        if once:
            await every_state_once(redis_client, sim.hub, 10)
        else:
            await all_states_published(redis_client, sim.hub, 10)
