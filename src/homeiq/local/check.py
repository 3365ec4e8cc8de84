"""`python -m homeiq.local.check`: ha-sim at a fixed rate through the whole pipeline, then an exact count.

Reports events sent, points found, lost and duplicated, and the consumer lag when the source stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from homeiq.ha_sim.hub import Hub
from homeiq.ha_sim.runner import SimServer
from homeiq.local.processes import ScriptProcess
from homeiq.local.services import InfluxServer, RedisServer
from homeiq.local.waiting import wait_for
from homeiq.shared.stream import DEFAULT_NAMES

TOKEN = "pipeline-check-token"  # noqa: S105 - a throwaway token for a private simulator


async def group_lag(client: aioredis.Redis) -> dict[str, int]:
    """Entries not yet delivered (lag) and delivered but not acked (pending)."""
    groups = await client.xinfo_groups(DEFAULT_NAMES.stream)
    group = next(g for g in groups if g["name"] == DEFAULT_NAMES.group.encode())
    return {"lag": int(group["lag"] or 0), "pending": int(group["pending"])}


async def audit_round(sim_url: str, influx_url: str, redis_url: str, since_ns: int, repair_too: bool
                      ) -> dict[str, object]:
    """One `replayer audit` over the run (in this process), and a repair when asked: its totals."""
    from homeiq.replayer.audit import audit, repair  # noqa: PLC0415 - only with --audit-delete
    from homeiq.shared.ha.reader import ha_session  # noqa: PLC0415
    from homeiq.shared.influx.reader import InfluxReader  # noqa: PLC0415
    from homeiq.shared.influx.settings import InfluxSettings  # noqa: PLC0415
    from homeiq.shared.stream import connect  # noqa: PLC0415

    reader = InfluxReader(InfluxSettings(url=influx_url, api="v1", bucket="home_assistant_events"))
    client = connect(redis_url)
    started = time.monotonic()
    try:
        async with ha_session(sim_url, TOKEN, 120, 4) as ha:
            report = await audit(ha, reader, since_ns, time.time_ns(), redis=client)  # what is queued is not missing
            if repair_too and not report.complete:
                report.repaired = await repair(ha, client, DEFAULT_NAMES, report)
    finally:
        await client.aclose()
        await reader.close()
    return {"entities": len(report.entities), "in_ha": report.total("in_ha"), "found": report.total("found"),
            "missing": report.total("missing"), "extra": report.total("extra"), "wrong": report.total("wrong"),
            "repaired": report.repaired, "seconds": round(time.monotonic() - started, 1)}


async def run_check(rate: float, duration_s: float, entities: int, writers: int, workdir: Path,
                    replayer_interval_s: float = 10.0, audit_delete: int = 0) -> dict[str, object]:
    """Run the pipeline, emit `rate * duration_s` events, wait for InfluxDB, compare with the ground truth."""
    redis_server = RedisServer(workdir / "redis", None).start()
    influx = InfluxServer(workdir / "influxdb", None).start()
    influx.create_database("home_assistant_events")
    hub = Hub.create(entities, TOKEN)
    sim = SimServer(hub)
    env = {"REDIS_URL": redis_server.url, "INFLUXDB_URL": influx.url, "INFLUXDB_API": "v1",
           "INFLUXDB_BUCKET": "home_assistant_events", "HA_TOKEN": TOKEN, "HA_URL": await sim.start(),
           "METRICS_HOST": "127.0.0.1", "LOG_FORMAT": "json", "COLLECTOR_SPOOL_DIR": str(workdir / "spool")}
    children = [ScriptProcess("writer", {**env, "WRITER_CONSUMER": f"writer-{n}"}, workdir / f"writer-{n}.log",
                              f"writer-{n}") for n in range(writers)]
    children.append(ScriptProcess("replayer", {**env, "REPLAYER_INTERVAL_S": str(replayer_interval_s)},
                                  workdir / "replayer.log"))
    children.append(ScriptProcess("collector", env, workdir / "collector.log"))
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await wait_for(lambda: hub.subscribed, 30, "the collector to subscribe (see collector.log)")
        since_ns = time.time_ns()
        started = time.monotonic()
        sent = await hub.emit(int(rate * duration_s), rate)
        emit_s = time.monotonic() - started
        lag_at_end = await group_lag(client)
        drain_started = time.monotonic()
        with contextlib.suppress(TimeoutError):  # what is missing then is reported as lost
            await wait_for(lambda: influx.count("home_assistant_events") >= sent, 120, "all points", 0.2)
        drain_s = time.monotonic() - drain_started
        points = influx.points("home_assistant_events")
        published = int(children[-1].scrape("homeiq_events_published_total"))
        final = await group_lag(client)
        audits = await _delete_and_repair(hub, influx, env["HA_URL"], redis_server.url, since_ns, sent, audit_delete)
    finally:
        codes = {child.name: child.terminate() for child in reversed(children)}
        await client.aclose()
        await sim.stop()
        influx.stop()
        redis_server.stop()
    expected = {(e.entity_id, e.last_updated_us * 1000): e.state for e in hub.sent}
    found = {(p["entity_id"], p["time"]): p["state_value"] for p in points}
    return {
        "rate_per_s": rate, "duration_s": round(emit_s, 1), "entities": entities, "writers": writers,
        "replayer_interval_s": replayer_interval_s,
        "events_sent": sent, "events_published_to_stream": published, "points_found": len(points),
        "lost": len(expected.keys() - found.keys()),
        "duplicated": len(points) - len(found.keys() & expected.keys()),
        "wrong_state": sum(1 for key, state in expected.items() if key in found and found[key] != state),
        "lag_at_end": lag_at_end, "drain_s": round(drain_s, 2), "final": final, "exit_codes": codes,
        **({"audit_before_delete_after_delete_and_repair_after_repair": audits} if audits else {}),
    }


async def _delete_and_repair(hub: Hub, influx: InfluxServer, ha_url: str, redis_url: str, since_ns: int, sent: int,
                             count: int) -> list[dict[str, object]]:
    """Audit, delete `count` of the `sent` points, audit and repair, audit again (nothing when `count` is 0)."""
    if not count:
        return []
    # HA's recorder shows a state from its next commit on (every 5 s): audit what it holds.
    await wait_for(lambda: not hub.recorder.uncommitted, 15, "the recorder's commit")
    audits = [await audit_round(ha_url, influx.url, redis_url, since_ns, False)]
    for sent_event in random.Random(5).sample(hub.sent, count):
        influx.query(f"DELETE FROM home_assistant_events WHERE entity_id = '{sent_event.entity_id}' "  # noqa: S608
                     f"AND time = {sent_event.last_updated_us * 1000}", "home_assistant_events", epoch=None)
    audits.append(await audit_round(ha_url, influx.url, redis_url, since_ns, True))
    await wait_for(lambda: influx.count("home_assistant_events") >= sent, 60, "the repaired points", 0.2)
    audits.append(await audit_round(ha_url, influx.url, redis_url, since_ns, False))
    return audits


def main() -> None:
    """Parse arguments, run the check, print the report as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of events")
    parser.add_argument("--entities", type=int, default=500)
    parser.add_argument("--writers", type=int, default=1)
    parser.add_argument("--replayer-interval", type=float, default=10.0,
                        help="seconds between the replayer's passes (each one trims the stream)")
    parser.add_argument("--audit-delete", type=int, default=0, metavar="N",
                        help="afterwards: audit, delete N points, audit and repair, audit again")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="homeiq-check-") as workdir:
        report = asyncio.run(run_check(args.rate, args.duration, args.entities, args.writers, Path(workdir),
                                       args.replayer_interval, args.audit_delete))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
