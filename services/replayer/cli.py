"""`replayer` console script: the daemon and the operator's incident tools.

Exit codes: 0 ok, 1 operational failure (says what to do next), 2 usage or configuration error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import msgspec
import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from homeiq_replayer.audit_cli import audit_command
from homeiq_replayer.settings import Connection, ReclaimCommandSettings, ReplayerSettings
from homeiq_shared.backoff import Backoff
from homeiq_shared.binding import bind
from homeiq_shared.cli import EXIT_FAILURE, EXIT_USAGE, ServiceMain, config_error, run_service
from homeiq_shared.lifecycle import wait_or_stop
from homeiq_shared.logs import setup_logging
from homeiq_shared.settings import ConfigError, redact_url
from homeiq_shared.stream import connect

if TYPE_CHECKING:
    from homeiq_shared.health import Readiness
    from homeiq_writer.batch import BatchWriter



class _ConnectionOptionsAnywhere(TyperGroup):
    """`replayer pending --redis-url …` means `replayer --redis-url … pending`: the connection options belong to
    the group (every command shares them), but operators type them after the command."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Move the group's own options that follow the command name in front of it."""
        names = {name for param in self.params for name in param.opts}
        front: list[str] = []
        rest: list[str] = []
        words = iter(args)
        seen_command = False
        for word in words:
            if word == "--":
                rest.extend([word, *words])
                break
            name = word.split("=", 1)[0]
            if seen_command and name in names:
                front.append(word)
                if "=" not in word and (value := next(words, None)) is not None:  # each one takes a value
                    front.append(value)
                continue
            seen_command = seen_command or not word.startswith("-")
            rest.append(word)
        return super().parse_args(ctx, front + rest)


app = typer.Typer(help="Reclaim entries left pending by dead or stuck writers; incident tools.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  cls=_ConnectionOptionsAnywhere)
dead_letter_app = typer.Typer(help="Inspect, re-drive and purge the dead-letter stream.", no_args_is_help=True,
                              rich_markup_mode=None)
app.add_typer(dead_letter_app, name="dead-letter")
app.command("audit")(audit_command)

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Show what would happen; change nothing.")]


@app.callback()
@bind()
def _main(ctx: typer.Context, settings: Connection) -> None:
    """Reclaim entries left pending by dead or stuck writers; incident tools."""
    ctx.obj = settings


def _fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)  # one line: URLs stay whole
    raise typer.Exit(EXIT_FAILURE)


class _Guard:
    """Sets `stop` when the operator interrupts (SIGINT, SIGTERM; a second one exits at once) or when nothing
    progressed for `give_up_after_s`; `why` says which. For the length of an `async with` block."""

    def __init__(self, give_up_after_s: float) -> None:
        self.stop = asyncio.Event()
        self.why: str | None = None
        self._give_up_after_s = give_up_after_s
        self._last_progress = time.monotonic()
        self._watch: asyncio.Task[None] | None = None
        self._signals: list[signal.Signals] = []

    def progressed(self) -> None:
        """InfluxDB took something: the give-up clock starts again."""
        self._last_progress = time.monotonic()

    def _interrupt(self, sig: signal.Signals) -> None:
        if self.stop.is_set():
            os._exit(130)
        self.why = f"interrupted by {sig.name}"
        self.stop.set()

    async def _watch_progress(self) -> None:
        while not self.stop.is_set():
            left_s = self._give_up_after_s - (time.monotonic() - self._last_progress)
            if left_s <= 0:
                self.why = f"gave up after {self._give_up_after_s:g} s without progress"
                self.stop.set()
                return
            await wait_or_stop(self.stop, left_s)

    async def __aenter__(self) -> _Guard:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._interrupt, sig)
            except (RuntimeError, ValueError):  # not the main thread (a test runner's): the deadline still holds
                break
            self._signals.append(sig)
        self._watch = asyncio.create_task(self._watch_progress(), name="give-up")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch


def _execute(ctx: Connection, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work(client)`; a Redis failure exits 1 naming the URL and what to check."""

    async def _run() -> T:
        client = connect(ctx.redis_url)
        try:
            return await work(client)
        finally:
            await client.aclose()

    try:
        return asyncio.run(_run())
    except (RedisError, OSError) as exc:
        _fail(f"Redis at {redact_url(ctx.redis_url)} failed: {exc}. Check that Redis is running and that "
              "REDIS_URL (or --redis-url) points at it.")


def _json(value: object) -> None:
    out.print_json(msgspec.json.encode(value).decode())


def _table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    out.print(table)


@app.command()
@bind(inherit=("redis_url", "names"))
def run(settings: ReplayerSettings) -> None:
    """Reclaim idle pending entries periodically, write them through the writer's code, trim safely.

    The InfluxDB token comes from INFLUXDB_TOKEN or INFLUXDB_TOKEN_FILE, never from a flag.
    """
    from homeiq_replayer.service import Replayer  # noqa: PLC0415 - keep --help fast

    def build() -> ServiceMain:
        settings.influx.log_config_notes()
        return Replayer(settings).run

    run_service("replayer", settings.log_level, settings.log_format, build)


@app.command()
def pending(ctx: typer.Context, as_json: Json = False) -> None:
    """Per consumer: pending count, oldest idle, highest delivery count; stream length, lag, last id."""
    from homeiq_replayer.operations import pending_report  # noqa: PLC0415

    shared: Connection = ctx.obj
    report = _execute(shared, lambda client: pending_report(client, shared.names))
    if as_json:
        _json(report)
        return
    if report.state == "no_stream":
        head = f"no stream {report.stream} yet: no collector has published to this Redis"
    elif report.state == "no_group":
        head = (f"stream {report.stream}: {report.length} entries; no group {report.group} yet: no writer has "
                "started (the entries wait for one)")
    else:
        lag = "unknown (entries were trimmed before delivery)" if report.lag is None else report.lag
        head = (f"stream {report.stream}: {report.length} entries; group {report.group}: lag {lag}, "
                f"last delivered {report.last_delivered_id or '-'}, {report.pending} pending")
    out.print(f"{head}; {report.dead_letters} dead letters", highlight=False)
    _table("pending by consumer", ["consumer", "pending", "oldest idle (s)", "max deliveries", "inactive (s)"],
           [[c.name, c.pending, round(c.oldest_idle_s, 1), c.max_deliveries, round(c.inactive_s, 1)]
            for c in report.consumers])


@app.command()
@bind()
def reclaim(ctx: typer.Context, settings: ReclaimCommandSettings, dry_run: DryRun = False, as_json: Json = False,
            ) -> None:
    """One reclaim pass now, with progress and a summary (reclaimed, written, suspects, dead-lettered, lost).

    Claims nothing until InfluxDB answers its readiness check. Gives up (exit 1) when InfluxDB has taken
    nothing for --give-up-after seconds, and stops on Ctrl-C or SIGTERM (exit 1): what was not written
    stays pending, neither acked nor dead-lettered; run reclaim again once InfluxDB takes writes."""
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from homeiq_replayer.crashes import CrashLedger  # noqa: PLC0415
    from homeiq_replayer.reclaim import PassSummary, reclaim_pass  # noqa: PLC0415
    from homeiq_shared.health import Readiness  # noqa: PLC0415
    from homeiq_writer.batch import READY_INFLUX, BatchWriter  # noqa: PLC0415
    from homeiq_writer.metrics import WriterMetrics  # noqa: PLC0415

    shared: Connection = ctx.obj
    options, influx = settings.reclaim, settings.influx
    setup_logging("WARNING", "text", "replayer")
    try:
        sink = None if dry_run else influx.make_sink()
    except ConfigError as exc:
        config_error(exc)

    async def work(client: Any) -> PassSummary:
        summary_all: Any = await client.xpending(shared.names.stream, shared.names.group)
        if dry_run:
            rows: Any = await client.xpending_range(shared.names.stream, shared.names.group, "-", "+",
                                                    1_000_000, idle=options.min_idle_ms)
            suspects = sum(1 for r in rows if int(r["times_delivered"]) + 1 > options.max_deliveries)
            crashes: Any = await client.hvals(shared.names.crashes)
            crashed = sum(1 for n in crashes if int(n) >= options.max_crashes)
            return PassSummary(reclaimed=len(rows), suspects=suspects, dead_lettered=crashed, dry_run=True)
        assert sink is not None
        readiness = Readiness(READY_INFLUX)
        writer = BatchWriter(client, shared.names, sink, WriterMetrics(CollectorRegistry()), readiness,
                             options.consumer,
                             encoder=influx.make_encoder())
        try:
            async with _Guard(settings.give_up_after_s) as guard:
                if not await _influx_ready(writer, readiness, guard.stop):
                    _fail(f"{guard.why}: {readiness.reason}. Nothing was claimed: every entry stays pending as it "
                          "was. Fix InfluxDB (URL, credentials, database) and run reclaim again.")

                def advance(n: int) -> None:
                    guard.progressed()
                    bar.advance(task, n)

                with Progress(TextColumn("reclaiming"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                              console=err, transient=as_json) as bar:
                    task = bar.add_task("reclaim", total=int(summary_all["pending"]))
                    result = await reclaim_pass(
                        client, shared.names, options.consumer, writer, options.min_idle_ms, options.count,
                        guard.stop, options.max_deliveries, progress=advance,
                        ledger=CrashLedger(client, shared.names, options.consumer, options.max_crashes))
        finally:
            await sink.close()
        if guard.why is not None or not result.completed:
            answer = "" if writer.healthy else f"; InfluxDB did not take the batch: {readiness.reason}"
            _fail(f"{guard.why or 'stopped'}{answer}. {result.written} entries written and acked before that; "
                  "the rest stays pending, neither acked nor dead-lettered. Fix InfluxDB (URL, credentials, "
                  "database) if it refuses, and run reclaim again.")
        return result

    summary = _execute(shared, work)
    if as_json:
        _json(summary)
        return
    title = "reclaim (dry run: nothing changed)" if dry_run else "reclaim"
    _table(title, ["reclaimed", "written", "suspects", "dead-lettered", "lost"],
           [[summary.reclaimed, "-" if dry_run else summary.written, summary.suspects, summary.dead_lettered,
             "-" if dry_run else summary.lost]])


async def _influx_ready(writer: BatchWriter, readiness: Readiness, stop: asyncio.Event) -> bool:
    """Ask InfluxDB (readiness check) until it takes our writes; False when `stop` came first."""
    backoff = Backoff(base_s=0.5, cap_s=10.0)
    while True:
        await writer.check()
        if readiness.reason is None:
            return True
        if await wait_or_stop(stop, backoff.next_delay_s()):
            return False


@app.command()
def trim(ctx: typer.Context, dry_run: DryRun = False, as_json: Json = False) -> None:
    """XTRIM MINID at the oldest id any group still needs; shows what goes and why that is safe."""
    from homeiq_replayer import operations  # noqa: PLC0415

    shared: Connection = ctx.obj

    async def work(client: Any) -> dict[str, object]:
        if dry_run:
            plan = await operations.trim_plan(client, shared.names)
            return {"min_id": plan.min_id, "would_remove": plan.entries_before, "why_safe": plan.reason}
        plan, removed = await operations.trim(client, shared.names)
        return {"min_id": plan.min_id, "removed": removed, "why_safe": plan.reason}

    result = _execute(shared, work)
    if as_json:
        _json(result)
        return
    _table("trim (dry run: nothing changed)" if dry_run else "trim", list(result), [list(result.values())])


@dead_letter_app.command("list")
def dead_letter_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="Show at most this many.")] = 50,
    reason: Annotated[str | None, typer.Option(help="Only this reason (e.g. rejected, undecodable).")] = None,
    as_json: Json = False,
) -> None:
    """The oldest dead letters, with their reason."""
    from homeiq_replayer.operations import dead_letters  # noqa: PLC0415

    shared: Connection = ctx.obj
    letters = _execute(shared, lambda client: dead_letters(client, shared.names, limit, reason))
    if as_json:
        _json(letters)
        return
    _table(f"dead letters in {shared.names.dead}", ["id", "original id", "reason", "detail", "consumer"],
           [[d.id, d.original_id, d.reason, d.detail[:80], d.consumer] for d in letters])


@dead_letter_app.command("redrive")
def dead_letter_redrive(
    ctx: typer.Context,
    ids: Annotated[list[str] | None, typer.Option("--id", help="A dead-letter id (repeat for several).")] = None,
    redrive_all: Annotated[bool, typer.Option("--all", help="Every dead letter that has a payload.")] = False,
    dry_run: DryRun = False,
    as_json: Json = False,
) -> None:
    """Move dead letters back onto the stream (atomically out of dead-letter) once the cause is fixed."""
    from homeiq_replayer.operations import dead_letters, redrive  # noqa: PLC0415

    shared: Connection = ctx.obj
    if bool(ids) == redrive_all:
        err.print("error: give --id (one or more) or --all", highlight=False)
        raise typer.Exit(EXIT_USAGE)

    async def work(client: Any) -> list[dict[str, object]]:
        chosen = list(ids or [])
        if redrive_all:
            chosen = [d.id for d in await dead_letters(client, shared.names, 10_000_000) if d.has_payload]
        if dry_run:
            return [{"dead_id": i, "new_id": None} for i in chosen]
        moved: list[dict[str, object]] = []
        with Progress(TextColumn("redriving"), BarColumn(), MofNCompleteColumn(), console=err,
                      transient=as_json) as bar:
            task = bar.add_task("redrive", total=len(chosen))
            for dead_id, new_id in await redrive(client, shared.names, chosen):
                moved.append({"dead_id": dead_id, "new_id": new_id})
                bar.advance(task)
        return moved

    moved = _execute(shared, work)
    if as_json:
        _json(moved)
        return
    title = "redrive (dry run: nothing changed)" if dry_run else "redrive"
    _table(title, ["dead-letter id", "new stream id"],
           [[m["dead_id"], m["new_id"] or ("-" if dry_run else "not found or no payload")] for m in moved])


@dead_letter_app.command("purge")
def dead_letter_purge(
    ctx: typer.Context,
    before: Annotated[str | None, typer.Option(
        help="Delete dead letters older than this: an ISO 8601 time or epoch milliseconds.")] = None,
    purge_all: Annotated[bool, typer.Option("--all", help="Delete every dead letter.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation (for scripts).")] = False,
    dry_run: DryRun = False,
    as_json: Json = False,
) -> None:
    """Delete dead letters for good, after saying how many and asking (unless --yes)."""
    from homeiq_replayer.operations import purge  # noqa: PLC0415

    shared: Connection = ctx.obj
    if (before is None) == (not purge_all):
        err.print("error: give --before TIME or --all", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    before_ms = None if before is None else _parse_time_ms(before)
    count = _execute(shared, lambda client: purge(client, shared.names, before_ms, dry_run=True))
    if dry_run:
        if as_json:
            _json({"would_remove": count})
        else:
            _table("purge (dry run: nothing changed)", ["would remove"], [[count]])
        return
    # Asked on stderr: stdout stays the table or the JSON. No terminal and no --yes: nothing is deleted.
    if count and not yes and not typer.confirm(f"Delete {count} dead letters from {shared.names.dead} for good?",
                                               err=True):
        _fail("nothing deleted (give --yes to purge without asking)")
    removed = _execute(shared, lambda client: purge(client, shared.names, before_ms))
    if as_json:
        _json({"removed": removed})
        return
    _table("purge", ["removed"], [[removed]])


def _parse_time_ms(value: str) -> int:
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        err.print(f"error: --before: expected ISO 8601 or epoch milliseconds, got {value!r}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    if moment.tzinfo is None:
        err.print("error: --before: give a time zone (e.g. 2026-11-26T10:00:00+00:00)", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    return int(moment.timestamp() * 1000)
