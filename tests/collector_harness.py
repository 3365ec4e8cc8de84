"""An in-process collector against an in-process ha-sim and a real Redis, with short timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from homeiq.collector.service import Collector
from homeiq.collector.settings import CollectorSettings
from homeiq.ha_sim.hub import Hub
from homeiq.ha_sim.population import Entity
from homeiq.ha_sim.runner import SimServer
from homeiq.local.services import RedisServer
from homeiq.shared.entity_filter import PatternFilter
from homeiq.shared.events import NormalisedEvent, decode_event
from homeiq.shared.packing import events_or_none
from homeiq.shared.stream import DEFAULT_NAMES
from tests.helpers import wait_for

TOKEN = "collector-test-token-7f3a9c"


def settings(ha_url: str, redis_url: str, spool_dir: Path, **changes: Any) -> CollectorSettings:
    """Fast timeouts so faults show within a second or two."""
    base = CollectorSettings(
        ha_url=ha_url, redis_url=redis_url, names=DEFAULT_NAMES, connect_timeout_s=2, auth_timeout_s=0.5,
        command_timeout_s=5, ping_interval_s=0.3, ping_timeout_s=0.3, backoff_base_s=0.05, backoff_max_s=0.3,
        spool_dir=str(spool_dir), metrics_host="127.0.0.1", metrics_port=0,
    )
    return msgspec.structs.replace(base, **changes).validate()


class Running:
    """A collector task and its stop event."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(collector.run(self.stop))

    async def finish(self) -> None:
        """Stop and wait; re-raises what the collector raised."""
        self.stop.set()
        await asyncio.wait_for(self.task, 30)

    def metric(self, name: str, **labels: str) -> float:
        """The current value of one of the collector's metric samples."""
        value = self.collector.metrics_registry.get_sample_value(name, labels or None)
        return 0.0 if value is None else value


@contextlib.asynccontextmanager
async def running_collector(
    sim: SimServer, redis_url: str, spool_dir: Path, token: str = TOKEN,
    entity_filter: PatternFilter | None = None, **changes: Any,
) -> AsyncIterator[Running]:
    """Run a collector until the block ends."""
    collector = Collector(settings(sim.url, redis_url, spool_dir, **changes), token, entity_filter,
                          CollectorRegistry())
    run = Running(collector)
    try:
        yield run
    finally:
        if not run.task.done():
            await run.finish()


async def stream_payloads(client: aioredis.Redis, stream: str = DEFAULT_NAMES.stream) -> list[bytes]:
    """Every encoded event in the stream, in order (packed entries unpacked)."""
    return [payload for _, fields in await client.xrange(stream) for payload in events_or_none(fields)]


async def stream_events(client: aioredis.Redis) -> list[NormalisedEvent]:
    """Every event in the stream, decoded, in order."""
    return [decode_event(payload) for payload in await stream_payloads(client)]


def sent_keys(hub: Hub) -> set[tuple[str, int]]:
    """(entity, point time) of every state change the simulator fired."""
    return {(sent.entity_id, sent.last_updated_us * 1000) for sent in hub.sent}


async def stream_state_keys(client: aioredis.Redis) -> Counter[tuple[str, int]]:
    """How often each state change is in the stream."""
    return Counter((e.entity_id or "", e.time_ns) for e in await stream_events(client)
                   if e.event_type == "state_changed" and e.new_state is not None)


async def all_states_published(client: aioredis.Redis, hub: Hub, timeout_s: float = 30) -> Counter[tuple[str, int]]:
    """Wait until the stream holds every state change fired (failing with how many are missing if it never does);
    how often each is there."""

    async def complete() -> bool:
        return set(await stream_state_keys(client)) >= sent_keys(hub)

    try:
        await wait_for(complete, timeout_s, "every state change in the stream")
    finally:
        counts = await stream_state_keys(client)
        missing = sent_keys(hub) - set(counts)
        assert not missing, f"{len(missing)} of {len(hub.sent)} states missing"
    return counts


async def every_state_once(client: aioredis.Redis, hub: Hub, timeout_s: float = 30) -> None:
    """Wait until the stream holds every state change fired; none may be there twice."""
    counts = await all_states_published(client, hub, timeout_s)
    twice = [key for key, n in counts.items() if n > 1]
    assert not twice, f"{len(twice)} of {len(hub.sent)} states published twice, e.g. {twice[:3]}"


@contextlib.asynccontextmanager
async def simulator(entity_count: int = 40, commit_interval_s: float = 5.0) -> AsyncIterator[SimServer]:
    """An ha-sim on a free port; its recorder commits every `commit_interval_s`, as HA's does."""
    sim = SimServer(Hub.create(entity_count, TOKEN, commit_interval_s=commit_interval_s))
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def service_calls(sim: SimServer, count: int) -> list[str]:
    """Fire `count` service calls at once; their context ids."""
    return [sim.hub.fire_service_call(n)[0] for n in range(count)]


async def missing_calls(client: aioredis.Redis, sent: list[str]) -> list[str]:
    stored = {event.context.id for event in await stream_events(client) if event.event_type == "call_service"}
    return [context_id for context_id in sent if context_id not in stored]


@contextlib.asynccontextmanager
async def reader_held(sim: SimServer, run: Running, redis: RedisServer, count: int,
                      registry_change_after: int | None = None) -> AsyncIterator[list[str]]:
    """Redis hung (SIGSTOP: commands neither answer nor fail, so nothing goes to the spool) while `count`
    service calls arrive, until the buffer is full and the reader waits for room; yields their context ids.
    With `registry_change_after`, an entity moves after that many calls: the collector reads it before the
    buffer fills and asks for the registry while the reader waits. Redis answers again when the block ends."""
    await wait_for(lambda: sim.hub.subscribed and not run.metric("homeiq_backfill_gap_open"), 10,
                   "a subscription, and the start's gap closed")
    assert redis.process is not None
    os.kill(redis.process.pid, signal.SIGSTOP)
    try:
        first = registry_change_after if registry_change_after is not None else count
        sent = service_calls(sim, first)
        if registry_change_after is not None:
            entity = sim.hub.population.entities[0]
            sim.hub.move_entity(entity, next(a for a, _, _ in sim.hub.population.areas if a != entity.area_id))
            sent += [sim.hub.fire_service_call(n)[0] for n in range(first, count)]
        capacity = run.collector.settings.buffer_events
        await wait_for(lambda: len(run.collector.publisher._queue) >= capacity, 5, "a full buffer")
        yield sent
    finally:
        os.kill(redis.process.pid, signal.SIGCONT)


async def subscribed_with(sim: SimServer, run: Running, changes: int) -> None:
    """Subscribed, the start's gap closed, and `changes` published live."""
    await wait_for(lambda: sim.hub.subscribed and not run.metric("homeiq_backfill_gap_open"), 10, "a subscription")
    await sim.hub.emit(changes, rate_per_s=500)
    await wait_for(lambda: run.metric("homeiq_events_published_total") == changes, 10, "the first changes")


async def drop_for(sim: SimServer, changes: int, entity: Entity | None = None, entity_changes: int = 0) -> None:
    """HA unreachable while `entity` changes `entity_changes` times and then `changes` states change; then
    reachable again."""
    sim.hub.faults.refuse_connections = True
    sim.drop_connections()
    for _ in range(entity_changes):
        sim.hub.fire_state_change(entity)
    await sim.hub.emit(changes, rate_per_s=1000)
    sim.hub.faults.refuse_connections = False
