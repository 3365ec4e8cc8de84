"""A bounded in-memory buffer that a single task flushes to the stream with pipelined XADD."""

from __future__ import annotations

import asyncio
import contextlib
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from homeiq_collector.metrics import CollectorMetrics
from homeiq_shared.backoff import Backoff
from homeiq_shared.events import PAYLOAD_VERSION
from homeiq_shared.health import Readiness
from homeiq_shared.logs import Log
from homeiq_shared.stream import FIELD_EVENT, FIELD_VERSION, describe_redis_error

log = Log(__name__)

READY_REDIS = "redis"


class Publisher:
    """`put()` never touches Redis; `run()` takes whatever is buffered (up to `batch_max`) and XADDs it."""

    def __init__(
        self, client: aioredis.Redis, redis_url: str, stream: str, metrics: CollectorMetrics,
        readiness: Readiness, capacity: int = 10_000, batch_max: int = 1_000,
    ) -> None:
        self._redis, self._redis_url, self._stream = client, redis_url, stream.encode()
        self._metrics, self._readiness = metrics, readiness
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(capacity)
        self._batch_max = batch_max
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._backoff = Backoff(base_s=0.2, cap_s=10.0, reset_after_s=10.0)

    async def put(self, payload: bytes) -> None:
        """Buffer one encoded event; waits only when the buffer is full."""
        self._idle.clear()
        if self._queue.full():
            await self._queue.put(payload)
        else:
            self._queue.put_nowait(payload)

    @property
    def pending(self) -> int:
        """Events buffered or being written."""
        return self._queue.qsize() + self._in_flight

    async def run(self) -> None:
        """Flush forever; a batch that fails is retried until Redis takes it."""
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._in_flight = len(batch)
            self._metrics.buffered.set(self._queue.qsize())
            await self._publish(batch)
            self._in_flight = 0
            if self._queue.empty():
                self._idle.set()

    async def _publish(self, batch: list[bytes]) -> None:
        version = PAYLOAD_VERSION.encode()
        while True:
            started = time.perf_counter()
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for payload in batch:
                        pipe.execute_command("XADD", self._stream, "*", FIELD_VERSION, version, FIELD_EVENT, payload)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                message = describe_redis_error(self._redis_url, exc)
                self._readiness.fail(READY_REDIS, message)
                delay_s = self._backoff.next_delay_s()
                log.warning("publish_retry", error=message, events=len(batch), retry_in_s=round(delay_s, 2))
                await asyncio.sleep(delay_s)
                continue
            self._metrics.publish_seconds.observe(time.perf_counter() - started)
            self._metrics.published.inc(len(batch))
            self._readiness.ok(READY_REDIS)
            self._backoff.reset()
            return

    async def drain(self, timeout_s: float) -> int:
        """Wait until everything buffered is published; returns how many events are still unpublished."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return self.pending
