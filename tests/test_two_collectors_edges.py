"""Edges of the two-collector work found by a review (each failed first): a spool directory the collector cannot
write, sentinels asked in plain text beside TLS data nodes, a batch first added without a replica's confirmation,
and a collector that failed to build. Real redis-server/redis-sentinel processes on loopback; a collector as a
subprocess where its start is the point."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from homeiq.collector.metrics import CollectorMetrics
from homeiq.collector.publisher import Publisher
from homeiq.collector.spool import Spool
from homeiq.collector.unrecoverable import marked
from homeiq.local.services import SENTINEL_CONFIG, RedisSentinel, RedisServer, free_port
from homeiq.shared.health import Readiness
from homeiq.shared.options import ServiceSettings
from homeiq.shared.stream import DEFAULT_NAMES, RedisPlace, connect, describe_redis_error, place_of
from tests.events import other_payload
from tests.helpers import make_certs, value, wait_for

pytestmark = pytest.mark.timeout(90)
NAMES = DEFAULT_NAMES


def test_a_read_only_spool_dir_starts_or_is_refused_naming_the_variable(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    env = {**os.environ, "HA_URL": f"ws://127.0.0.1:{free_port()}/api/websocket", "HA_TOKEN": "ro-token",
           "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "COLLECTOR_SPOOL_DIR": str(spool),
           "METRICS_PORT": str(free_port()), "METRICS_HOST": "127.0.0.1", "LOG_FORMAT": "json"}
    collector = str(Path(sys.executable).parent / "collector")
    if os.getuid() == 0:  # a read-only mount (a volume mounted :ro), in a mount namespace of its own
        command = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && '
                   'exec "$1" run', str(spool), collector]
    else:
        spool.chmod(0o555)
        command = [collector, "run"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=6)
    except subprocess.TimeoutExpired:
        process.terminate()
        process.communicate(timeout=30)
        return  # it started, as collector_id() intends
    text = (out + err).decode()
    assert process.returncode == 2 and "COLLECTOR_SPOOL_DIR" in text and "Traceback" not in text, (
        process.returncode, text[-1500:])


# Sentinels in plain text with TLS data nodes (the README documented it before TLS to the sentinels): rediss://
# asks the sentinels over TLS by default; REDIS_SENTINEL_TLS=off asks them in plain text.
def test_upgrade_plain_text_sentinels_with_tls_data_nodes_are_still_asked(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    certs = make_certs(tmp_path / "certs")
    tls = certs.ca.parent
    primary = RedisServer(tmp_path / "redis", None, tls=tls).start()
    sentinel = RedisSentinel(tmp_path / "sentinel", None, primary.port, quorum=1)
    sentinel.workdir.mkdir(parents=True, exist_ok=True)
    (sentinel.workdir / "sentinel.conf").write_text(SENTINEL_CONFIG.format(
        port=sentinel.port, dir=sentinel.workdir, service="homeiq", primary_port=primary.port, quorum=1,
        down_after_ms=1000, failover_timeout_ms=5000)
        + f"tls-cert-file {tls / 'server.pem'}\ntls-key-file {tls / 'server.key'}\n"
        + f"tls-ca-cert-file {tls / 'ca.pem'}\ntls-replication yes\n")  # plain port for clients, TLS to the nodes
    sentinel.start()
    url = f"rediss://127.0.0.1:1/0?ssl_ca_certs={certs.ca}"

    async def ping(place: RedisPlace) -> object:
        client = connect(place, socket_timeout_s=5)
        try:
            return await client.ping()
        except RedisError as exc:
            return describe_redis_error(place, exc)
        finally:
            await client.aclose()

    try:
        settings = ServiceSettings(redis_url=url, redis_sentinels=sentinel.address, redis_sentinel_tls="off")
        plain = place_of(settings.validate())
        deadline = time.monotonic() + 15  # until the sentinel has reached the primary over TLS (not s_down)
        while (answer := asyncio.run(ping(plain))) is not True:  # REDIS_SENTINEL_TLS=off: plain text
            assert time.monotonic() < deadline, answer
            time.sleep(0.2)
        said = asyncio.run(ping(RedisPlace(url, sentinel.address, "homeiq")))  # auto: over TLS, and says so
        assert "asked over TLS (REDIS_SENTINEL_TLS=off asks in plain text)" in str(said), said
        assert "Connection(" not in str(said)  # not redis-py's whole client repr
    finally:
        sentinel.stop()
        primary.stop()


# 4. A batch whose first try added it but was not confirmed by WAIT goes to the spool; drained, every event is
#    skipped as already there (its identities), so it is never recorded as this collector's: when Redis forgets it,
#    the service calls in it are not counted (homeiq_events_dropped_total{reason="redis_forgot"}) and published_total
#    never counts them (deduplicated does).
async def test_a_batch_first_unconfirmed_then_drained_counts_as_ours_when_redis_forgets_it(tmp_path: Path) -> None:
    primary = RedisServer(tmp_path / "primary", None).start()
    replica: RedisServer | None = None
    client = aioredis.Redis.from_url(primary.url)
    metrics = CollectorMetrics(CollectorRegistry())
    publisher = Publisher(client, primary.url, NAMES, metrics, Readiness(), Spool(tmp_path / "spool", 10**6),
                          "block", replicas=(1, 200), dedup_window_s=600, collector_id="c1")
    batch = marked([other_payload("call_service", n, b'{"n":%d}' % n) for n in range(5)])  # as the collector hands them
    try:
        assert await publisher._xadd(batch) is False  # no replica yet: added, unconfirmed, kept in the spool
        replica = RedisServer(tmp_path / "replica", None, replica_of=primary.port).start()
        admin = aioredis.Redis.from_url(primary.url)

        async def confirmed() -> bool:
            return await publisher._xadd(batch)  # the spool's drain: the same batch again

        await wait_for(confirmed, 20, "the drain confirmed by a replica")
        assert await admin.xlen(NAMES.stream) == 5
        # Redis forgets all five (an older AOF): the tail goes back before them.
        await admin.set(f"{NAMES.collector_tail}:c1", b"0-1")
        await admin.aclose()
        await publisher.check_tail_now()
        assert value(metrics.redis_forgot) == 1
        lost = value(metrics.dropped, reason="redis_forgot")
        assert (lost, value(metrics.published)) == (5, 5), (
            f"lost counted {lost} of 5 service calls; published {value(metrics.published)}, "
            f"deduplicated {value(metrics.deduplicated)}")
    finally:
        await client.aclose()
        if replica is not None:
            replica.stop()
        primary.stop()


# 5. A Collector whose __init__ fails after it took the lock (here: a spool segment it cannot read) keeps the lock
#    for the rest of the process: only run()'s finally releases it. Harmless for `collector run` (the process exits),
#    but an in-process owner (the test harness, an embedding) is then refused by its own pid.
def test_a_collector_that_failed_to_build_leaves_its_directory_free(tmp_path: Path) -> None:
    from homeiq.collector.service import Collector  # noqa: PLC0415
    from homeiq.shared.settings import ConfigError  # noqa: PLC0415
    from tests.collector_harness import settings  # noqa: PLC0415

    spool = tmp_path / "spool"
    (spool / "spool-1.log").mkdir(parents=True)  # not a file: Spool() raises after the lock was taken
    config = settings(f"ws://127.0.0.1:{free_port()}/api/websocket", f"redis://127.0.0.1:{free_port()}/0", spool)
    with pytest.raises(OSError):
        Collector(config, "token", None, CollectorRegistry())
    (spool / "spool-1.log").rmdir()
    try:
        Collector(config, "token", None, CollectorRegistry())._state_lock.release()
    except ConfigError as exc:
        pytest.fail(f"refused by its own leaked lock: {exc}")
