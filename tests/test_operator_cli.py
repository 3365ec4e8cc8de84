"""What an operator types at 3 a.m.: options where they type them, a purge that asks first, the truth about an
empty Redis, and unix:// sockets. Driven with CliRunner against real redis-server processes."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
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


LONG_ENTITY = "sensor." + "a_very_long_entity_id_as_integrations_name_them_" * 3 + "end"


def _dead_letters(client: redis.Redis) -> list[bytes]:
    """Three dead letters as the writers write them: a rejected state of LONG_ENTITY, an undecodable payload, and
    one whose payload was trimmed."""
    from homeiq.shared.stream import dead_letter_fields  # noqa: PLC0415
    from tests.events import state_payload  # noqa: PLC0415

    long_detail = "partial write: field type conflict: " + "x" * 300 + " END"
    made = []
    for fields, reason, detail in (
        ([FIELD_VERSION, b"1", FIELD_EVENT, state_payload(1, entity_id=LONG_ENTITY)], "rejected", long_detail),
        ([FIELD_VERSION, b"1", FIELD_EVENT, b"\xff{not json"], "undecodable", "bad json"),
        ([], "payload_trimmed", "pending entry deleted from the stream"),
    ):
        flat = dead_letter_fields(fields, reason, detail, b"1700000000000-0", "w1")  # type: ignore[arg-type]
        made.append(client.xadd(DEFAULT_NAMES.dead, dict(zip(flat[::2], flat[1::2], strict=True))))
    return made


def test_dead_letter_list_shows_time_entity_and_reason_and_full_ids_without_a_terminal(
    redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    ids = _dead_letters(client)
    env = {"REDIS_URL": redis_server.url, "COLUMNS": "80"}
    shown = runner.invoke(app, ["dead-letter", "list"], env=env)
    assert shown.exit_code == 0, shown.output
    header = next(line for line in shown.stdout.splitlines() if "reason" in line)
    for column in ("time", "entity", "reason"):
        assert column in header
    assert LONG_ENTITY in shown.stdout  # whole, on one line: not cut at 80 columns without a terminal
    when = datetime.fromtimestamp(int(ids[0].split(b"-")[0]) / 1000, UTC).isoformat(timespec="seconds")
    assert when[:19] in shown.stdout  # when it was dead-lettered, from its id
    assert "undecodable" in shown.stdout and "payload_trimmed" in shown.stdout
    listed = json.loads(runner.invoke(app, ["dead-letter", "list", "--json"], env=env).stdout)
    assert [d["entity_id"] for d in listed] == [LONG_ENTITY, None, None]
    assert all(d["time"].startswith("20") for d in listed)


def test_dead_letter_show_prints_the_whole_entry_with_its_payload_decoded(
    redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    rejected, undecodable, trimmed = (i.decode() for i in _dead_letters(client))
    env = {"REDIS_URL": redis_server.url}
    shown = runner.invoke(app, ["dead-letter", "show", rejected], env=env)
    assert shown.exit_code == 0, shown.output
    for text in (LONG_ENTITY, "rejected", "x" * 300 + " END", "1700000000000-0", "w1", '"state_changed"',
                 '"friendly_name"'):
        assert text in shown.stdout, text
    entry = json.loads(runner.invoke(app, ["dead-letter", "show", rejected, "--json"], env=env).stdout)
    assert entry["entity_id"] == LONG_ENTITY and entry["detail"].endswith(" END")
    assert entry["payload"]["new_state"]["attributes"] == {"friendly_name": "S"}
    bad = json.loads(runner.invoke(app, ["dead-letter", "show", undecodable, "--json"], env=env).stdout)
    assert bad["payload"] is None and "\\xff{not json" in bad["raw_payload"] and bad["payload_error"]
    gone = runner.invoke(app, ["dead-letter", "show", trimmed], env=env)
    assert gone.exit_code == 0 and "no payload" in gone.stdout
    missing = runner.invoke(app, ["dead-letter", "show", "1-1"], env=env)
    assert missing.exit_code == 1 and "1-1" in missing.stderr
    assert runner.invoke(app, ["dead-letter", "show", "nonsense"], env=env).exit_code == 2


def test_reason_values_are_checked_against_the_reasons_that_exist(
    redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    import typing  # noqa: PLC0415

    from homeiq.shared.stream import PoisonReason  # noqa: PLC0415

    client = redis.Redis.from_url(redis_server.url)
    _dead_letters(client)
    env = {"REDIS_URL": redis_server.url}
    wrong = runner.invoke(app, ["dead-letter", "list", "--reason", "rejectd"], env=env)
    assert wrong.exit_code == 2
    for reason in (*typing.get_args(PoisonReason), "payload_trimmed"):
        assert reason in wrong.stderr
    right = runner.invoke(app, ["dead-letter", "list", "--reason", "undecodable", "--json"], env=env)
    assert right.exit_code == 0 and [d["reason"] for d in json.loads(right.stdout)] == ["undecodable"]


def test_a_purge_without_a_terminal_and_without_yes_gives_the_yes_hint_not_aborted(
    redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.xadd(DEFAULT_NAMES.dead, {DEAD_REASON: b"rejected"})
    no_answer = runner.invoke(app, ["dead-letter", "purge", "--all"], env={"REDIS_URL": redis_server.url})
    assert no_answer.exit_code == 1
    assert "Aborted" not in no_answer.output and "--yes" in no_answer.stderr
    assert client.xlen(DEFAULT_NAMES.dead) == 1
