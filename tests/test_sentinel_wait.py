"""COLLECTOR_WAIT_REPLICAS: a batch no replica has confirmed is not durable yet: it stays in the spool (and the
collector unready, saying why) until a replica confirms, then the spool drains. Real redis-server processes."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis

from homeiq.local.services import RedisServer
from homeiq.local.waiting import wait_for
from tests.collector_harness import all_states_published, running_collector, sent_keys, simulator


async def test_unconfirmed_batches_stay_in_the_spool_until_a_replica_has_them(tmp_path: Path) -> None:
    primary = RedisServer(tmp_path / "primary", None).start()  # no replica yet: WAIT 1 can only time out
    replica = RedisServer(tmp_path / "replica", None, replica_of=primary.port)
    client = aioredis.Redis.from_url(primary.url)
    try:
        async with simulator(commit_interval_s=0) as sim, running_collector(
                sim, primary.url, tmp_path / "spool", wait_replicas=1, wait_timeout_ms=100) as run:
            await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
            await sim.hub.emit(300, rate_per_s=300)
            await wait_for(lambda: run.metric("homeiq_events_spooled_total") > 0, 10, "unconfirmed batches spooled")
            reason = run.collector.readiness.reason or ""
            assert "0 of 1 replicas confirmed" in reason and "COLLECTOR_WAIT_REPLICAS" in reason, reason
            # XADDed (counted published: ours, should Redis forget them), and kept in the spool until confirmed.
            assert run.metric("homeiq_spool_bytes") > 0

            replica.start()
            await wait_for(lambda: run.metric("homeiq_spool_bytes") == 0 and not run.collector.publisher.pending,
                           30, "the spool drained once a replica confirms")
            await sim.hub.emit(50, rate_per_s=100)
            # Every state is in the stream; an unconfirmed batch is there twice (XADDed, then drained from the
            # spool): the same points, so InfluxDB holds each once.
            counts = await all_states_published(client, sim.hub)
            assert set(counts) == sent_keys(sim.hub)
            assert run.metric("homeiq_events_dropped_total") == 0
    finally:
        await client.aclose()
        replica.stop()
        primary.stop()
