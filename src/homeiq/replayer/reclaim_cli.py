"""`replayer reclaim`: one reclaim pass now, with progress; it gives up when InfluxDB takes nothing for a while."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from typing import Any, Final

import typer
from prometheus_client import CollectorRegistry
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from homeiq.replayer.console import DryRun, Json, err, execute, fail, report
from homeiq.replayer.crashes import CrashLedger
from homeiq.replayer.reclaim import PassSummary, reclaim_pass
from homeiq.replayer.settings import Connection, ReclaimCommandSettings, ReclaimSettings
from homeiq.shared.backoff import Backoff
from homeiq.shared.binding import bind
from homeiq.shared.cli import config_error
from homeiq.shared.health import Readiness
from homeiq.shared.influx.batch import READY_INFLUX, BatchWriter, batch_writer_for
from homeiq.shared.influx.metrics import WriterMetrics
from homeiq.shared.lifecycle import stop_on_signals, wait_or_stop
from homeiq.shared.logs import setup_logging
from homeiq.shared.settings import ConfigError, redact_url
from homeiq.shared.stream import StreamNames

WAITING_EVERY_S: Final = 2.0


class Guard:
    """Sets `stop` when the operator interrupts (SIGINT, SIGTERM; a second one exits at once) or when nothing
    progressed for `give_up_after_s`; `why` says which. For the length of an `async with` block; with
    `waiting_on`, says on stderr what it waits on while nothing progresses."""

    def __init__(self, give_up_after_s: float, waiting_on: Callable[[], str] | None = None) -> None:
        self.stop = asyncio.Event()
        self._waiting_on = waiting_on
        self.why: str | None = None
        self._give_up_after_s = give_up_after_s
        self._last_progress = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []
        self._signals = contextlib.ExitStack()

    def progressed(self) -> None:
        """InfluxDB took something: the give-up clock starts again."""
        self._last_progress = time.monotonic()

    @property
    def idle_s(self) -> float:
        """Seconds since InfluxDB last took something (or since the start)."""
        return time.monotonic() - self._last_progress

    async def say_waiting(self, what: Callable[[], str]) -> None:
        """While nothing progresses, say on stderr every few seconds what we wait on, how long so far, and when we
        give up: a hung InfluxDB holds each request up to INFLUXDB_TIMEOUT_S, and silence looks like a hang of
        ours."""
        said = 0
        while not await wait_or_stop(self.stop, WAITING_EVERY_S / 2 if said == 0 else
                                     WAITING_EVERY_S if said < 5 else 5 * WAITING_EVERY_S):
            if self.idle_s >= WAITING_EVERY_S / 2:
                err.print(f"waiting for {what()}: {self.idle_s:.0f} s so far; will give up after "
                          f"{self._give_up_after_s:g} s without progress (--give-up-after)", highlight=False,
                          markup=False, soft_wrap=True)
                said += 1

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

    async def __aenter__(self) -> Guard:
        self._signals.enter_context(stop_on_signals(self.stop, self._interrupt))
        self._tasks.append(asyncio.create_task(self._watch_progress(), name="give-up"))
        if self._waiting_on is not None:
            self._tasks.append(asyncio.create_task(self.say_waiting(self._waiting_on), name="say-waiting"))
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._signals.close()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@bind()
def reclaim_command(ctx: typer.Context, settings: ReclaimCommandSettings, dry_run: DryRun = False,
                    as_json: Json = False) -> None:
    """One reclaim pass now, with progress and a summary (reclaimed, written, suspects, dead-lettered, lost).

    Claims nothing until InfluxDB answers its readiness check. Gives up (exit 1) when InfluxDB has taken
    nothing for --give-up-after seconds, and stops on Ctrl-C or SIGTERM (exit 1): what was not written
    stays pending, neither acked nor dead-lettered; run reclaim again once InfluxDB takes writes."""
    shared: Connection = ctx.obj
    setup_logging("WARNING", "text", "replayer")
    try:
        if not dry_run:
            settings.influx.secret()  # a missing token is a usage error, before anything is claimed
    except ConfigError as exc:
        config_error(exc)

    async def work(client: Any) -> PassSummary:
        if dry_run:
            return await _preview(client, shared.names, settings.reclaim)
        return await _reclaim_now(client, shared.names, settings, as_json)

    summary = execute(shared, work)
    report(summary, as_json, "reclaim", ["reclaimed", "written", "suspects", "dead-lettered", "lost"],
           [[summary.reclaimed, "-" if dry_run else summary.written, summary.suspects, summary.dead_lettered,
             "-" if dry_run else summary.lost]], dry_run)


async def _preview(client: Any, names: StreamNames, options: ReclaimSettings) -> PassSummary:
    """What a pass would claim now: idle pending entries, suspects among them, entries crashed often enough."""
    rows: Any = await client.xpending_range(names.stream, names.group, "-", "+", 1_000_000, idle=options.min_idle_ms)
    suspects = sum(1 for r in rows if int(r["times_delivered"]) + 1 > options.max_deliveries)
    crashes: Any = await client.hvals(names.crashes)
    crashed = sum(1 for n in crashes if int(n) >= options.max_crashes)
    return PassSummary(reclaimed=len(rows), suspects=suspects, dead_lettered=crashed, dry_run=True)


async def _reclaim_now(client: Any, names: StreamNames, settings: ReclaimCommandSettings, as_json: bool,
                       ) -> PassSummary:
    """One pass under a one-shot consumer name (beside a running daemon each claims under its own), with a
    progress bar; fails (exit 1) saying what stays pending when it was stopped or gave up."""
    options = settings.reclaim
    consumer = options.one_shot_consumer()
    pending: Any = await client.xpending(names.stream, names.group)
    readiness = Readiness(READY_INFLUX)
    writer = batch_writer_for(settings.influx, client, names, consumer, WriterMetrics(CollectorRegistry()), readiness)
    waiting = _WaitingOn(redact_url(settings.influx.url), readiness)
    try:
        async with Guard(settings.give_up_after_s, waiting) as guard:
            waiting.ready = await _influx_ready(writer, readiness, guard.stop, waiting)
            if not waiting.ready:
                fail(f"{guard.why}: {waiting.answer()}. Nothing was claimed: every entry stays pending as it "
                     "was. Fix InfluxDB (URL, credentials, database) and run reclaim again.")
            with Progress(TextColumn("reclaiming"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          console=err, transient=as_json) as bar:
                task = bar.add_task("reclaim", total=int(pending["pending"]))

                def advance(n: int) -> None:
                    guard.progressed()
                    bar.advance(task, n)

                result = await reclaim_pass(client, names, consumer, writer, options.min_idle_ms, options.count,
                                            guard.stop, options.max_deliveries, progress=advance,
                                            ledger=CrashLedger(client, names, consumer, options.max_crashes))
    finally:
        await writer.sink.close()
    if guard.why is not None or not result.completed:
        answer = "" if writer.healthy else f"; InfluxDB did not take the batch: {readiness.reason}"
        fail(f"{guard.why or 'stopped'}{answer}. {result.written} events written and acked before that; "
             "the rest stays pending, neither acked nor dead-lettered. Fix InfluxDB (URL, credentials, "
             "database) if it refuses, and run reclaim again.")
    return result


class _WaitingOn:
    """What a reclaim run waits on, in words: InfluxDB's readiness check, then its writes; and its last answer."""

    def __init__(self, url: str, readiness: Readiness) -> None:
        self.url, self.readiness = url, readiness
        self.ready = self.answered = False

    def answer(self) -> str:
        if not self.answered:
            return f"no answer from InfluxDB at {self.url} yet (each request waits up to INFLUXDB_TIMEOUT_S)"
        return self.readiness.reason or "ready"

    def __call__(self) -> str:
        what = "take the reclaimed entries" if self.ready else "pass its readiness check"
        now = (self.readiness.reason or "ready") if self.answered else (
            "no answer yet; each request waits up to INFLUXDB_TIMEOUT_S")
        return f"InfluxDB at {self.url} to {what} ({now})"


async def _influx_ready(writer: BatchWriter, readiness: Readiness, stop: asyncio.Event, waiting: _WaitingOn) -> bool:
    """Ask InfluxDB (readiness check) until it takes our writes; False when `stop` came first (a check in flight
    is dropped: a hung InfluxDB holds it up to INFLUXDB_TIMEOUT_S, and nothing was claimed yet)."""
    backoff = Backoff(base_s=0.5, cap_s=10.0)
    while True:
        check = asyncio.ensure_future(writer.check())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({check, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not check.done():
            check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await check
            return False
        check.result()
        waiting.answered = True
        if readiness.reason is None:
            return True
        if await wait_or_stop(stop, backoff.next_delay_s()):
            return False
