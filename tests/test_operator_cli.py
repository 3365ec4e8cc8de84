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

from homeiq.local.services import InfluxServer, RedisServer
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
    for command in (["redrive", "--all"], ["purge", "--all", "--yes"]):  # every --reason is checked
        refused = runner.invoke(app, ["dead-letter", *command, "--reason", "rejectd"], env=env)
        assert refused.exit_code == 2 and "beyond_retention" in refused.stderr, command
    assert client.xlen(DEFAULT_NAMES.dead) == 3
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


async def _replayer(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """The `replayer` console script in a process of its own (the test's loop keeps running)."""
    import asyncio  # noqa: PLC0415
    import os  # noqa: PLC0415
    import sys  # noqa: PLC0415

    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "replayer"), *args, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_status_shows_ha_the_stream_pending_dead_letters_spool_and_the_last_audit_on_one_screen(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    from homeiq.replayer.audit import AuditReport, EntityAudit, record  # noqa: PLC0415
    from tests.collector_harness import running_collector, simulator  # noqa: PLC0415
    from tests.helpers import wait_for  # noqa: PLC0415

    client = redis.Redis.from_url(redis_server.url)
    env = {"REDIS_URL": redis_server.url}
    # One event an entry (version 1): the status below counts entries, and this test places 50 of them.
    async with simulator(entity_count=10) as sim, running_collector(sim, redis_server.url, tmp_path,
                                                                     events_per_entry=1) as run:
        await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
        await sim.hub.emit(50, rate_per_s=1000)
        await wait_for(lambda: client.xlen(DEFAULT_NAMES.stream) >= 50, 10, "50 entries")
        client.xgroup_create(DEFAULT_NAMES.stream, DEFAULT_NAMES.group, id="0")
        client.xreadgroup(DEFAULT_NAMES.group, "writer-a", {DEFAULT_NAMES.stream: ">"}, count=20)
        _dead_letters(client)
        await record(redis_client, DEFAULT_NAMES, AuditReport(1, 2, [EntityAudit("sensor.x", "differs", 3, 2, [7])]),
                     "replayer audit")
        port = await wait_for(lambda: run.collector.runtime.health.port, 10, "the collector's metrics")
        metrics = f"http://127.0.0.1:{port}/metrics"
        code, stdout, stderr = await _replayer("status", "--collector-metrics", metrics, "--json", env=env)
        assert code == 0, stderr
        status = json.loads(stdout)
        assert status["ha"]["connected"] is True and status["ha"]["metrics_url"] == metrics
        stream = status["stream"]
        assert stream["length"] == 50 and stream["lag"] == 30 and stream["pending"] == 20
        assert [(c["name"], c["pending"]) for c in stream["consumers"]] == [("writer-a", 20)]
        assert status["dead_letters"] == {"total": 3, "by_reason": {"rejected": 1, "undecodable": 1,
                                                                    "payload_trimmed": 1}}
        assert status["spool"]["bytes"] == 0 and status["spool"]["max_bytes"] > 0
        assert status["last_audit"]["missing"] == 1 and status["last_audit"]["by"] == "replayer audit"
        assert status["collector"]["first_run"] and status["collector"]["newest_live_state_age_s"] is not None
        code, table, stderr = await _replayer("status", "--collector-metrics", metrics, env=env)
        assert code == 0, stderr
        for text in ("connected", "writer-a", "rejected", "payload_trimmed", "spool", "last audit", "1 missing",
                     metrics):
            assert text in table, (text, table)
    # The collector is gone: what Redis knows is still shown; the exit code and stderr say what could not be read.
    secret = f"http://admin:s3cret-token@127.0.0.1:{port}/metrics"
    code, stdout, stderr = await _replayer("status", "--collector-metrics", secret, env=env)
    assert code == 1 and "writer-a" in stdout
    assert f"127.0.0.1:{port}" in stderr and "COLLECTOR_METRICS_URL" in stderr
    assert "s3cret-token" not in stdout + stderr
    code, stdout, stderr = await _replayer("status", "--collector-metrics", "", env=env)
    assert code == 0 and "not asked" in stdout, stderr


ROOT = Path(__file__).resolve().parent.parent


def test_scripts_start_keeps_ha_sims_token_in_a_file_only_its_owner_reads(tmp_path: Path) -> None:
    from homeiq.local.pipeline import ha_sim_token  # noqa: PLC0415

    token = ha_sim_token(tmp_path / "data")
    path = tmp_path / "data" / "ha-sim-token"
    assert path.read_text().strip() == token and len(token) >= 24
    assert path.stat().st_mode & 0o777 == 0o600
    assert ha_sim_token(tmp_path / "data") == token  # the same across restarts: an audit later still gets in


async def test_scripts_replayer_runs_the_replayer_against_what_scripts_start_runs(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer, tmp_path: Path
) -> None:
    import asyncio  # noqa: PLC0415
    import os  # noqa: PLC0415
    from urllib.parse import urlsplit  # noqa: PLC0415

    from tests.collector_harness import TOKEN, simulator  # noqa: PLC0415

    influx.create_database("home_assistant_events")
    data = tmp_path / "data"
    data.mkdir()
    (data / "ha-sim-token").write_text(TOKEN + "\n")
    (data / "ha-sim-token").chmod(0o600)
    async with simulator(entity_count=5) as sim:
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("REDIS_", "INFLUXDB_", "HA_", "COLLECTOR_"))}
        env.update(HOMEIQ_DATA_DIR=str(data), HOMEIQ_REDIS_PORT=str(redis_server.port),
                   HOMEIQ_INFLUXDB_PORT=str(urlsplit(influx.url).port), HA_SIM_PORT=str(urlsplit(sim.url).port),
                   HOMEIQ_COLLECTOR_METRICS_PORT="1")
        process = await asyncio.create_subprocess_exec(
            str(ROOT / "scripts" / "replayer"), "audit", "--since", "1h", "--json", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode in (0, 1), stderr.decode()
    report = json.loads(stdout)  # HA, InfluxDB and Redis all answered: the audit ran to its end
    assert len(report["entities"]) == 5 and TOKEN not in stdout.decode() + stderr.decode()
    status = await asyncio.to_thread(subprocess.run, [str(ROOT / "scripts" / "replayer"), "status", "--json"],
                                     env=env, capture_output=True, text=True, timeout=60, check=False)
    assert status.returncode == 1 and "127.0.0.1:1/metrics" in status.stderr  # the collector's port from the env
    assert json.loads(status.stdout)["redis"] == redis_server.url


def test_lines_are_whole_when_not_on_a_terminal(redis_server: RedisServer, redis_client: aioredis.Redis) -> None:
    stream = "homeiq:" + "a_stream_name_long_enough_to_pass_eighty_columns_" * 2 + "end"
    redis.Redis.from_url(redis_server.url).xadd(stream, {FIELD_VERSION: b"1", FIELD_EVENT: b"{}"})
    shown = runner.invoke(app, ["pending", "--stream", stream], env={"REDIS_URL": redis_server.url, "COLUMNS": "80"})
    assert shown.exit_code == 0, shown.output
    assert f"stream {stream}: 1 entries; no group writers yet: no writer has started (the entries wait for one)" \
        in shown.stdout
