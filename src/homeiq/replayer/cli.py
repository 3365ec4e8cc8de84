"""`replayer` console script: the daemon and the operator's incident tools.

Exit codes: 0 ok, 1 operational failure (says what to do next), 2 usage or configuration error.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from homeiq.replayer.acl_cli import acl_file_command
from homeiq.replayer.audit_cli import audit_command
from homeiq.replayer.console import DryRun, Json, execute, out, print_json, report
from homeiq.replayer.dead_letter_cli import dead_letter_app
from homeiq.replayer.reclaim_cli import reclaim_command
from homeiq.replayer.settings import Connection, ReplayerSettings
from homeiq.replayer.status import consumers_table, status_command
from homeiq.shared.binding import bind
from homeiq.shared.cli import ServiceMain, console_app, run_service


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
app.command("acl-file")(acl_file_command)
app.command("audit")(audit_command)
app.command("reclaim")(reclaim_command)
app.command("status")(status_command)

@app.callback()
@bind()
def _main(ctx: typer.Context, settings: Connection) -> None:
    """Reclaim entries left pending by dead or stuck writers; incident tools."""
    ctx.obj = settings


@app.command()
@bind(inherit=("redis_url", "redis_sentinels", "redis_sentinel_service", "redis_sentinel_tls", "names"))
def run(settings: ReplayerSettings) -> None:
    """Reclaim idle pending entries periodically, write them through the writer's code, trim safely.

    The InfluxDB token comes from INFLUXDB_TOKEN or INFLUXDB_TOKEN_FILE, never from a flag.
    """
    run_service("replayer", settings, lambda: replayer_main(settings))


def replayer_main(settings: ReplayerSettings) -> ServiceMain:
    """The replayer's daemon built from its settings, ready to run."""
    from homeiq.replayer.service import Replayer  # noqa: PLC0415 - keep --help fast

    settings.influx.log_config_notes()
    return Replayer(settings).run


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
    consumers_table(report)


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
