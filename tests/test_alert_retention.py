"""A point older than InfluxDB's retention policy: influxd drops it ("partial write: points beyond retention policy
dropped=1"), and no fix of ours makes a redrive land it. It is dead-lettered as `beyond_retention`, not
`rejected` (whose runbook is "fix, then redrive"), counted under that reason, and has its own runbook."""

from __future__ import annotations

import json
import time

import redis
import redis.asyncio as aioredis
import yaml
from typer.testing import CliRunner

from homeiq.local.services import InfluxServer, RedisServer
from homeiq.replayer.cli import app
from homeiq.shared.influx.sink import beyond_retention, classify
from homeiq.shared.stream import DEAD_REASON, DEFAULT_NAMES, FIELD_EVENT, FIELD_VERSION, POISON_REASONS
from tests.events import state_payload
from tests.helpers import wait_for
from tests.monitoring import OPS
from tests.writer_harness import fill, metric, running_writer, writer_settings

HOUR_NS = 3600 * 10**9
runner = CliRunner()


async def test_a_point_beyond_the_retention_policy_is_dead_lettered_as_beyond_retention(
    redis_server: RedisServer, redis_client: aioredis.Redis, influx: InfluxServer
) -> None:
    influx.query('CREATE DATABASE "short_rp" WITH DURATION 1h SHARD DURATION 1h NAME "short"', epoch=None)
    now = time.time_ns()
    await fill(redis_client, [state_payload(0, time_ns=now - 3 * HOUR_NS), state_payload(1, time_ns=now),
                              state_payload(2, time_ns=now - 2 * HOUR_NS)])
    async with running_writer(writer_settings(redis_server.url, influx.url, "short_rp")) as writer:
        await wait_for(lambda: metric(writer, "homeiq_dead_lettered_total", reason="beyond_retention") == 2, 20,
                       "the two old points dead-lettered as beyond_retention")
        assert metric(writer, "homeiq_dead_lettered_total", reason="rejected") == 0
        assert metric(writer, "homeiq_points_written_total") == 1
    dead = await redis_client.xrange(DEFAULT_NAMES.dead)
    assert [fields[b"reason"] for _, fields in dead] == [b"beyond_retention"] * 2
    assert b"points beyond retention policy" in dead[0][1][b"detail"]


def test_the_reason_is_in_the_one_list_and_influxdb_2x_words_are_read_too() -> None:
    assert "beyond_retention" in POISON_REASONS
    v2 = ('{"code":"unprocessable entity","message":"failure writing points to database: partial write: '
          'points beyond retention policy dropped=1"}')
    assert beyond_retention(classify(422, v2, None))
    assert beyond_retention(classify(400, '{"error":"partial write: points beyond retention policy dropped=1"}',
                                     None))
    # A line that quotes the words is still a parse error of that line.
    quoted = "m,a=partial\\\\ write:\\\\ points\\\\ beyond\\\\ retention\\\\ policy v=1"
    assert not beyond_retention(classify(400, f'{{"error":"unable to parse \'{quoted}\'"}}', None))
    assert not beyond_retention(classify(503, '{"error":"partial write: points beyond retention policy"}', None))


def test_beyond_retention_has_its_own_runbook_not_fix_then_redrive() -> None:
    rules = yaml.safe_load((OPS / "alerts.yml").read_text())["groups"][0]["rules"]
    [rule] = [r for r in rules if r["alert"] == "HomeiqBeyondRetention"]
    assert 'reason="beyond_retention"' in rule["expr"]
    runbook = rule["annotations"]["runbook"]
    assert "dead-letter purge --all --reason beyond_retention" in runbook and "RETENTION POLICY" in runbook
    [growing] = [r for r in rules if r["alert"] == "HomeiqDeadLetterGrowing"]
    assert 'reason!="beyond_retention"' in growing["expr"]


def test_the_runbooks_commands_purge_or_redrive_only_that_reason(
    redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    for reason in (b"beyond_retention", b"rejected", b"beyond_retention"):
        client.xadd(DEFAULT_NAMES.dead, {FIELD_VERSION: b"1", FIELD_EVENT: state_payload(0), DEAD_REASON: reason})
    env = {"REDIS_URL": redis_server.url}
    redrive = runner.invoke(app, ["dead-letter", "redrive", "--all", "--reason", "rejected", "--json"], env=env)
    assert redrive.exit_code == 0, redrive.output
    assert len(json.loads(redrive.stdout)) == 1 and client.xlen(DEFAULT_NAMES.stream) == 1
    purge = runner.invoke(app, ["dead-letter", "purge", "--all", "--reason", "beyond_retention", "--yes", "--json"],
                          env=env)
    assert purge.exit_code == 0, purge.output
    assert json.loads(purge.stdout) == {"removed": 2} and client.xlen(DEFAULT_NAMES.dead) == 0
