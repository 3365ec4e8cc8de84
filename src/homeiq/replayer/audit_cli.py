"""`replayer audit`: is InfluxDB complete against Home Assistant's recorder? And `--repair` what is not."""

from __future__ import annotations

import asyncio
import ssl
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, NamedTuple

import msgspec
import typer
from redis.exceptions import RedisError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from homeiq.replayer.console import err, fail, out, redis_failure, redis_place, show
from homeiq.replayer.settings import AuditCommandSettings, Connection
from homeiq.shared.binding import bind
from homeiq.shared.cli import EXIT_FAILURE, config_error
from homeiq.shared.ha.settings import read_ha_token
from homeiq.shared.settings import ConfigError
from homeiq.shared.stream import RedisPlace, connect
from homeiq.shared.times import operator_time_ns

if TYPE_CHECKING:
    from homeiq.replayer.audit import AuditReport
    from homeiq.shared.entity_filter import EntityRules
    from homeiq.shared.influx.reader import InfluxReader

def window(since: str, until: str | None, now_ns: int) -> tuple[int, int]:
    """The audit window from the operator's words; ConfigError when empty."""
    since_ns = operator_time_ns(since, now_ns, "--since")
    until_ns = operator_time_ns(until, now_ns, "--until") if until else now_ns
    if since_ns >= until_ns:
        raise ConfigError("--since: must be before --until")
    return since_ns, until_ns


@bind()
def audit_command(
    ctx: typer.Context,
    settings: AuditCommandSettings,
    since: Annotated[str, typer.Option(help="Start of the window: 24h, 7d, 90m before now, or an ISO time.")] = "24h",
    until: Annotated[str | None, typer.Option(help="End of the window (default: now), same forms.")] = None,
    entities: Annotated[list[str] | None, typer.Option(
        "--entities", help="Only entities matching this glob (repeat for several), e.g. 'sensor.*'.")] = None,
    do_repair: Annotated[bool, typer.Option(
        "--repair", help="Publish the missing states to the stream (as the backfill does); never deletes.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    concurrency: Annotated[int, typer.Option(help="History requests in flight at once.")] = 4,
) -> None:
    """Compare HA's recorder with InfluxDB per entity: states in HA, points found, missing, extra, wrong.

    States HA recorded before the pipeline first ran (the collector's first-run mark in Redis) are counted
    apart, not missing. Exit 0 when complete, 1 when anything differs (or a service failed), 2 on usage errors.
    It cannot see
    events other than state changes, entities the recorder excludes, or states older than its retention.
    Repaired points, like the backfill's, carry only the attributes the recorder keeps, and say so
    (`source`/`homeiq_source` = backfill).
    """
    # Imported here: the HA client's and InfluxDB reader's modules would make every `replayer --help` slow.
    from homeiq.replayer.audit import RECORDER_KEEP_DAYS  # noqa: PLC0415
    from homeiq.shared.entity_filter import PatternFilter  # noqa: PLC0415
    from homeiq.shared.ha.reader import HAReadError  # noqa: PLC0415
    from homeiq.shared.influx.reader import InfluxReadError, reader_for  # noqa: PLC0415

    shared: Connection = ctx.obj
    now_ns = time.time_ns()
    try:
        since_ns, until_ns = window(since, until, now_ns)
        ha = _HaSide(settings.ha_url, read_ha_token(), settings.ha_timeout_s, concurrency, settings.tls())
        reader = reader_for(settings.influx)
        rules = PatternFilter.from_settings(settings.entity_filter, settings.entity_filter_file, settings.influx.config)
    except ConfigError as exc:
        config_error(exc)
    if now_ns - since_ns > RECORDER_KEEP_DAYS * 86_400 * 10**9:
        err.print(f"note: the window starts more than {RECORDER_KEEP_DAYS} days ago; states the recorder has "
                  "purged count as extra, not as a difference of the pipeline", highlight=False)
    place = redis_place(shared)
    try:
        report = asyncio.run(_audit(shared, place, ha, reader, (since_ns, until_ns), entities, rules, do_repair,
                                    as_json))
    except (HAReadError, InfluxReadError) as exc:
        fail(str(exc))
    except (RedisError, OSError) as exc:
        fail(redis_failure(place, exc))
    _print(report, as_json)
    raise typer.Exit(0 if report.complete else EXIT_FAILURE)


class _HaSide(NamedTuple):
    """How the audit reaches Home Assistant."""

    url: str
    token: str
    timeout_s: float
    concurrency: int
    tls: ssl.SSLContext | None


async def _audit(shared: Connection, place: RedisPlace, ha_side: _HaSide, reader: InfluxReader,
                 window_ns: tuple[int, int], entities: list[str] | None, rules: EntityRules | None, do_repair: bool,
                 as_json: bool) -> AuditReport:
    """One audit with a progress bar, and the repair when asked; Redis tells what the writers have yet to write
    (that is not missing)."""
    from homeiq.replayer.audit import audit, record, repair  # noqa: PLC0415
    from homeiq.shared.ha.reader import ha_session  # noqa: PLC0415

    client = connect(place)
    try:
        with Progress(TextColumn("auditing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=err, transient=as_json) as bar:
            task = bar.add_task("entities", total=None)
            async with ha_session(*ha_side) as ha:
                bar.update(task, total=len(await ha.states()))
                try:
                    report = await audit(ha, reader, *window_ns, entities, rules, lambda n: bar.advance(task, n),
                                         client, shared.names)
                finally:
                    await reader.close()
                if do_repair and report.total("missing"):
                    report.repaired = await repair(ha, client, shared.names, report)
            await record(client, shared.names, report, "replayer audit")
    finally:
        await client.aclose()
    return report


def _unit(precision_ns: int) -> str:
    return {1_000_000_000: "1 s", 1_000_000: "1 ms", 1_000: "1 µs"}.get(precision_ns, f"{precision_ns} ns")


def _print(report: AuditReport, as_json: bool) -> None:
    if as_json:
        out.print_json(msgspec.json.encode(report).decode())
        return
    since = datetime.fromtimestamp(report.since_ns / 1e9, UTC).isoformat(timespec="seconds")
    until = datetime.fromtimestamp(report.until_ns / 1e9, UTC).isoformat(timespec="seconds")
    table = Table(title=f"audit {since} .. {until}", title_justify="left")
    for column in ("entity", "status", "in HA", "found", "missing", "before first run", "queued", "extra", "wrong"):
        table.add_column(column)
    shown = [e for e in report.entities if e.status != "complete"]
    counts = ("missing", "before_first_run", "queued", "extra", "wrong")
    for e in shown:
        table.add_row(e.entity_id, e.status, str(e.in_ha), str(e.found), *(str(len(getattr(e, c))) for c in counts))
    table.add_row("total", f"{len(report.entities) - len(shown)} complete", str(report.total("in_ha")),
                  str(report.total("found")), *(str(report.total(c)) for c in counts))
    show(table)
    if report.total("before_first_run"):
        assert report.first_run_ns is not None  # set apart only against the mark
        first = datetime.fromtimestamp(report.first_run_ns / 1e9, UTC).isoformat(timespec="seconds")
        out.print(f"before first run: {report.total('before_first_run')} states HA recorded before the pipeline "
                  f"first ran ({first}, the collector's first-run mark) are not in InfluxDB: never the pipeline's "
                  "to write; not missing, never repaired", highlight=False)
    elif report.first_run_doubt and report.total("missing"):
        out.print(f"note: the first-run mark was not used ({report.first_run_doubt}), so states recorded before the "
                  "pipeline first ran count as missing", highlight=False)
    elif report.first_run_ns is None and report.total("missing"):
        out.print("note: when the pipeline first ran is not known (no first-run mark: it ran before the mark "
                  "existed, or Redis lost it), so states recorded before then count as missing", highlight=False)
    if report.total("collapsed"):
        out.print(f"collapsed: {report.total('collapsed')} states were overwritten in InfluxDB by a later state of "
                  f"the same entity within {_unit(report.precision_ns)} (the schema's precision keeps one point per "
                  "entity and unit, the last); not missing, never repaired", highlight=False)
    if report.total("queued"):
        out.print(f"queued: {report.total('queued')} states are still in the stream for the writers (not missing, "
                  "never repaired); run the audit again once the writers have caught up", highlight=False)
    if report.repaired:
        out.print(f"repaired: {report.repaired} missing states published to the stream; run the audit again "
                  "once the writers have caught up", highlight=False)
    out.print("cannot see: " + "; ".join(report.cannot_see), highlight=False)
