"""The operator's CLI, driven with typer's CliRunner against real redis-server and influxd."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from homeiq.local.services import InfluxServer, RedisServer, free_port
from homeiq.replayer import operations
from homeiq.replayer.cli import app
from homeiq.replayer.reclaim import reclaim_pass
from homeiq.replayer.settings import ReplayerSettings
from homeiq.shared.health import Readiness
from homeiq.shared.influx.batch import BatchWriter
from homeiq.shared.influx.metrics import WriterMetrics
from homeiq.shared.influx.sink import v1_sink
from homeiq.shared.stream import DEFAULT_NAMES, FIELD_EVENT, FIELD_VERSION, connect
from tests.events import state_payload
from tests.helpers import FaultyHttp, wait_for
from tests.writer_harness import fill

runner = CliRunner()
STREAM = DEFAULT_NAMES.stream


def env(redis_server: RedisServer, influx_url: str, database: str) -> dict[str, str]:
    return {"REDIS_URL": redis_server.url, "INFLUXDB_URL": influx_url, "INFLUXDB_API": "v1",
            "INFLUXDB_BUCKET": database}


def sync_client(redis_server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url)


def leave_pending(client: redis.Redis, consumer: str, count: int) -> None:
    """A writer that read entries and died."""
    client.xreadgroup(DEFAULT_NAMES.group, consumer, {STREAM: ">"}, count=count)


def test_reclaim_drains_a_dead_writers_10000_entries(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str
) -> None:
    asyncio.run(fill_sync(redis_server, [state_payload(n) for n in range(10_000)]))
    client = sync_client(redis_server)
    leave_pending(client, "dead-writer", 10_000)
    result = runner.invoke(app, ["pending", "--json"], env=env(redis_server, influx.url, influx_db))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["pending"] == 10_000
    assert report["consumers"][0]["name"] == "dead-writer" and report["consumers"][0]["max_deliveries"] == 1

    result = runner.invoke(app, ["reclaim", "--min-idle", "0", "--json"], env=env(redis_server, influx.url, influx_db))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary == {"reclaimed": 10_000, "written": 10_000, "suspects": 0, "dead_lettered": 0, "lost": 0,
                       "completed": True, "dry_run": False}
    assert influx.count(influx_db) == 10_000
    assert client.xpending(STREAM, DEFAULT_NAMES.group)["pending"] == 0

    table = runner.invoke(app, ["pending"], env=env(redis_server, influx.url, influx_db))
    assert table.exit_code == 0 and "0 pending" in table.stdout and "dead-writer" in table.stdout


async def fill_sync(redis_server: RedisServer, payloads: list[bytes], events_per_entry: int = 1) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await fill(client, payloads, events_per_entry)
    finally:
        await client.aclose()


def test_reclaim_writes_every_event_of_a_dead_writers_packed_entries_beside_single_ones(
    redis_server: RedisServer, influx: InfluxServer, influx_db: str
) -> None:
    asyncio.run(fill_sync(redis_server, [state_payload(n) for n in range(6_400)], events_per_entry=64))
    asyncio.run(fill_sync(redis_server, [state_payload(n) for n in range(6_400, 6_500)]))
    client = sync_client(redis_server)
    leave_pending(client, "dead-writer", 10_000)
    result = runner.invoke(app, ["reclaim", "--min-idle", "0", "--json"], env=env(redis_server, influx.url, influx_db))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["reclaimed"] == 100 + 100 and summary["written"] == 6_500  # entries claimed, events written
    assert influx.count(influx_db) == 6_500
    assert client.xpending(STREAM, DEFAULT_NAMES.group)["pending"] == 0


def test_poison_goes_to_dead_letter_with_reasons_and_redrive_writes_it_once_fixed(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str
) -> None:
    asyncio.run(fill_sync(redis_server, [state_payload(n) for n in range(20)]))
    client = sync_client(redis_server)
    client.xadd(STREAM, {FIELD_VERSION: b"1", FIELD_EVENT: b"{broken"})
    leave_pending(client, "dead-writer", 100)
    # InfluxDB refuses every line (say, a retention policy or a limit): all of it ends in dead-letter.
    proxy = FaultyHttp(influx.url)
    port = free_port()
    asyncio.run(_with_proxy(proxy, port, lambda: runner.invoke(
        app, ["reclaim", "--min-idle", "0"], env=env(redis_server, f"http://127.0.0.1:{port}", influx_db))))
    assert influx.count(influx_db) == 0
    letters = runner.invoke(app, ["dead-letter", "list", "--json"], env=env(redis_server, influx.url, influx_db))
    reasons = sorted(d["reason"] for d in json.loads(letters.stdout))
    assert reasons == ["rejected"] * 20 + ["undecodable"]
    assert client.xpending(STREAM, DEFAULT_NAMES.group)["pending"] == 0

    only = runner.invoke(app, ["dead-letter", "list", "--reason", "undecodable", "--json"],
                         env=env(redis_server, influx.url, influx_db))
    assert [d["reason"] for d in json.loads(only.stdout)] == ["undecodable"]

    dry = runner.invoke(app, ["dead-letter", "redrive", "--all", "--dry-run", "--json"],
                        env=env(redis_server, influx.url, influx_db))
    assert len(json.loads(dry.stdout)) == 21 and client.xlen(DEFAULT_NAMES.dead) == 21

    # The cause is fixed: redrive puts them back, and a writer (here: a reclaim pass) writes them.
    moved = runner.invoke(app, ["dead-letter", "redrive", "--all", "--json"], env=env(redis_server, influx.url,
                                                                                      influx_db))
    assert moved.exit_code == 0, moved.output
    assert len([m for m in json.loads(moved.stdout) if m["new_id"]]) == 21
    assert client.xlen(DEFAULT_NAMES.dead) == 0
    leave_pending(client, "writer", 100)
    result = runner.invoke(app, ["reclaim", "--min-idle", "0", "--json"], env=env(redis_server, influx.url, influx_db))
    assert json.loads(result.stdout)["written"] == 20
    assert influx.count(influx_db) == 20
    assert [json.loads(runner.invoke(app, ["dead-letter", "list", "--json"],
                                     env=env(redis_server, influx.url, influx_db)).stdout)[0]["reason"]] == [
        "undecodable"]  # still broken after the redrive: back in dead-letter, once

    purged = runner.invoke(app, ["dead-letter", "purge", "--all", "--yes", "--json"], env=env(redis_server, influx.url,
                                                                                     influx_db))
    assert json.loads(purged.stdout) == {"removed": 1}


async def _with_proxy(proxy: FaultyHttp, port: int, action: object) -> None:
    proxy.faults = [(400, None)] * 1000
    await proxy.start(port)
    try:
        result = await asyncio.to_thread(action)  # type: ignore[arg-type]
        assert result.exit_code == 0, result.output
    finally:
        await proxy.stop()


async def test_entries_delivered_too_often_are_written_one_at_a_time_not_dead_lettered(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str
) -> None:
    # Formerly test_entries_delivered_too_often_are_dead_lettered. A delivery count says only that the
    # entry was read or claimed often (outages and restarts do that too), so past --max-deliveries an
    # entry is a suspect: written alone, under the crash ledger, and dead-lettered only if it keeps
    # crashing its reader (test_replayer_crashes.py).
    await fill(redis_client, [state_payload(n) for n in range(5)])
    await redis_client.xreadgroup(DEFAULT_NAMES.group, "w1", {STREAM: ">"}, count=10)  # three writers read
    await redis_client.xautoclaim(STREAM, DEFAULT_NAMES.group, "w2", 0, "0-0")  # them in turn and died
    await redis_client.xautoclaim(STREAM, DEFAULT_NAMES.group, "w3", 0, "0-0")
    proxy = FaultyHttp(influx.url)  # forwards everything: counts the requests
    await proxy.start()
    try:
        result = await asyncio.to_thread(
            runner.invoke, app, ["reclaim", "--min-idle", "0", "--max-deliveries", "2", "--json"],
            env=env(redis_server, proxy.url, influx_db))
    finally:
        await proxy.stop()
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["written"], summary["suspects"], summary["dead_lettered"]) == (5, 5, 0)
    writes = [body for path, _, body in proxy.requests if path.startswith("/write") and body]  # not readiness
    assert len(writes) == 5 and all(body.count(b"\n") == 0 for body in writes)  # one entry per request
    assert await redis_client.xlen(DEFAULT_NAMES.dead) == 0
    assert influx.count(influx_db) == 5


def test_two_replayers_at_once_never_double_dead_letter_or_lose(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str
) -> None:
    payloads = [state_payload(n) for n in range(2000)]
    payloads[::100] = [b"{poison"] * 20
    asyncio.run(fill_sync(redis_server, payloads))
    leave_pending(sync_client(redis_server), "dead-writer", 2000)

    async def both() -> None:
        client = connect(redis_server.url)
        sinks = [v1_sink(influx.url, influx_db, "", "", "", 10) for _ in range(2)]
        try:
            writers = [BatchWriter(client, DEFAULT_NAMES, sink, WriterMetrics(CollectorRegistry()), Readiness(),
                                   f"replayer-{i}") for i, sink in enumerate(sinks)]
            await asyncio.gather(*(reclaim_pass(client, DEFAULT_NAMES, f"replayer-{i}", w, 0, 50, asyncio.Event())
                                   for i, w in enumerate(writers)))
        finally:
            for sink in sinks:
                await sink.close()
            await client.aclose()

    asyncio.run(both())
    client = sync_client(redis_server)
    assert client.xlen(DEFAULT_NAMES.dead) == 20  # each poison once
    assert influx.count(influx_db) == 1980
    assert client.xpending(STREAM, DEFAULT_NAMES.group)["pending"] == 0


def test_trim_keeps_everything_still_needed(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str
) -> None:
    asyncio.run(fill_sync(redis_server, [state_payload(n) for n in range(100)]))
    client = sync_client(redis_server)
    client.xreadgroup(DEFAULT_NAMES.group, "w", {STREAM: ">"}, count=60)
    ids = [entry_id for entry_id, _ in client.xrange(STREAM)]
    client.xack(STREAM, DEFAULT_NAMES.group, *ids[:30])  # 30 acked, 30 pending, 40 never delivered
    dry = runner.invoke(app, ["trim", "--dry-run", "--json"], env=env(redis_server, influx.url, influx_db))
    plan = json.loads(dry.stdout)
    assert plan["would_remove"] == 30 and plan["min_id"] == ids[30].decode() and "pending" in plan["why_safe"]
    assert client.xlen(STREAM) == 100
    done = runner.invoke(app, ["trim", "--json"], env=env(redis_server, influx.url, influx_db))
    assert json.loads(done.stdout)["removed"] == 30
    assert [e for e, _ in client.xrange(STREAM)] == ids[30:]


def test_unreachable_redis_exits_1_naming_the_url(tmp_path: Path) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    result = runner.invoke(app, ["pending"], env={"REDIS_URL": url})
    assert result.exit_code == 1
    assert "127.0.0.1" in result.output and "REDIS_URL" in result.output and "hunter2" not in result.output


def test_usage_errors_exit_2() -> None:
    assert runner.invoke(app, ["dead-letter", "redrive"]).exit_code == 2
    assert runner.invoke(app, ["dead-letter", "purge", "--before", "yesterday"]).exit_code == 2
    assert runner.invoke(app, ["pending"], env={"REDIS_URL": "localhost"}).exit_code == 2
    assert runner.invoke(app, ["status", "--collector-metrics", "ftp://127.0.0.1/metrics"]).exit_code == 2
    assert runner.invoke(app, ["dead-letter", "show"]).exit_code == 2
    for command in (["--help"], ["pending", "--help"], ["reclaim", "--help"], ["trim", "--help"],
                    ["status", "--help"], ["dead-letter", "show", "--help"],
                    ["dead-letter", "list", "--help"], ["dead-letter", "redrive", "--help"],
                    ["dead-letter", "purge", "--help"], ["run", "--help"]):
        assert runner.invoke(app, command).exit_code == 0, command


REPLAYER = str(Path(sys.executable).parent / "replayer")


def pending_rows(client: redis.Redis) -> list[tuple[bytes, bytes, int]]:
    rows = client.xpending_range(STREAM, DEFAULT_NAMES.group, "-", "+", 1000)
    return [(r["message_id"], r["consumer"], r["times_delivered"]) for r in rows]


def reclaim_env(redis_server: RedisServer, influx_url: str, database: str, give_up_s: str) -> dict[str, str]:
    return {**os.environ, **env(redis_server, influx_url, database), "INFLUXDB_TIMEOUT_S": "2",
            "REPLAYER_GIVE_UP_AFTER_S": give_up_s}


def test_reclaim_gives_up_on_a_missing_database_and_leaves_everything_pending(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer
) -> None:
    asyncio.run(fill_sync(redis_server, [state_payload(n) for n in range(20)]))
    client = sync_client(redis_server)
    leave_pending(client, "dead-writer", 20)
    before = pending_rows(client)
    started = time.monotonic()
    result = subprocess.run([REPLAYER, "reclaim", "--min-idle", "0"], capture_output=True, text=True, timeout=60,
                            env=reclaim_env(redis_server, influx.url, "nosuchdb", "2"), check=False)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert elapsed < 15, elapsed  # 2 s, one request timeout, start-up
    assert influx.url in result.stderr and "nosuchdb" in result.stderr and "404" in result.stderr
    assert pending_rows(client) == before  # not even claimed: owners and delivery counts as they were
    assert client.xlen(DEFAULT_NAMES.dead) == 0


async def test_reclaim_gives_up_when_influxdb_refuses_the_writes(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str
) -> None:
    await fill(redis_client, [state_payload(n) for n in range(20)])
    await redis_client.xreadgroup(DEFAULT_NAMES.group, "dead-writer", {STREAM: ">"}, count=20)
    client = sync_client(redis_server)
    before = pending_rows(client)
    proxy = FaultyHttp(influx.url)  # its readiness check passes; every write is answered 503
    proxy.faults = [(503, None)] * 1000
    await proxy.start()
    try:
        started = time.monotonic()
        result = await asyncio.to_thread(
            subprocess.run, [REPLAYER, "reclaim", "--min-idle", "0"], capture_output=True, text=True, timeout=60,
            env=reclaim_env(redis_server, proxy.url, influx_db, "2"), check=False)
        elapsed = time.monotonic() - started
    finally:
        await proxy.stop()
    assert result.returncode == 1, result.stderr
    assert elapsed < 15, elapsed
    assert proxy.url in result.stderr and "503" in result.stderr
    assert [row[0] for row in pending_rows(client)] == [row[0] for row in before]  # all still pending
    assert client.xlen(DEFAULT_NAMES.dead) == 0 and influx.count(influx_db) == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_reclaim_stops_promptly_on_a_signal_and_leaves_everything_pending(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str,
    sig: signal.Signals
) -> None:
    await fill(redis_client, [state_payload(n) for n in range(20)])
    await redis_client.xreadgroup(DEFAULT_NAMES.group, "dead-writer", {STREAM: ">"}, count=20)
    client = sync_client(redis_server)
    before = pending_rows(client)
    proxy = FaultyHttp(influx.url)
    proxy.faults = [(503, None)] * 1000
    await proxy.start()
    process = await asyncio.create_subprocess_exec(
        REPLAYER, "reclaim", "--min-idle", "0", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=reclaim_env(redis_server, proxy.url, influx_db, "600"))
    try:
        await wait_for(lambda: any(p.startswith("/write") and b for p, _, b in proxy.requests), 30, "a write")
        process.send_signal(sig)  # Ctrl-C or a stop, while InfluxDB keeps refusing
        started = time.monotonic()
        _, raw_stderr = await asyncio.wait_for(process.communicate(), 30)
        elapsed = time.monotonic() - started
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await proxy.stop()
    stderr = raw_stderr.decode()
    assert process.returncode == 1, stderr
    assert elapsed < 5, elapsed
    assert "interrupted" in stderr and "pending" in stderr
    assert [row[0] for row in pending_rows(client)] == [row[0] for row in before]
    assert client.xlen(DEFAULT_NAMES.dead) == 0


def claimers(client: redis.Redis) -> set[str]:
    """The consumers of the group, but the dead writer whose entries they claimed."""
    return {c["name"].decode() for c in client.xinfo_consumers(STREAM, DEFAULT_NAMES.group)} - {"dead-writer"}


def test_each_reclaim_run_claims_under_a_name_of_its_own_never_the_daemons(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str
) -> None:
    asyncio.run(fill_sync(redis_server, [state_payload(n) for n in range(4)]))
    client = sync_client(redis_server)
    for _ in range(2):  # two runs, one after the other (in one process: even the pid is the same)
        leave_pending(client, "dead-writer", 2)
        result = runner.invoke(app, ["reclaim", "--min-idle", "0", "--json"],
                               env=env(redis_server, influx.url, influx_db))
        assert json.loads(result.stdout)["written"] == 2, result.output
    daemon = ReplayerSettings().validate().reclaim.consumer
    assert daemon == ReplayerSettings().validate().reclaim.consumer  # stable: a restart is the same consumer
    names = claimers(client)
    assert len(names) == 2 and daemon not in names, (daemon, names)


async def test_what_a_reclaim_run_leaves_pending_the_daemon_reclaims_and_the_runs_consumer_is_pruned(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str
) -> None:
    await fill(redis_client, [state_payload(n) for n in range(20)])
    await redis_client.xreadgroup(DEFAULT_NAMES.group, "dead-writer", {STREAM: ">"}, count=20)
    proxy = FaultyHttp(influx.url)  # its readiness check passes; every write is answered 503
    proxy.faults = [(503, None)] * 1000
    await proxy.start()
    try:
        result = await asyncio.to_thread(
            subprocess.run, [REPLAYER, "reclaim", "--min-idle", "0"], capture_output=True, text=True, timeout=60,
            env=reclaim_env(redis_server, proxy.url, influx_db, "2"), check=False)
    finally:
        await proxy.stop()
    assert result.returncode == 1, result.stderr
    client = sync_client(redis_server)
    (run,) = claimers(client)  # the run gave up and exited: its claims are still pending under its name
    assert {row[1].decode() for row in pending_rows(client)} == {run}

    daemon = ReplayerSettings().validate().reclaim.consumer
    sink = v1_sink(influx.url, influx_db, "", "", "", 10)
    try:
        writer = BatchWriter(redis_client, DEFAULT_NAMES, sink, WriterMetrics(CollectorRegistry()), Readiness(),
                             daemon)
        summary = await reclaim_pass(redis_client, DEFAULT_NAMES, daemon, writer, 0, 100, asyncio.Event())
    finally:
        await sink.close()
    assert summary.written == 20 and influx.count(influx_db) == 20
    assert client.xpending(STREAM, DEFAULT_NAMES.group)["pending"] == 0

    await wait_for(lambda: _idle_over(client, run, 300), 10, "the run's consumer idle for 0.3 s")
    assert run in await operations.prune_consumers(redis_client, DEFAULT_NAMES, idle_s=0.3)
    assert run not in claimers(client)


def _idle_over(client: redis.Redis, consumer: str, threshold_ms: int) -> bool:
    infos = client.xinfo_consumers(STREAM, DEFAULT_NAMES.group)
    return any(int(i["idle"]) > threshold_ms for i in infos if i["name"] == consumer.encode())


async def test_reclaim_says_what_it_waits_on_while_influxdb_hangs(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx_db: str
) -> None:
    await fill(redis_client, [state_payload(n) for n in range(20)])
    await redis_client.xreadgroup(DEFAULT_NAMES.group, "dead-writer", {STREAM: ">"}, count=20)
    held: list[asyncio.StreamWriter] = []

    async def hang(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # reads the request, never answers: a hung InfluxDB

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    env = {**reclaim_env(redis_server, url, influx_db, "6"), "INFLUXDB_TIMEOUT_S": "30"}
    process = await asyncio.create_subprocess_exec(REPLAYER, "reclaim", "--min-idle", "0", stdout=subprocess.PIPE,
                                                   stderr=subprocess.PIPE, env=env)
    started = time.monotonic()
    lines: list[tuple[float, str]] = []
    try:
        assert process.stderr is not None
        while raw := await asyncio.wait_for(process.stderr.readline(), 30):
            lines.append((time.monotonic() - started, raw.decode()))
        await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        server.close()
        for writer in held:
            writer.close()
    assert process.returncode == 1
    waiting = [(at, line) for at, line in lines if "waiting" in line and url in line]
    assert waiting, lines
    assert waiting[0][0] < lines[-1][0] - 3, lines  # said within seconds, not silent until it gives up
    assert len(waiting) >= 2 and any("s so far" in line for _, line in waiting), lines
    assert "readiness" in waiting[0][1] and "give up" in waiting[0][1], waiting[0][1]
    # Given up, it does not wait out the check in flight (up to INFLUXDB_TIMEOUT_S): nothing was claimed yet.
    assert lines[-1][0] - waiting[0][0] < 8, lines
    assert "no answer from InfluxDB" in lines[-1][1] and "not checked yet" not in "".join(line for _, line in lines)
