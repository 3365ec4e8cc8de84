"""`replayer` console script: the daemon and the operator's incident tools.

Exit codes: 0 ok, 1 operational failure (says what to do next), 2 usage or configuration error.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from typer.core import TyperGroup

from homeiq.replayer.audit_cli import audit_command
from homeiq.replayer.console import DryRun, Json, err, execute, fail, out, print_json, report, table
from homeiq.replayer.dead_letter_cli import dead_letter_app
from homeiq.replayer.settings import Connection, ReclaimCommandSettings, ReplayerSettings
from homeiq.shared.backoff import Backoff
from homeiq.shared.binding import bind
from homeiq.shared.cli import ServiceMain, config_error, console_app, run_service
from homeiq.shared.lifecycle import stop_on_signals, wait_or_stop
from homeiq.shared.logs import setup_logging
from homeiq.shared.settings import ConfigError

if TYPE_CHECKING:
    from homeiq.shared.health import Readiness
    from homeiq.shared.influx.batch import BatchWriter



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


app = console_app("Reclaim entries left pending by dead or stuck writers; incident tools.", False,
                  cls=_ConnectionOptionsAnywhere)
app.add_typer(dead_letter_app, name="dead-letter")
app.command("audit")(audit_command)

@app.callback()
@bind()
def _main(ctx: typer.Context, settings: Connection) -> None:
    """Reclaim entries left pending by dead or stuck writers; incident tools."""
    ctx.obj = settings


class _Guard:
    """Sets `stop` when the operator interrupts (SIGINT, SIGTERM; a second one exits at once) or when nothing
    progressed for `give_up_after_s`; `why` says which. For the length of an `async with` block."""

    def __init__(self, give_up_after_s: float) -> None:
        self.stop = asyncio.Event()
        self.why: str | None = None
        self._give_up_after_s = give_up_after_s
        self._last_progress = time.monotonic()
        self._watch: asyncio.Task[None] | None = None
        self._signals = contextlib.ExitStack()

    def progressed(self) -> None:
        """InfluxDB took something: the give-up clock starts again."""
        self._last_progress = time.monotonic()

    def _interrupt(self, sig: signal.Signals) -> None:
        self.why = f"interrupted by {sig.name}"

    async def _watch_progress(self) -> None:
        while not self.stop.is_set():
            left_s = self._give_up_after_s - (time.monotonic() - self._last_progress)
            if left_s <= 0:
                self.why = f"gave up after {self._give_up_after_s:g} s without progress"
                self.stop.set()
                return
            await wait_or_stop(self.stop, left_s)

    async def __aenter__(self) -> _Guard:
        self._signals.enter_context(stop_on_signals(self.stop, self._interrupt))
        self._watch = asyncio.create_task(self._watch_progress(), name="give-up")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._signals.close()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch


@app.command()
@bind(inherit=("redis_url", "names"))
def run(settings: ReplayerSettings) -> None:
    """Reclaim idle pending entries periodically, write them through the writer's code, trim safely.

    The InfluxDB token comes from INFLUXDB_TOKEN or INFLUXDB_TOKEN_FILE, never from a flag.
    """
    from homeiq.replayer.service import Replayer  # noqa: PLC0415 - keep --help fast

    def build() -> ServiceMain:
        settings.influx.log_config_notes()
        return Replayer(settings).run

    run_service("replayer", settings, build)


@app.command()
def pending(ctx: typer.Context, as_json: Json = False) -> None:
    """Per consumer: pending count, oldest idle, highest delivery count; stream length, lag, last id."""
    from homeiq.replayer.operations import pending_report  # noqa: PLC0415

    shared: Connection = ctx.obj
    report = execute(shared, lambda client: pending_report(client, shared.names))
    if as_json:
        print_json(report)
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
    table("pending by consumer", ["consumer", "pending", "oldest idle (s)", "max deliveries", "inactive (s)"],
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

    from homeiq.replayer.crashes import CrashLedger  # noqa: PLC0415
    from homeiq.replayer.reclaim import PassSummary, reclaim_pass  # noqa: PLC0415
    from homeiq.shared.health import Readiness  # noqa: PLC0415
    from homeiq.shared.influx.batch import READY_INFLUX, batch_writer_for  # noqa: PLC0415
    from homeiq.shared.influx.metrics import WriterMetrics  # noqa: PLC0415

    shared: Connection = ctx.obj
    options, influx = settings.reclaim, settings.influx
    consumer = options.one_shot_consumer()  # beside a running daemon: each claims under its own name
    setup_logging("WARNING", "text", "replayer")
    try:
        if not dry_run:
            influx.secret()  # a missing token is a usage error, before anything is claimed
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
        readiness = Readiness(READY_INFLUX)
        writer = batch_writer_for(influx, client, shared.names, consumer, WriterMetrics(CollectorRegistry()),
                                  readiness)
        try:
            async with _Guard(settings.give_up_after_s) as guard:
                if not await _influx_ready(writer, readiness, guard.stop):
                    fail(f"{guard.why}: {readiness.reason}. Nothing was claimed: every entry stays pending as it "
                         "was. Fix InfluxDB (URL, credentials, database) and run reclaim again.")

                def advance(n: int) -> None:
                    guard.progressed()
                    bar.advance(task, n)

                with Progress(TextColumn("reclaiming"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                              console=err, transient=as_json) as bar:
                    task = bar.add_task("reclaim", total=int(summary_all["pending"]))
                    result = await reclaim_pass(
                        client, shared.names, consumer, writer, options.min_idle_ms, options.count,
                        guard.stop, options.max_deliveries, progress=advance,
                        ledger=CrashLedger(client, shared.names, consumer, options.max_crashes))
        finally:
            await writer.sink.close()
        if guard.why is not None or not result.completed:
            answer = "" if writer.healthy else f"; InfluxDB did not take the batch: {readiness.reason}"
            fail(f"{guard.why or 'stopped'}{answer}. {result.written} entries written and acked before that; "
                 "the rest stays pending, neither acked nor dead-lettered. Fix InfluxDB (URL, credentials, "
                 "database) if it refuses, and run reclaim again.")
        return result

    summary = execute(shared, work)
    report(summary, as_json, "reclaim", ["reclaimed", "written", "suspects", "dead-lettered", "lost"],
           [[summary.reclaimed, "-" if dry_run else summary.written, summary.suspects, summary.dead_lettered,
             "-" if dry_run else summary.lost]], dry_run)


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
    from homeiq.replayer import operations  # noqa: PLC0415

    shared: Connection = ctx.obj

    async def work(client: Any) -> dict[str, object]:
        if dry_run:
            plan = await operations.trim_plan(client, shared.names)
            return {"min_id": plan.min_id, "would_remove": plan.entries_before, "why_safe": plan.reason}
        plan, removed = await operations.trim(client, shared.names)
        return {"min_id": plan.min_id, "removed": removed, "why_safe": plan.reason}

    result = execute(shared, work)
    report(result, as_json, "trim", list(result), [list(result.values())], dry_run)
