"""Outages are never poison; only an entry that keeps crashing its reader is (real redis-server, influxd)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from homeiq.local.services import InfluxServer, RedisServer
from homeiq.replayer.cli import app
from homeiq.replayer.crashes import CrashLedger
from homeiq.replayer.reclaim import reclaim_pass
from homeiq.shared import events
from homeiq.shared.health import Readiness
from homeiq.shared.influx import batch
from homeiq.shared.influx.batch import BatchWriter
from homeiq.shared.influx.metrics import WriterMetrics
from homeiq.shared.influx.sink import v1_sink
from homeiq.shared.stream import DEAD_ORIGINAL_ID, DEAD_REASON, DEFAULT_NAMES, FIELD_EVENT
from tests.events import state_payload
from tests.helpers import FaultyHttp, Service, wait_for
from tests.writer_harness import fill, restart_during_outage, write_requests

runner = CliRunner()
STREAM, GROUP = DEFAULT_NAMES.stream, DEFAULT_NAMES.group


def env(redis_server: RedisServer, influx_url: str, database: str) -> dict[str, str]:
    return {"REDIS_URL": redis_server.url, "INFLUXDB_URL": influx_url, "INFLUXDB_API": "v1",
            "INFLUXDB_BUCKET": database}


async def reclaim_cli(redis_server: RedisServer, influx_url: str, database: str, *args: str) -> dict[str, Any]:
    result = await asyncio.to_thread(runner.invoke, app, ["reclaim", "--json", *args],
                                     env=env(redis_server, influx_url, database))
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


async def deliveries(client: aioredis.Redis) -> dict[bytes, int]:
    rows: Any = await client.xpending_range(STREAM, GROUP, "-", "+", 100)
    return {r["message_id"]: int(r["times_delivered"]) for r in rows}


async def test_writer_restarts_during_an_influxdb_outage_dead_letter_nothing(
    redis_client: aioredis.Redis, redis_server: RedisServer, influx: InfluxServer, influx_db: str
) -> None:
    # The reported incident: InfluxDB refuses, the writer restarts 11 times, then an operator reclaims.
    await fill(redis_client, [state_payload(n) for n in range(3)])
    proxy = FaultyHttp(influx.url)
    proxy.faults = [(503, None)] * 1000
    await proxy.start()
    try:
        await restart_during_outage(redis_server.url, proxy, influx_db, times=12)
    finally:
        await proxy.stop()
    assert set((await deliveries(redis_client)).values()) == {1}  # restarts re-read without re-delivering

    summary = await reclaim_cli(redis_server, influx.url, influx_db, "--min-idle", "0")  # InfluxDB is back
    assert summary["dead_lettered"] == 0 and summary["written"] == 3
    assert await redis_client.xlen(DEFAULT_NAMES.dead) == 0
    assert (await redis_client.xpending(STREAM, GROUP))["pending"] == 0
    assert influx.count(influx_db) == 3


async def make_suspects(client: aioredis.Redis, n: int, times_delivered: int = 20) -> list[bytes]:
    """`n` entries a dead writer held, claimed so often since that Redis counts `times_delivered`."""
    await fill(client, [state_payload(i) for i in range(n)])
    await client.xreadgroup(GROUP, "dead-writer", {STREAM: ">"}, count=n)
    ids = list(await deliveries(client))
    await client.xclaim(STREAM, GROUP, "dead-writer", 0, ids, retrycount=times_delivered)
    return ids


async def test_a_suspect_crashing_its_reader_is_dead_lettered_after_max_crashes_and_not_before(
    redis_client: aioredis.Redis, redis_server: RedisServer, influx: InfluxServer, influx_db: str
) -> None:
    crasher, other = await make_suspects(redis_client, 2)
    # A replayer still reading a suspect (its lease runs) is not a crash.
    alive = CrashLedger(redis_client, DEFAULT_NAMES, "replayer", lease_ms=60_000)
    await alive.mark(other)
    # Replayers that died while reading `crasher` (their lease ran out: nobody released the marker).
    for crash in (1, 2):
        await CrashLedger(redis_client, DEFAULT_NAMES, "replayer", lease_ms=0).mark(crasher)
        # --min-idle of an hour: this pass only settles the ledger, it claims nothing.
        summary = await reclaim_cli(redis_server, influx.url, influx_db, "--min-idle", "3600000", "--max-crashes", "2")
        assert await alive.crashes(crasher) == (crash if crash < 2 else 0)  # forgotten once dead-lettered
        assert await alive.crashes(other) == 0
        if crash < 2:
            assert summary["dead_lettered"] == 0 and await redis_client.xlen(DEFAULT_NAMES.dead) == 0
            assert set(await deliveries(redis_client)) == {crasher, other}
    assert summary["dead_lettered"] == 1
    (dead,) = await redis_client.xrange(DEFAULT_NAMES.dead)
    assert dead[1][DEAD_REASON] == b"crashed_reader" and dead[1][DEAD_ORIGINAL_ID] == crasher
    assert dead[1][FIELD_EVENT] == state_payload(0)  # the payload is kept for a redrive
    assert set(await deliveries(redis_client)) == {other}
    await alive.release()


async def test_an_entry_that_kills_the_replayer_while_read_is_dead_lettered_as_crashed_reader(
    redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    crasher, good = await make_suspects(redis_client, 2, times_delivered=1)
    poison = state_payload(0)

    def decode_or_die(payload: bytes) -> events.NormalisedEvent:
        if payload == poison:  # stands for a C-level fault or an OOM: nothing the write path can catch
            raise MemoryError
        return events.decode_event(payload)

    monkeypatch.setattr(batch, "decode_event", decode_or_die)
    sink = v1_sink(influx.url, influx_db, "", "", "", 10)
    try:
        for crash in (1, 2):
            # Each pass is a fresh replayer process; lease 0: the dead one's marker counts at once.
            ledger = CrashLedger(redis_client, DEFAULT_NAMES, "replayer", max_crashes=2, lease_ms=0)
            writer = BatchWriter(redis_client, DEFAULT_NAMES, sink, WriterMetrics(CollectorRegistry()),
                                 Readiness(), "replayer")
            with pytest.raises(MemoryError):
                await reclaim_pass(redis_client, DEFAULT_NAMES, "replayer", writer, 0, 100, asyncio.Event(),
                                   max_deliveries=1, ledger=ledger)
            assert await ledger.crashes(crasher) == crash - 1
            assert await redis_client.xlen(DEFAULT_NAMES.dead) == 0
        ledger = CrashLedger(redis_client, DEFAULT_NAMES, "replayer", max_crashes=2, lease_ms=0)
        writer = BatchWriter(redis_client, DEFAULT_NAMES, sink, WriterMetrics(CollectorRegistry()), Readiness(),
                             "replayer")
        summary = await reclaim_pass(redis_client, DEFAULT_NAMES, "replayer", writer, 0, 100, asyncio.Event(),
                                     max_deliveries=1, ledger=ledger)
    finally:
        await sink.close()
    assert summary.dead_lettered == 1 and summary.written == 1 and summary.suspects == 1
    (dead,) = await redis_client.xrange(DEFAULT_NAMES.dead)
    assert dead[1][DEAD_REASON] == b"crashed_reader" and dead[1][DEAD_ORIGINAL_ID] == crasher
    assert (await redis_client.xpending(STREAM, GROUP))["pending"] == 0
    assert influx.count(influx_db) == 1 and good not in await deliveries(redis_client)


async def test_a_replayer_killed_while_influxdb_is_down_counts_no_crash(
    redis_client: aioredis.Redis, redis_server: RedisServer, influx: InfluxServer, influx_db: str, log_dir: Path
) -> None:
    await make_suspects(redis_client, 3)
    proxy = FaultyHttp(influx.url)
    proxy.faults = [(503, None)] * 1000
    await proxy.start()
    service_env = {**env(redis_server, proxy.url, influx_db), "REPLAYER_MIN_IDLE_MS": "1",
                   "REPLAYER_INTERVAL_S": "0.2", "REPLAYER_MAX_CRASHES": "2"}
    try:
        for attempt in range(3):  # SIGKILLed three times while it writes a suspect InfluxDB refuses
            before = write_requests(proxy)
            replayer = Service("replayer", service_env, log_dir, f"replayer-{attempt}")
            await wait_for(lambda b=before: write_requests(proxy) > b, 30, "the replayer writing a suspect")
            replayer.kill()
            # No marker left behind: once its lease ran out, one would count as a crash of that entry.
            assert not await redis_client.exists(DEFAULT_NAMES.suspects)
        proxy.faults = []  # InfluxDB is back
        replayer = Service("replayer", service_env, log_dir, "replayer-last")
        try:
            await wait_for(lambda: influx.count(influx_db) == 3, 30, "the three suspects written")
            await wait_for(lambda: _none_pending(redis_client), 10, "every ack")
        finally:
            assert replayer.terminate() == 0
    finally:
        await proxy.stop()
    assert await redis_client.xlen(DEFAULT_NAMES.dead) == 0
    assert not await redis_client.exists(DEFAULT_NAMES.crashes)


async def _none_pending(client: aioredis.Redis) -> bool:
    return int((await client.xpending(STREAM, GROUP))["pending"]) == 0


async def test_every_entry_delivered_too_often_is_a_suspect_between_entries_its_replayer_already_holds(
    redis_client: aioredis.Redis, influx: InfluxServer, influx_db: str
) -> None:
    # A dead writer left five entries; three were claimed 50 times since and are idle for an hour. The other two
    # were just claimed by this replayer's consumer name (a pass that gave up, or a replayer of the same name):
    # not idle, so this pass does not claim them, but they lie between the three it does.
    ids = await make_suspects(redis_client, 5, times_delivered=1)
    redelivered, held = ids[::2], ids[1::2]
    await redis_client.xclaim(STREAM, GROUP, "dead-writer", 0, redelivered, idle=3_600_000, retrycount=50)
    await redis_client.xclaim(STREAM, GROUP, "replayer", 0, held)
    sink = v1_sink(influx.url, influx_db, "", "", "", 10)
    try:
        writer = BatchWriter(redis_client, DEFAULT_NAMES, sink, WriterMetrics(CollectorRegistry()), Readiness(),
                             "replayer")
        summary = await reclaim_pass(redis_client, DEFAULT_NAMES, "replayer", writer, 60_000, 100, asyncio.Event(),
                                     max_deliveries=10)
    finally:
        await sink.close()
    assert (summary.reclaimed, summary.written) == (len(redelivered), len(redelivered))
    assert summary.suspects == len(redelivered)  # each written alone, under the crash ledger
    assert set(await deliveries(redis_client)) == set(held)
