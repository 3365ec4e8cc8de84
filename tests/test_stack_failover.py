"""The compose stack with Redis Sentinel and two collectors, for real, as the README starts it:
`scripts/stack-up --try --failover` (local images; a primary, two replicas, three sentinels; collector and
collector-b both subscribed to ha-sim), with tests/stack/compose.test.yaml and compose.failover.test.yaml (ha-sim fires
a known number of events; both collectors start once the writers are healthy).

While ha-sim fires: `docker kill` of the primary's container (the sentinels promote a replica; points keep arriving),
then `docker kill` of one collector (the other carries on; points keep arriving). Every event ha-sim fired is then
one point in InfluxDB, point for point; the killed primary, started again, comes back as a replica of the new one
(its role as Sentinel rewrote it, not as its first start had it); Prometheus has both collectors as targets.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.test_stack import Stack, _read_record, http_json, influx_points, running, wait_until

EVENTS, RATE, WRITERS = 4000, 50, 2
STACK_UP = ["scripts/stack-up", "--try", "--failover", "--writers", str(WRITERS), "-f", "tests/stack/compose.test.yaml",
            "-f", "tests/stack/compose.failover.test.yaml"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # A quicker failover than the defaults (5 s, 60 s), as the fault suite's.
    with running(STACK_UP, {"HA_SIM_EVENTS": str(EVENTS), "HA_SIM_RATE": str(RATE), "SENTINEL_DOWN_AFTER_MS": "2000",
                            "SENTINEL_FAILOVER_TIMEOUT_MS": "10000"}) as started:
        yield started


def primary(stack: Stack) -> str:
    """The service the sentinels name as the primary (the first that answers)."""
    for sentinel in ("sentinel-1", "sentinel-2", "sentinel-3"):
        done = stack.compose("exec", "-T", sentinel, "redis-cli", "-p", "26379", "sentinel",
                             "get-master-addr-by-name", "homeiq", check=False)
        if done.returncode == 0 and done.stdout.split():
            return done.stdout.split()[0]
    return ""


def info(stack: Stack, service: str, section: str) -> dict[str, str]:
    out = stack.exec(service, "redis-cli", "info", section)
    return dict(line.split(":", 1) for line in out.splitlines() if ":" in line)


def sentinels_view(stack: Stack) -> str:
    """Each sentinel's state of the service, its replicas and peers, and its whole log (a failover that stalls)."""
    shown = []
    for sentinel in ("sentinel-1", "sentinel-2", "sentinel-3"):
        for what in (["master", "homeiq"], ["replicas", "homeiq"], ["sentinels", "homeiq"]):
            done = stack.compose("exec", "-T", sentinel, "redis-cli", "-p", "26379", "sentinel", *what, check=False)
            shown.append(f"--- {sentinel}: sentinel {' '.join(what)}\n{' '.join(done.stdout.split())}")
        log = stack.compose("logs", "--no-color", sentinel, check=False).stdout
        shown.append(f"--- {sentinel}: log\n{log}")
    return "\n".join(shown)


def docker(*args: str) -> None:
    subprocess.run(["docker", *args], check=True, capture_output=True)


def test_a_killed_primary_and_a_killed_collector_lose_nothing(stack: Stack) -> None:
    started = time.monotonic()
    sim = stack.containers("ha-sim")[0]
    assert len(stack.containers("collector-b")) == 1 and primary(stack) == "redis"
    assert info(stack, "redis", "replication")["connected_slaves"] == "2"

    def points_beyond(count: int) -> int | None:
        now = len(influx_points(stack))
        return now if now > count else None

    # The primary's container killed: the sentinels promote a replica, the collectors and writers follow.
    seen = wait_until(lambda: points_beyond(EVENTS // 10), 180, "a tenth of the events in InfluxDB")
    old_primary = stack.containers("redis")[0]
    docker("kill", old_primary)
    killed = time.monotonic()
    try:
        new_primary = wait_until(lambda: (p if (p := primary(stack)) not in ("", "redis") else None), 60,
                                 "the sentinels to promote a replica")
    except TimeoutError as timed_out:
        raise AssertionError(f"{timed_out}; what the sentinels saw:\n{sentinels_view(stack)}") from None
    promoted_s = time.monotonic() - killed
    seen = wait_until(lambda: points_beyond(seen + 5 * RATE), 90, "points after the failover")
    flowing_s = time.monotonic() - killed
    assert _read_record(sim) is None, "ha-sim was done before the failover was over: raise EVENTS"

    # One collector killed (for good: a killed container stays down): the other is subscribed all along.
    docker("kill", stack.containers("collector")[0])
    wait_until(lambda: points_beyond(seen + 5 * RATE), 90, "points after a collector was killed")
    assert _read_record(sim) is None, "ha-sim was done before the collector was killed: raise EVENTS"

    record = wait_until(lambda: _read_record(sim), 180, "ha-sim's record of what it fired")
    expected = {(e["entity_id"], e["time_ns"]): e["state"] for e in map(json.loads, record.splitlines())}
    assert len(expected) == EVENTS

    def all_points() -> list[dict[str, Any]] | None:
        points = influx_points(stack)
        return points if len(points) >= EVENTS else None

    # Every point, whichever source wrote it: the collector that subscribes second finds the first one's watermark
    # and backfills the moment between; the broker skips those copies of what the first had added live.
    points = wait_until(all_points, 180, f"{EVENTS} points in InfluxDB")
    found = {(p["entity_id"], p["time"]): p["state_value"] for p in points}
    assert found == expected  # point for point: none lost, none extra, every state right
    sources = Counter(p["source"] for p in points)

    # Each event once in the stream, whichever collector sent it first.
    stream = stack.exec(new_primary, "redis-cli", "xinfo", "stream", "homeiq:events").split()
    added = int(stream[stream.index("entries-added") + 1])
    print(f"stream entries added {added} for {EVENTS} events")
    assert added == EVENTS

    # The old primary started again: a replica of the new one, as Sentinel rewrote its configuration.
    docker("start", old_primary)
    wait_until(lambda: info(stack, "redis", "replication").get("master_host") == new_primary, 60,
               f"the old primary to follow {new_primary}")
    conf = stack.exec("redis", "cat", "/data/redis.conf")
    assert re.search(rf"^replicaof {re.escape(new_primary)} 6379$", conf, re.MULTILINE), conf

    # Prometheus scrapes both collectors (the killed one is down: HomeiqTargetDown, not HomeiqStageDown).
    prometheus = f"http://127.0.0.1:{stack.env['PROMETHEUS_PORT']}/api/v1/targets"
    targets = http_json(prometheus, {})["data"]["activeTargets"]
    collectors = {t["labels"]["instance"] for t in targets if t["labels"]["job"] == "homeiq-collector"}
    assert collectors == {"collector:8001", "collector-b:8001"}, collectors
    print(f"points by source {dict(sources)}; promoted {promoted_s:.1f} s after the kill, points again within "
          f"{flowing_s:.1f} s; "
          f"stack-up {stack.up_seconds[0]:.0f} s, checks {time.monotonic() - started:.0f} s")
