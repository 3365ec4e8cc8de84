"""The crash ledger: which entries killed the replayers that were reading them, and how often.

Redis's delivery count cannot tell poison from an outage: claims raise it, whatever the reason the
entry was idle. So the count only makes an entry a suspect; a suspect is read alone, under a marker in
Redis naming it, and a replayer that dies (or hangs) while reading it leaves the marker behind. Each
marker left behind, once its lease has run out, is one crash of that entry; at `max_crashes` the entry
is dead-lettered as `crashed_reader`. The marker covers decoding and encoding only, where the entry's
content is processed: never the InfluxDB write, so a replayer killed while InfluxDB is down or slow
(a restart, an orchestrator's SIGKILL) counts no crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from homeiq.shared.influx.batch import BatchWriter
from homeiq.shared.logs import Log
from homeiq.shared.scripts import MARK_SCRIPT, SETTLE_CRASHES_SCRIPT
from homeiq.shared.stream import StreamNames, fetch_entries

log = Log(__name__)

# How long a replayer may take to decode and encode one entry before it counts as hung on it (a crash).
# Below the replayer's min-idle, so that a crash is counted before the entry can be claimed again.
SUSPECT_LEASE_MS: Final = 30_000


class CrashLedger:
    """One replayer instance's view of the ledger: its markers carry a token unique to the instance."""

    def __init__(self, client: aioredis.Redis, names: StreamNames, consumer: str, max_crashes: int = 2,
                 lease_ms: int = SUSPECT_LEASE_MS) -> None:
        self._redis, self._names = client, names
        self.max_crashes, self._lease_ms = max_crashes, lease_ms
        self.token = f"{consumer}@{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._mark = client.register_script(MARK_SCRIPT)
        self._settle = client.register_script(SETTLE_CRASHES_SCRIPT)

    async def mark(self, entry_id: bytes) -> None:
        """Say, in Redis, that this instance is reading `entry_id` now."""
        await self._mark(keys=[self._names.suspects], args=[self.token, entry_id, self._lease_ms])

    async def release(self) -> None:
        """Take this instance's marker away: it survived reading the entry."""
        await self._redis.hdel(self._names.suspects, self.token)

    @contextlib.asynccontextmanager
    async def reading(self, entry_id: bytes) -> AsyncIterator[None]:
        """Mark `entry_id` for the block. A Redis failure or a cancellation (a shutdown) is not the entry's
        doing and releases the marker; anything else escaping leaves it, as a process dying with it would."""
        await self.mark(entry_id)
        try:
            yield
        except (RedisError, OSError, asyncio.CancelledError):
            with contextlib.suppress(RedisError, OSError):  # else the next settle() drops it, uncounted
                await asyncio.shield(self.release())
            raise
        await self.release()

    async def crashes(self, entry_id: bytes) -> int:
        """How many readers died reading `entry_id` so far."""
        count: Any = await self._redis.hget(self._names.crashes, entry_id)
        return int(count or 0)

    async def forget(self, entry_id: bytes) -> None:
        """`entry_id` was written: whatever killed its readers before, it was not the entry."""
        await self._redis.hdel(self._names.crashes, entry_id)

    async def settle(self, writer: BatchWriter) -> int:
        """Count the crashes that markers left behind say happened; dead-letter the entries at
        `max_crashes` (as `crashed_reader`, with their payload). Returns how many were dead-lettered."""
        names = self._names
        counted, counts = await self._settle(keys=[names.suspects, names.crashes, names.stream],
                                             args=[names.group, self.token])
        crashes = {entry_id: int(n) for entry_id, n in zip(counts[::2], counts[1::2], strict=True)}
        for entry_id in counted:
            log.warning("reader_crash_counted", entry_id=entry_id.decode(), crashes=crashes.get(entry_id, 0),
                        max_crashes=self.max_crashes)
        dead = 0
        for entry_id, n in crashes.items():
            if n >= self.max_crashes:
                dead += await self.dead_letter(writer, entry_id, n)
        return dead

    async def dead_letter(self, writer: BatchWriter, entry_id: bytes, crashes: int) -> int:
        """Dead-letter `entry_id` as `crashed_reader` without reading more than its fields; 1 if done."""
        [(_, fields)] = await fetch_entries(self._redis, self._names, [entry_id])
        done = await writer.dead_letter(entry_id, fields, "crashed_reader",
                                        f"{crashes} replayers died reading it (max crashes {self.max_crashes})")
        await self.forget(entry_id)
        return int(done)
