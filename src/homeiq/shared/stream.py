"""The stream contract: key names, entry fields, the consumer group, and the Redis connection."""

from __future__ import annotations

import asyncio
import typing
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal, Protocol, TypeVar

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from homeiq.shared.events import PAYLOAD_VERSION
from homeiq.shared.options import DEFAULT_SENTINEL_SERVICE
from homeiq.shared.settings import Settings, Var, host_ports, not_empty, read_secret, redact_url

FIELD_VERSION: Final = b"v"
FIELD_EVENT: Final = b"e"
FIELD_PACKED: Final = b"z"  # several events, packed (homeiq.shared.packing)

Entry = tuple[bytes, list[bytes]]
"""An entry id and its fields as Redis sends them, `[field, value, ...]`; empty when the payload was trimmed."""

# Dead-letter entries carry these fields besides the original `v` and `e`.
DEAD_REASON: Final = b"reason"
DEAD_DETAIL: Final = b"detail"
DEAD_ORIGINAL_ID: Final = b"original_id"
DEAD_CONSUMER: Final = b"consumer"




class StreamNames(Settings, frozen=True, kw_only=True):
    """All Redis key names the pipeline uses; the defaults are the contract."""

    stream: Annotated[str, Var("STREAM_NAME", "The events stream.", not_empty)] = "homeiq:events"
    group: Annotated[str, Var("STREAM_GROUP", "The writers' consumer group.", not_empty)] = "writers"
    dead: Annotated[str, Var("STREAM_DEAD", "The dead-letter stream.", not_empty, flag="--dead-stream")] = (
        "homeiq:events:dead")

    @property
    def watermark(self) -> str:
        """String: the collector's durable watermark, the newest live state time (ns) it made durable."""
        return f"{self.stream}:collector:last_live_ns"

    @property
    def resume_from(self) -> str:
        """String: the stream id after which a restarted collector reads back the states it published past its
        watermark (saved with it); trimming keeps everything after it. An id, so no clock is compared."""
        return f"{self.stream}:collector:resume_from"

    @property
    def collector_tail(self) -> str:
        """Prefix of strings, one per collector (`<prefix>:<its id>`): the id of the last entry that collector added,
        set in the same step as its XADDs: when it is not the id it last got back, Redis has forgotten what came
        after it. One each: with two collectors, the other's newer tail would hide that Redis forgot ours."""
        return f"{self.stream}:collector:tail"

    @property
    def collector_seen(self) -> str:
        """Prefix of hashes (one per second of event time, each living COLLECTOR_DEDUP_WINDOW_S): the identities of the
        events added lately, so that two collectors add each event once."""
        return f"{self.stream}:collector:seen:"

    @property
    def first_run(self) -> str:
        """String: when the collector first ran against this Redis (ns, its clock), set once and never moved; 0
        when it first ran with this mark already behind it (an upgraded pipeline: when it began is not known).
        The audit counts a state HA recorded before it as recorded before the pipeline ran, not missing."""
        return f"{self.stream}:collector:first_run_ns"

    @property
    def collector_entities(self) -> str:
        """Set: every entity id the collector has seen; a backfill asks the recorder for each (a removed entity's
        rows stay there)."""
        return f"{self.stream}:collector:entities"

    @property
    def collector_registry_ids(self) -> str:
        """Hash: HA's entity registry as the collector last saw it, entry id → entity id (an entry keeps its id when
        its entity is renamed): a rename while no collector ran is seen at the next start."""
        return f"{self.stream}:collector:registry_ids"

    @property
    def last_audit(self) -> str:
        """Hash: what the last audit that ran to its end found, and when (`replayer audit` or the periodic one);
        `replayer status` shows it."""
        return f"{self.stream}:replayer:last_audit"

    @property
    def suspects(self) -> str:
        """Hash: replayer instance → the suspect entry it is reading now and until when (its crash marker)."""
        return f"{self.stream}:replayer:{self.group}:suspects"

    @property
    def crashes(self) -> str:
        """Hash: entry id → how many replayers died while reading it (the crash ledger)."""
        return f"{self.stream}:replayer:{self.group}:crashes"


DEFAULT_NAMES: Final = StreamNames()

DEFAULT_SOCKET_TIMEOUT_S: Final = 15.0
T = TypeVar("T")


class _CancelSafeRedis(aioredis.Redis):
    """redis-py's asyncio client can swallow a cancellation that arrives in the middle of a command (redis-py
    5 to 8, here 1 to 30 % of the cancels of a task busy with PING; redis/redis-py#2028): the task goes on as
    if nothing happened, and a shutdown or a TaskGroup waiting for it hangs. So each command runs in a task
    that is never cancelled, and the caller's cancellation takes effect at once; the abandoned command
    finishes (or fails with its connection) on its own."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return await uncancelled(super().execute_command(*args, **options))  # type: ignore[no-untyped-call]


async def uncancelled(command: Coroutine[Any, Any, T]) -> T:
    """Run a redis-py call in a task that is never cancelled; cancelling the caller takes effect at once."""
    running = asyncio.ensure_future(command)
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        running.add_done_callback(_ignore_outcome)
        raise


def _ignore_outcome(command: asyncio.Future[Any]) -> None:
    if not command.cancelled():
        command.exception()  # retrieved: an abandoned command's failure is nobody's to report


class RedisSettings(Protocol):
    """Where a process's settings say Redis is (ServiceSettings and the replayer commands' Connection)."""

    @property
    def redis_url(self) -> str: ...
    @property
    def redis_sentinels(self) -> str: ...
    @property
    def redis_sentinel_service(self) -> str: ...
    @property
    def redis_sentinel_tls(self) -> str: ...


@dataclass(frozen=True)
class RedisPlace:
    """Redis at `url`; or, with `sentinels` (host:port,…), the primary the sentinels name for `service`, with
    `url` giving only the database, user and TLS (rediss://: to the data nodes and the sentinels). The
    passwords are read once, from REDIS_PASSWORD(_FILE) and REDIS_SENTINEL_PASSWORD(_FILE), and never shown
    (`str()` and `repr()` are what logs and errors say)."""

    url: str
    sentinels: str = ""
    service: str = DEFAULT_SENTINEL_SERVICE
    password: str = field(default="", repr=False)
    sentinel_password: str = field(default="", repr=False)
    sentinel_tls: bool = True  # with rediss://, the sentinels over TLS too (REDIS_SENTINEL_TLS=auto)

    def __repr__(self) -> str:  # the URL may hold a password: what str() says, never the fields
        return f"RedisPlace({self})"

    def __str__(self) -> str:
        if not self.sentinels:
            return redact_url(self.url)
        return f"the primary of {self.service!r} per sentinels {self.sentinel_list}"

    @property
    def tls_to_sentinels(self) -> bool:
        """Whether the sentinels are asked over TLS (a rediss:// URL, and REDIS_SENTINEL_TLS=auto)."""
        return self.sentinel_tls and self.url.startswith("rediss://")

    @property
    def sentinel_list(self) -> str:
        return ",".join(f"{host}:{port}" for host, port in host_ports(self.sentinels))


def place_of(settings: RedisSettings) -> RedisPlace:
    """Where `settings` say Redis is, with the password of REDIS_PASSWORD(_FILE) (a role's ACL user, or the data
    nodes' requirepass; used when REDIS_URL holds none) and, with sentinels, theirs (a ConfigError names what is
    wrong)."""
    password = read_secret("REDIS_PASSWORD", required=False)
    if not settings.redis_sentinels:
        return RedisPlace(settings.redis_url, password=password)
    return RedisPlace(settings.redis_url, settings.redis_sentinels, settings.redis_sentinel_service, password,
                      read_secret("REDIS_SENTINEL_PASSWORD", required=False), settings.redis_sentinel_tls == "auto")


class _CancelSafeSentinelRedis(_CancelSafeRedis):
    """A client of the primary the sentinels name; closing it closes its sentinel clients too."""

    sentinels: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            if self.sentinels is not None:
                await self.sentinels.aclose()


SENTINEL_TIMEOUT_S: Final = 2.0  # each sentinel asked; a dead one costs at most this per new connection


def connect(place: str | RedisPlace, socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S) -> aioredis.Redis:
    """Return a client for `place` (a URL, or a RedisPlace: through Sentinel when it has sentinels; bytes in and
    out); connection errors surface on first use.

    RESP3, and XREADGROUP and XAUTOCLAIM replies as Redis sends them: redis-py would build a dict per
    entry, which costs a writer more than the read itself. `read_group` and `entries_of` read them.
    `socket_timeout_s` bounds every command, a blocking read's BLOCK included. One immediate retry (a pooled
    connection that Redis closed on a restart), not redis-py's default of three with up to 10 s of backoff
    each: every caller has a retry loop of its own, and hidden ones made a stop with Redis down take 15 s.

    Through Sentinel, every new connection asks the sentinels for the primary (redis-py's retry of a command
    does not: it goes to the same address, so a failover is followed by the caller's next command, after the
    one retry failed); a connection to a primary that became a replica fails and is replaced."""
    if isinstance(place, str):
        place = RedisPlace(place)
    options: dict[str, Any] = {
        "decode_responses": False, "health_check_interval": 30, "protocol": 3, "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": 5, "retry": Retry(NoBackoff(), 1)}
    client: aioredis.Redis
    if place.password:  # a password in the URL wins over it (redis-py's from_url)
        options["password"] = place.password
    if not place.sentinels:
        client = _CancelSafeRedis.from_url(place.url, **options)
    else:
        from_url: dict[str, Any] = dict(parse_url(place.url))
        # rediss://: the sentinels are asked over TLS too, checked against the same CA (Redis's sentinels take TLS
        # with `tls-port`, as its data nodes do), unless REDIS_SENTINEL_TLS=off.
        tls: dict[str, Any] = {}
        if from_url.pop("connection_class", None) is SSLConnection:
            from_url["ssl"] = True
            if place.sentinel_tls:
                tls = {key: value for key, value in from_url.items() if key.startswith("ssl")}
        for key in ("host", "port", "path"):
            from_url.pop(key, None)
        sentinels = Sentinel(host_ports(place.sentinels), sentinel_kwargs={  # type: ignore[no-untyped-call]
            "password": place.sentinel_password or None, "socket_timeout": SENTINEL_TIMEOUT_S,
            "socket_connect_timeout": SENTINEL_TIMEOUT_S, "retry": Retry(NoBackoff(), 0), **tls})
        client = sentinels.master_for(place.service, redis_class=_CancelSafeSentinelRedis, **{**options, **from_url})
        typing.cast(_CancelSafeSentinelRedis, client).sentinels = sentinels
    for command in ("XREADGROUP", "XAUTOCLAIM"):
        client.set_response_callback(command, _as_sent)
    return client


def _as_sent(response: Any, **_options: Any) -> Any:
    return response


def entries_of(raw: list[list[Any]] | None) -> list[Entry]:
    """Entries of a reply as Redis sends it (a trimmed entry has no fields: Redis 6.2 gives nil)."""
    return [(entry_id, fields or []) for entry_id, fields in raw or ()]


async def read_group(client: aioredis.Redis, names: StreamNames, consumer: str, cursor: bytes, count: int,
                     block_ms: int | None = None) -> list[Entry]:
    """XREADGROUP for `consumer` from `cursor` (`>` for new entries, an id for its own pending ones)."""
    reply: Any = await client.xreadgroup(names.group, consumer, {names.stream: cursor}, count=count, block=block_ms)
    return entries_of(reply[names.stream.encode()]) if reply else []  # RESP3: a map of stream → entries


async def read_pending(client: aioredis.Redis, names: StreamNames, consumer: str, after: bytes,
                       count: int) -> list[Entry]:
    """`consumer`'s own pending entries after id `after` (`0`: from the first), without delivering them again.

    XPENDING for the ids, then their payloads: unlike XREADGROUP from an id, this neither raises the
    entries' delivery counts nor resets their idle time."""
    start = "-" if after == b"0" else b"(" + after
    rows: Any = await client.xpending_range(names.stream, names.group, start, "+", count, consumer)
    return await fetch_entries(client, names, [row["message_id"] for row in rows])


async def fetch_entries(client: aioredis.Redis, names: StreamNames, ids: list[bytes]) -> list[Entry]:
    """The entries with these ids, in one round trip; an entry whose payload was trimmed has no fields."""
    if not ids:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for entry_id in ids:
            pipe.xrange(names.stream, entry_id, entry_id)
        found: list[Any] = await uncancelled(pipe.execute())
    # XRANGE's reply comes as (id, {field: value}): back to the field list Redis sent.
    return [(entry_id, [part for pair in entry[0][1].items() for part in pair] if entry else [])
            for entry_id, entry in zip(ids, found, strict=True)]


def id_key(entry_id: bytes) -> tuple[int, int]:
    """A stream id as (ms, seq), to compare ids in order (as bytes, "9-0" sorts after "10-0")."""
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def entry_fields(payload: bytes) -> dict[bytes, bytes]:
    """The fields of one entry carrying `payload` (the `e` field: a normalised event, msgspec JSON)."""
    return {FIELD_VERSION: PAYLOAD_VERSION.encode(), FIELD_EVENT: payload}


# Why an entry went to the dead-letter stream: it cannot be read (`undecodable`), is of a payload version this code
# does not know, InfluxDB refused its point (`rejected`), reading it raised (`reader_error`), or a writer died while
# holding it more than once (`crashed_reader`, the replayer's crash isolation): counted as dead-lettered. Or it was
# trimmed while pending (`payload_trimmed`): counted as lost, by LostReason.
# The one list of dead-letter reasons (the CLI's --reason, the metrics' labels and the runbooks read it).
# beyond_retention: InfluxDB dropped the point as older than its retention policy; a redrive cannot land it.
PoisonReason = Literal["undecodable", "unknown_version", "rejected", "beyond_retention", "reader_error",
                       "crashed_reader"]
DeadReason = PoisonReason | Literal["payload_trimmed"]
LostReason = Literal["payload_trimmed", "deleted_while_pending"]
POISON_REASONS: Final[tuple[PoisonReason, ...]] = typing.get_args(PoisonReason)
LOST_REASONS: Final[tuple[LostReason, ...]] = typing.get_args(LostReason)

def dead_letter_fields(fields: list[bytes], reason: DeadReason, detail: str, original_id: bytes, consumer: str
                       ) -> list[bytes]:
    """A dead letter: the entry's own fields (its payload, when it still had one), then why and by whom."""
    return [*fields, DEAD_REASON, reason.encode(), DEAD_DETAIL, detail.encode(), DEAD_ORIGINAL_ID, original_id,
            DEAD_CONSUMER, consumer.encode()]


class DeadLetter(msgspec.Struct):
    """One dead-lettered entry, as `dead_letter_fields` wrote it."""

    id: str
    original_id: str
    reason: str
    detail: str
    consumer: str
    has_payload: bool


def dead_letter_of(entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    """Parse an entry of the dead-letter stream (its detail cut to 200 characters)."""
    text = {key: fields.get(key, b"").decode(errors="replace")
            for key in (DEAD_ORIGINAL_ID, DEAD_REASON, DEAD_DETAIL, DEAD_CONSUMER)}
    return DeadLetter(id=entry_id.decode(), original_id=text[DEAD_ORIGINAL_ID], reason=text[DEAD_REASON],
                      detail=text[DEAD_DETAIL][:200], consumer=text[DEAD_CONSUMER],
                      has_payload=FIELD_EVENT in fields or FIELD_PACKED in fields)


async def ensure_group(client: aioredis.Redis, names: StreamNames) -> bool:
    """Create the consumer group (and the stream) if missing; True when this call created it."""
    try:
        await client.xgroup_create(names.stream, names.group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return False
        raise
    return True


def describe_redis_error(place: str | RedisPlace, exc: BaseException) -> str:
    """A one-line explanation of a Redis failure naming the (redacted) URL tried, or the sentinels asked."""
    if isinstance(place, str) or not place.sentinels:
        return f"Redis at {redact_url(str(place))} is unreachable or failed: {exc}"
    if isinstance(exc, MasterNotFoundError):  # none of them names a primary that is up: a failover, or all down
        # (redis-py's message is the whole client's repr: left out.)
        asked = ", asked over TLS (REDIS_SENTINEL_TLS=off asks in plain text)," if place.tls_to_sentinels else ""
        return (f"no primary for service {place.service!r} known to sentinels {place.sentinel_list}{asked} "
                "(a failover under way, or none reachable)")
    return f"Redis ({place}) is unreachable or failed: {exc}"


async def xrange_pages(client: aioredis.Redis, key: str, start: bytes = b"-", end: bytes = b"+",
                       page: int = 10_000) -> AsyncIterator[list[tuple[bytes, dict[bytes, bytes]]]]:
    """The entries of stream `key` from `start` to `end` (XRANGE's syntax, `(` for exclusive), a page at a time."""
    while True:
        chunk: Any = await client.xrange(key, start, end, count=page)
        if chunk:
            yield chunk
        if len(chunk) < page:
            return
        start = b"(" + chunk[-1][0]
