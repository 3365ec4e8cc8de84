"""Wrong configuration gets a clear error naming the variable; secrets never show in --help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from homeiq.collector.cli import app as collector_app
from homeiq.ha_sim.cli import app as hasim_app
from homeiq.local.services import free_port
from homeiq.replayer.cli import app as replayer_app
from homeiq.shared.influx.settings import InfluxSettings
from homeiq.shared.settings import ConfigError, read_secret, redact_url
from homeiq.shared.stream import DEFAULT_NAMES
from homeiq.writer.cli import app as writer_app
from homeiq.writer.service import Writer
from homeiq.writer.settings import WriterSettings

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
    (writer_app, {"REDIS_SOCKET_TIMEOUT_S": "0", "INFLUXDB_TOKEN": SECRET}, "REDIS_SOCKET_TIMEOUT_S"),
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
    (writer_app, ["run", "--help"], "REDIS_SOCKET_TIMEOUT_S"),
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


def test_writer_read_blocking_past_the_redis_socket_timeout_exits_2_naming_both() -> None:
    # Such a read times out like a lost Redis whenever the stream is idle: refused at start, not met at run time.
    env = {name: value for name, value in os.environ.items() if name != "REDIS_SOCKET_TIMEOUT_S"}
    env.update(WRITER_BLOCK_MS="20000", INFLUXDB_TOKEN=SECRET, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
               INFLUXDB_URL=f"http://127.0.0.1:{free_port()}", METRICS_HOST="127.0.0.1", METRICS_PORT="0")
    writer = Path(sys.executable).parent / "writer"
    result = subprocess.run([str(writer), "run"], env=env, capture_output=True, text=True, timeout=20, check=False)
    assert result.returncode == 2, result.stderr
    assert "WRITER_BLOCK_MS" in result.stderr and "REDIS_SOCKET_TIMEOUT_S" in result.stderr
    assert SECRET not in result.stderr


@pytest.mark.parametrize(("block_ms", "socket_timeout_s", "accepted"), [
    (1000, 15.0, True), (14_000, 15.0, True), (14_001, 15.0, False), (20_000, 15.0, False), (20_000, 30.0, True),
    (1000, 1.5, False), (500, 1.5, True),
])
async def test_writer_read_block_stays_a_second_below_the_socket_timeout_it_gets(
    block_ms: int, socket_timeout_s: float, accepted: bool
) -> None:
    settings = WriterSettings(redis_url="redis://127.0.0.1:6379/0", names=DEFAULT_NAMES, consumer="w1",
                              influx=InfluxSettings(url="http://127.0.0.1:8086", api="v1"), block_ms=block_ms,
                              redis_socket_timeout_s=socket_timeout_s)
    if not accepted:
        with pytest.raises(ConfigError, match=r"^WRITER_BLOCK_MS .* REDIS_SOCKET_TIMEOUT_S"):
            settings.validate()
        return
    writer = Writer(settings.validate())
    try:
        assert writer.redis.connection_pool.connection_kwargs["socket_timeout"] == socket_timeout_s
    finally:
        await writer.redis.aclose()
