"""`replayer dead-letter`: inspect, re-drive and purge the dead-letter stream."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from homeiq.replayer.console import DryRun, Json, err, execute, fail, print_json, report, table
from homeiq.replayer.settings import Connection
from homeiq.shared.cli import EXIT_USAGE, console_app
from homeiq.shared.settings import ConfigError
from homeiq.shared.times import operator_time_ns

dead_letter_app = console_app("Inspect, re-drive and purge the dead-letter stream.", False)


@dead_letter_app.command("list")
def dead_letter_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="Show at most this many.")] = 50,
    reason: Annotated[str | None, typer.Option(help="Only this reason (e.g. rejected, undecodable).")] = None,
    as_json: Json = False,
) -> None:
    """The oldest dead letters, with their reason."""
    from homeiq.replayer.operations import dead_letters  # noqa: PLC0415

    shared: Connection = ctx.obj
    letters = execute(shared, lambda client: dead_letters(client, shared.names, limit, reason))
    if as_json:
        print_json(letters)
        return
    table(f"dead letters in {shared.names.dead}", ["id", "original id", "reason", "detail", "consumer"],
           [[d.id, d.original_id, d.reason, d.detail[:80], d.consumer] for d in letters])


@dead_letter_app.command("redrive")
def dead_letter_redrive(
    ctx: typer.Context,
    ids: Annotated[list[str] | None, typer.Option("--id", help="A dead-letter id (repeat for several).")] = None,
    redrive_all: Annotated[bool, typer.Option("--all", help="Every dead letter that has a payload.")] = False,
    reason: Annotated[str | None, typer.Option(help="With --all: only dead letters of this reason.")] = None,
    dry_run: DryRun = False,
    as_json: Json = False,
) -> None:
    """Move dead letters back onto the stream (atomically out of dead-letter) once the cause is fixed."""
    from homeiq.replayer.operations import dead_letters, redrive  # noqa: PLC0415

    shared: Connection = ctx.obj
    if bool(ids) == redrive_all:
        err.print("error: give --id (one or more) or --all", highlight=False)
        raise typer.Exit(EXIT_USAGE)

    async def work(client: Any) -> list[dict[str, object]]:
        chosen = list(ids or [])
        if redrive_all:
            chosen = [d.id for d in await dead_letters(client, shared.names, 10_000_000, reason) if d.has_payload]
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

    moved = execute(shared, work)
    report(moved, as_json, "redrive", ["dead-letter id", "new stream id"],
           [[m["dead_id"], m["new_id"] or ("-" if dry_run else "not found or no payload")] for m in moved], dry_run)


@dead_letter_app.command("purge")
def dead_letter_purge(
    ctx: typer.Context,
    before: Annotated[str | None, typer.Option(
        help="Delete dead letters older than this: an ISO 8601 time or epoch milliseconds.")] = None,
    purge_all: Annotated[bool, typer.Option("--all", help="Delete every dead letter.")] = False,
    reason: Annotated[str | None, typer.Option(
        help="Only dead letters of this reason (with --all or --before).")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation (for scripts).")] = False,
    dry_run: DryRun = False,
    as_json: Json = False,
) -> None:
    """Delete dead letters for good, after saying how many and asking (unless --yes)."""
    from homeiq.replayer.operations import purge  # noqa: PLC0415

    shared: Connection = ctx.obj
    if (before is None) == (not purge_all):
        err.print("error: give --before TIME or --all", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    before_ms = None if before is None else _parse_time_ms(before)
    count = execute(shared, lambda client: purge(client, shared.names, before_ms, dry_run=True, reason=reason))
    if dry_run:
        report({"would_remove": count}, as_json, "purge", ["would remove"], [[count]], dry_run)
        return
    # Asked on stderr: stdout stays the table or the JSON. No terminal and no --yes: nothing is deleted.
    if count and not yes and not typer.confirm(f"Delete {count} dead letters from {shared.names.dead} for good?",
                                               err=True):
        fail("nothing deleted (give --yes to purge without asking)")
    removed = execute(shared, lambda client: purge(client, shared.names, before_ms, reason=reason))
    report({"removed": removed}, as_json, "purge", ["removed"], [[removed]])


def _parse_time_ms(value: str) -> int:
    try:
        return operator_time_ns(value, time.time_ns(), "--before") // 1_000_000
    except ConfigError as exc:
        err.print(f"error: {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
