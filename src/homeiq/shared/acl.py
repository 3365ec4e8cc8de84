"""Least privilege on the broker: one Redis ACL user per role, its rules derived from the stream contract.

The keys come from `StreamNames` (so a renamed stream renames every rule), the commands a Lua script runs are read
from the script's own text in `homeiq.shared.scripts`, and the commands each role sends itself are listed here, each
with where it is sent from. `tests/test_acl.py` runs every role's real code against a Redis holding these users and
requires that Redis refused it nothing (its ACL LOG is empty), and that it refuses what the role must not do.

Redis 7.0 syntax: `%R~`/`%W~` key permissions and `(...)` selectors. Passwords are written as their SHA-256 (`#`),
so the ACL file holds no secret; each role's password is a file of its own (REDIS_PASSWORD_FILE).
`client|setinfo`, which redis-py sends on connecting, is not granted: 7.0 does not know it (and refuses an ACL file
naming it); a Redis >= 7.2 refuses it and logs that in its ACL LOG, and redis-py ignores the refusal.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final, Literal

import msgspec

from homeiq.shared import scripts
from homeiq.shared.settings import ConfigError
from homeiq.shared.stream import StreamNames

Role = Literal["collector", "writer", "replayer", "operator", "viewer", "admin", "replica", "sentinel"]
ROLES: Final[tuple[Role, ...]] = ("collector", "writer", "replayer", "operator", "viewer", "admin")
# Redis's own users with Sentinel, each written when its password file is there: replicas syncing from the primary
# (`masteruser`) and the sentinels (`sentinel auth-user`), with the least Redis's documentation lists for each.
SERVER_ROLES: Final[tuple[Role, ...]] = ("replica", "sentinel")

Access = Literal["R", "W", "RW"]

# Commands Redis groups under a container: a script's `redis.call('XINFO', 'GROUPS', ...)` needs `xinfo|groups`.
_CONTAINERS: Final = frozenset({"xinfo", "xgroup", "script", "client", "config", "object", "memory"})
_CALL: Final = re.compile(r"redis\.p?call\(\s*'([A-Za-z]+)'(?:\s*,\s*'([A-Za-z]+)')?")


def script_commands(script: str) -> frozenset[str]:
    """The commands (`xinfo|groups` for a subcommand) a Lua script calls, read from its text."""
    found: set[str] = set()
    for name, sub in _CALL.findall(script):
        command = name.lower()
        found.add(f"{command}|{sub.lower()}" if command in _CONTAINERS and sub else command)
    return frozenset(found)


class Grant(msgspec.Struct, frozen=True):
    """Commands allowed on keys (each key with its access); a role's first grant is its root, each other one a
    selector: a command is allowed when one grant allows it and all its keys."""

    commands: tuple[str, ...]
    keys: tuple[tuple[str, Access], ...] = ()
    all_channels: bool = False  # pub/sub: Sentinel's hello messages on the data nodes
    prefixes: tuple[tuple[str, Access], ...] = ()  # every key that starts so


def grants(role: Role, names: StreamNames) -> tuple[Grant, ...]:
    """What `role` may do with these key names: its root (connection, scripts: EVALSHA needs each of a script's
    keys read and write, and every command inside is checked again), then one selector per kind of key, so that a
    command allowed on one key (SET of a mark) is not allowed on another (SET of the stream would replace it)."""
    table = _TABLES[role](names)
    called = {command for text in _SCRIPTS[role] for command in script_commands(text)}
    called -= _NOT_REACHED.get(role, frozenset())
    missing = called - {command for grant in table for command in grant.commands}
    if missing:  # a script changed and this table did not follow
        raise AssertionError(f"{role}: its scripts call {sorted(missing)}, which its grants do not allow")
    return table


# Every connection: PING (redis-py's health check after 30 s idle), SELECT (a REDIS_URL naming a database other
# than 0), INFO (the AOF check of broker.py; the replayer's memory gauges). AUTH and HELLO need no permission.
_ROOT: Final = ("ping", "select", "info", "evalsha", "script|load")


def _collector(names: StreamNames) -> tuple[Grant, ...]:
    # publisher.py (XADD_BATCH_SCRIPT on the stream and its tail; GET of the tail), resume.py (GET, MGET, MSET,
    # EXISTS of its marks, XRANGE read-back, SMEMBERS/SADD/SREM of the entity set, HGETALL/HSET/HDEL of the registry
    # ids, EVAL of its own first-run script: GET and SET), service.py (TIME). WAIT: an XADD counts once a replica
    # has it (Sentinel). HEXISTS, HSET and EXPIRE: the identities of the events added lately (COLLECTOR_DEDUP_WINDOW_S),
    # whose prefix the script gets as a key.
    marks = (names.watermark, names.resume_from, names.first_run)
    return (Grant((*_ROOT, "eval", "time", "wait"), ((names.stream, "RW"), (names.first_run, "RW")),
                  prefixes=((names.collector_seen, "RW"), (names.collector_tail, "RW"))),
            Grant(("xadd", "xrange"), ((names.stream, "RW"),)),
            Grant(("hexists", "hset", "expire"), prefixes=((names.collector_seen, "RW"),)),
            Grant(("get", "set", "mget", "mset", "exists"), tuple((key, "RW") for key in marks),
                  prefixes=((names.collector_tail, "RW"),)),
            Grant(("smembers", "sadd", "srem"), ((names.collector_entities, "RW"),)),
            Grant(("hgetall", "hset", "hdel"), ((names.collector_registry_ids, "RW"),)))


def _writer(names: StreamNames) -> tuple[Grant, ...]:
    # stream.py (ensure_group, read_group, read_pending, fetch_entries), influx/batch.py (XACK, DEAD_LETTER_SCRIPT).
    # Its XADD reaches only the dead-letter stream.
    return (Grant(_ROOT, ((names.stream, "RW"), (names.dead, "RW"))),
            Grant(("xgroup|create", "xreadgroup", "xpending", "xrange", "xack"), ((names.stream, "RW"),)),
            Grant(("xadd",), ((names.dead, "W"),)))


def _replayer(names: StreamNames) -> tuple[Grant, ...]:
    # service.py (XGROUP CREATE), reclaim.py (XAUTOCLAIM, XPENDING), crashes.py (HGET, HDEL, MARK_SCRIPT,
    # SETTLE_CRASHES_SCRIPT), operations.py (EXISTS, XINFO GROUPS, TRIM_SCRIPT, PRUNE_SCRIPT), stream_metrics.py
    # (XLEN, XRANGE, TIME, XPENDING), influx/batch.py (XACK, DEAD_LETTER_SCRIPT), audit.py (GET of the first-run
    # mark, HSET of the last audit, the repair's XADD_BATCH_SCRIPT without the collector's tail).
    return (Grant((*_ROOT, "time"), tuple((key, "RW") for key in (
                names.stream, names.dead, names.suspects, names.crashes, names.resume_from))),
            Grant(("exists", "xgroup|create", "xautoclaim", "xpending", "xrange", "xlen", "xack", "xadd",
                   "xinfo|groups", "xinfo|consumers", "xgroup|delconsumer", "xtrim"), ((names.stream, "RW"),)),
            Grant(("xadd", "xlen"), ((names.dead, "RW"),)),
            Grant(("hget", "hgetall", "hset", "hdel", "hincrby"),
                  tuple((key, "RW") for key in (names.suspects, names.crashes, names.last_audit))),
            Grant(("get",), ((names.resume_from, "R"), (names.first_run, "R"))))


def _operator(names: StreamNames) -> tuple[Grant, ...]:
    # Every `replayer` command: the daemon's (`reclaim`, `trim`, `audit`), status and pending (XINFO CONSUMERS,
    # MGET of the collector's marks, HGETALL of the last audit), `reclaim --dry-run` (HVALS of the crash ledger),
    # `dead-letter list|show` (XRANGE), `redrive` (REDRIVE_SCRIPT) and `purge` (XDEL, XTRIM, DEL): of the
    # dead-letter stream only.
    root, stream, _dead, hashes, _marks = _replayer(names)
    return (root, stream,
            Grant(("xadd", "xlen", "xrange", "xdel", "xtrim", "del"), ((names.dead, "RW"),)),
            Grant((*hashes.commands, "hvals"), hashes.keys),
            Grant(("get", "mget"), ((names.resume_from, "R"), (names.first_run, "R"), (names.watermark, "R"))))


def _viewer(names: StreamNames) -> tuple[Grant, ...]:
    # `replayer status`, `pending`, `dead-letter list|show`, `reclaim --dry-run`: reads, and no script.
    return (Grant(("ping", "select", "exists", "xinfo|groups", "xinfo|consumers", "xpending", "xlen", "xrange",
                   "mget", "hgetall", "hvals"),
                  tuple((key, "R") for key in (names.stream, names.dead, names.watermark, names.first_run,
                                               names.last_audit, names.crashes))),)


def _admin(_names: StreamNames) -> tuple[Grant, ...]:
    # People (redis-cli).
    return (Grant(("@all",), (("*", "RW"),), all_channels=True),)


def _replica(_names: StreamNames) -> tuple[Grant, ...]:
    # A replica's link to its primary (Redis's documentation, "ACL rules for Sentinel and Replicas"): no key.
    return (Grant(("psync", "replconf", "ping")),)


def _sentinel(_names: StreamNames) -> tuple[Grant, ...]:
    # What a sentinel sends the data nodes (the same page): INFO and ROLE to watch, the hello channel, and a failover's
    # MULTI/SLAVEOF/CONFIG REWRITE/CLIENT KILL/EXEC; no key.
    return (Grant(("multi", "slaveof", "ping", "exec", "subscribe", "config|rewrite", "role", "publish", "info",
                   "client|setname", "client|kill", "script|kill"), all_channels=True),)


_TABLES: Final = {"collector": _collector, "writer": _writer, "replayer": _replayer, "operator": _operator,
                  "viewer": _viewer, "admin": _admin, "replica": _replica, "sentinel": _sentinel}
# The Lua scripts each role runs (the collector's own first-run script calls GET and SET, as XADD_BATCH does).
_REPLAYER_SCRIPTS: Final = (scripts.DEAD_LETTER_SCRIPT, scripts.TRIM_SCRIPT, scripts.PRUNE_SCRIPT,
                            scripts.MARK_SCRIPT, scripts.SETTLE_CRASHES_SCRIPT, scripts.XADD_BATCH_SCRIPT)
_SCRIPTS: Final[dict[Role, tuple[str, ...]]] = {
    "collector": (scripts.XADD_BATCH_SCRIPT,), "writer": (scripts.DEAD_LETTER_SCRIPT,),
    "replayer": _REPLAYER_SCRIPTS, "operator": (*_REPLAYER_SCRIPTS, scripts.REDRIVE_SCRIPT), "viewer": (),
    "admin": (), "replica": (), "sentinel": ()}
# The audit's repair runs XADD_BATCH_SCRIPT without the collector's tail key and without a window: its GET and SET of
# the tail, HEXISTS, HSET and EXPIRE of the identities never run.
_REPAIR_SKIPS: Final = frozenset({"get", "set", "hexists", "hset", "expire"})
_NOT_REACHED: Final[dict[Role, frozenset[str]]] = {"replayer": _REPAIR_SKIPS, "operator": _REPAIR_SKIPS}


KEY_PROPERTIES: Final = ("watermark", "resume_from", "collector_tail", "first_run", "collector_entities",
                         "collector_registry_ids", "last_audit", "suspects", "crashes", "collector_seen")
"""Every key name `StreamNames` derives (besides its fields `stream` and `dead`): a test holds this list to the
class, so a key added there and not given to a role here fails it."""


def _glob(key: str) -> str:
    """`key` as an ACL key pattern that matches only itself."""
    if re.search(r"[\s\"'()]", key):
        raise ConfigError(f"key {key!r}: a name with spaces, quotes or parentheses cannot go in an ACL file")
    return re.sub(r"([*?\[\]\\])", r"\\\1", key)


def _render(grant: Grant) -> list[str]:
    words = ["allchannels" if grant.all_channels else "resetchannels", "-@all",
             *(f"+{command}" for command in grant.commands)]
    patterns = [(key if key == "*" else _glob(key), access) for key, access in grant.keys]
    patterns += [(_glob(prefix) + "*", access) for prefix, access in grant.prefixes]
    for pattern, access in patterns:
        words.append(f"~{pattern}" if access == "RW" else f"%{access}~{pattern}")
    return words


def user_line(role: Role, names: StreamNames, password: str) -> str:
    """The ACL file's line for `role`: enabled, its password as SHA-256, its root rules, then its selectors."""
    if not password:
        raise ConfigError(f"{role}: the password is empty")
    root, *selectors = grants(role, names)
    digest = hashlib.sha256(password.encode()).hexdigest()
    parts = ["user", role, "on", f"#{digest}", *_render(root)]
    parts += [f"({' '.join(_render(selector))})" for selector in selectors]
    return " ".join(parts)


def acl_file(names: StreamNames, passwords: Mapping[Role, str]) -> str:
    """A users.acl: the default user off (a client without a user may do nothing), one line per role given.

    Off, without a password, yet with every permission: Redis 7.0 replays a script's writes from its append-only file
    as MULTI/EXEC and checks them against the default user's permissions, so a default user without them makes a
    restart drop every XADD a script made (lab: 7.0.15, an ACL LOG entry `default` `multi`). Being off, no client
    can log in as it."""
    lines = ["user default off resetpass allchannels +@all ~*"]
    lines += [user_line(role, names, passwords[role]) for role in (*ROLES, *SERVER_ROLES) if role in passwords]
    return "\n".join(lines) + "\n"


def read_passwords(directory: Path, roles: Iterable[Role] = ROLES) -> dict[Role, str]:
    """Each role's password from the file named after it in `directory` (one line; surrounding whitespace dropped)."""
    passwords: dict[Role, str] = {}
    for role in roles:
        path = directory / role
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the {role} password ({exc.strerror})") from None
        if not text or "\n" in text:
            raise ConfigError(f"{path}: the {role} password must be one non-empty line")
        passwords[role] = text
    return passwords
