"""Wrong configuration gets a clear error naming the variable; secrets never show in --help."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from homeiq_collector.cli import app as collector_app
from homeiq_hasim.cli import app as hasim_app
from homeiq_replayer.cli import app as replayer_app
from homeiq_shared.settings import ConfigError, read_secret, redact_url
from homeiq_writer.cli import app as writer_app

runner = CliRunner()
SECRET = "s3cr3t-token-value"


@pytest.mark.parametrize(("app", "env", "variable"), [
    (collector_app, {"HA_URL": "ftp://ha", "HA_TOKEN": SECRET}, "HA_URL"),
    (collector_app, {"HA_URL": "ws://ha:8123"}, "HA_TOKEN"),
    (collector_app, {"HA_TOKEN": SECRET, "HA_MAX_MESSAGE_MB": "4"}, "HA_MAX_MESSAGE_MB"),
    (collector_app, {"HA_TOKEN": SECRET, "REDIS_URL": "cache.internal:7000"}, "REDIS_URL"),  # no scheme
    (writer_app, {"INFLUXDB_API": "v3", "INFLUXDB_TOKEN": SECRET}, "INFLUXDB_API"),
    (writer_app, {"INFLUXDB_API": "v2"}, "INFLUXDB_TOKEN"),
    (writer_app, {"WRITER_BATCH_SIZE": "9000", "INFLUXDB_TOKEN": SECRET}, "WRITER_BATCH_SIZE"),
    (replayer_app, {"REPLAYER_MIN_IDLE_MS": "0", "INFLUXDB_TOKEN": SECRET}, "REPLAYER_MIN_IDLE_MS"),
    (hasim_app, {"HA_SIM_RATE": "-1", "HA_TOKEN": SECRET}, "HA_SIM_RATE"),
])
def test_bad_setting_exits_2_naming_the_variable(app: object, env: dict[str, str], variable: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HA_TOKEN", "HA_TOKEN_FILE", "INFLUXDB_TOKEN", "INFLUXDB_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(app, ["run"], env=env)  # type: ignore[arg-type]
    assert result.exit_code == 2, result.output
    assert variable in result.output
    assert SECRET not in result.output


@pytest.mark.parametrize(("app", "args", "variable"), [
    (collector_app, ["run", "--help"], "HA_TOKEN_FILE"), (writer_app, ["run", "--help"], "INFLUXDB_TOKEN_FILE"),
    (replayer_app, ["--help"], "REDIS_URL"), (replayer_app, ["run", "--help"], "REPLAYER_MIN_IDLE_MS"),
    (hasim_app, ["run", "--help"], "HA_SIM_PORT"),
])
def test_help_explains_options_and_never_shows_secrets(app: object, args: list[str], variable: str) -> None:
    result = runner.invoke(app, args,  # type: ignore[arg-type]
                           env={"HA_TOKEN": SECRET, "INFLUXDB_TOKEN": SECRET, "REDIS_URL": f"redis://:{SECRET}@h"})
    assert result.exit_code == 0
    assert variable in result.output
    assert SECRET not in result.output


def test_secret_from_file_and_conflicts(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(SECRET + "\n")
    assert read_secret("HA_TOKEN", {"HA_TOKEN_FILE": str(token_file)}) == SECRET
    with pytest.raises(ConfigError, match="HA_TOKEN and HA_TOKEN_FILE are both set"):
        read_secret("HA_TOKEN", {"HA_TOKEN": "x", "HA_TOKEN_FILE": str(token_file)})
    with pytest.raises(ConfigError, match="HA_TOKEN_FILE: cannot read"):
        read_secret("HA_TOKEN", {"HA_TOKEN_FILE": str(tmp_path / "missing")})


def test_redacted_urls_hide_passwords() -> None:
    assert redact_url(f"redis://user:{SECRET}@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"
