"""A graceful stop keeps every event Home Assistant sent before it: events with no recorder history (service
calls, automation triggers) cannot be backfilled, so one still in the socket at the stop would be gone. And a
stop is prompt whatever the connection is doing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from homeiq.ha_sim import commands
from homeiq.local.services import RedisServer
from tests.collector_harness import Running, missing_calls, reader_held, running_collector, service_calls, simulator
from tests.helpers import wait_for

BURST = 3000


def count_unsubscribes(monkeypatch: pytest.MonkeyPatch, answer: bool = True) -> list[int]:
    """The subscriptions ha-sim was asked to end (and, with `answer=False`, never answers)."""
    asked: list[int] = []
    handler = commands.HANDLERS["unsubscribe_events"]

    def unsubscribe_events(conn: commands.Connection, msg_id: int, message: dict[str, Any]) -> None:
        asked.append(message["subscription"])
        if answer:
            handler(conn, msg_id, message)

    monkeypatch.setitem(commands.HANDLERS, "unsubscribe_events", unsubscribe_events)
    return asked


async def timed_finish(run: Running) -> float:
    started = time.monotonic()
    await run.finish()
    return time.monotonic() - started


async def test_a_stop_keeps_every_event_ha_sent_before_it(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = count_unsubscribes(monkeypatch)
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        sent = service_calls(sim, BURST)  # queued on HA's side of the socket when the stop comes
        await run.finish()
    assert len(asked) == 1  # the collector ended its subscription before closing
    missing = await missing_calls(redis_client, sent)
    assert not missing, f"{len(missing)} of {BURST} events HA sent before the stop are not in the stream"
    assert run.metric("homeiq_events_published_total") == BURST


async def test_a_stop_while_redis_stalls_keeps_every_event_ha_sent(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """Redis hangs (no error, so no spooling) with the buffer full when the stop comes, and answers again
    within the drain timeout: the reader must still read up to HA's answer instead of waiting for room."""
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path, buffer_events=200,
                                                     publish_batch=100) as run:
        async with reader_held(sim, run, redis_server, BURST) as sent:
            stopping = asyncio.create_task(run.finish())
            await asyncio.sleep(3)
        await stopping
    missing = await missing_calls(redis_client, sent)
    assert not missing, f"{len(missing)} of {BURST} events HA sent before the stop are not in the stream"


async def test_a_stop_that_ha_never_answers_ends_within_its_bound(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    asked = count_unsubscribes(monkeypatch, answer=False)
    async with simulator() as sim, running_collector(sim, redis_server.url, tmp_path, ping_interval_s=30) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        took = await timed_finish(run)
    assert asked and took < 5, took
    assert "unsubscribe_unanswered" in caplog.text


@pytest.mark.parametrize("fault", ["silent_after_connect", "silent_after_auth"])
async def test_a_stop_while_logging_in_is_prompt(redis_server: RedisServer, tmp_path: Path, fault: str) -> None:
    """Nothing is subscribed yet, so nothing is to be kept: a stop need not wait out the login's timeouts."""
    async with simulator() as sim:
        setattr(sim.hub.faults, fault, True)
        async with running_collector(sim, redis_server.url, tmp_path, auth_timeout_s=10.0) as run:
            await wait_for(lambda: sim.hub.connects, 10, "a connection")
            took = await timed_finish(run)
    assert took < 2, took
