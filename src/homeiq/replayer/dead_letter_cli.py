"""`replayer dead-letter`: inspect, re-drive and purge the dead-letter stream."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from homeiq.replayer.console import DryRun, Json, err, execute, fail, out, print_json, report, table
from homeiq.replayer.settings import Connection
from homeiq.shared.cli import EXIT_USAGE, console_app
from homeiq.shared.settings import ConfigError
from homeiq.shared.times import operator_time_ns

dead_letter_app = console_app("Inspect, re-drive and purge the dead-letter stream.", False)

STREAM_ID = re.compile(r"\d+(-\d+)?")


def _check_reason(value: str | None) -> str | None:
    from homeiq.replayer.operations import DEAD_REASONS  # noqa: PLC0415

    if value is not None and value not in DEAD_REASONS:
        raise typer.BadParameter(f"{value!r} is no dead-letter reason; one of: {', '.join(DEAD_REASONS)}")
    return value


@dead_letter_app.command("list")
def dead_letter_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="Show at most this many.")] = 50,
    reason: Annotated[str | None, typer.Option(
        help="Only this reason: undecodable, unknown_version, rejected, … (a wrong one lists them all).",
        callback=_check_reason)] = None,
    as_json: Json = False,
) -> None:
    """The oldest dead letters: when each was dead-lettered (UTC), its entity, reason and detail. `dead-letter
    show ID` prints one whole, its payload decoded."""
    from homeiq.replayer.operations import dead_letters  # noqa: PLC0415

    shared: Connection = ctx.obj
    letters = execute(shared, lambda client: dead_letters(client, shared.names, limit, reason))
    if as_json:
        print_json(letters)
        return
    table(f"dead letters in {shared.names.dead}", ["id", "time", "entity", "reason", "detail"],
           [[d.id, d.time, d.entity_id or ("-" if d.has_payload else "(no payload)"), d.reason, d.detail[:80]]
            for d in letters])


@dead_letter_app.command("show")
def dead_letter_show(
    ctx: typer.Context,
    entry_id: Annotated[str, typer.Argument(metavar="ID", help="The dead letter's id (`dead-letter list`).")],
    as_json: Json = False,
) -> None:
    """One dead letter, whole: when, entity, reason, the full detail, where it came from, and its payload
    decoded (escaped as stored when it cannot be decoded)."""
    from homeiq.replayer.operations import dead_letter  # noqa: PLC0415

    shared: Connection = ctx.obj
    if not STREAM_ID.fullmatch(entry_id):
        err.print(f"error: {entry_id!r} is no stream id (like 1700000000000-0)", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    entry = execute(shared, lambda client: dead_letter(client, shared.names, entry_id))
    if entry is None:
        fail(f"no dead letter {entry_id} in {shared.names.dead} (`replayer dead-letter list` shows the ids)")
    if as_json:
        print_json(entry)
        return
    for name, value in (("id", entry.id), ("dead-lettered", entry.time), ("reason", entry.reason),
                        ("entity", entry.entity_id or "-"), ("event time", entry.event_time or "-"),
                        ("original id", entry.original_id), ("consumer", entry.consumer),
                        ("payload version", entry.payload_version or "-"), ("detail", entry.detail)):
        out.print(f"{name + ':':17}{value}", highlight=False, markup=False, soft_wrap=True)
    if entry.payload is not None:
        out.print("payload:", highlight=False)
        print_json(entry.payload)
    elif entry.raw_payload is not None:
        out.print(f"payload (cannot be decoded: {entry.payload_error}):", highlight=False, markup=False,
                  soft_wrap=True)
        out.print(entry.raw_payload, highlight=False, markup=False, soft_wrap=True)
    else:
        out.print("payload:         no payload (it was trimmed from the stream before it was written; nothing to "
                  "redrive)", highlight=False)


@dead_letter_app.command("redrive")
def dead_letter_redrive(
    ctx: typer.Context,
    ids: Annotated[list[str] | None, typer.Option("--id", help="A dead-letter id (repeat for several).")] = None,
    redrive_all: Annotated[bool, typer.Option("--all", help="Every dead letter that has a payload.")] = False,
    reason: Annotated[str | None, typer.Option(help="With --all: only dead letters of this reason.",
                                               callback=_check_reason)] = None,
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
        help="Only dead letters of this reason (with --all or --before).", callback=_check_reason)] = None,
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
    if count and not yes and not _confirmed(f"Delete {count} dead letters from {shared.names.dead} for good?"):
        fail("nothing deleted (give --yes to purge without asking)")
    removed = execute(shared, lambda client: purge(client, shared.names, before_ms, reason=reason))
    report({"removed": removed}, as_json, "purge", ["removed"], [[removed]])


def _confirmed(question: str) -> bool:
    """The operator's answer; no terminal to ask on (or no answer) is a no that says how to purge from a script."""
    try:
        return typer.confirm(question, err=True)
    except typer.Abort:  # end of input: nobody answered
        err.print("")
        fail("nothing deleted: no answer (no terminal to ask on); give --yes to purge without asking")


def _parse_time_ms(value: str) -> int:
    try:
        return operator_time_ns(value, time.time_ns(), "--before") // 1_000_000
    except ConfigError as exc:
        err.print(f"error: {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
