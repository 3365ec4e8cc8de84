"""The collector's connection loop against faults injected by ha-sim, with a real Redis."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from homeiq.ha_sim.runner import SimServer
from homeiq.local.services import RedisServer
from homeiq.shared.events import enrichment_of
from homeiq.shared.influx.batch import encode_entries
from tests.collector_harness import (
    TOKEN,
    missing_calls,
    reader_held,
    running_collector,
    service_calls,
    simulator,
    stream_events,
    stream_payloads,
)
from tests.helpers import wait_for

BURST = 3000


@pytest.mark.parametrize("fault", ["silent_after_connect", "silent_after_auth"])
async def test_a_silent_server_never_hangs_the_collector(
    fault: str, redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with simulator() as sim:
        setattr(sim.hub.faults, fault, True)
        async with running_collector(sim, redis_server.url, tmp_path) as run:
            await wait_for(lambda: sim.hub.connects >= 3, 10, "reconnects after auth timeouts")
            assert run.metric("homeiq_ha_connected") == 0
            setattr(sim.hub.faults, fault, False)
            await wait_for(lambda: sim.hub.subscribed, 10, "a subscription once the server answers")
            assert run.metric("homeiq_ha_disconnects_total", reason="closed") >= 2


async def test_a_rejected_token_keeps_the_collector_up_unready_and_retrying_only_after_a_long_wait(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    # Exiting made `restart:` a loop of failed logins, which HA's IP ban counts.
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path, token="wrong") as run:
        await wait_for(lambda: run.metric("homeiq_ha_auth_rejected") == 1, 10, "the rejection counted")
        reason = run.collector.readiness.reason or ""
        assert "refused the token" in reason and "HA_TOKEN_FILE" in reason and "wrong" not in reason
        assert "next attempt in 900 s" in reason
        assert not run.task.done() and sim.hub.connects == 1
        assert run.metric("homeiq_ha_connected") == 0


async def test_after_a_rejected_token_each_retry_waits_twice_as_long(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path, token="wrong",
                                                     auth_retry_s=0.4) as run:
        times: list[float] = []
        for attempt in range(1, 4):
            await wait_for(lambda: sim.hub.connects >= attempt, 10, f"login attempt {attempt}")  # noqa: B023
            times.append(time.monotonic())
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # 0.4 s, then 0.8 s (plus a connect and a refused login each, longer on a busy machine)
        assert gaps[0] >= 0.35 and gaps[1] >= 0.75 and 1.4 <= gaps[1] / gaps[0] <= 3, gaps
        # the third connect is seen before the collector has read its refusal
        await wait_for(lambda: run.metric("homeiq_ha_disconnects_total", reason="auth_invalid") >= 3, 5,
                       "the third refusal counted")


async def test_never_two_connections_at_once_under_overlapping_failures(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        for round_ in range(6):
            await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
            # A dropped socket, an unanswered ping and a burst of events, all at once.
            sim.hub.faults.ignore_pings = round_ % 2 == 0
            for _ in range(50):
                sim.hub.fire_state_change()
            sim.drop_connections()
            await wait_for(lambda r=round_: sim.hub.active == 0 or sim.hub.connects > r + 1, 5, "the drop")
        sim.hub.faults.ignore_pings = False
        await wait_for(lambda: sim.hub.subscribed, 10, "a final subscription")
        assert sim.hub.max_active == 1
        assert run.collector.sessions >= 6


async def test_half_open_connection_is_replaced_within_interval_plus_timeout(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path, ping_interval_s=0.5,
                                                     ping_timeout_s=0.5) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        sim.hub.faults.ignore_pings = True
        started = time.monotonic()
        await wait_for(lambda: run.metric("homeiq_ha_disconnects_total", reason="heartbeat") >= 1, 5,
                       "the heartbeat to give up")
        assert time.monotonic() - started <= 0.5 + 0.5 + 1.0  # interval + timeout + slack for a busy machine
        sim.hub.faults.ignore_pings = False
        await wait_for(lambda: sim.hub.connects >= 2 and sim.hub.subscribed, 5, "a new connection")


async def test_a_pong_late_behind_flowing_events_keeps_the_connection_and_its_events(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """A collector behind in reading (a saturated machine) reads its pong late, after the events HA sent before
    it; HA is alive, and giving its connection up loses whatever HA had sent into it that has no recorder history
    (the long soak lost 104 service calls so). Only a connection that brings nothing at all is dead."""
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path, ping_interval_s=0.5,
                                                     ping_timeout_s=0.5) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        sim.hub.faults.pong_delay_s = 1.5
        sent: list[str] = []
        for _ in range(60):  # 6 s of service calls, 100 a second
            sent += service_calls(sim, 10)
            await asyncio.sleep(0.1)
        sim.hub.faults.pong_delay_s = 0
        await wait_for(lambda: run.metric("homeiq_events_published_total") >= len(sent), 10, "the calls published")
        assert run.metric("homeiq_ha_disconnects_total", reason="heartbeat") == 0
        assert sim.hub.connects == 1
        assert not await missing_calls(redis_client, sent)


async def test_bad_frames_are_counted_and_the_connection_kept(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        sim.hub.fire_state_change()
        sim.hub.send_raw(b"{not json")
        sim.hub.send_raw(b'{"id": 2, "type": "brand_new_type"}')
        sim.hub.send_raw(b'[{"id": 7, "type": "future"}, ' + b'{"id": 1, "type": "pong"}]')
        sim.hub.fire_state_change()
        await wait_for(lambda: run.metric("homeiq_events_published_total") == 2, 5, "both good events")
        assert run.metric("homeiq_frames_rejected_total", reason="malformed_json") == 1
        assert run.metric("homeiq_frames_rejected_total", reason="unknown_type") == 2
        assert run.collector.sessions == 1 and sim.hub.connects == 1


FIRED = "2026-06-25T21:20:05.162552+00:00"


def state_event(subscription: int, entity_id: str, value: str = "1", attributes: dict[str, str] | None = None,
                **times: str) -> dict[str, Any]:
    """A state_changed event message as HA sends it; `times` replaces time_fired, last_changed or last_updated."""
    state = {"entity_id": entity_id, "state": value, "attributes": attributes or {},
             "last_changed": "2026-06-25T21:20:05+00:00", "last_updated": FIRED, "context": {"id": "01KW0AF0"}}
    state.update({name: value for name, value in times.items() if name != "time_fired"})
    return {"id": subscription, "type": "event", "event": {
        "event_type": "state_changed", "data": {"entity_id": entity_id, "old_state": None, "new_state": state},
        "origin": "LOCAL", "time_fired": times.get("time_fired", FIRED), "context": {"id": "01KW0AF0"}}}


def subscription_of(sim: SimServer) -> int:
    (connection,) = sim.hub.connections
    (subscription,) = connection.subscriptions
    return subscription


async def test_bytes_that_are_not_utf8_cost_their_event_only(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """A text frame must be UTF-8; one that is not used to close the socket (1007) with every event behind it.
    A string the collector reads drops its event here; attributes pass through raw, and the writer dead-letters
    the event (payload kept) instead of writing bytes that are not text."""
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        subscription = subscription_of(sim)
        good = state_event(subscription, "sensor.good", attributes={"unit_of_measurement": "°C"})
        bad_state = state_event(subscription, "sensor.bad_state", "BAD")
        bad_attributes = state_event(subscription, "sensor.bad_attributes", attributes={"friendly_name": "BAD"})
        frame = json.dumps([good, bad_state, bad_attributes], ensure_ascii=False).encode()
        sim.hub.send_raw(frame.replace(b'"BAD"', b'"\xff\xfe"'))
        sim.hub.fire_state_change()
        await wait_for(lambda: run.metric("homeiq_events_published_total") == 3, 5, "the other events")
        assert run.metric("homeiq_events_dropped_total", reason="malformed_event") == 1
        assert run.collector.sessions == 1 and sim.hub.connects == 1
        entries = await redis_client.xrange("homeiq:events")
        written, poison = encode_entries([(entry_id, [x for pair in fields.items() for x in pair])
                                          for entry_id, fields in entries])
        events = await stream_payloads(redis_client)
        assert b"sensor.good" in events[0] and len(written) == 2
        assert [p.reason for p in poison] == ["undecodable"] and b"bad_attributes" in events[1]


@pytest.mark.parametrize("naive", ["last_updated", "last_changed", "time_fired"])
async def test_a_time_without_timezone_is_counted_malformed_and_the_reader_goes_on(
    naive: str, redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        message = state_event(subscription_of(sim), "sensor.x", **{naive: "2026-06-25T21:20:05.162552"})
        sim.hub.send_raw(json.dumps(message).encode())
        sim.hub.fire_state_change()
        await wait_for(lambda: run.metric("homeiq_events_published_total") == 1, 5, "the good event")
        assert run.metric("homeiq_events_dropped_total", reason="malformed_event") == 1
        assert not run.task.done() and run.collector.sessions == 1 and sim.hub.connects == 1


async def test_messages_larger_than_16_mib_are_accepted(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        big = {"friendly_name": "Big", "blob": "x" * (17 * 1024 * 1024)}
        sim.hub.set_state(sim.hub.population.entities[0], "on", big)
        await wait_for(lambda: run.metric("homeiq_events_published_total") == 1, 20, "the big event")
        (event,) = await stream_events(redis_client)
        assert event.new_state is not None and len(bytes(event.new_state.attributes)) > 17 * 1024 * 1024
        assert run.collector.sessions == 1


async def test_registry_update_reaches_following_events(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        entity = sim.hub.population.entities[1]
        sim.hub.fire_state_change(entity)
        sim.hub.move_entity(entity, "office")
        registry = run.collector.ha_registry
        await wait_for(lambda: enrichment_of(registry.enrichment(entity.entity_id)).area_id == "office", 5,
                       "the collector to re-read the entity registry")
        sim.hub.fire_state_change(entity)
        await wait_for(lambda: _count(redis_client, 3), 5, "three entries")
        states = [e for e in await stream_events(redis_client) if e.event_type == "state_changed"]
        assert enrichment_of(states[0].enrichment).area_id != "office"
        assert enrichment_of(states[1].enrichment).area_id == "office"
        (update,) = [e for e in await stream_events(redis_client) if e.event_type == "entity_registry_updated"]
        assert b'"changes":{"area_id"' in bytes(update.data)  # published like any other event


async def _count(client: aioredis.Redis, n: int) -> bool:
    return len(await stream_payloads(client)) >= n


async def test_the_token_never_appears_in_debug_output(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        sim.drop_connections()
        await wait_for(lambda: sim.hub.connects >= 2 and sim.hub.subscribed, 10, "a reconnect")
        metrics = (await _metrics_text(run.collector))
    assert caplog.records, "nothing was logged at DEBUG"
    assert TOKEN not in caplog.text
    assert TOKEN not in metrics


async def _metrics_text(collector: object) -> str:
    from prometheus_client import generate_latest  # noqa: PLC0415

    return generate_latest(collector.metrics_registry).decode()  # type: ignore[attr-defined]


async def test_a_reader_waiting_on_a_hung_redis_is_not_taken_for_a_dead_connection(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """The pong goes unread because the reader waits for room in our own buffer, not because HA is gone:
    dropping the connection would throw away what HA queued for us (service calls have no recorder
    history). Pings here time out after 0.3 s; Redis hangs for 2 s."""
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path, buffer_events=200,
                                                     publish_batch=100) as run:
        async with reader_held(sim, run, redis_server, BURST) as sent:
            await asyncio.sleep(2)
        await wait_for(lambda: run.metric("homeiq_events_published_total") >= BURST
                       or run.metric("homeiq_ha_disconnects_total", reason="heartbeat") > 0, 15,
                       "every event published, or a heartbeat disconnect")
        assert run.metric("homeiq_ha_disconnects_total", reason="heartbeat") == 0
        assert sim.hub.connects == 1
    missing = await missing_calls(redis_client, sent)
    assert not missing, f"{len(missing)} of {BURST} events HA sent are not in the stream"


async def test_a_command_unanswered_while_the_reader_waits_for_room_keeps_the_connection(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """A registry refresh asked for while the reader waits (its answer is behind the events in the socket):
    its timeout (1 s here, Redis hung for 3 s) says nothing about HA either."""
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path, buffer_events=200,
                                                     publish_batch=100, command_timeout_s=1) as run:
        async with reader_held(sim, run, redis_server, BURST, registry_change_after=100) as sent:
            await asyncio.sleep(3)
        await wait_for(lambda: run.metric("homeiq_events_published_total") >= BURST + 1 or sim.hub.connects > 1, 15,
                       "every event published, or a new connection")
        assert sim.hub.connects == 1
    missing = await missing_calls(redis_client, sent)
    assert not missing, f"{len(missing)} of {BURST} events HA sent are not in the stream"


async def test_a_dead_ha_is_still_found_once_the_reader_has_room_again(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path, buffer_events=200,
                                                     publish_batch=100, ping_interval_s=1, ping_timeout_s=1) as run:
        async with reader_held(sim, run, redis_server, BURST):
            sim.hub.faults.ignore_pings = True  # and half-open from now on
            await asyncio.sleep(3)
        await wait_for(lambda: run.metric("homeiq_ha_disconnects_total", reason="heartbeat") == 1, 10,
                       "the half-open connection found within ping interval + timeout of having room")
