"""ha-sim speaks HA's WebSocket protocol: frames compared with ones captured from a real Home Assistant."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from homeiq.ha_sim.hub import Hub
from homeiq.ha_sim.recorder import Recorded, Recorder
from homeiq.ha_sim.runner import SimServer

CAPTURES = Path(__file__).parent / "captures"
TOKEN = "sim-token"


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    server = SimServer(Hub.create(entity_count=30, token=TOKEN, commit_interval_s=0))  # the recorder's timing: below
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def ws(sim: SimServer) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as session, session.ws_connect(sim.url) as socket:
        assert json.loads(await socket.receive_str())["type"] == "auth_required"
        await socket.send_str(json.dumps({"type": "auth", "access_token": TOKEN}))
        assert json.loads(await socket.receive_str())["type"] == "auth_ok"
        yield socket


async def receive(socket: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """One frame as a list of messages (coalesced arrays flattened)."""
    decoded = json.loads(await socket.receive_str(timeout=5))
    return decoded if isinstance(decoded, list) else [decoded]


async def command(socket: aiohttp.ClientWebSocketResponse, message: dict[str, Any]) -> dict[str, Any]:
    await socket.send_str(json.dumps(message))
    while True:
        for answer in await receive(socket):
            if answer.get("id") == message["id"] and answer["type"] in ("result", "pong"):
                return answer


def shape(value: Any) -> Any:
    """Keys in order with the types of their values, recursively: what 'the same shape' means."""
    if isinstance(value, dict):
        return [(key, shape(item)) for key, item in value.items()]
    return type(value).__name__ if value is not None else "null"


async def test_auth_frames_match_the_capture(sim: SimServer) -> None:
    captured = [json.loads(line) for line in (CAPTURES / "auth.txt").read_text().splitlines() if line]
    async with aiohttp.ClientSession() as session, session.ws_connect(sim.url) as socket:
        required = json.loads(await socket.receive_str())
        await socket.send_str(json.dumps({"type": "auth", "access_token": TOKEN}))
        ok = json.loads(await socket.receive_str())
    assert [list(required), list(ok)] == [list(captured[0]), list(captured[1])]


async def test_wrong_token_gets_auth_invalid_then_close(sim: SimServer) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(sim.url) as socket:
        await socket.receive_str()
        await socket.send_str(json.dumps({"type": "auth", "access_token": "wrong"}))
        assert json.loads(await socket.receive_str()) == {
            "type": "auth_invalid", "message": "Invalid access token or password"}
        assert (await socket.receive()).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_state_changed_frame_has_the_captured_shape_plus_last_reported(
    sim: SimServer, ws: aiohttp.ClientWebSocketResponse
) -> None:
    await command(ws, {"id": 1, "type": "subscribe_events"})
    sim.hub.fire_state_change(sim.hub.population.entities[4])  # a switch: attributes like the capture's
    (frame,) = await receive(ws)
    captured = json.loads((CAPTURES / "state_changed_example.json").read_text())
    assert list(frame) == list(captured) == ["type", "event", "id"]
    assert frame["id"] == 1
    new_state = frame["event"]["data"]["new_state"]
    assert list(new_state) == ["entity_id", "state", "attributes", "last_changed", "last_reported",
                               "last_updated", "context"]
    without_reported = {k: v for k, v in new_state.items() if k != "last_reported"}
    captured_state = captured["event"]["data"]["new_state"]
    assert [k for k, _ in shape(without_reported)] == [k for k, _ in shape(captured_state)]
    assert list(frame["event"]["context"]) == list(captured["event"]["context"])
    assert [k for k, _ in shape(frame["event"])] == [k for k, _ in shape(captured["event"])]
    assert frame["event"]["time_fired"] == new_state["last_updated"]


async def test_coalesced_frames_are_arrays_when_messages_queue_up(
    sim: SimServer, ws: aiohttp.ClientWebSocketResponse
) -> None:
    await command(ws, {"id": 1, "type": "supported_features", "features": {"coalesce_messages": 1}})
    await command(ws, {"id": 2, "type": "subscribe_events"})
    for _ in range(10):
        sim.hub.fire_state_change()
    frame = json.loads(await ws.receive_str(timeout=5))
    assert isinstance(frame, list) and len(frame) == 10
    assert {message["id"] for message in frame} == {2}


async def test_id_rules_and_errors_as_ha_answers_them(ws: aiohttp.ClientWebSocketResponse) -> None:
    assert await command(ws, {"id": 5, "type": "ping"}) == {"id": 5, "type": "pong"}
    assert (await command(ws, {"id": 5, "type": "ping"}))["error"] == {
        "code": "id_reuse", "message": "Identifier values have to increase."}
    assert (await command(ws, {"id": 6, "type": "no_such_command"}))["error"]["code"] == "unknown_command"
    unsubscribed = await command(ws, {"id": 7, "type": "unsubscribe_events", "subscription": 99})
    assert unsubscribed["error"] == {"code": "not_found", "message": "Subscription not found."}
    await ws.send_str(json.dumps({"type": "ping"}))
    assert (await receive(ws))[0]["error"]["code"] == "invalid_format"


async def test_registry_lists_carry_the_captured_fields(ws: aiohttp.ClientWebSocketResponse) -> None:
    captured = json.loads((CAPTURES / "entity_registry_list.json").read_text())
    entities = await command(ws, {"id": 1, "type": "config/entity_registry/list"})
    assert list(entities)[:4] == list(captured)[:4]
    assert set(captured["result"][0]) <= set(entities["result"][0])
    areas = await command(ws, {"id": 2, "type": "config/area_registry/list"})
    assert set(json.loads((CAPTURES / "area_registry_list.json").read_text())["result"][0]) <= set(
        areas["result"][0])
    devices = await command(ws, {"id": 3, "type": "config/device_registry/list"})
    assert {"id", "name", "manufacturer", "model", "sw_version", "area_id", "name_by_user"} <= set(
        devices["result"][0])
    floors = await command(ws, {"id": 4, "type": "config/floor_registry/list"})
    assert {"floor_id", "name", "level"} <= set(floors["result"][0])


async def test_history_rows_are_compressed_states_like_the_capture(
    sim: SimServer, ws: aiohttp.ClientWebSocketResponse
) -> None:
    entity = sim.hub.population.entities[0]
    first = sim.hub.fire_state_change(entity)
    sim.hub.fire_state_change(entity)
    start = first.last_updated - 1e-6
    answer = await command(ws, {
        "id": 1, "type": "history/history_during_period", "entity_ids": [entity.entity_id],
        "start_time": datetime.fromtimestamp(start, UTC).isoformat(),
        "include_start_time_state": False, "significant_changes_only": False,
    })
    rows = answer["result"][entity.entity_id]
    captured = json.loads((CAPTURES / "history_during_period.json").read_text())["result"]["sensor.num_sum"][0]
    assert len(rows) == 2
    assert [k for k in rows[0] if k != "lc"] == list(captured)
    assert rows[0]["lu"] == first.last_updated and rows[0]["s"] == first.state  # the raw float, as stored


async def test_times_are_raw_floats_rendered_as_ha_renders_them(
    sim: SimServer, ws: aiohttp.ClientWebSocketResponse
) -> None:
    """Live events show `datetime.fromtimestamp(ts, UTC)`; the recorder returns the float itself. A simulator
    with exact microseconds would hide that `round(ts * 1e6)` is 1 µs off for some states."""
    entity = sim.hub.population.entities[0]
    await command(ws, {"id": 1, "type": "subscribe_events", "event_type": "state_changed"})
    sent = [sim.hub.fire_state_change(entity) for _ in range(300)]
    live: list[str] = []
    while len(live) < len(sent):
        live.extend(m["event"]["data"]["new_state"]["last_updated"] for m in await receive(ws) if m["type"] == "event")
    answer = await command(ws, {
        "id": 2, "type": "history/history_during_period", "entity_ids": [entity.entity_id],
        "start_time": datetime.fromtimestamp(sent[0].last_updated - 1, UTC).isoformat(),
        "include_start_time_state": False, "significant_changes_only": False,
    })
    floats = [row["lu"] for row in answer["result"][entity.entity_id]][-len(sent):]
    assert floats == [s.last_updated for s in sent]
    assert live == [datetime.fromtimestamp(ts, UTC).isoformat() for ts in floats]
    off_by_one = sum(round(ts * 1e6) != s.last_updated_us for ts, s in zip(floats, sent, strict=True))
    assert off_by_one > 0  # sub-microsecond digits are really there, as in HA


class FakeTimer:
    """The recorder's timer clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_recorder_shows_a_state_only_from_its_next_commit_as_ha_s_does() -> None:
    timer = FakeTimer()
    recorder = Recorder(commit_interval_s=30, monotonic=timer)
    timer.now += 29.0
    recorder.record("sensor.a", Recorded("1", {}, 1.0, 1.0))
    assert recorder.rows("sensor.a") == [] and recorder.uncommitted == 1
    timer.now += 1.0  # the commit 30 s after the recorder started
    assert [row.state for row in recorder.rows("sensor.a")] == ["1"]
    timer.now += 0.1
    recorder.record("sensor.a", Recorded("2", {}, 2.0, 2.0))
    timer.now += 29.8
    assert len(recorder.rows("sensor.a")) == 1
    recorder.restart()  # HA's shutdown commits what the session holds; the timer starts over
    assert len(recorder.rows("sensor.a")) == 2
    recorder.record("sensor.a", Recorded("3", {}, 3.0, 3.0))
    timer.now += 29.9
    assert len(recorder.rows("sensor.a")) == 2


async def test_history_follows_the_recorded_time_not_the_order_of_changes_when_ha_s_clock_steps_back() -> None:
    hub = Hub.create(entity_count=3, token=TOKEN, commit_interval_s=0)
    entity = hub.population.entities[0]
    before = hub.fire_state_change(entity)
    hub.clock_offset_s = -3600.0  # NTP steps HA's clock back an hour
    after = hub.fire_state_change(entity)
    assert after.last_updated < before.last_updated
    rows = [row.last_updated for row in hub.recorder.rows(entity.entity_id)]
    assert rows[-2:] == [before.last_updated, after.last_updated]  # stored in the order they happened
    sim = SimServer(hub)
    await sim.start()
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(sim.url) as ws:
            await ws.receive_json()
            await ws.send_json({"type": "auth", "access_token": TOKEN})
            await ws.receive_json()
            answer = await command(ws, {"id": 1, "type": "history/history_during_period",
                                        "entity_ids": [entity.entity_id], "start_time": "2000-01-01T00:00:00+00:00",
                                        "include_start_time_state": False, "significant_changes_only": False})
    finally:
        await sim.stop()
    floats = [row["lu"] for row in answer["result"][entity.entity_id]]
    assert floats == sorted(floats) and after.last_updated in floats and before.last_updated in floats


async def test_a_subscriber_lost_is_told_with_why_and_an_unsubscribed_one_is_not(sim: SimServer) -> None:
    """The soak tells the drops it made from the connections that ended otherwise (the client gave up, or HA
    dropped a client behind): what was sent into those and not read is lost."""
    lost: list[str] = []
    sim.hub.on_subscriber_lost = lost.append
    for close_by_client in (True, False):
        async with aiohttp.ClientSession() as session, session.ws_connect(sim.url) as socket:
            await receive(socket)
            await socket.send_str(json.dumps({"type": "auth", "access_token": TOKEN}))
            await receive(socket)
            await command(socket, {"id": 1, "type": "subscribe_events"})
            if close_by_client:
                await socket.close()
            else:
                sim.drop_connections()
                await socket.receive(timeout=5)
    async with aiohttp.ClientSession() as session, session.ws_connect(sim.url) as socket:  # never subscribed
        await receive(socket)
        await socket.send_str(json.dumps({"type": "auth", "access_token": TOKEN}))
        await receive(socket)
        await socket.close()
    for _ in range(50):
        if len(lost) == 2 and not sim.hub.connections:
            break
        await asyncio.sleep(0.05)
    assert lost == ["closed by the client", "dropped by the simulator"]
