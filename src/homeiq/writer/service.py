"""`writer run`: read the group, write batches, ack after 2xx; own pending entries first."""

from __future__ import annotations

import asyncio
import contextlib
import time

from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from homeiq.shared.backoff import Backoff
from homeiq.shared.health import READY_REDIS, Readiness
from homeiq.shared.influx.batch import READY_INFLUX, Batch, batch_writer_for
from homeiq.shared.influx.metrics import WriterMetrics
from homeiq.shared.lifecycle import wait_or_stop
from homeiq.shared.logs import Log
from homeiq.shared.packing import DEFAULT_EVENTS_PER_ENTRY
from homeiq.shared.runtime import ServiceRuntime, give_back_memory_now
from homeiq.shared.stream import Entry, describe_redis_error, ensure_group, read_group, read_pending
from homeiq.writer.settings import WriterSettings

log = Log(__name__)

CHECK_INTERVAL_S = 15.0


class Writer:
    """One writer replica: a consumer of the group with a stable name."""

    def __init__(self, settings: WriterSettings, metrics_registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.runtime = ServiceRuntime(log, settings, Readiness(READY_REDIS, READY_INFLUX), metrics_registry,
                                      settings.redis_socket_timeout_s)
        self.metrics_registry, self.readiness = self.runtime.metrics_registry, self.runtime.readiness
        self.redis, self.persistence = self.runtime.redis, self.runtime.persistence
        self.metrics = WriterMetrics(self.metrics_registry)
        self.batches = batch_writer_for(settings.influx, self.redis, settings.names, settings.consumer, self.metrics,
                                        self.readiness)
        self.sink = self.batches.sink
        self._write_interval_s = settings.write_interval_ms / 1000
        # As the last batch read had them (at first as many as the collector packs by default: a first read of a
        # backlog must not be 64 times too large): a read asks for WRITER_BATCH_SIZE events.
        self._events_per_entry = DEFAULT_EVENTS_PER_ENTRY
        self._asked = 0  # entries the last read asked for: fewer came, the writer keeps up
        self._last_check = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Serve health, then consume until `stop`; the in-flight batch completes or stays pending."""
        async with self.runtime.serving("writer_stopped", lambda: {"consumer": self.settings.consumer}):
            log.info("writer_started", consumer=self.settings.consumer, stream=self.settings.names.stream,
                     group=self.settings.names.group, influxdb=self.sink.url, schema=self.settings.influx.schema)
            try:
                await self._consume(stop)
            finally:
                await self.sink.close()

    async def _consume(self, stop: asyncio.Event) -> None:
        """Own pending entries first (cursor 0…, read without re-delivery), at start and after Redis failed,
        then new ones (>).
        While a batch is being written the next one is read and encoded, but only while InfluxDB
        answers: during an outage one batch is retried and nothing more is read."""
        names, backoff = self.settings.names, Backoff(base_s=0.5, cap_s=15.0)
        group_ready = False
        cursor = b"0"
        ahead: asyncio.Task[tuple[list[Entry], Batch]] | None = None
        behind = False  # the last batch was full: a backlog
        try:
            while not stop.is_set():
                try:
                    if not group_ready:
                        await ensure_group(self.redis, names)
                        group_ready = True
                        await self._check(idle=True)  # readiness says at once if InfluxDB refuses us
                    entries, batch = await (ahead if ahead is not None else self._read_and_prepare(cursor))
                    ahead = None
                    self.readiness.ok(READY_REDIS)
                    backoff.reset()
                    if cursor != b">" and not entries:  # our pending list is done
                        cursor = b">"
                        log.info("own_pending_drained", consumer=self.settings.consumer)
                        continue
                    if time.monotonic() - self._last_check > CHECK_INTERVAL_S:
                        await self._check(idle=not entries)
                    if not entries:
                        continue
                    keeping_up = cursor == b">" and len(entries) < self._asked  # the read that gave them
                    if cursor != b">":
                        cursor = entries[-1][0]  # continue through our pending list after the last seen id
                    elif self.batches.healthy and not keeping_up:
                        ahead = asyncio.create_task(self._read_and_prepare(cursor), name="read-ahead")
                    started = time.monotonic()
                    await self.batches.write(batch, stop)
                    if keeping_up and behind:
                        # A backlog's last full batch is written: the ~20 MB of heap its batches used go back to the
                        # system now, not at the next minute's trim (RSS would stand that much higher meanwhile).
                        give_back_memory_now()
                    behind = not keeping_up
                    if keeping_up:  # paced: let the next batch grow (behind, the full batches go back to back)
                        await wait_or_stop(stop, self._write_interval_s - (time.monotonic() - started))
                except (RedisError, OSError) as exc:
                    await _abandon(ahead)
                    # Acks may have been lost with Redis: start again from our own pending entries.
                    ahead, cursor, group_ready = None, b"0", False
                    await wait_or_stop(stop, self.runtime.redis_failed(exc, backoff))
        finally:
            await _abandon(ahead)
            try:
                await self.batches.acked()
            except (RedisError, OSError) as exc:  # written but not acked: ours to re-read (and rewrite) at start
                log.warning("ack_failed", error=describe_redis_error(self.runtime.redis_place, exc))

    async def _check(self, idle: bool) -> None:
        """Is Redis still persistent, and (when idle: no write says so) does InfluxDB still take our writes?"""
        await self.persistence.check(self.redis)
        if idle:
            await self.batches.check()
        self._last_check = time.monotonic()

    async def _read_and_prepare(self, cursor: bytes) -> tuple[list[Entry], Batch]:
        entries = await self._read(cursor)
        batch = await self.batches.prepare(entries)
        if entries and batch.items:
            self._events_per_entry = max(1, round(len(batch.items) / len(entries)))
        return entries, batch

    def _read_count(self) -> int:
        """Entries a read asks for: WRITER_BATCH_SIZE events, at as many events an entry as the last read had."""
        return max(1, self.settings.batch_size // self._events_per_entry)

    async def _read(self, cursor: bytes) -> list[Entry]:
        settings = self.settings
        self._asked = self._read_count()
        if cursor == b">":
            return await read_group(self.redis, settings.names, settings.consumer, cursor, self._asked,
                                    settings.block_ms)
        # Our own pending entries are read without being delivered again: a restart must not raise their
        # delivery counts, nor reset their idle time (if one of them crashes us at every start, the
        # replayer claims it once it has been idle long enough).
        return await read_pending(self.redis, settings.names, settings.consumer, cursor, self._asked)


async def _abandon(ahead: asyncio.Task[tuple[list[Entry], Batch]] | None) -> None:
    """Stop a read-ahead: what it read but was not written stays pending, ours to re-read at start."""
    if ahead is not None:
        ahead.cancel()
        with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
            await ahead
