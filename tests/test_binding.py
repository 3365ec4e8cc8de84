"""Each setting is declared once, on its settings struct; the commands' options are bound to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from homeiq.collector.cli import app as collector_app
from homeiq.collector.settings import CollectorSettings
from homeiq.ha_sim.cli import app as sim_app
from homeiq.replayer.cli import app as replayer_app
from homeiq.shared.binding import bind
from homeiq.shared.settings import Settings, settings_fields
from homeiq.writer.cli import app as writer_app
from homeiq.writer.settings import WriterSettings

runner = CliRunner()


def _typed(settings_type: type[Settings], seen: list[Any]) -> Any:
    def show(settings: Settings) -> None:
        seen.append(settings)
    show.__annotations__ = {"settings": settings_type, "return": None}
    return bind()(show)


def invoke(settings_type: type[Settings], args: list[str], env: dict[str, str] | None = None) -> Any:
    app, seen = typer.Typer(), []
    app.command()(_typed(settings_type, seen))
    app.command("other")(lambda: None)  # two commands: the first is addressed by name, as the services' are
    result = runner.invoke(app, ["show", *args], env=env or {}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return seen[0]


def test_a_flag_beats_its_variable_which_beats_the_structs_default() -> None:
    default = invoke(WriterSettings, [], {})
    assert default.batch_size == WriterSettings().batch_size
    assert default.influx.timeout_s == WriterSettings().influx.timeout_s
    from_env = invoke(WriterSettings, [], {"WRITER_BATCH_SIZE": "42", "INFLUXDB_TIMEOUT_S": "3.5"})
    assert (from_env.batch_size, from_env.influx.timeout_s) == (42, 3.5)
    from_flag = invoke(WriterSettings, ["--batch-size", "7", "--influxdb-timeout-s", "2"],
                       {"WRITER_BATCH_SIZE": "42", "INFLUXDB_TIMEOUT_S": "3.5"})
    assert (from_flag.batch_size, from_flag.influx.timeout_s) == (7, 2.0)


def test_the_configuration_file_sits_between_what_is_given_and_the_default(tmp_path: Path) -> None:
    config = tmp_path / "homeiq.yaml"
    config.write_text("influxdb:\n  host: filehost\n  port: 9999\n  api_version: 1\n  database: filedb\n"
                      "homeiq:\n  schema: ha\n")
    from_file = invoke(WriterSettings, ["--config", str(config)])
    assert (from_file.influx.url, from_file.influx.api, from_file.influx.bucket, from_file.influx.schema) == (
        "http://filehost:9999", "v1", "filedb", "ha")
    # A variable set to the built-in default still counts as given: it overrides the file.
    given = invoke(WriterSettings, ["--config", str(config)], {"INFLUXDB_SCHEMA": "homeiq", "INFLUXDB_BUCKET": "b"})
    assert (given.influx.schema, given.influx.bucket, given.influx.url) == ("homeiq", "b", "http://filehost:9999")


def test_values_are_checked_and_normalised_by_their_setting() -> None:
    settings = invoke(CollectorSettings, ["--ha-url", "https://ha.example:8123"])
    assert settings.ha_url == "wss://ha.example:8123/api/websocket"
    assert settings.names.stream == CollectorSettings().names.stream
    app, _ = typer.Typer(), []
    app.command()(_typed(CollectorSettings, []))
    app.command("other")(lambda: None)
    result = runner.invoke(app, ["show"], env={"HA_PING_TIMEOUT_S": "0"})
    assert result.exit_code == 2
    assert "HA_PING_TIMEOUT_S: must be greater than 0" in result.output


def _commands() -> list[tuple[typer.Typer, str, type[Settings], set[str]]]:
    from homeiq.ha_sim.cli import SimSettings  # noqa: PLC0415
    from homeiq.local.all_in_one import AllInOneSettings  # noqa: PLC0415
    from homeiq.local.all_in_one import app as all_in_one_app  # noqa: PLC0415
    from homeiq.replayer.settings import AuditCommandSettings, ReclaimCommandSettings, ReplayerSettings  # noqa: PLC0415

    return [(collector_app, "run", CollectorSettings, set()), (writer_app, "run", WriterSettings, set()),
            (replayer_app, "run", ReplayerSettings,
             {"redis_url", "redis_sentinels", "redis_sentinel_service", "redis_sentinel_tls", "names"}),
            (replayer_app, "reclaim", ReclaimCommandSettings, set()),
            (replayer_app, "audit", AuditCommandSettings, set()), (sim_app, "run", SimSettings, set()),
            (all_in_one_app, "run", AllInOneSettings, set())]


@pytest.mark.parametrize(("app", "command", "settings_type", "from_group"), _commands())
def test_every_setting_of_a_command_is_offered_with_its_variable(
    app: typer.Typer, command: str, settings_type: type[Settings], from_group: set[str]
) -> None:
    result = runner.invoke(app, [command, "--help"], terminal_width=400)
    assert result.exit_code == 0, result.output
    variables = _variables(settings_type, from_group)
    assert len(variables) >= 5
    for variable in variables:
        assert f"env var: {variable}" in result.output, variable


def _variables(settings_type: type[Settings], skipped: set[str], only: tuple[str, ...] | None = None) -> list[str]:
    found: list[str] = []
    for field in settings_fields(settings_type):
        if field.name in skipped or (only is not None and field.name not in only):
            continue
        if field.nested is not None:
            found += _variables(field.type, set(), field.nested.only)
        elif field.var is not None:
            found.append(field.var.env)
    return found


def _declared() -> dict[str, Any]:
    """Every variable any command reads, with its default (all declarations of one variable must agree)."""
    found: dict[str, Any] = {}

    def walk(settings_type: type[Settings], instance: Any) -> None:
        for field in settings_fields(settings_type):
            value = getattr(instance, field.name)
            if field.nested is not None:
                walk(field.type, value)
            elif field.var is not None:
                found.setdefault(field.var.env, set()).add(value)

    for _, _, settings_type, _ in _commands():
        walk(settings_type, settings_type())
    return found


def test_the_readmes_table_of_variables_matches_the_settings() -> None:
    declared = _declared()
    # One variable, one default: a variable read by several commands must not mean different things.
    assert {name: values for name, values in declared.items() if len(values) > 1} == {
        "INFLUXDB_TIMEOUT_S": {10.0, 60.0},  # an audit reads whole days back
        "HA_COMMAND_TIMEOUT_S": {60.0, 120.0},  # the same: history over days
        "HA_URL": {"", "ws://127.0.0.1:8123/api/websocket"},  # the daemon's audit is off without it
        "METRICS_PORT": {8001, 8002, 8003},  # one port per service
    }
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    rows = [line.split("|")[1:3] for line in readme.splitlines() if line.startswith("| `") and "_" in line]
    checked = 0
    for names_cell, defaults_cell in rows:
        names = [n.strip(" `") for n in names_cell.split(",")]
        if not all(n in declared for n in names):
            continue
        defaults = [d.strip(" `") for d in defaults_cell.split(",")]
        assert len(defaults) == len(names), names_cell
        for name, default in zip(names, defaults, strict=True):
            values = {str(v).lower() if isinstance(v, bool) else str(v) for v in declared[name]}
            shown = "" if default == "none" else default
            assert shown in values or any(_same_number(shown, v) for v in values), (name, default, values)
            checked += 1
    assert checked >= 20
    unknown = [n for cell, _ in rows for n in (x.strip(" `") for x in cell.split(","))
               if n.isupper() and n not in declared]
    assert unknown == []


def _same_number(text: str, value: str) -> bool:
    try:
        return float(text) == float(value)
    except ValueError:
        return False
