"""Answers and rows HA could never send but a broken proxy could: bytes that are not UTF-8 where a command's
answer is read. Each costs at most what it carries, counted; the connection and the process go on."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from homeiq.collector.metrics import CollectorMetrics
from homeiq.collector.publisher import _STOP, Publisher
from homeiq.collector.spool import Spool
from homeiq.ha_sim import commands
from homeiq.ha_sim.messages import Standalone
from homeiq.local.services import RedisServer
from homeiq.shared.events import enrichment_of
from homeiq.shared.health import Readiness
from homeiq.shared.stream import StreamNames
from tests.collector_harness import running_collector, simulator, stream_events
from tests.helpers import wait_for

NOT_UTF8 = b'"\xff\xfe"'


def unreadable(message: bytes, value: str = "BAD") -> Standalone:
    """`message` with the JSON string `value` replaced by bytes that are not UTF-8, sent as it is."""
    return Standalone(message.replace(json.dumps(value).encode(), NOT_UTF8, 1))


def registry_updated(kind: str) -> dict[str, Any]:
    return {"event_type": f"{kind}_registry_updated", "data": {"action": "update"}, "origin": "LOCAL",
            "time_fired": "2026-06-25T21:20:05.162552+00:00", "context": {"id": "01KW0AF1"}}


async def test_an_unreadable_registry_answer_keeps_the_registry_and_the_connection(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def area_list(conn: commands.Connection, msg_id: int, _: dict[str, Any]) -> None:
        answer = [{"area_id": "office", "name": "BAD", "floor_id": None}]
        conn.send(unreadable(json.dumps({"id": msg_id, "type": "result", "success": True, "result": answer}).encode()))

    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        entity = sim.hub.population.entities[1]
        area_before = enrichment_of(run.collector.ha_registry.enrichment(entity.entity_id)).area_name
        monkeypatch.setitem(commands.HANDLERS, "config/area_registry/list", area_list)
        sim.hub.broadcast("area_registry_updated", registry_updated("area"))
        await wait_for(lambda: run.metric("homeiq_frames_rejected_total", reason="malformed_registry") == 1, 5,
                       "the unreadable answer counted")
        sim.hub.fire_state_change(entity)
        await wait_for(lambda: run.metric("homeiq_events_published_total") == 2, 5, "the next event")
        assert not run.task.done() and run.collector.sessions == 1 and sim.hub.connects == 1
        (state,) = [e for e in await stream_events(redis_client) if e.event_type == "state_changed"]
        # The registry loaded before still serves.
        assert area_before and enrichment_of(state.enrichment).area_name == area_before


async def test_an_unreadable_error_answer_fails_its_command_at_once(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command behind it must not wait out its timeout (60 s by default): the next refresh queues behind it."""
    def floor_list(conn: commands.Connection, msg_id: int, _: dict[str, Any]) -> None:
        error = {"code": "unknown_error", "message": "BAD"}
        conn.send(unreadable(json.dumps({"id": msg_id, "type": "result", "success": False, "error": error}).encode()))

    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path, command_timeout_s=30) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        monkeypatch.setitem(commands.HANDLERS, "config/floor_registry/list", floor_list)
        sim.hub.broadcast("floor_registry_updated", registry_updated("floor"))
        entity = sim.hub.population.entities[1]
        sim.hub.move_entity(entity, "office")
        registry = run.collector.ha_registry
        await wait_for(lambda: enrichment_of(registry.enrichment(entity.entity_id)).area_id == "office", 5,
                       "the entity registry re-read after the failed floor registry")
        assert run.metric("homeiq_frames_rejected_total", reason="malformed_json") == 1
        assert run.collector.sessions == 1 and sim.hub.connects == 1


async def test_an_unreadable_recorder_row_is_counted_and_the_others_backfilled(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Corrupting:
        """The connection a handler answers through, with the first recorded state made unreadable."""

        def __init__(self, conn: commands.Connection) -> None:
            self.hub, self.subscriptions, self.coalesce, self._conn = conn.hub, conn.subscriptions, conn.coalesce, conn

        def send(self, message: bytes) -> None:
            self._conn.send(Standalone(message.replace(b'"s":"', b'"s":' + NOT_UTF8[:-1], 1)))

    history = commands.HANDLERS["history/history_during_period"]
    monkeypatch.setitem(commands.HANDLERS, "history/history_during_period",
                        lambda conn, msg_id, message: history(Corrupting(conn), msg_id, message))
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        await sim.hub.emit(20, rate_per_s=200)  # the gap starts after the last state received live
        await wait_for(lambda: run.metric("homeiq_events_published_total") == 20, 5, "the live events")
        sim.hub.faults.refuse_connections = True
        sim.drop_connections()
        while_down = await sim.hub.emit(50, rate_per_s=200)
        sim.hub.faults.refuse_connections = False
        await wait_for(lambda: run.metric("homeiq_events_backfilled_total") > 0, 15, "the gap backfilled")
        dropped = run.metric("homeiq_events_dropped_total", reason="backfill_malformed")
        assert dropped == 1  # one answer (40 entities), its first row made unreadable
        assert run.metric("homeiq_events_backfilled_total") + dropped >= while_down
        assert not run.task.done()


async def test_the_stop_marker_ends_the_last_batch_even_with_an_event_behind_it(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """Nothing is queued after close() today; were it, the marker must not reach the stream as an event."""
    publisher = Publisher(redis_client, redis_server.url, StreamNames(stream="s"),
                          CollectorMetrics(CollectorRegistry()), Readiness(), Spool(tmp_path, max_bytes=1 << 20),
                          "block", capacity=10, batch_max=10)
    assert publisher.offer(b'{"first":1}')
    closing = asyncio.create_task(publisher.close(1.0))
    await asyncio.sleep(0)  # the marker is queued
    assert publisher.offer(b'{"late":1}')
    flushing = asyncio.create_task(publisher.run())
    unpublished = await closing
    flushing.cancel()
    stream = [fields[b"e"] for _, fields in await redis_client.xrange("s")]
    assert stream == [b'{"first":1}'] and _STOP not in stream
    assert unpublished == 1  # the late one, counted as never published
