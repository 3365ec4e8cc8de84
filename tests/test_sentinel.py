"""Redis through Sentinel: the settings, the client `connect()` makes, what a failover looks like to it, and the
passwords (from files, never shown). Real redis-server and redis-sentinel processes on loopback (SentinelSet)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from redis.exceptions import RedisError

from homeiq.local.services import SentinelSet
from homeiq.shared.options import ServiceSettings
from homeiq.shared.settings import ConfigError
from homeiq.shared.stream import DEFAULT_NAMES, RedisPlace, connect, describe_redis_error, place_of

DATA_SECRET = "data-node-secret-8c1e"
SENTINEL_SECRET = "sentinel-secret-41d7"


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    """One primary, two replicas, three sentinels (quorum 2), down-after 1 s."""
    servers = SentinelSet(tmp_path / "set").start()
    yield servers
    servers.stop()


def test_the_sentinel_list_is_checked_and_names_its_variable() -> None:
    for wrong in ("127.0.0.1", "a:1,b", "a:0", "a:70000", ":26379"):
        with pytest.raises(ConfigError, match="REDIS_SENTINELS"):
            ServiceSettings(redis_sentinels=wrong).validate()
    with pytest.raises(ConfigError, match="REDIS_SENTINEL_SERVICE"):
        ServiceSettings(redis_sentinels="a:1", redis_sentinel_service="").validate()
    settings = ServiceSettings(redis_sentinels=" 10.0.0.1:26379, [::1]:26380 ").validate()
    assert RedisPlace("redis://x/0", settings.redis_sentinels).sentinel_list == "10.0.0.1:26379,::1:26380"


def test_without_sentinels_the_client_and_its_errors_are_as_before() -> None:
    place = place_of(ServiceSettings(redis_url="redis://:pw-9f@127.0.0.1:1/0"))
    assert place == RedisPlace("redis://:pw-9f@127.0.0.1:1/0")
    assert "pw-9f" not in repr(place) + str(place)
    assert describe_redis_error(place, OSError("boom")) == (
        "Redis at redis://:***@127.0.0.1:1/0 is unreachable or failed: boom")
    assert describe_redis_error(place, OSError("boom")) == describe_redis_error(place.url, OSError("boom"))
    client = connect(place)
    assert not hasattr(client, "sentinels")
    assert client.connection_pool.connection_kwargs["port"] == 1


async def test_a_client_follows_a_failover_within_seconds(sentinel_set: SentinelSet) -> None:
    place = RedisPlace("redis://ignored:1/0", sentinel_set.addresses, sentinel_set.service)
    client = connect(place, socket_timeout_s=2)
    try:
        await client.xadd("s", {"n": "0"})
        assert await client.wait(2, 5000) == 2  # on both replicas: the point here is following, not what is lost
        old = sentinel_set.primary()
        assert old is not None and old is sentinel_set.servers[0]
        old.kill()
        killed = time.monotonic()
        errors: list[str] = []
        while True:
            try:
                await client.xadd("s", {"n": "1"})
                break
            except RedisError as exc:
                errors.append(describe_redis_error(place, exc))
            assert time.monotonic() - killed < 20, errors[-3:]
        followed_s = time.monotonic() - killed
        new = sentinel_set.primary()
        assert new is not None and new is not old
        assert (await client.xlen("s")) == 2  # the entry before the kill was replicated; the one after is there
        info = await client.info("server")
        assert info["tcp_port"] == new.port
    finally:
        await client.aclose()
    print(f"followed in {followed_s:.1f} s; {len(errors)} failed calls; first: {errors[:1]}")
    assert followed_s < 15
    assert errors and all(sentinel_set.addresses in error for error in errors)
    # While the sentinels hold the old primary down and have not promoted a replica yet, readiness says so.
    assert any(f"no primary for service 'homeiq' known to sentinels {sentinel_set.addresses}" in error
               for error in errors), errors


async def test_passwords_come_from_files_and_are_never_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    servers = SentinelSet(tmp_path / "set", password=DATA_SECRET, sentinel_password=SENTINEL_SECRET).start()
    try:
        (tmp_path / "data").write_text(DATA_SECRET + "\n")
        (tmp_path / "sentinel").write_text(SENTINEL_SECRET + "\n")
        monkeypatch.setenv("REDIS_PASSWORD_FILE", str(tmp_path / "data"))
        monkeypatch.setenv("REDIS_SENTINEL_PASSWORD_FILE", str(tmp_path / "sentinel"))
        settings = ServiceSettings(redis_sentinels=servers.addresses).validate()
        place = place_of(settings)
        client = connect(place)
        try:
            await client.set("k", "v")
            assert await client.get("k") == b"v"
        finally:
            await client.aclose()
        assert DATA_SECRET not in repr(place) + str(place) + repr(settings)
        assert SENTINEL_SECRET not in repr(place) + str(place) + repr(settings)

        # Wrong passwords, each side: the error says what failed and where, and shows neither password.
        (tmp_path / "wrong").write_text("not-the-password-3b")
        for variable in ("REDIS_PASSWORD_FILE", "REDIS_SENTINEL_PASSWORD_FILE"):
            with monkeypatch.context() as env:
                env.setenv(variable, str(tmp_path / "wrong"))
                wrong_place = place_of(settings)
                client = connect(wrong_place)
                try:
                    with pytest.raises(RedisError) as caught:
                        await client.ping()
                finally:
                    await client.aclose()
                message = describe_redis_error(wrong_place, caught.value)
                assert servers.addresses in message
                for secret in (DATA_SECRET, SENTINEL_SECRET, "not-the-password-3b"):
                    assert secret not in message and secret not in repr(caught.value)
    finally:
        servers.stop()


def test_a_password_file_that_cannot_be_read_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.setenv("REDIS_SENTINEL_PASSWORD_FILE", str(tmp_path / "missing"))
    settings = msgspec.structs.replace(ServiceSettings(), redis_sentinels="127.0.0.1:26379")
    with pytest.raises(ConfigError, match="REDIS_SENTINEL_PASSWORD_FILE"):
        place_of(settings)
    assert place_of(ServiceSettings()).sentinels == ""  # without sentinels the file is not read


async def test_replayer_commands_go_through_the_sentinels(sentinel_set: SentinelSet) -> None:
    from typer.testing import CliRunner  # noqa: PLC0415

    from homeiq.replayer.cli import app  # noqa: PLC0415

    env = {"REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_SENTINELS": sentinel_set.addresses}
    client = connect(RedisPlace("redis://x/0", sentinel_set.addresses))
    try:
        await client.xgroup_create(DEFAULT_NAMES.stream, DEFAULT_NAMES.group, id="0", mkstream=True)
        for n in range(5):
            await client.xadd(DEFAULT_NAMES.stream, {"v": "1", "e": str(n)})
    finally:
        await client.aclose()
    runner = CliRunner()
    pending = await asyncio.to_thread(runner.invoke, app, ["pending", "--json"], env=env)
    assert pending.exit_code == 0, pending.output
    assert json.loads(pending.output)["length"] == 5
    status = await asyncio.to_thread(runner.invoke, app, ["status", "--json", "--collector-metrics",
                                                          "http://127.0.0.1:1/metrics"], env=env)
    assert json.loads(status.stdout)["redis"] == f"the primary of 'homeiq' per sentinels {sentinel_set.addresses}"

    for sentinel in sentinel_set.sentinels:  # none to ask: the command says where it asked, and exits 1
        sentinel.kill()
    failed = await asyncio.to_thread(runner.invoke, app, ["pending"], env=env)
    assert failed.exit_code == 1
    assert sentinel_set.addresses in failed.output and "REDIS_SENTINELS" in failed.output, failed.output
