"""Least privilege on the broker: each role's real code against a real redis-server holding the users that
`replayer acl-file` generates. Each role does its work with Redis refusing it nothing (the ACL LOG stays empty), and
is refused (NOPERM) what it must not do."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from redis.exceptions import AuthenticationError, ConnectionError, NoPermissionError, ResponseError
from typer.testing import CliRunner

from homeiq.ha_sim.messages import now_ts
from homeiq.local.services import InfluxServer, RedisServer, free_port
from homeiq.replayer.cli import app
from homeiq.replayer.service import Replayer
from homeiq.replayer.settings import AuditSettings, ReclaimSettings, ReplayerSettings
from homeiq.shared import acl
from homeiq.shared.influx.settings import InfluxSettings
from homeiq.shared.packing import xadd_batch_args, xadd_events
from homeiq.shared.scripts import XADD_BATCH_SCRIPT
from homeiq.shared.stream import (
    DEFAULT_NAMES,
    StreamNames,
    connect,
    dead_letter_fields,
    ensure_group,
    entry_fields,
)
from tests.collector_harness import TOKEN, every_state_once, running_collector, service_calls, simulator
from tests.events import state_payload
from tests.helpers import make_certs, wait_for
from tests.writer_harness import running_writer, writer_settings

runner = CliRunner()
NAMES = DEFAULT_NAMES
STREAM, GROUP, DEAD = NAMES.stream, NAMES.group, NAMES.dead


class AclRedis:
    """A redis-server started with the generated ACL file, and each role's password."""

    def __init__(self, server: RedisServer, passwords: dict[acl.Role, str]) -> None:
        self.server, self.passwords = server, passwords

    def url(self, role: acl.Role) -> str:
        return f"redis://{role}:{self.passwords[role]}@127.0.0.1:{self.server.port}/0"


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    root = tmp_path_factory.mktemp("acl")
    (root / "passwords").mkdir()
    passwords: dict[acl.Role, str] = {role: secrets.token_hex(16) for role in acl.ROLES}
    for role, password in passwords.items():
        (root / "passwords" / role).write_text(password + "\n")
    result = runner.invoke(app, ["acl-file", "--passwords-dir", str(root / "passwords"), "--out",
                                 str(root / "users.acl")])
    assert result.exit_code == 0, result.output
    text = (root / "users.acl").read_text()
    assert not any(password in text for password in passwords.values())  # only their hashes
    server = RedisServer(root / "redis", None, aclfile=root / "users.acl",
                         login=("admin", passwords["admin"])).start()
    yield AclRedis(server, passwords)
    server.stop()


@pytest.fixture
async def admin(acl_redis: AclRedis) -> AsyncIterator[aioredis.Redis]:
    """The admin user's client, on a flushed Redis with an empty ACL LOG."""
    client = connect(acl_redis.url("admin"))
    await client.flushall()
    await client.script_load(XADD_BATCH_SCRIPT)
    await client.execute_command("ACL", "LOG", "RESET")
    yield client
    await client.aclose()


async def refusals(admin: aioredis.Redis) -> list[str]:
    """What Redis refused since the test began: `user: command or key`."""
    entries: Any = await admin.execute_command("ACL", "LOG", "128")
    rows = [{(k.decode() if isinstance(k, bytes) else k): v for k, v in (
        entry.items() if isinstance(entry, dict) else zip(entry[::2], entry[1::2], strict=True))}
        for entry in entries]
    return [f"{_text(row['username'])}: {_text(row['reason'])} {_text(row['object'])} ({_text(row['context'])})"
            for row in rows]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def assert_refused(admin: aioredis.Redis, role: acl.Role, url: str, *commands: tuple[Any, ...]) -> None:
    """Each command is refused with NOPERM (a script's own command: an error saying so), and logged."""
    before = len(await refusals(admin))
    client = connect(url)
    try:
        for command in commands:
            with pytest.raises(ResponseError) as refused:
                await client.execute_command(*command)
            inside_a_script = "The user executing the script can't" in str(refused.value)  # Redis 7.0's words
            assert isinstance(refused.value, NoPermissionError) or inside_a_script, (command, refused)
    finally:
        await client.aclose()
    logged = (await refusals(admin))[:len(await refusals(admin)) - before]  # newest first
    assert logged and all(line.startswith(f"{role}: ") for line in logged), logged


def xadd_batch(keys: list[str]) -> tuple[Any, ...]:
    """EVALSHA of the collector's batch script (Redis has it: SCRIPT LOAD is every role's) on `keys`: its XADD and
    SET run as the caller."""
    sha = hashlib.sha1(XADD_BATCH_SCRIPT.encode()).hexdigest()  # Redis names scripts by SHA-1
    return ("EVALSHA", sha, len(keys), *keys, *xadd_batch_args(b"", [b"{}"]))


# What no pipeline role may do to the broker or to keys that are not its own.
NOBODY = [("FLUSHALL",), ("CONFIG", "GET", "*"), ("CONFIG", "SET", "appendonly", "no"), ("KEYS", "*"),
          ("DEL", STREAM), ("SET", STREAM, "x"), ("XGROUP", "DESTROY", STREAM, GROUP), ("ACL", "LIST"),
          ("SET", "another:key", "x"), ("SHUTDOWN",)]


def test_every_key_the_contract_names_is_some_roles_and_every_script_command_is_granted() -> None:
    derived = {name for name, value in vars(StreamNames).items() if isinstance(value, property)}
    assert derived == set(acl.KEY_PROPERTIES)
    granted = {key for role in acl.ROLES if role != "admin" for grant in acl.grants(role, NAMES)
               for key, _ in (*grant.keys, *grant.prefixes)}
    assert {NAMES.stream, NAMES.dead, *(getattr(NAMES, name) for name in acl.KEY_PROPERTIES)} <= granted
    assert acl.script_commands(
        "redis.pcall('XINFO', 'CONSUMERS', KEYS[1]) redis.call('XADD', KEYS[1])") == {"xinfo|consumers", "xadd"}


def test_names_from_the_settings_rename_every_rule(tmp_path: Path) -> None:
    for role in acl.ROLES:
        (tmp_path / role).write_text(f"secret-{role}\n")
    result = runner.invoke(app, ["acl-file", "--passwords-dir", str(tmp_path), "--role", "writer"],
                           env={"STREAM_NAME": "home[1]:ev*", "STREAM_DEAD": "home:dead"})
    assert result.exit_code == 0, result.output
    assert "secret" not in result.stdout
    assert "~home\\[1\\]:ev\\*" in result.stdout and "%W~home:dead" in result.stdout
    assert "homeiq" not in result.stdout and "user collector" not in result.stdout
    missing = runner.invoke(app, ["acl-file", "--passwords-dir", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "collector password" in missing.output


async def test_a_client_without_a_user_may_do_nothing(acl_redis: AclRedis, admin: aioredis.Redis) -> None:
    anonymous = connect(f"redis://127.0.0.1:{acl_redis.server.port}/0")
    try:
        with pytest.raises((AuthenticationError, ResponseError)):
            await anonymous.ping()
    finally:
        await anonymous.aclose()
    wrong = connect(f"redis://writer:not-its-password@127.0.0.1:{acl_redis.server.port}/0")
    try:
        with pytest.raises(AuthenticationError):
            await wrong.ping()
    finally:
        await wrong.aclose()


async def test_the_collector_publishes_and_resumes_and_may_not_ack_trim_or_delete(
    acl_redis: AclRedis, admin: aioredis.Redis, tmp_path: Path
) -> None:
    url = acl_redis.url("collector")
    async with simulator(commit_interval_s=0) as sim:
        async with running_collector(sim, url, tmp_path / "spool") as first:
            await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
            await sim.hub.emit(200, rate_per_s=500)
            service_calls(sim, 20)
            await wait_for(lambda: first.metric("homeiq_events_published_total") >= 220, 15, "220 published")
            await wait_for(lambda: admin.exists(NAMES.watermark), 10, "the watermark saved")
        # Reads its marks and the stream back; as one of two collectors, remembering what it adds.
        async with running_collector(sim, url, tmp_path / "spool", dedup_window_s=600):
            await wait_for(lambda: sim.hub.subscribed, 10, "the second subscription")
            await sim.hub.emit(100, rate_per_s=200)
            await every_state_once(admin, sim.hub)
    assert await admin.exists(NAMES.first_run, NAMES.collector_entities) == 2
    assert await admin.keys(NAMES.collector_tail + ":*")  # its own tail
    assert await admin.keys(NAMES.collector_seen + "*")
    assert await refusals(admin) == []

    length = await admin.xlen(STREAM)
    await ensure_group(admin, NAMES)
    await assert_refused(admin, "collector", url, *NOBODY, ("XACK", STREAM, GROUP, "0-1"),
                         ("XTRIM", STREAM, "MAXLEN", "0"), ("XDEL", STREAM, "0-1"),
                         ("XREADGROUP", "GROUP", GROUP, "c", "STREAMS", STREAM, ">"), ("XADD", DEAD, "*", "v", "1"),
                         ("SET", NAMES.last_audit, "x"), xadd_batch([DEAD]))
    assert await admin.xlen(STREAM) == length


async def test_a_writer_writes_and_dead_letters_and_may_not_add_delete_or_move_the_watermark(
    acl_redis: AclRedis, admin: aioredis.Redis, influx: InfluxServer, influx_db: str
) -> None:
    url = acl_redis.url("writer")
    await xadd_events(admin, STREAM, [state_payload(n) for n in range(50)] + [b"not an event"])
    async with running_writer(writer_settings(url, influx.url, influx_db)):  # creates the group itself
        await wait_for(lambda: admin.xlen(DEAD), 15, "the undecodable entry dead-lettered")

        async def drained() -> bool:
            groups: Any = await admin.xinfo_groups(STREAM)
            return bool(groups) and int(groups[0]["entries-read"] or 0) == 51 and not int(groups[0]["pending"])

        await wait_for(drained, 15, "every entry written or dead-lettered, and acked")
    assert influx.count(influx_db) == 50
    assert await refusals(admin) == []

    await assert_refused(admin, "writer", url, *NOBODY, ("XADD", STREAM, "*", "v", "1", "e", "{}"),
                         ("SET", NAMES.watermark, "1"), ("XTRIM", STREAM, "MAXLEN", "0"), ("XDEL", STREAM, "0-1"),
                         ("XRANGE", DEAD, "-", "+"), ("XAUTOCLAIM", STREAM, GROUP, "w1", "0", "0-0"),
                         ("XGROUP", "DELCONSUMER", STREAM, GROUP, "w1"), xadd_batch([STREAM]))
    assert await admin.xlen(STREAM) == 51


async def test_the_replayer_reclaims_dead_letters_trims_and_prunes_and_may_not_touch_the_collectors_keys(
    acl_redis: AclRedis, admin: aioredis.Redis, influx: InfluxServer, influx_db: str
) -> None:
    url = acl_redis.url("replayer")
    await ensure_group(admin, NAMES)
    await xadd_events(admin, STREAM, [state_payload(n) for n in range(30)] + [b"not an event"])
    await admin.xreadgroup(GROUP, "dead-writer", {STREAM: ">"}, count=100)  # a writer that died holding them
    suspect: Any = (await admin.xrange(STREAM, count=1))[0][0]
    await admin.xclaim(STREAM, GROUP, "dead-writer", 0, [suspect], retrycount=20)  # read alone, crash ledger
    settings = ReplayerSettings(
        redis_url=url, names=NAMES, metrics_host="127.0.0.1", metrics_port=0, interval_s=0.2, prune_idle_s=0.5,
        influx=InfluxSettings(url=influx.url, api="v1", bucket=influx_db, timeout_s=5),
        reclaim=ReclaimSettings(min_idle_ms=1)).validate()
    replayer = Replayer(settings, CollectorRegistry())
    stop = asyncio.Event()
    task = asyncio.create_task(replayer.run(stop))
    try:
        async def done() -> bool:
            consumers: Any = await admin.xinfo_consumers(STREAM, GROUP)
            return (await admin.xlen(STREAM) == 0 and await admin.xlen(DEAD) == 1
                    and not any(c["name"] == b"dead-writer" for c in consumers))

        await wait_for(done, 20, "all reclaimed, the poison dead-lettered, the stream trimmed, dead-writer pruned")
        await wait_for(lambda: replayer.readiness.reason is None, 5, "the replayer ready (gauges, AOF check)")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert influx.count(influx_db) == 30
    assert replayer.metrics_registry.get_sample_value("homeiq_stream_dead_letters") == 1
    assert await refusals(admin) == []

    await assert_refused(admin, "replayer", url, *NOBODY, ("SET", NAMES.watermark, "1"),
                         ("SET", NAMES.resume_from, "0-1"), ("DEL", DEAD), ("XTRIM", DEAD, "MAXLEN", "0"),
                         ("MGET", NAMES.watermark), ("SADD", NAMES.collector_entities, "light.x"),
                         xadd_batch([STREAM, NAMES.collector_tail]))


async def test_the_replayers_periodic_audit_records_and_repairs_as_the_replayer(
    acl_redis: AclRedis, admin: aioredis.Redis, influx: InfluxServer, influx_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HA_TOKEN", TOKEN)
    async with simulator(entity_count=5, commit_interval_s=0) as sim:
        await sim.hub.emit(10, rate_per_s=1000)  # recorded by HA, never published: missing in InfluxDB
        await wait_for(lambda: not sim.hub.recorder.uncommitted, 15, "the recorder's commit")
        settings = ReplayerSettings(
            redis_url=acl_redis.url("replayer"), names=NAMES, metrics_host="127.0.0.1", metrics_port=0,
            interval_s=0.2, influx=InfluxSettings(url=influx.url, api="v1", bucket=influx_db, timeout_s=5),
            reclaim=ReclaimSettings(min_idle_ms=1),
            audit=AuditSettings(interval_s=3600, ha_url=sim.url, settle_s=0, repair=True)).validate()
        replayer = Replayer(settings, CollectorRegistry())
        stop = asyncio.Event()
        task = asyncio.create_task(replayer.run(stop))
        try:
            await wait_for(lambda: admin.hget(NAMES.last_audit, "by"), 30, "the periodic audit recorded")
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    assert await admin.hget(NAMES.last_audit, "by") == b"periodic audit"
    assert await admin.xlen(STREAM) == replayer.metrics_registry.get_sample_value("homeiq_audit_repaired_total") == 15
    # 10 changes and the 5 first states: recorded by HA, published by the repair
    assert await refusals(admin) == []


def pairs(flat: list[bytes]) -> dict[Any, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def operator_cli(url: str, *args: str) -> Any:
    result = runner.invoke(app, [*args], env={"REDIS_URL": url})
    return result


async def test_the_operators_commands_work_and_delete_only_dead_letters(
    acl_redis: AclRedis, admin: aioredis.Redis
) -> None:
    url = acl_redis.url("operator")
    await ensure_group(admin, NAMES)
    await xadd_events(admin, STREAM, [state_payload(n) for n in range(5)])
    await admin.xreadgroup(GROUP, "w1", {STREAM: ">"}, count=2)
    await admin.xack(STREAM, GROUP, (await admin.xrange(STREAM, count=1))[0][0])  # trim takes it away
    await admin.set(NAMES.watermark, "1700000000000000000")
    dead_ids: list[Any] = [await admin.xadd(DEAD, pairs(dead_letter_fields(
        [part for pair in entry_fields(state_payload(n)).items() for part in pair], "rejected", "bad", b"1-1", "w1")))
        for n in range(3)]
    for args in (["pending", "--json"], ["status", "--json", "--collector-metrics", ""], ["trim", "--json"],
                 ["trim", "--dry-run", "--json"], ["reclaim", "--dry-run", "--json"], ["dead-letter", "list", "--json"],
                 ["dead-letter", "show", dead_ids[0].decode(), "--json"],
                 ["dead-letter", "redrive", "--id", dead_ids[0].decode(), "--json"],
                 ["dead-letter", "purge", "--all", "--yes"]):
        result = await asyncio.to_thread(operator_cli, url, *args)
        assert result.exit_code == 0, (args, result.output)
    assert await admin.xlen(DEAD) == 0 and await admin.xlen(STREAM) == 5  # 1 trimmed, 1 redriven
    assert await refusals(admin) == []

    await assert_refused(admin, "operator", url, *NOBODY, ("SET", NAMES.watermark, "1"), ("DEL", NAMES.last_audit),
                         ("XDEL", STREAM, "0-1"), ("SADD", NAMES.collector_entities, "light.x"))


async def test_a_viewer_sees_everything_and_changes_nothing(acl_redis: AclRedis, admin: aioredis.Redis) -> None:
    url = acl_redis.url("viewer")
    await ensure_group(admin, NAMES)
    await xadd_events(admin, STREAM, [state_payload(n) for n in range(5)])
    await admin.xadd(DEAD, {b"reason": b"rejected", b"original_id": b"1-1"})
    for args in (["pending", "--json"], ["status", "--json", "--collector-metrics", ""],
                 ["reclaim", "--dry-run", "--json"], ["dead-letter", "list", "--json"]):
        result = await asyncio.to_thread(operator_cli, url, *args)
        assert result.exit_code == 0, (args, result.output)
    shown = await asyncio.to_thread(operator_cli, url, "status", "--json", "--collector-metrics", "")
    status = json.loads(shown.stdout)
    assert status["stream"]["length"] == 5 and status["dead_letters"]["total"] == 1
    assert await refusals(admin) == []

    trim = await asyncio.to_thread(operator_cli, url, "trim", "--json")
    assert trim.exit_code == 1 and "no permissions to run the 'evalsha' command" in trim.output
    await assert_refused(admin, "viewer", url, *NOBODY, ("XADD", STREAM, "*", "v", "1"), ("XACK", STREAM, GROUP, "0-1"),
                         ("HSET", NAMES.last_audit, "by", "me"), ("SET", NAMES.watermark, "1"),
                         ("XTRIM", STREAM, "MAXLEN", "0"), ("EVAL", "return 1", 0),
                         ("XREADGROUP", "GROUP", GROUP, "c", "STREAMS", STREAM, ">"))
    assert await admin.xlen(STREAM) == 5


async def test_the_whole_pipeline_with_a_user_per_role_audits_and_repairs(
    acl_redis: AclRedis, admin: aioredis.Redis, influx: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    """ha-sim → collector → writer → InfluxDB, each as its own user; points lost in InfluxDB are found by
    `replayer audit` as the operator, and published again (`--repair`)."""
    async with simulator(entity_count=20, commit_interval_s=0) as sim:
        since = datetime.fromtimestamp(now_ts() + 0.001, UTC).isoformat()
        async with running_writer(writer_settings(acl_redis.url("writer"), influx.url, influx_db)), \
                running_collector(sim, acl_redis.url("collector"), tmp_path / "spool"):
            await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
            await sim.hub.emit(300, rate_per_s=1000)
            await wait_for(lambda: influx.count(influx_db) >= 300, 20, "every change written")
            gone = sim.hub.sent[100:105]
            for sent in gone:
                influx.query(f"DELETE FROM home_assistant_events WHERE entity_id = '{sent.entity_id}' AND "
                             f"time = {sent.last_updated_us * 1000}", influx_db, epoch=None)
            await wait_for(lambda: not sim.hub.recorder.uncommitted, 15, "the recorder's commit")
            env = {"HA_URL": sim.url, "HA_TOKEN": TOKEN, "REDIS_URL": acl_redis.url("operator"),
                   "INFLUXDB_URL": influx.url, "INFLUXDB_API": "v1", "INFLUXDB_BUCKET": influx_db}
            process = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "replayer"), "audit", "--since", since, "--json", "--repair",
                env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
            assert process.returncode == 1, stderr.decode()  # it found missing points
            assert json.loads(stdout)["repaired"] == 5
            await wait_for(lambda: influx.count(influx_db) >= 300, 20, "the repaired points written")
    assert await admin.hget(NAMES.last_audit, "by") == b"replayer audit"
    assert await refusals(admin) == []


async def test_tls_with_a_ca_and_a_user_per_role_over_rediss(acl_redis: AclRedis, tmp_path: Path) -> None:
    """`rediss://user:password@host:port/0?ssl_ca_certs=ca.pem` with connect() as it is: Redis's certificate checked
    against the CA, the user's rules as over TCP."""
    folder, port = make_certs(tmp_path).ca.parent, free_port()
    server = await asyncio.create_subprocess_exec(
        "redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
        "--tls-cert-file", "server.pem", "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.pem",
        "--tls-auth-clients", "no", "--save", "", "--aclfile", str(acl_redis.server.aclfile),
        cwd=folder, stdout=asyncio.subprocess.DEVNULL)
    password = acl_redis.passwords["writer"]
    writer = connect(f"rediss://writer:{password}@127.0.0.1:{port}/0?ssl_ca_certs={folder / 'ca.pem'}")
    unverified = connect(f"rediss://writer:{password}@127.0.0.1:{port}/0")  # the system's CAs: not ours
    try:
        await wait_for(lambda: _pings(writer), 10, "Redis answering over TLS")
        assert await ensure_group(writer, NAMES)
        with pytest.raises(NoPermissionError):
            await writer.xadd(STREAM, {b"v": b"1"})
        with pytest.raises(ConnectionError, match="certificate verify failed"):
            await unverified.ping()
    finally:
        await writer.aclose()
        await unverified.aclose()
        server.terminate()
        await asyncio.wait_for(server.wait(), 10)


async def _pings(client: aioredis.Redis) -> bool:
    try:
        return bool(await client.ping())
    except ConnectionError:
        return False


async def test_what_scripts_wrote_survives_a_restart_from_the_append_only_file(
    acl_redis: AclRedis, admin: aioredis.Redis
) -> None:
    """Redis 7.0 replays a script's writes from its AOF as MULTI/EXEC, checked against the default user: a default
    user without permissions made that replay drop them (lost at every restart, and an ACL LOG entry)."""
    collector = connect(acl_redis.url("collector"))
    try:
        await collector.execute_command(*xadd_batch([STREAM, NAMES.collector_tail]))
    finally:
        await collector.aclose()
    await admin.aclose()
    acl_redis.server.stop()
    acl_redis.server.start()
    after = connect(acl_redis.url("admin"))
    try:
        assert await after.xlen(STREAM) == 1 and await after.get(NAMES.collector_tail)
        assert await refusals(after) == []
    finally:
        await after.aclose()


async def test_a_roles_password_comes_from_a_file_and_the_url_names_only_the_user(
    acl_redis: AclRedis, admin: aioredis.Redis, tmp_path: Path
) -> None:
    """REDIS_URL=redis://collector@host/0 and REDIS_PASSWORD_FILE: the service and a `replayer` command log in as
    their user, and no password is in the URL or the environment."""
    secret = tmp_path / "password"
    secret.write_text(acl_redis.passwords["viewer"] + "\n")
    url = f"redis://viewer@127.0.0.1:{acl_redis.server.port}/0"
    await ensure_group(admin, NAMES)
    result = await asyncio.to_thread(runner.invoke, app, ["pending", "--json"],
                                     env={"REDIS_URL": url, "REDIS_PASSWORD_FILE": str(secret)})
    assert result.exit_code == 0, result.output
    assert acl_redis.passwords["viewer"] not in result.output
    wrong = await asyncio.to_thread(runner.invoke, app, ["pending", "--json"], env={"REDIS_URL": url})
    assert wrong.exit_code != 0 and url in wrong.output, wrong.output  # no password: refused, naming the URL
    assert [line.split(" (")[0] for line in await refusals(admin)] == ["viewer: auth HELLO"]
    await admin.execute_command("ACL", "LOG", "RESET")
    secret.write_text(acl_redis.passwords["collector"])
    collector_url = f"redis://collector@127.0.0.1:{acl_redis.server.port}/0"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("REDIS_PASSWORD_FILE", str(secret))
        async with simulator() as sim, running_collector(sim, collector_url, tmp_path / "spool") as run:
            await wait_for(lambda: sim.hub.subscribed, 10, "a subscription")
            await sim.hub.emit(20, rate_per_s=200)
            await wait_for(lambda: run.metric("homeiq_events_published_total") >= 20, 10, "20 published")
    assert await refusals(admin) == []
