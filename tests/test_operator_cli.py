"""What an operator types at 3 a.m.: options where they type them, a purge that asks first, the truth about an
empty Redis, and unix:// sockets. Driven with CliRunner against real redis-server processes."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from typer.testing import CliRunner

from homeiq.local.services import RedisServer
from homeiq.replayer.cli import app
from homeiq.shared.settings import ConfigError, check_url
from homeiq.shared.stream import DEAD_REASON, DEFAULT_NAMES, FIELD_EVENT, FIELD_VERSION

runner = CliRunner()


def test_connection_options_are_accepted_after_the_subcommand(
    redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.xadd("other:events", {FIELD_VERSION: b"1", FIELD_EVENT: b"{}"})
    client.xadd("other:dead", {DEAD_REASON: b"rejected"})
    result = runner.invoke(app, ["pending", "--redis-url", redis_server.url, "--stream", "other:events", "--json"],
                           env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["length"] == 1
    nested = runner.invoke(app, ["dead-letter", "list", f"--redis-url={redis_server.url}", "--dead-stream",
                                 "other:dead", "--json"])
    assert nested.exit_code == 0, nested.output
    assert [d["reason"] for d in json.loads(nested.stdout)] == ["rejected"]


def test_a_purge_asks_first_and_a_dry_run_changes_nothing(
    redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    for n in range(3):
        client.xadd(DEFAULT_NAMES.dead, {DEAD_REASON: b"rejected", b"n": str(n).encode()})
    env = {"REDIS_URL": redis_server.url}
    dry = runner.invoke(app, ["dead-letter", "purge", "--all", "--dry-run", "--json"], env=env)
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout) == {"would_remove": 3}
    refused = runner.invoke(app, ["dead-letter", "purge", "--all"], env=env, input="n\n")
    assert refused.exit_code == 1 and "3 dead letters" in refused.output
    assert client.xlen(DEFAULT_NAMES.dead) == 3
    no_answer = runner.invoke(app, ["dead-letter", "purge", "--all"], env=env)  # no terminal, no --yes
    assert no_answer.exit_code == 1 and client.xlen(DEFAULT_NAMES.dead) == 3
    confirmed = runner.invoke(app, ["dead-letter", "purge", "--all", "--json"], env=env, input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    # The runner echoes the typed answer to stdout as a terminal would; the JSON follows it.
    assert json.loads(confirmed.stdout.split("\n", 1)[1]) == {"removed": 3}
    client.xadd(DEFAULT_NAMES.dead, {DEAD_REASON: b"rejected"})
    scripted = runner.invoke(app, ["dead-letter", "purge", "--before", str(int(time.time() * 1000) + 1000), "--yes",
                                   "--json"], env=env)
    assert json.loads(scripted.stdout) == {"removed": 1}


def test_pending_on_an_empty_redis_says_there_is_no_stream_then_no_group(
    redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    env = {"REDIS_URL": redis_server.url}
    empty = runner.invoke(app, ["pending"], env=env)
    assert empty.exit_code == 0, empty.output
    assert "no stream homeiq:events yet" in empty.stdout and "unknown" not in empty.stdout
    assert json.loads(runner.invoke(app, ["pending", "--json"], env=env).stdout)["state"] == "no_stream"
    redis.Redis.from_url(redis_server.url).xadd(DEFAULT_NAMES.stream, {FIELD_VERSION: b"1", FIELD_EVENT: b"{}"})
    no_group = runner.invoke(app, ["pending"], env=env)
    assert "no group writers yet" in no_group.stdout and "unknown" not in no_group.stdout
    assert json.loads(runner.invoke(app, ["pending", "--json"], env=env).stdout)["state"] == "no_group"


@pytest.fixture
def unix_redis(tmp_path: Path) -> Iterator[Path]:
    """A redis-server listening only on a unix socket."""
    socket_path = tmp_path / "redis.sock"
    process = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(socket_path), "--dir",
                                str(tmp_path), "--save", "", "--appendonly", "yes"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            assert time.monotonic() < deadline and process.poll() is None, "redis-server did not start"
            time.sleep(0.05)
        yield socket_path
    finally:
        process.terminate()
        process.wait(10)


def test_unix_socket_urls_work(unix_redis: Path) -> None:
    url = f"unix://{unix_redis}?db=0"
    assert check_url("REDIS_URL", url, ("redis", "rediss", "unix")) == url
    result = runner.invoke(app, ["pending", "--json"], env={"REDIS_URL": url})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["state"] == "no_stream"
    with pytest.raises(ConfigError, match="socket path"):
        check_url("REDIS_URL", "unix://", ("redis", "unix"))
