"""`replayer audit` against ha-sim's recorder (raw float times, as current HA) and a real influxd."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from homeiq.ha_sim.hub import SentEvent
from homeiq.ha_sim.messages import now_ts
from homeiq.ha_sim.runner import SimServer
from homeiq.local.services import InfluxServer, RedisServer
from homeiq.shared.events import NormalisedEvent, enrichment_of
from homeiq.shared.influx.lineprotocol import encode_line
from homeiq.shared.influx.settings import InfluxSettings
from homeiq.shared.stream import DEFAULT_NAMES
from tests.collector_harness import TOKEN, running_collector, simulator, stream_events
from tests.helpers import wait_for
from tests.writer_harness import running_writer, writer_settings

EXCLUDE_SWITCHES = json.dumps({"mode": "exclude", "patterns": [{"domain": "switch"}]})


@dataclass
class Audited:
    """A pipeline that has written `events` state changes, and the time before the first one."""

    sim: SimServer
    influx: InfluxServer
    database: str
    env: dict[str, str]
    since: str

    async def audit(self, *args: str) -> tuple[int, dict[str, Any]]:
        """`replayer audit --since … --json …` as an operator runs it, once HA's recorder has committed what it
        recorded; (exit code, report)."""
        await committed(self.sim)
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "replayer"), "audit", "--since", self.since, "--json", *args,
            env={**os.environ, **self.env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode in (0, 1), stderr.decode()
        return process.returncode, json.loads(stdout)

    async def audit_text(self, *args: str) -> str:
        """`replayer audit --since …` as a table, piped."""
        await committed(self.sim)
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "replayer"), "audit", "--since", self.since, *args,
            env={**os.environ, **self.env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode in (0, 1), stderr.decode()
        return stdout.decode()

    async def stream_event(self, entity_id: str, time_ns: int) -> NormalisedEvent:
        """The stream's entry of one state change (what the writer wrote for it)."""
        client = aioredis.Redis.from_url(self.env["REDIS_URL"])
        try:
            events = await stream_events(client)
        finally:
            await client.aclose()
        return next(e for e in events if e.entity_id == entity_id and e.time_ns == time_ns)

    def delete(self, entity_id: str, time_ns: int) -> None:
        self.influx.query(f"DELETE FROM home_assistant_events WHERE entity_id = '{entity_id}' AND time = {time_ns}",
                          self.database, epoch=None)


@pytest.fixture
async def audited(redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str,
                  tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Audited]:
    """ha-sim → collector → Redis → writer → influxd with 600 state changes written, then still running."""
    entity_filter = getattr(request, "param", "")
    async with simulator(entity_count=30) as sim:
        since = datetime.fromtimestamp(now_ts() + 0.001, UTC).isoformat()  # after the simulator's first states
        filtered = {"ENTITY_FILTER_CONFIG": entity_filter} if entity_filter else {}
        async with running_writer(writer_settings(redis_server.url, influx.url, influx_db)), \
                running_collector(sim, redis_server.url, tmp_path, entity_filter=None if not entity_filter else
                                  _filter(entity_filter)) as run:
            await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
            await sim.hub.emit(600, rate_per_s=1000)
            # The last events may still wait in the socket (the collector reads it in bursts): count the filtered
            # ones once every event has been received.
            await wait_for(lambda: run.metric("homeiq_events_received_total") >= 600, 10, "every change received")
            published = 600 - run.metric("homeiq_events_filtered_total") if entity_filter else 600
            await wait_for(lambda: influx.count(influx_db) >= published, 20, "every change written")
            env = {"HA_URL": sim.url, "HA_TOKEN": TOKEN, "REDIS_URL": redis_server.url, "INFLUXDB_URL": influx.url,
                   "INFLUXDB_API": "v1", "INFLUXDB_BUCKET": influx_db, **filtered}
            yield Audited(sim, influx, influx_db, env, since)


def _filter(config: str) -> Any:
    from homeiq.shared.entity_filter import PatternFilter  # noqa: PLC0415

    return PatternFilter.from_settings(config, "")


def totals(report: dict[str, Any]) -> dict[str, int]:
    entities = report["entities"]
    return {"in_ha": sum(e["in_ha"] for e in entities), "found": sum(e["found"] for e in entities),
            "missing": sum(len(e["missing"]) for e in entities), "extra": sum(len(e["extra"]) for e in entities),
            "wrong": sum(len(e["wrong"]) for e in entities)}


async def test_a_complete_run_audits_to_zero(audited: Audited) -> None:
    code, report = await audited.audit()
    assert code == 0
    assert totals(report) == {"in_ha": 600, "found": 600, "missing": 0, "extra": 0, "wrong": 0}
    assert {e["status"] for e in report["entities"]} == {"complete"}


async def test_deleted_points_are_found_and_repaired(audited: Audited) -> None:
    gone = audited.sim.hub.sent[100:105]
    for sent in gone:
        audited.delete(sent.entity_id, sent.last_updated_us * 1000)
    code, report = await audited.audit()
    assert code == 1 and totals(report)["missing"] == 5
    missing = {(e["entity_id"], t) for e in report["entities"] for t in e["missing"]}
    assert missing == {(s.entity_id, s.last_updated_us * 1000) for s in gone}

    code, report = await audited.audit("--repair")
    assert code == 1 and report["repaired"] == 5  # found again, and published as backfill
    await wait_for(lambda: audited.influx.count(audited.database) >= 600, 20, "the repaired points written")
    code, report = await audited.audit()
    assert code == 0 and totals(report)["missing"] == 0
    points = {(p["entity_id"], p["time"]): p for p in audited.influx.points(audited.database)}
    for sent in gone:
        point = points[(sent.entity_id, sent.last_updated_us * 1000)]
        assert point["state_value"] == sent.state and point["source"] == "backfill" and point["device_id"]


async def test_a_state_1_us_off_is_one_missing_and_one_extra_not_a_match(audited: Audited) -> None:
    sent = audited.sim.hub.sent[300]
    time_ns = sent.last_updated_us * 1000
    off = msgspec.structs.replace(await audited.stream_event(sent.entity_id, time_ns), time_ns=time_ns + 1000)
    audited.delete(sent.entity_id, time_ns)
    await asyncio.to_thread(_write, audited.influx.url, audited.database, encode_line(off))
    code, report = await audited.audit()
    entity = next(e for e in report["entities"] if e["entity_id"] == sent.entity_id)
    assert code == 1 and entity["missing"] == [time_ns] and entity["extra"] == [time_ns + 1000]
    assert totals(report)["wrong"] == 0


async def test_a_different_state_at_the_same_time_is_wrong(audited: Audited) -> None:
    sent = audited.sim.hub.sent[200]
    time_ns = sent.last_updated_us * 1000
    event = await audited.stream_event(sent.entity_id, time_ns)
    assert event.new_state is not None
    changed = msgspec.structs.replace(event, new_state=msgspec.structs.replace(event.new_state, state="changed"))
    await asyncio.to_thread(_write, audited.influx.url, audited.database, encode_line(changed))  # same point
    code, report = await audited.audit()
    entity = next(e for e in report["entities"] if e["entity_id"] == sent.entity_id)
    assert code == 1 and entity["wrong"] == [[time_ns, sent.state, "changed"]] and not entity["extra"]


@pytest.mark.parametrize("audited", [EXCLUDE_SWITCHES], indirect=True)
async def test_an_entity_the_filter_excludes_is_reported_excluded_not_missing(audited: Audited) -> None:
    code, report = await audited.audit()
    statuses = {e["entity_id"]: e["status"] for e in report["entities"]}
    assert code == 0
    assert {s for e, s in statuses.items() if e.startswith("switch.")} == {"excluded"}
    assert {s for e, s in statuses.items() if not e.startswith("switch.")} == {"complete"}


async def test_only_the_entities_asked_for_are_audited(audited: Audited) -> None:
    code, report = await audited.audit("--entities", "sensor.*", "--entities", "light.*")
    assert code == 0 and report["entities"]
    assert all(e["entity_id"].split(".")[0] in ("sensor", "light") for e in report["entities"])


async def test_unreachable_home_assistant_exits_1_naming_the_url(audited: Audited) -> None:
    audited.env["HA_URL"] = "ws://127.0.0.1:1/api/websocket"
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "replayer"), "audit", "--since", "1h",
        env={**os.environ, **audited.env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1 and "ws://127.0.0.1:1/api/websocket" in stderr.decode()
    assert TOKEN not in stderr.decode()


def _write(url: str, database: str, line: str) -> None:
    import urllib.request  # noqa: PLC0415

    request = urllib.request.Request(f"{url}/write?db={database}&precision=ns", data=line.encode())
    with urllib.request.urlopen(request, timeout=10):
        pass


async def test_the_periodic_audit_exports_what_it_found_and_repairs_when_asked(
    audited: Audited, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from homeiq.replayer.service import Replayer  # noqa: PLC0415
    from homeiq.replayer.settings import AuditSettings, ReplayerSettings  # noqa: PLC0415
    from homeiq.shared.influx.settings import InfluxSettings  # noqa: PLC0415

    for sent in audited.sim.hub.sent[10:12]:
        audited.delete(sent.entity_id, sent.last_updated_us * 1000)
    await committed(audited.sim)
    monkeypatch.setenv("HA_TOKEN", TOKEN)
    settings = ReplayerSettings(
        redis_url=audited.env["REDIS_URL"], names=DEFAULT_NAMES, metrics_host="127.0.0.1", metrics_port=0,
        influx=InfluxSettings(url=audited.influx.url, api="v1", bucket=audited.database),
        audit=AuditSettings(interval_s=3600, ha_url=audited.sim.url, repair=True, settle_s=0.5)).validate()
    replayer = Replayer(settings, CollectorRegistry())
    stop = asyncio.Event()
    task = asyncio.create_task(replayer.run(stop))

    def sample(name: str) -> float:
        return replayer.metrics_registry.get_sample_value(name) or 0.0

    # The window covers the last hour: the simulator's first states, from before the collector first ran, too;
    # those are not missing (the pipeline never had them to write), nor repaired.
    try:
        await wait_for(lambda: sample("homeiq_audit_last_complete_timestamp_seconds") > 0, 60, "one audit")
        assert sample("homeiq_audit_missing_points") == 2 and sample("homeiq_audit_extra_points") == 0
        assert sample("homeiq_audit_repaired_total") == 2
        assert sample("homeiq_audit_interval_seconds") == 3600
        await wait_for(lambda: audited.influx.count(audited.database) >= 600, 20, "the repaired points")
        client = aioredis.Redis.from_url(audited.env["REDIS_URL"])
        try:  # kept for `replayer status`
            last = await client.hgetall(DEFAULT_NAMES.last_audit)
        finally:
            await client.aclose()
        assert last[b"missing"] == b"2" and last[b"before_first_run"] == str(
            len(audited.sim.hub.population.entities)).encode() and last[b"by"] == b"periodic audit"
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def committed(sim: SimServer) -> None:
    """Wait until HA's recorder has committed what it recorded (history shows nothing before its commit)."""
    await wait_for(lambda: not sim.hub.recorder.uncommitted, 15, "the recorder's commit")


async def _in_stream(client: aioredis.Redis, states: list[SentEvent]) -> bool:
    """Whether the stream holds every one of these state changes."""
    held = {(e.entity_id, e.time_ns) for e in await stream_events(client) if e.event_type == "state_changed"}
    return {(s.entity_id, s.last_updated_us * 1000) for s in states} <= held


async def _caught_up(client: aioredis.Redis) -> bool:
    """Whether the writers' group has read and acknowledged every entry of the stream."""
    group = (await client.xinfo_groups(DEFAULT_NAMES.stream))[0]
    return group["lag"] == 0 and group["pending"] == 0


async def test_repair_while_the_writers_are_behind_publishes_only_what_is_neither_in_influxdb_nor_in_the_stream(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    async with simulator(entity_count=30) as sim:
        since = datetime.fromtimestamp(now_ts() + 0.001, UTC).isoformat()
        env = {"HA_URL": sim.url, "HA_TOKEN": TOKEN, "REDIS_URL": redis_server.url, "INFLUXDB_URL": influx.url,
               "INFLUXDB_API": "v1", "INFLUXDB_BUCKET": influx_db}
        audited = Audited(sim, influx, influx_db, env, since)
        writer = writer_settings(redis_server.url, influx.url, influx_db)
        async with running_collector(sim, redis_server.url, tmp_path):
            await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
            async with running_writer(writer):
                await sim.hub.emit(300, rate_per_s=1000)
                await wait_for(lambda: influx.count(influx_db) >= 300, 20, "the first 300 written")
            # The writers stopped: 200 states wait in the stream, 50 of them read by the writer and not yet written.
            await sim.hub.emit(200, rate_per_s=1000)
            backlog = sim.hub.sent[300:]
            await wait_for(lambda: _in_stream(redis_client, backlog), 20, "the backlog in the stream")
            await redis_client.xreadgroup(DEFAULT_NAMES.group, writer.consumer, {DEFAULT_NAMES.stream: ">"}, count=50)
            moved = sim.hub.entities[backlog[0].entity_id]  # it moves before the writers catch up
            first_queued = await audited.stream_event(moved.entity_id, backlog[0].last_updated_us * 1000)
            old_area = enrichment_of(first_queued.enrichment).area_id
            sim.hub.move_entity(moved, next(a for a, _, _ in sim.hub.population.areas if a != old_area))
            gone = sim.hub.sent[100:103]  # written, then lost: in neither InfluxDB nor the stream
            for sent in gone:
                audited.delete(sent.entity_id, sent.last_updated_us * 1000)

            code, report = await audited.audit("--repair")
            assert (code, report["repaired"]) == (1, len(gone))
            assert totals(report)["missing"] == len(gone)
            assert sum(len(e["queued"]) for e in report["entities"]) == len(backlog)

            async with running_writer(writer):
                await wait_for(lambda: _caught_up(redis_client), 20, "the backlog and the repair written")
                code, report = await audited.audit()
        assert code == 0 and totals(report)["found"] == 500

    points = [p for p in influx.points(influx_db) if p["event_type"] == "state_changed"]
    keys = [(p["entity_id"], p["time"]) for p in points]
    assert len(keys) == len(set(keys)) == 500  # each state once: no second series for the moved entity
    repaired = {(s.entity_id, s.last_updated_us * 1000) for s in gone}
    assert {k for k, p in zip(keys, points, strict=True) if p["source"] == "backfill"} == repaired
    moved_times = {s.last_updated_us * 1000 for s in backlog if s.entity_id == moved.entity_id}
    assert moved_times and {p["area_id"] for p in points
                            if p["entity_id"] == moved.entity_id and p["time"] in moved_times} == {old_area}


HA_SCHEMA_TO_THE_SECOND = "influxdb:\n  precision: s\nhomeiq:\n  schema: ha\n"
SECOND_NS = 10**9


def _by_second(sent: list[SentEvent]) -> dict[tuple[str, int], list[SentEvent]]:
    """The states that have a point in the `ha` schema, by entity and the second their point is stamped with."""
    units: dict[tuple[str, int], list[SentEvent]] = {}
    for state in sent:
        if state.state not in ("unknown", "unavailable", ""):
            time_ns = state.last_updated_us * 1000
            units.setdefault((state.entity_id, time_ns - time_ns % SECOND_NS), []).append(state)
    return units


async def test_with_a_precision_the_audit_compares_at_it_and_counts_states_a_later_one_overwrote_not_missing(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    config = tmp_path / "homeiq.yaml"
    config.write_text(HA_SCHEMA_TO_THE_SECOND)
    to_the_second = InfluxSettings.layered({"config_path": str(config), "url": influx.url, "api": "v1",
                                            "bucket": influx_db, "timeout_s": 2})
    writer = writer_settings(redis_server.url, influx.url, influx_db, influx=to_the_second)
    async with simulator(entity_count=10) as sim:
        since_s = int(now_ts()) + 1  # a whole second after the simulator's first states (never published)
        env = {"HA_URL": sim.url, "HA_TOKEN": TOKEN, "REDIS_URL": redis_server.url, "INFLUXDB_URL": influx.url,
               "INFLUXDB_API": "v1", "INFLUXDB_BUCKET": influx_db, "HOMEIQ_CONFIG": str(config)}
        audited = Audited(sim, influx, influx_db, env, datetime.fromtimestamp(since_s, UTC).isoformat())
        async with running_collector(sim, redis_server.url, tmp_path / "spool"), running_writer(writer):
            await wait_for(lambda: sim.hub.subscribed and now_ts() > since_s, 10, "a subscription, and the second")
            await sim.hub.emit(300, rate_per_s=100)  # ~10 states of each entity in 3 s: some share a second
            await wait_for(lambda: _caught_up(redis_client), 20, "every state written")
            units = _by_second(sim.hub.sent)
            overwritten = sum(len(states) - 1 for states in units.values())
            assert overwritten and len(units) > len(sim.hub.entities)

            code, report = await audited.audit("--repair")
            assert (code, report["repaired"]) == (0, 0), totals(report)
            assert totals(report) == {"in_ha": len(units) + overwritten, "found": len(units), "missing": 0,
                                      "extra": 0, "wrong": 0}
            assert sum(len(e["collapsed"]) for e in report["entities"]) == overwritten

            entity_id, second_ns = next(key for key, states in units.items() if len(states) > 1)
            domain, _, object_id = entity_id.partition(".")
            influx.query(f"DELETE FROM /.*/ WHERE \"domain\" = '{domain}' AND \"entity_id\" = '{object_id}' "
                         f"AND time = {second_ns}", influx_db, epoch=None)
            code, report = await audited.audit("--repair")  # the one point lost: its second's last state, once
            entity = next(e for e in report["entities"] if e["entity_id"] == entity_id)
            assert (code, entity["missing"], report["repaired"]) == (1, [second_ns], 1)
            await wait_for(lambda: _caught_up(redis_client), 20, "the repair written")
            code, report = await audited.audit()
            assert code == 0 and totals(report)["found"] == len(units)  # the repaired point holds the last state


async def test_states_recorded_before_the_pipeline_first_ran_are_not_missing(
    audited: Audited, redis_client: aioredis.Redis,
) -> None:
    # ha-sim recorded each entity's first state before the collector ever ran: a window that starts earlier
    # holds 30 states the pipeline never saw. Those are not the pipeline's misses; a point deleted later is.
    earlier = datetime.fromtimestamp(datetime.fromisoformat(audited.since).timestamp() - 60, UTC).isoformat()
    code, report = await audited.audit("--since", earlier)
    assert totals(report)["missing"] == 0, report
    assert sum(len(e["before_first_run"]) for e in report["entities"]) == 30
    assert report["first_run_ns"] and code == 0
    table = await audited.audit_text("--since", earlier)
    assert "before first run" in table and "30" in table
    gone = audited.sim.hub.sent[10]
    audited.delete(gone.entity_id, gone.last_updated_us * 1000)
    code, report = await audited.audit("--since", earlier)
    assert code == 1 and totals(report)["missing"] == 1  # a real miss still fails, and only it counts
    assert sum(len(e["before_first_run"]) for e in report["entities"]) == 30
    # Redis and the collector's state directory both lost the mark, and a restart set a new one, later than
    # states the pipeline wrote from live events: were it believed, losses from before it would hide.
    await redis_client.set(DEFAULT_NAMES.first_run, time.time_ns() - 10**9)
    code, report = await audited.audit("--since", earlier)
    assert (code, totals(report)["missing"], report["first_run_ns"]) == (1, 31, None)
    assert "live point older than the first-run mark" in report["first_run_doubt"]
    assert not any(e["before_first_run"] for e in report["entities"])
    await redis_client.set(DEFAULT_NAMES.first_run, time.time_ns() + 3600 * 10**9)  # a clock an hour ahead
    code, report = await audited.audit("--since", earlier)
    assert (code, totals(report)["missing"], report["first_run_ns"]) == (1, 31, None)
    assert "in the future" in report["first_run_doubt"]


async def test_the_first_run_mark_is_set_once_and_is_unknown_for_a_pipeline_that_ran_before_it(
    redis_client: aioredis.Redis, tmp_path: Path,
) -> None:
    from homeiq.collector.resume import FirstRun  # noqa: PLC0415
    from homeiq.replayer.audit import first_run_ns  # noqa: PLC0415
    from homeiq.shared.stream import ensure_group  # noqa: PLC0415

    names = DEFAULT_NAMES
    await ensure_group(redis_client, names)  # a writer that started first: an empty stream is no earlier run
    before = time.time_ns()
    await FirstRun(redis_client, names, tmp_path / "a").mark(0)
    first = await first_run_ns(redis_client, names)
    assert first is not None and before <= first <= time.time_ns()
    await FirstRun(redis_client, names, tmp_path / "b").mark(0)
    assert await first_run_ns(redis_client, names) == first  # never moved by a later process
    await redis_client.delete(names.first_run)
    await redis_client.xadd(names.stream, {"v": "1", "e": "{}"})  # ran before the mark existed
    await asyncio.sleep(0.01)
    await FirstRun(redis_client, names, tmp_path / "c").mark(0)
    assert await first_run_ns(redis_client, names) is None and await redis_client.get(names.first_run) == b"0"
    await FirstRun(redis_client, names, tmp_path / "a").mark(0)  # a collector that knew a time: 0 stays lowest
    assert await redis_client.get(names.first_run) == b"0"
