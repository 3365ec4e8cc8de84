"""What the collector counts as durable, and what it does when that turns out wrong: a restart while Redis is
down, and a Redis that comes back without what it had acknowledged."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from homeiq.collector import service
from homeiq.local.services import RedisServer
from tests.collector_harness import every_state_once, running_collector, service_calls, simulator
from tests.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]




async def test_a_restart_while_redis_is_down_publishes_each_spooled_state_once(tmp_path: Path) -> None:
    """The watermark cannot be saved while Redis is down, so the restarted collector backfills from an older one:
    the states its spool holds must count as published, or the backfill and the spool both publish them."""
    redis_server = RedisServer(tmp_path / "redis", None).start()
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        async with simulator(commit_interval_s=0) as sim:
            async with running_collector(sim, redis_server.url, tmp_path / "spool") as first:
                await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
                await sim.hub.emit(100, rate_per_s=500)
                await wait_for(lambda: first.metric("homeiq_events_published_total") == 100, 10, "the first 100")
                redis_server.stop()
                await sim.hub.emit(200, rate_per_s=200)
                await wait_for(lambda: first.metric("homeiq_events_spooled_total") == 200, 10, "200 spooled")
            async with running_collector(sim, redis_server.url, tmp_path / "spool"):
                await wait_for(lambda: sim.hub.subscribed, 10, "the second collector")
                await sim.hub.emit(50, rate_per_s=100)  # spooled behind the first run's
                redis_server.start()
                await sim.hub.emit(60, rate_per_s=20)
                await every_state_once(client, sim.hub)
    finally:
        await client.aclose()
        redis_server.stop()


class OlderAof:
    """A copy of a Redis's append-only file, to start it from again later (a Redis that forgot)."""

    def __init__(self, redis_server: RedisServer, copy: Path) -> None:
        self.redis_server, self.copy = redis_server, copy
        self.live = redis_server.workdir / "appendonlydir"

    def take(self) -> None:
        """Stop Redis, copy its AOF, start it again."""
        self.redis_server.stop()
        shutil.copytree(self.live, self.copy)
        self.redis_server.start()

    def restore(self) -> None:
        """Stop Redis and start it from the copy: it forgets everything acknowledged since."""
        self.redis_server.stop()
        shutil.rmtree(self.live)
        shutil.copytree(self.copy, self.live)
        self.redis_server.start()


async def test_a_redis_back_from_an_older_append_only_file_is_a_gap_backfilled_and_its_other_events_counted(
    tmp_path: Path,
) -> None:
    """Redis restarted from an AOF older than what it had acknowledged (a restored copy, `appendfsync everysec`
    and a power cut, a failover to a replica that lagged): the collector's session with HA never dropped, so no
    gap would open. The states Redis forgot are backfilled; the service calls cannot be, and are counted."""
    redis_server = RedisServer(tmp_path / "redis", None).start()
    client = aioredis.Redis.from_url(redis_server.url)
    older = OlderAof(redis_server, tmp_path / "older-aof")
    try:
        async with simulator(commit_interval_s=0) as sim, running_collector(
                sim, redis_server.url, tmp_path / "spool") as run:
            await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
            await sim.hub.emit(100, rate_per_s=500)
            await wait_for(lambda: run.metric("homeiq_events_published_total") == 100, 10, "the first 100")
            older.take()
            await sim.hub.emit(200, rate_per_s=200)
            forgotten_calls = service_calls(sim, 7)
            await wait_for(lambda: run.metric("homeiq_events_published_total") == 307, 20, "the next 207 in Redis")
            older.restore()  # without the last 207 events it had acknowledged
            await sim.hub.emit(100, rate_per_s=20)
            await every_state_once(client, sim.hub)
            assert run.metric("homeiq_redis_forgot_total") == 1
            assert run.metric("homeiq_events_dropped_total", reason="redis_forgot") == len(forgotten_calls)
    finally:
        await client.aclose()
        redis_server.stop()


async def test_redis_forgetting_while_a_gap_waits_for_its_backfill_loses_nothing(tmp_path: Path) -> None:
    """The states Redis forgot were published live while a reconnect's gap was open: remembered as published, the
    backfill would skip them; Redis does not hold them any more."""
    redis_server = RedisServer(tmp_path / "redis", None).start()
    client = aioredis.Redis.from_url(redis_server.url)
    older = OlderAof(redis_server, tmp_path / "older-aof")
    try:
        async with simulator(commit_interval_s=0) as sim, running_collector(
                sim, redis_server.url, tmp_path / "spool") as run:
            await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
            await sim.hub.emit(100, rate_per_s=500)
            await wait_for(lambda: run.metric("homeiq_events_published_total") == 100, 10, "the first 100")
            older.take()
            sim.hub.recorder.commit_interval_s = 3600  # the reconnect's backfill waits for the recorder
            sim.hub.faults.refuse_connections = True
            sim.drop_connections()
            await sim.hub.emit(30, rate_per_s=300)
            sim.hub.faults.refuse_connections = False
            await wait_for(lambda: sim.hub.subscribes == 2 and sim.hub.subscribed, 10, "the reconnect")
            await sim.hub.emit(200, rate_per_s=200)
            await wait_for(lambda: run.metric("homeiq_events_published_total") == 300, 20, "200 live in Redis")
            older.restore()
            await wait_for(lambda: run.metric("homeiq_redis_forgot_total") == 1, 20, "Redis found forgetful")
            sim.hub.recorder.commit_interval_s = 0
            await sim.hub.emit(50, rate_per_s=50)
            await every_state_once(client, sim.hub)
    finally:
        await client.aclose()
        redis_server.stop()


async def test_the_tail_check_beside_a_busy_publisher_never_takes_redis_for_forgetful(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch asks for the tail while batches come and go: it must never see one half done."""
    monkeypatch.setattr(service, "REDIS_CHECK_S", 0.002)
    async with simulator(commit_interval_s=0) as sim, running_collector(sim, redis_server.url, tmp_path,
                                                                        publish_batch=50) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        stop = asyncio.Event()

        async def calls() -> None:
            n = 0
            while not stop.is_set():
                sim.hub.fire_service_call(n)
                n += 1
                await asyncio.sleep(0.005)

        calling = asyncio.create_task(calls())
        await sim.hub.emit(15_000, rate_per_s=3000)
        stop.set()
        await calling
        await every_state_once(redis_client, sim.hub)
        assert run.metric("homeiq_redis_forgot_total") == 0
        assert run.metric("homeiq_events_dropped_total", reason="redis_forgot") == 0
