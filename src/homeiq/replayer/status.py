"""`replayer status`: the pipeline on one screen. Redis says what it holds (the stream, the group, the dead letters,
the collector's marks, the last audit); HA's connection and the spool are in the collector's metrics only."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import msgspec
import redis.asyncio as aioredis
import typer
from rich.markup import escape

from homeiq.replayer.audit import LAST_AUDIT_COUNTS
from homeiq.replayer.console import Json, err, execute, out, print_json, redis_place, table
from homeiq.replayer.operations import PendingReport, pending_report
from homeiq.replayer.settings import Connection, StatusSettings
from homeiq.shared.binding import bind
from homeiq.shared.cli import EXIT_FAILURE
from homeiq.shared.settings import redact_url
from homeiq.shared.stream import DEAD_REASON, RedisPlace, StreamNames, xrange_pages

METRICS_TIMEOUT_S = 5.0
DEAD_SCAN = 1_000_000  # dead letters counted by reason at most (XLEN gives the total always)


class HaView(msgspec.Struct):
    """HA's connection as the collector reports it in its metrics; all None when they could not be read."""

    metrics_url: str | None  # None: not asked
    connected: bool | None = None  # connected, authenticated and subscribed
    auth_rejected: bool | None = None
    gap_open: bool | None = None  # a gap in what HA sent is not yet backfilled
    error: str | None = None


class CollectorView(msgspec.Struct):
    """What the collector keeps in Redis."""

    first_run: str | None  # when the pipeline first ran; None: not known (no mark, or it ran before the mark)
    newest_live_state: str | None  # the newest live state it made durable (HA's time), None before the first
    newest_live_state_age_s: float | None


class DeadLetterCounts(msgspec.Struct):
    total: int
    by_reason: dict[str, int]


class SpoolView(msgspec.Struct):
    bytes: int
    max_bytes: int


class LastAudit(msgspec.Struct):
    """The last audit that ran to its end."""

    finished: str
    age_s: float
    by: str
    since: str
    until: str
    complete: bool
    entities: int
    in_ha: int
    found: int
    missing: int
    before_first_run: int
    queued: int
    extra: int
    wrong: int
    collapsed: int


class Status(msgspec.Struct):
    redis: str
    ha: HaView
    collector: CollectorView
    stream: PendingReport
    dead_letters: DeadLetterCounts
    spool: SpoolView | None
    last_audit: LastAudit | None


def _iso(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns / 1e9, UTC).isoformat(timespec="seconds")


async def _dead_letters(client: aioredis.Redis, names: StreamNames) -> DeadLetterCounts:
    by_reason: Counter[str] = Counter()
    seen = 0
    async for chunk in xrange_pages(client, names.dead, page=10_000):
        for _, fields in chunk:
            by_reason[fields.get(DEAD_REASON, b"?").decode(errors="replace")] += 1
        seen += len(chunk)
        if seen >= DEAD_SCAN:
            break
    return DeadLetterCounts(total=int(await client.xlen(names.dead)), by_reason=dict(by_reason))


async def _collector(client: aioredis.Redis, names: StreamNames, now_ns: int) -> CollectorView:
    first, watermark = await client.mget(names.first_run, names.watermark)
    newest = int(watermark) if watermark else 0
    return CollectorView(first_run=_iso(int(first)) if first and int(first) else None,
                         newest_live_state=_iso(newest) if newest else None,
                         newest_live_state_age_s=round((now_ns - newest) / 1e9, 1) if newest else None)


async def _last_audit(client: aioredis.Redis, names: StreamNames, now_ns: int) -> LastAudit | None:
    raw: Any = await client.hgetall(names.last_audit)
    if not raw:
        return None
    got = {key.decode(): value.decode() for key, value in raw.items()}
    finished = int(got["finished_ns"])
    return LastAudit(finished=_iso(finished), age_s=round((now_ns - finished) / 1e9), by=got.get("by", "?"),
                     since=_iso(int(got["since_ns"])), until=_iso(int(got["until_ns"])),
                     complete=got.get("complete") == "1", entities=int(got.get("entities", 0)),
                     **{what: int(got.get(what, 0)) for what in LAST_AUDIT_COUNTS})


async def _collector_metrics(url: str) -> dict[str, float]:
    """The collector's samples by name (labels dropped: the ones read here have none)."""
    import aiohttp  # noqa: PLC0415 - keep --help fast
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=METRICS_TIMEOUT_S)) as session, \
            session.get(url) as response:
        if response.status != 200:
            raise OSError(f"answered HTTP {response.status}")
        text = await response.text()
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples}


async def _ha_and_spool(url: str) -> tuple[HaView, SpoolView | None]:
    if not url:
        return HaView(metrics_url=None), None
    shown = redact_url(url)
    try:
        samples = await _collector_metrics(url)
    except (OSError, TimeoutError, ValueError) as exc:  # aiohttp's errors are OSErrors; a parse error a ValueError
        why = (str(exc) or type(exc).__name__).replace(url, shown)  # an error may quote the URL: never its password
        return HaView(metrics_url=shown, error=f"collector metrics at {shown} unreadable: {why}"), None
    if "homeiq_ha_connected" not in samples:
        return HaView(metrics_url=shown, error=f"{shown} serves no homeiq_ha_connected: is it the collector's "
                      "metrics?"), None

    def flag(name: str) -> bool | None:
        return None if name not in samples else samples[name] == 1

    spool = None
    if "homeiq_spool_bytes" in samples:
        spool = SpoolView(bytes=int(samples["homeiq_spool_bytes"]),
                          max_bytes=int(samples.get("homeiq_spool_max_bytes", 0)))
    return HaView(metrics_url=shown, connected=flag("homeiq_ha_connected"),
                  auth_rejected=flag("homeiq_ha_auth_rejected"), gap_open=flag("homeiq_backfill_gap_open")), spool


async def read_status(client: aioredis.Redis, names: StreamNames, redis_url: str | RedisPlace, metrics_url: str
                      ) -> Status:
    """Everything `replayer status` shows; Redis failures raise, the collector's metrics say why they are not."""
    now_ns = time.time_ns()
    metrics = asyncio.ensure_future(_ha_and_spool(metrics_url))
    try:
        stream = await pending_report(client, names)
        dead = await _dead_letters(client, names)
        collector = await _collector(client, names, now_ns)
        audit = await _last_audit(client, names, now_ns)
    finally:
        ha, spool = await metrics
    where = redis_url if isinstance(redis_url, RedisPlace) else RedisPlace(redis_url)
    return Status(redis=str(where), ha=ha, collector=collector, stream=stream, dead_letters=dead,
                  spool=spool, last_audit=audit)


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _ha_line(ha: HaView) -> str:
    if ha.metrics_url is None:
        return "not asked (no --collector-metrics / COLLECTOR_METRICS_URL)"
    if ha.error is not None:
        return f"unknown: {ha.error}"
    state = "connected and subscribed" if ha.connected else "NOT connected"
    if ha.auth_rejected:
        state += "; HA refuses the token (auth_invalid)"
    if ha.gap_open:
        state += "; a gap is being backfilled"
    return f"{state} (collector metrics {ha.metrics_url})"


def _print(status: Status) -> None:
    s, c = status.stream, status.collector
    lines = [("redis", status.redis), ("HA connection", _ha_line(status.ha))]
    if c.newest_live_state is not None and c.newest_live_state_age_s is not None:
        lines.append(("newest live state", f"{c.newest_live_state} ({_ago(c.newest_live_state_age_s)}, HA's "
                                           "clock), made durable by the collector"))
    lines.append(("pipeline first ran", c.first_run or "not known (no first-run mark in Redis)"))
    if s.state == "no_stream":
        lines.append(("stream", f"no stream {s.stream} yet: no collector has published to this Redis"))
    elif s.state == "no_group":
        lines.append(("stream", f"{s.stream}: {s.length} entries; no group {s.group} yet: no writer has started"))
    else:
        lag = "unknown (entries were trimmed before delivery)" if s.lag is None else str(s.lag)
        lines.append(("stream", f"{s.stream}: {s.length} entries; group {s.group}: lag {lag}, {s.pending} pending, "
                                f"last delivered {s.last_delivered_id or '-'}"))
    d = status.dead_letters
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(d.by_reason.items()))
    lines.append(("dead letters", f"{d.total}" + (f" ({reasons})" if reasons else "")))
    if status.spool is not None:
        cap = f" of {status.spool.max_bytes / 2**20:.0f} MiB" if status.spool.max_bytes else ""
        lines.append(("spool", f"{status.spool.bytes} bytes{cap} waiting on disk for Redis"))
    else:
        lines.append(("spool", "unknown (in the collector's metrics only)"))
    a = status.last_audit
    if a is None:
        lines.append(("last audit", "none yet (`replayer audit`, or REPLAYER_AUDIT_INTERVAL_S for the daemon)"))
    else:
        verdict = "complete" if a.complete else "differs"
        lines.append(("last audit", f"{a.finished} ({_ago(a.age_s)}, {a.by}): {verdict}; {a.missing} missing, "
                                    f"{a.queued} queued, {a.extra} extra, {a.wrong} wrong, {a.before_first_run} "
                                    f"before first run; {a.in_ha} states in HA over {a.since} .. {a.until}"))
    for name, text in lines:
        out.print(f"{name + ':':20}{text}", highlight=False, markup=False, soft_wrap=True)
    if s.consumers:
        consumers_table(s)


def consumers_table(report: PendingReport) -> None:
    """The group's consumers: pending, oldest idle, most deliveries, inactive."""
    table("pending by consumer", ["consumer", "pending", "oldest idle (s)", "max deliveries", "inactive (s)"],
          [[c.name, c.pending, round(c.oldest_idle_s, 1), c.max_deliveries, round(c.inactive_s, 1)]
           for c in report.consumers])


@bind()
def status_command(ctx: typer.Context, settings: StatusSettings, as_json: Json = False) -> None:
    """The pipeline on one screen: HA's connection, the stream's length and lag, pending by consumer, dead letters
    by reason, the spool, the last audit.

    HA's connection and the spool come from the collector's metrics (--collector-metrics); the rest from Redis.
    Exit 0 when everything could be read, 1 when Redis or the collector's metrics could not (what could be read
    is still shown), 2 on usage errors. What it reads is not judged: a disconnected HA still exits 0."""
    shared: Connection = ctx.obj
    status = execute(shared, lambda client: read_status(client, shared.names, redis_place(shared),
                                                        settings.collector_metrics_url))
    if as_json:
        print_json(status)
    else:
        _print(status)
    if status.ha.error is not None:
        err.print(f"[red]error:[/red] {escape(status.ha.error)}. Check that the collector runs and that "
                  "COLLECTOR_METRICS_URL (or --collector-metrics) points at its /metrics; give it empty to ask only "
                  "Redis.", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILURE)
