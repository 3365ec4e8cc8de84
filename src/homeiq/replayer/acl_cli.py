"""`replayer acl-file`: the Redis ACL file, one user per role, from the stream names these commands use."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from homeiq.replayer.console import err
from homeiq.replayer.settings import Connection
from homeiq.shared.acl import ROLES, SERVER_ROLES, Role, acl_file, read_passwords
from homeiq.shared.cli import config_error
from homeiq.shared.settings import ConfigError


def _roles(values: list[str] | None) -> list[str] | None:
    for value in values or ():
        if value not in (*ROLES, *SERVER_ROLES):
            raise typer.BadParameter(f"{value!r} is no role; one of: {', '.join((*ROLES, *SERVER_ROLES))}")
    return values


def acl_file_command(
    ctx: typer.Context,
    passwords_dir: Annotated[Path, typer.Option(
        "--passwords-dir", help="A directory with one file per role (collector, writer, replayer, operator, viewer, "
        "admin; and, with Sentinel, replica and sentinel: Redis's own users, written when their file is there), each "
        "holding that user's password; the file written holds only their SHA-256.")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write the ACL file here (mode 0640; Redis's `aclfile`); default: standard output.")] = None,
    role: Annotated[list[str] | None, typer.Option(
        "--role", help="Only this role (repeat for more); default: every role.", callback=_roles)] = None,
) -> None:
    """Write Redis's ACL file: the default user off, one user per role allowed only the commands and keys that
    role uses (the stream names from STREAM_NAME, STREAM_GROUP, STREAM_DEAD). Load it with `aclfile` in
    redis.conf, or `ACL LOAD` on a Redis started with one."""
    shared: Connection = ctx.obj
    roles: list[Role] = [r for r in ROLES if not role or r in role]
    roles += [r for r in SERVER_ROLES if (r in role if role else (passwords_dir / r).exists())]
    try:
        text = acl_file(shared.names, read_passwords(passwords_dir, roles))
    except ConfigError as exc:
        config_error(exc)
    if out is None:
        typer.echo(text, nl=False)
        return
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    err.print(f"wrote {out}: users {', '.join(roles)}", highlight=False)
