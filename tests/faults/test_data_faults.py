"""Low rates with eager trimming, poison of every kind, and point identity, through the whole pipeline."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from homeiq.ha_sim.messages import iso, now_ts, ulid
from tests.faults.pipeline import DATABASE, FaultPipeline, steady_traffic
from tests.faults.test_writer_faults import assert_exact
from tests.helpers import wait_for


async def test_one_event_per_second_with_trimming_every_second_and_influxdb_down_loses_nothing(
    tmp_path: Path,
) -> None:
    async with FaultPipeline(tmp_path) as pipeline:  # the replayer passes, and trims, every second
        async with steady_traffic(pipeline.hub, 1):
            await asyncio.sleep(15)
            pipeline.influx.stop()
            await asyncio.sleep(25)
            pipeline.influx.start()
            back = time.monotonic()
            await asyncio.sleep(20)
        verdict, row = await pipeline.verdict("1/s for 60 s, trimming every second, InfluxDB down 25 s", back)
    assert_exact(verdict, row.dropped)


def service_call(time_fired: str, context_id: str, data: dict[str, Any], event_type: str = "call_service"
                 ) -> dict[str, Any]:
    return {"event_type": event_type, "data": data, "origin": "LOCAL", "time_fired": time_fired,
            "context": {"id": context_id, "parent_id": None, "user_id": None}}


def event_frame(pipeline: FaultPipeline, event: dict[str, Any]) -> bytes:
    """An event frame for the collector's subscription, written by hand (for what HA's own code would not
    build, and for exact duplicates)."""
    connection = next(iter(pipeline.hub.connections))
    return json.dumps({"id": next(iter(connection.subscriptions)), "type": "event", "event": event}).encode()


def tag_value(stored: str) -> str:
    """A tag value as documented: a JSON string literal is decoded, anything else is the value itself."""
    return str(json.loads(stored)) if len(stored) >= 2 and stored[0] == stored[-1] == '"' else stored


async def test_poison_leaves_good_traffic_alone_and_what_influxdb_refuses_is_redriven_once_fixed(
    tmp_path: Path,
) -> None:
    async with FaultPipeline(tmp_path) as pipeline:
        hub, influx = pipeline.hub, pipeline.influx
        # A field-type conflict made by someone else's data: every service call (`event_data` is a string
        # field for us) is refused until the operator fixes it.
        influx.query(f"CREATE DATABASE {DATABASE}", epoch=None)
        await asyncio.to_thread(_write, influx.url, f"home_assistant_events,entity_id=foreign event_data=1i "
                                                    f"{time.time_ns()}")
        refused = [service_call(iso(now_ts()), f"{ulid(now_ts())}{n}", {"domain": "light", "service": "toggle"})
                   for n in range(5)]
        for event in refused:
            hub.send_raw(event_frame(pipeline, event))
        await wait_for(lambda: pipeline.total("writer", "homeiq_dead_lettered_total", reason="rejected") == 5, 30,
                       "the 5 refused service calls dead-lettered")
        influx.query("DROP MEASUREMENT home_assistant_events", DATABASE, epoch=None)  # the operator's fix
        redriven = await asyncio.to_thread(_redrive_all, pipeline.env)

        odd = "sensor.a b,c=d\"e\\f\nñ😀\\"
        async with steady_traffic(hub, 300):
            await asyncio.sleep(1)
            hub.send_raw(b"{not json")
            hub.send_raw(b'{"id": 1, "type": "from_the_future"}')
            state = {"entity_id": odd, "state": "x\ud800", "attributes": {}, "last_changed": iso(now_ts()),
                     "last_updated": iso(now_ts()), "context": {"id": "surrogate"}}
            hub.send_raw(json.dumps({"id": 0, "type": "event", "event": {  # a lone surrogate: not Unicode
                "event_type": "state_changed", "data": {"entity_id": odd, "new_state": state},
                "origin": "LOCAL", "time_fired": iso(now_ts()), "context": {"id": "surrogate"}}}).encode())
            odd_state = {**state, "state": "fine", "context": {"id": "odd-entity"}}
            hub.send_raw(event_frame(pipeline, {
                "event_type": "state_changed", "data": {"entity_id": odd, "new_state": odd_state},
                "origin": "LOCAL", "time_fired": odd_state["last_updated"], "context": {"id": "odd-entity"}}))
            huge = hub.population.entities[1]
            hub.set_state(huge, "on", {"blob": "x" * 20_000_000, "friendly_name": "huge"})  # a 20 MB message
            for state_value in ("nan", "NaN", "inf", "-inf", "1e400"):
                hub.set_state(hub.population.entities[2], state_value, {"friendly_name": "odd numbers"})
            words = service_call(iso(now_ts()), "words", {"note": "bucket precision gzip database is required"})
            hub.send_raw(event_frame(pipeline, words))
            hub.send_raw(event_frame(pipeline, service_call(iso(now_ts()), "odd-type", {}, "my event,t=x\"\\\n")))
            await asyncio.sleep(3)
        verdict, row = await pipeline.verdict("poison: bad frames, 20 MB, NaN/Inf, surrogate, odd names, a "
                                              "field-type conflict redriven, 300/s", time.monotonic())
        points = await pipeline.points()
        rejected_frames = pipeline.total("collector", "homeiq_frames_rejected_total")
    by_context = {p.get("context_id"): p for p in points}
    odd_point = by_context["odd-entity"]
    assert tag_value(odd_point["entity_id"]) == odd and odd_point["state_value"] == "fine"
    verdict.extra.discard((odd_point["entity_id"], odd_point["time"]))  # sent by hand, not by ha-sim's entities
    row.extra = len(verdict.extra) + verdict.duplicated
    row.explained = (f"{int(rejected_frames)} bad frames counted; 5 refused calls dead-lettered then redriven "
                     f"({sum(1 for _, new in redriven if new)}); odd names and 20 MB written")
    assert_exact(verdict, row.dropped)  # the redriven letters left the dead-letter stream
    assert sorted(new is not None for _, new in redriven) == [True] * 5
    assert all(event["context"]["id"] in by_context for event in refused)  # written once the cause was fixed
    assert by_context["words"]["event_type"] == "call_service"
    assert tag_value(by_context["odd-type"]["event_type"]) == "my event,t=x\"\\\n"
    assert "surrogate" not in by_context and rejected_frames >= 3  # counted, never half-written
    assert max(len(p.get("attributes") or "") for p in points) > 20_000_000


async def test_distinct_events_in_one_microsecond_are_two_points_and_one_event_twice_is_one(
    tmp_path: Path,
) -> None:
    async with FaultPipeline(tmp_path) as pipeline:
        async with steady_traffic(pipeline.hub, 300):
            fired = iso(now_ts())
            for n in range(50):  # 50 pairs of distinct automations in one microsecond
                for twin in "ab":
                    event = service_call(fired, f"ctx-{n}-{twin}", {"name": f"automation {n}"},
                                         "automation_triggered")
                    pipeline.hub.send_raw(event_frame(pipeline, event))
            sent_twice = service_call(fired, "twice", {"name": "the same event"}, "automation_triggered")
            pipeline.hub.send_raw(event_frame(pipeline, sent_twice))
            pipeline.hub.send_raw(event_frame(pipeline, sent_twice))
            await asyncio.sleep(2)
        verdict, row = await pipeline.verdict("100 distinct events in one microsecond, one event sent twice, 300/s",
                                              time.monotonic())
        automations = [p for p in await pipeline.points() if p["event_type"] == "automation_triggered"]
    row.explained = f"{len(automations)} automation points for 101 distinct events"
    assert_exact(verdict, row.dropped)
    assert len(automations) == 101 and len({p["context_id"] for p in automations}) == 101


def _write(url: str, line: str) -> None:
    import urllib.request  # noqa: PLC0415

    request = urllib.request.Request(f"{url}/write?db={DATABASE}&precision=ns", data=line.encode())
    with urllib.request.urlopen(request, timeout=10):
        pass


def _redrive_all(env: dict[str, str]) -> list[tuple[str, str | None]]:
    """`replayer dead-letter redrive --all --json`, as an operator runs it."""
    script = Path(sys.executable).parent / "replayer"
    result = subprocess.run([str(script), "dead-letter", "redrive", "--all", "--json"], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [(row["dead_id"], row["new_id"]) for row in json.loads(result.stdout)]
