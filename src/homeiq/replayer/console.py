"""What every replayer command prints with: the table or JSON on stdout, errors and progress on stderr."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final, NoReturn, TypeVar

import msgspec
import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from homeiq.replayer.settings import Connection
from homeiq.shared.cli import EXIT_FAILURE, config_error
from homeiq.shared.settings import ConfigError
from homeiq.shared.stream import RedisPlace, connect, place_of

# Lines are never folded by us (a terminal wraps them, a pipe gets them whole): an entity id, a stream id or a URL
# stays one word that a script, a log or a copy and paste finds.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Show what would happen; change nothing.")]


def fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)  # one line: URLs stay whole
    raise typer.Exit(EXIT_FAILURE)


def execute(ctx: Connection, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work(client)`; a Redis failure exits 1 naming the URL (or the sentinels) and what to check."""
    place = redis_place(ctx)

    async def _run() -> T:
        client = connect(place)
        try:
            return await work(client)
        finally:
            await client.aclose()

    try:
        return asyncio.run(_run())
    except (RedisError, OSError) as exc:
        fail(redis_failure(place, exc))


def redis_place(ctx: Connection) -> RedisPlace:
    """Where the command's settings say Redis is; an unreadable password file exits 2."""
    try:
        return place_of(ctx)
    except ConfigError as exc:
        config_error(exc)


def redis_failure(place: RedisPlace, exc: BaseException) -> str:
    """What a command says when Redis failed: where it was asked for, what happened, what to check."""
    if place.sentinels:
        return (f"Redis ({place}) failed: {exc}. Check that the sentinels run and monitor "
                f"{place.service!r} (REDIS_SENTINELS, REDIS_SENTINEL_SERVICE).")
    return (f"Redis at {place} failed: {exc}. Check that Redis is running and that REDIS_URL (or --redis-url) "
            "points at it.")


def print_json(value: object) -> None:
    out.print_json(msgspec.json.encode(value).decode())


UNBOUNDED: Final = 100_000  # columns a table may take when no terminal limits it


def show(renderable: object) -> None:
    """Print a table on stdout: as wide as the terminal, or, piped or redirected, as wide as its content, so that
    an entity id or a stream id is never cut nor folded where a script or a log reads it."""
    if out.is_terminal:
        out.print(renderable)
        return
    width = out.width
    out.width = UNBOUNDED
    try:
        out.print(renderable, crop=False)
    finally:
        out.width = width


def table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    shown = Table(title=title, title_justify="left")
    for column in columns:
        shown.add_column(column)
    for row in rows:
        shown.add_row(*("" if cell is None else str(cell) for cell in row))
    show(shown)


def report(value: object, as_json: bool, title: str, columns: list[str], rows: list[list[object]],
           dry_run: bool = False) -> None:
    """`value` as JSON, or the table of `rows` (its title says when nothing changed)."""
    if as_json:
        print_json(value)
    else:
        table(f"{title} (dry run: nothing changed)" if dry_run else title, columns, rows)
