"""Sentinel with a Redis user per role, Redis's own processes included: replicas sync as `replica` (masteruser),
sentinels watch and fail over as `sentinel` (sentinel auth-user), each allowed only what Redis's documentation lists
for it; the collector's user follows the failover. And Sentinel over TLS, the sentinels included. Real redis-server
and redis-sentinel processes on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import NoPermissionError, RedisError, ResponseError

from homeiq.local.services import RedisSentinel, RedisServer, SentinelSet
from homeiq.shared.events import encode_event
from homeiq.shared.packing import xadd_events
from homeiq.shared.stream import DEFAULT_NAMES, RedisPlace, connect
from tests.acl_harness import AclUsers
from tests.helpers import make_certs
from tests.unit.test_dedup_identity import state_change

pytestmark = pytest.mark.timeout(120)  # a failover, and the old primary back as a replica


@pytest.fixture
def users(tmp_path: Path) -> AclUsers:
    return AclUsers(tmp_path / "acl")


@pytest.fixture
def acl_set(tmp_path: Path, users: AclUsers) -> Iterator[SentinelSet]:
    """One primary, two replicas, three sentinels, every node holding the generated users and no default user."""
    servers = SentinelSet(tmp_path / "set", aclfile=users.aclfile, logins=users.server_logins).start()
    yield servers
    servers.stop()


def admin(server: RedisServer, users: AclUsers) -> redis.Redis:
    return redis.Redis(port=server.port, username="admin", password=users.passwords["admin"])


def refusals(server: RedisServer, users: AclUsers) -> list[str]:
    with admin(server, users) as client:
        entries: Any = client.acl_log()
    return [f"{e['username']}: {e['reason']} {e['object']}" for e in entries]


def test_replicas_sync_and_sentinels_fail_over_as_their_own_users(acl_set: SentinelSet, users: AclUsers) -> None:
    # Started: every replica in sync through the `replica` user, every sentinel knowing them through `sentinel`.
    place = RedisPlace(f"redis://collector@127.0.0.1:{acl_set.servers[0].port}/0", acl_set.addresses,
                       acl_set.service, users.passwords["collector"])

    async def publish(n: int, replicas: int) -> None:
        client = connect(place, socket_timeout_s=5)
        try:
            await xadd_events(client, DEFAULT_NAMES.stream, [encode_event(state_change(updated_ns=n))])
            assert await client.wait(replicas, 3000) == replicas  # on every replica there is
        finally:
            await client.aclose()

    asyncio.run(publish(1, 2))
    old = acl_set.servers[0]
    old.kill()
    new = wait_for_primary(acl_set, old)
    asyncio.run(publish(2, 1))  # the collector's user, through the sentinels, on the promoted replica
    old.start()  # comes back; the sentinels make it a replica of the new primary, syncing as `replica`
    deadline = time.monotonic() + 30
    while b"master_link_status:up" not in _info(old, users) or f"master_port:{new.port}".encode() not in _info(
            old, users):
        assert time.monotonic() < deadline, _info(old, users)
        time.sleep(0.2)
    with admin(old, users) as client:
        assert client.xlen(DEFAULT_NAMES.stream) == 2
    for server in acl_set.servers:
        assert refusals(server, users) == [], server.port


def test_the_replica_and_sentinel_users_may_touch_no_key(acl_set: SentinelSet, users: AclUsers) -> None:
    primary = acl_set.servers[0]
    for role, commands in {"replica": [("GET", "k"), ("XADD", DEFAULT_NAMES.stream, "*", "v", "1"), ("FLUSHALL",)],
                           "sentinel": [("GET", "k"), ("XADD", DEFAULT_NAMES.stream, "*", "v", "1"), ("FLUSHALL",),
                                        ("CONFIG", "SET", "appendonly", "no"), ("ACL", "LIST")]}.items():
        with redis.Redis(port=primary.port, username=role, password=users.passwords[role]) as client:
            for command in commands:
                with pytest.raises(ResponseError) as refused:
                    client.execute_command(*command)
                assert isinstance(refused.value, NoPermissionError), (role, command, refused.value)


def wait_for_primary(servers: SentinelSet, old: RedisServer) -> RedisServer:
    """The promoted replica, once every sentinel names it: the one that led the failover names it first, and a
    client asking another meanwhile finds no primary (MasterNotFoundError, in CI once)."""
    deadline = time.monotonic() + 30
    while (new := servers.primary()) in (None, old) or not all(_names(sentinel, new) for sentinel in servers.sentinels):
        assert time.monotonic() < deadline, "no replica promoted, or not every sentinel names it"
        time.sleep(0.2)
    assert new is not None
    return new


def _names(sentinel: RedisSentinel, server: RedisServer | None) -> bool:
    try:
        named = sentinel.primary()
    except OSError:
        return False
    return server is not None and named is not None and named[1] == server.port


def _info(server: RedisServer, users: AclUsers) -> bytes:
    with admin(server, users) as client:
        return "\n".join(f"{k}:{v}" for k, v in client.info("replication").items()).encode()



def test_over_tls_the_sentinels_and_the_data_nodes_are_asked_with_the_urls_ca(tmp_path: Path) -> None:
    """rediss:// with a CA: the client asks the sentinels over TLS too (they listen on TLS only, as the data nodes
    do, replication included), and follows a failover; the system's CAs, not ours, are refused."""
    certs = make_certs(_folder(tmp_path / "certs"))
    servers = SentinelSet(tmp_path / "set", tls=certs.ca.parent).start()
    place = RedisPlace(f"rediss://127.0.0.1:1/0?ssl_ca_certs={certs.ca}", servers.addresses, servers.service)

    async def publish(n: int, replicas: int) -> tuple[int, str]:
        client = connect(place, socket_timeout_s=5)
        try:
            await xadd_events(client, DEFAULT_NAMES.stream, [encode_event(state_change(updated_ns=n))])
            assert await client.wait(replicas, 3000) == replicas
            info: Any = await client.info("server")
            return int(info["tcp_port"]), str(await client.xlen(DEFAULT_NAMES.stream))
        finally:
            await client.aclose()

    async def refused() -> str:
        client = connect(RedisPlace("rediss://127.0.0.1:1/0", servers.addresses, servers.service), socket_timeout_s=5)
        try:
            with pytest.raises(RedisError) as error:
                await client.ping()
            return str(error.value)
        finally:
            await client.aclose()

    try:
        assert asyncio.run(publish(1, 2)) == (servers.servers[0].port, "1")
        assert "No master found" in asyncio.run(refused())  # no sentinel answered: none trusted
        old = servers.servers[0]
        old.kill()
        new = wait_for_primary(servers, old)
        assert asyncio.run(publish(2, 1)) == (new.port, "2")
    finally:
        servers.stop()


def _folder(path: Path) -> Path:
    path.mkdir(parents=True)
    return path
