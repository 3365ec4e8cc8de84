"""The stream contract: key names, entry fields, the consumer group, and the Redis connection."""

from __future__ import annotations

from typing import Final

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from homeiq_shared.settings import redact_url

FIELD_VERSION: Final = b"v"
FIELD_EVENT: Final = b"e"

# Dead-letter entries carry these fields besides the original `v` and `e`.
DEAD_REASON: Final = b"reason"
DEAD_DETAIL: Final = b"detail"
DEAD_ORIGINAL_ID: Final = b"original_id"


# Ack an entry and copy it to the dead-letter stream in one step; a second caller finds it acked and
# adds nothing (two replayers never dead-letter the same entry twice). `force` records ids whose entry
# is already gone from the pending list (XAUTOCLAIM's deleted ids).
# KEYS: stream, dead. ARGV: group, id, force, field, value, ...
DEAD_LETTER_SCRIPT: Final = """
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 0 and ARGV[3] ~= '1' then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
return 1
"""


class StreamNames(msgspec.Struct, frozen=True):
    """All Redis key names the pipeline uses; the defaults are the contract."""

    stream: str = "homeiq:events"
    group: str = "writers"
    dead: str = "homeiq:events:dead"


DEFAULT_NAMES: Final = StreamNames()


def connect(url: str) -> aioredis.Redis:
    """Return a client for `url` (bytes in and out); connection errors surface on first use."""
    return aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=30,
                                   socket_timeout=15, socket_connect_timeout=5)


async def ensure_group(client: aioredis.Redis, names: StreamNames) -> bool:
    """Create the consumer group (and the stream) if missing; True when this call created it."""
    try:
        await client.xgroup_create(names.stream, names.group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return False
        raise
    return True


def describe_redis_error(url: str, exc: BaseException) -> str:
    """A one-line explanation of a Redis failure naming the (redacted) URL tried."""
    return f"Redis at {redact_url(url)} is unreachable or failed: {exc}"
