"""Redis with Sentinel (one primary, two replicas, three sentinels on loopback): the whole pipeline (collector, two
writers, replayer, as console scripts) reaches Redis through the sentinels and follows a failover on its own."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

from homeiq.local.services import RedisServer, SentinelSet
from homeiq.local.waiting import wait_for
from homeiq.shared.settings import host_ports
from tests.faults.pipeline import FaultPipeline, service_calls, steady_traffic
from tests.faults.test_collector_faults import lost_calls
from tests.faults.test_writer_faults import assert_exact


class _Servers:
    """What FaultPipeline starts and stops as its Redis: here the whole set."""

    url = "redis://127.0.0.1:1/0"  # with REDIS_SENTINELS only its database counts: the sentinels name the host

    def __init__(self, servers: SentinelSet) -> None:
        self.set = servers

    def start(self) -> None:
        self.set.start()

    def stop(self) -> None:
        self.set.stop()


class SentinelPipeline(FaultPipeline):
    """FaultPipeline whose processes find Redis through three sentinels; `servers` is the set."""

    def __init__(self, workdir: Path, min_replicas: tuple[int, int] = (0, 10), **kwargs: Any) -> None:
        super().__init__(workdir, **kwargs)
        self.servers = SentinelSet(workdir / "redis-set", min_replicas=min_replicas)
        self.redis = _Servers(self.servers)  # type: ignore[assignment]
        self._sentinel: Sentinel | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "REDIS_SENTINELS": self.servers.addresses, "REDIS_SENTINEL_SERVICE": "homeiq"}

    async def __aenter__(self) -> SentinelPipeline:
        await super().__aenter__()
        if self.client is not None:  # the test's own client follows the primary too
            await self.client.aclose()
        self._sentinel = Sentinel(host_ports(self.servers.addresses))
        self.client = self._sentinel.master_for("homeiq", redis_class=aioredis.Redis)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        if self._sentinel is not None:
            await self._sentinel.aclose()

    def named_primary(self) -> RedisServer | None:
        return self.servers.primary()

    async def replaced(self, old: RedisServer, since: float) -> tuple[RedisServer, float]:
        """Wait until the sentinels name another primary than `old`: it, and the seconds since `since`."""
        new = await wait_for(lambda: (p := self.named_primary()) is not old and p, 30,
                             "the sentinels to promote a replica")
        return new, time.monotonic() - since


async def test_primary_sigkill_under_sentinel_loses_nothing(tmp_path: Path) -> None:
    async with SentinelPipeline(tmp_path) as pipeline:
        readiness: list[str] = []

        async def watch() -> None:  # what the collector's and a writer's /readyz say meanwhile
            while True:
                for name in ("collector", "writer-0"):
                    try:
                        said = await asyncio.to_thread(pipeline.readiness, name)
                    except OSError:
                        continue
                    reason = str(said.get("reason", ""))
                    if reason and reason not in readiness:
                        readiness.append(reason)
                await asyncio.sleep(0.2)

        async with steady_traffic(pipeline.hub, 500):
            await asyncio.sleep(5)
            old = pipeline.named_primary()
            assert old is pipeline.servers.servers[0]
            watching = asyncio.create_task(watch())
            old.kill()
            killed = time.monotonic()
            new, promoted_s = await pipeline.replaced(old, killed)
            await asyncio.sleep(5)
            watching.cancel()
        verdict, row = await pipeline.verdict("Sentinel: primary SIGKILL, 500/s", killed)
        row.explained = f"replica :{new.port} promoted {promoted_s:.1f} s after the kill; nothing restarted"
    print("readiness seen:", readiness)
    assert_exact(verdict, row.dropped)
    assert any(pipeline.servers.addresses in reason for reason in readiness), readiness


@pytest.mark.parametrize(("wait_replicas", "min_replicas"), [(0, (0, 10)), (0, (1, 1)), (1, (0, 10))],
                         ids=["no-wait", "no-wait-min-replicas-1-lag-1", "wait-1"])
async def test_primary_cut_off_from_its_replicas_then_replaced(wait_replicas: int, min_replicas: tuple[int, int],
                                                               tmp_path: Path) -> None:
    """The primary loses its replicas (they can no longer sync from it) but keeps its clients; the sentinels (their
    PINGs fail) promote a replica; 3 s later the old primary dies. What it acknowledged meanwhile is on no
    other node. The writers are down meanwhile, so that nothing of it reaches InfluxDB through them.
    Without WAIT: the collector counted those batches durable; states come back by backfill (`redis_forgot`), the
    service calls among them are lost (counted). With `min-replicas-to-write 1` on the nodes the old primary refuses
    writes (NOREPLICAS) at once here, its replicas being disconnected (a replica connected but silent would count for
    up to `min-replicas-max-lag`): the collector spools, none lost. With COLLECTOR_WAIT_REPLICAS=1 they stayed in
    its spool: none lost."""
    env = {"COLLECTOR_WAIT_REPLICAS": str(wait_replicas), "COLLECTOR_WAIT_TIMEOUT_MS": "500"}
    async with SentinelPipeline(tmp_path, min_replicas, env=env) as pipeline:
        async with steady_traffic(pipeline.hub, 300), service_calls(pipeline.hub, 0.05) as calls:
            await asyncio.sleep(4)
            for name in pipeline.writer_names:
                pipeline.kill(name)
            old = pipeline.servers.servers[0]
            with redis.Redis(port=old.port) as cut:
                # Every command the pipeline sends still works; replicas can no longer sync, and the sentinels'
                # PING fails as from a primary that is down.
                cut.acl_setuser("default", reset=False, commands=["-psync", "-sync", "-ping"])
                cut.client_kill_filter(_type="replica")
            new, promoted_s = await pipeline.replaced(old, time.monotonic())
            await asyncio.sleep(3)
            old.kill()
            for name in pipeline.writer_names:
                pipeline.start("writer", name, {"WRITER_CONSUMER": name})
            back = time.monotonic()
            await asyncio.sleep(5)
        guard = f", min-replicas-to-write {min_replicas[0]} max-lag {min_replicas[1]}" if min_replicas[0] else ""
        verdict, row = await pipeline.verdict(f"Sentinel: primary cut off from replicas, replaced, "
                                              f"COLLECTOR_WAIT_REPLICAS={wait_replicas}{guard}, 300/s", back)
        lost = lost_calls(calls, await pipeline.points())
        sent_lost = [at for at, was_sent in lost if was_sent]
        row.explained = (f"replica :{new.port} promoted {promoted_s:.1f} s after the cut; {len(sent_lost)} service "
                         "calls lost")
    if wait_replicas or min_replicas[0]:
        assert_exact(verdict, row.dropped)
        assert not sent_lost
    else:  # what the old primary alone had: states backfilled, the rest lost and counted, none silently
        assert not verdict.missing and not verdict.extra and not verdict.duplicated and not verdict.wrong
        assert sent_lost and set(row.dropped) == {"redis_forgot"}
        assert row.dropped["redis_forgot"] >= len(sent_lost)


WAIT_ENV = {"COLLECTOR_WAIT_REPLICAS": "1", "COLLECTOR_WAIT_TIMEOUT_MS": "500"}


async def test_a_replica_killed_under_sentinel_loses_nothing(tmp_path: Path) -> None:
    async with SentinelPipeline(tmp_path, env=WAIT_ENV) as pipeline:
        async with steady_traffic(pipeline.hub, 500):
            await asyncio.sleep(4)
            pipeline.servers.servers[1].kill()  # WAIT 1: the other replica confirms
            killed = time.monotonic()
            await asyncio.sleep(6)
            primary = pipeline.named_primary()
        verdict, row = await pipeline.verdict("Sentinel: one replica SIGKILL, WAIT 1, 500/s", killed)
        spooled = pipeline.total("collector", "homeiq_events_spooled_total")
        row.explained = f"no failover; {int(spooled)} events spooled"
    assert primary is pipeline.servers.servers[0]
    assert_exact(verdict, row.dropped)


async def test_two_sentinels_of_three_killed_the_pipeline_goes_on(tmp_path: Path) -> None:
    async with SentinelPipeline(tmp_path, env=WAIT_ENV) as pipeline:
        async with steady_traffic(pipeline.hub, 500):
            await asyncio.sleep(4)
            for sentinel in pipeline.servers.sentinels[:2]:  # no majority left: no failover could happen
                sentinel.kill()
            killed = time.monotonic()
            for name in pipeline.writer_names:  # new connections ask the sentinel that is left
                pipeline.kill(name)
                pipeline.start("writer", name, {"WRITER_CONSUMER": name})
            await asyncio.sleep(6)
        verdict, row = await pipeline.verdict("Sentinel: two sentinels of three SIGKILL (writers restarted), "
                                              "WAIT 1, 500/s", killed)
        row.explained = "the primary lives: nothing changes; restarted writers find it through the third sentinel"
    assert_exact(verdict, row.dropped)


async def test_primary_stopped_30_s_fails_over_and_comes_back_as_a_replica(tmp_path: Path) -> None:
    async with SentinelPipeline(tmp_path, env=WAIT_ENV) as pipeline:
        async with steady_traffic(pipeline.hub, 500):
            await asyncio.sleep(4)
            old = pipeline.servers.servers[0]
            assert old.process is not None
            old.process.send_signal(signal.SIGSTOP)  # hung: connections stay open, nothing answers
            stopped = time.monotonic()
            new, promoted_s = await pipeline.replaced(old, stopped)
            await asyncio.sleep(max(0.0, 30 - (time.monotonic() - stopped)))
            old.process.send_signal(signal.SIGCONT)
            back = time.monotonic()
            await wait_for(lambda: _role(old) == "slave", 30, "the old primary to be made a replica")
            demoted_s = time.monotonic() - back
            await asyncio.sleep(3)
        verdict, row = await pipeline.verdict("Sentinel: primary SIGSTOP 30 s, then SIGCONT, WAIT 1, 500/s", back)
        row.explained = (f"replica :{new.port} promoted {promoted_s:.1f} s after the stop; the old primary a "
                         f"replica {demoted_s:.1f} s after SIGCONT")
    assert_exact(verdict, row.dropped)


def _role(server: RedisServer) -> str:
    try:
        with redis.Redis(port=server.port, socket_timeout=1) as client:
            return str(client.info("replication").get("role"))
    except redis.RedisError:
        return ""
