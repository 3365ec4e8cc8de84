"""`python -m homeiq.local`: the whole pipeline on this machine, stopped cleanly by Ctrl-C.

Redis and InfluxDB are private processes with their data under HOMEIQ_DATA_DIR (default ./.data)
unless REDIS_URL / INFLUXDB_URL point elsewhere. Without HA_URL, ha-sim is the source.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType

from homeiq.local.processes import ScriptProcess
from homeiq.local.services import InfluxServer, RedisServer, ServiceError
from homeiq.shared.ha.settings import read_ha_token
from homeiq.shared.logs import Log, setup_logging
from homeiq.shared.settings import ConfigError, redact_url

log = Log("homeiq.local")

DEFAULT_PORTS = {"HOMEIQ_REDIS_PORT": 16379, "HOMEIQ_INFLUXDB_PORT": 18086, "HA_SIM_PORT": 18123,
                 "HOMEIQ_COLLECTOR_METRICS_PORT": 9101, "HOMEIQ_WRITER_METRICS_PORT": 9102,
                 "HOMEIQ_REPLAYER_METRICS_PORT": 9103}
# one: the collector, the writer and the replayer in one process (`all-in-one run`: a home's footprint, one
# interpreter instead of three); per-service: each in its own, as compose and systemd run them.
PROCESSES = ("one", "per-service")


def _port(name: str) -> int:
    raw = os.environ.get(name, str(DEFAULT_PORTS[name]))
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a port number, got {raw!r}") from None
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            raise ConfigError(f"{name}: port {port} is already in use; set {name} to a free port")
    return port


def _processes() -> str:
    value = os.environ.get("HOMEIQ_PROCESSES", "one")
    if value not in PROCESSES:
        raise ConfigError(f"HOMEIQ_PROCESSES: expected one of {', '.join(PROCESSES)}, got {value!r}")
    return value


def ha_sim_token(data_dir: Path) -> str:
    """ha-sim's token, kept in `data_dir`/ha-sim-token (mode 0600) and made once: the same across restarts, so
    `./scripts/replayer audit` (or anything given HA_TOKEN_FILE) can talk to the simulator."""
    path = data_dir / "ha-sim-token"
    data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if token := path.read_text().strip():
            path.chmod(0o600)
            return token
    token = secrets.token_urlsafe(24)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write(token + "\n")
    path.chmod(0o600)  # O_CREAT's mode counts only for a new file
    return token


class LocalPipeline:
    """Starts everything in dependency order and stops it in reverse."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.redis: RedisServer | None = None
        self.influx: InfluxServer | None = None
        self.children: list[ScriptProcess] = []

    def start(self) -> dict[str, str]:
        """Start services and the pipeline's processes; returns the environment they share."""
        env: dict[str, str] = {}
        processes = _processes()
        ports = {name: _port(f"HOMEIQ_{name.upper()}_METRICS_PORT") for name in ("writer", "replayer", "collector")}
        if not os.environ.get("REDIS_URL"):
            self.redis = RedisServer(self.data_dir / "redis", _port("HOMEIQ_REDIS_PORT"),
                                     maxmemory=os.environ.get("REDIS_MAXMEMORY", "0")).start()
            env["REDIS_URL"] = self.redis.url
            log.info("redis_started", url=self.redis.url, data_dir=str(self.redis.workdir))
        if not os.environ.get("INFLUXDB_URL"):
            self.influx = InfluxServer(self.data_dir / "influxdb", _port("HOMEIQ_INFLUXDB_PORT")).start()
            database = os.environ.get("INFLUXDB_BUCKET", "home_assistant_events")
            self.influx.create_database(database)
            env.update(INFLUXDB_URL=self.influx.url, INFLUXDB_API="v1", INFLUXDB_BUCKET=database)
            log.info("influxdb_started", url=self.influx.url, database=database, data_dir=str(self.influx.workdir))
        if not os.environ.get("HA_URL"):
            token = ha_sim_token(self.data_dir)
            port = _port("HA_SIM_PORT")
            self._spawn("ha-sim", {"HA_TOKEN": token, "HA_SIM_PORT": str(port)}, metrics_port=None)
            env.update(HA_URL=f"ws://127.0.0.1:{port}/api/websocket", HA_TOKEN=token)
            log.info("ha_sim_started", url=env["HA_URL"], token_file=str(self.data_dir / "ha-sim-token"),
                     note="set HA_URL and HA_TOKEN to use a real Home Assistant")
        else:
            read_ha_token()  # fail now, naming the variable, rather than in the collector
            log.info("home_assistant", url=redact_url(os.environ["HA_URL"]))
        env.update(COLLECTOR_SPOOL_DIR=os.environ.get("COLLECTOR_SPOOL_DIR", str(self.data_dir / "spool")),
                   METRICS_HOST="127.0.0.1")
        if processes == "one":
            child = self._spawn("all-in-one", {**env, **{f"{name.upper()}_METRICS_PORT": str(port)
                                                         for name, port in ports.items()}}, metrics_port=None)
            log.info("process_started", child=child.name, services=list(ports),
                     metrics=[f"http://127.0.0.1:{port}/metrics" for port in ports.values()])
            return env
        for name, port in ports.items():
            child = self._spawn(name, env, metrics_port=port)
            log.info("process_started", child=name, metrics=child.metrics_url)
        return env

    def _spawn(self, script: str, env: dict[str, str], metrics_port: int | None) -> ScriptProcess:
        child = ScriptProcess(script, env, None, metrics_port=metrics_port)
        self.children.append(child)
        return child

    def exited(self) -> ScriptProcess | None:
        """A child that exited on its own, if any."""
        return next((child for child in self.children if child.poll() is not None), None)

    def stop(self) -> bool:
        """Stop children newest first (the collector flushes before the writers stop), then the services."""
        clean = True
        for child in reversed(self.children):
            code = child.terminate()
            if code != 0:
                clean = False
                log.warning("process_exit", child=child.name, code=code)
        for service in (self.influx, self.redis):
            if service is not None:
                service.stop()
        return clean


CHILD_CHECK_S = 1.0  # how soon a child that exited is noticed; an idle home pays a wakeup for each look


class _Stopping(Exception):
    """Ctrl-C or SIGTERM while the children run."""


def main() -> int:
    """Run until Ctrl-C (or SIGTERM); 0 when everything stopped cleanly."""
    setup_logging(os.environ.get("LOG_LEVEL", "INFO"), os.environ.get("LOG_FORMAT", "auto"), "local")
    stopping = False

    def _on_signal(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        if stopping:  # the children are stopping: a second Ctrl-C must not cut that
            log.info("already_stopping", signal=signal.Signals(signum).name)
            return
        stopping = True
        log.info("stopping", signal=signal.Signals(signum).name)
        raise _Stopping  # ends the wait below at once (a sleep is otherwise resumed after a handler)

    pipeline = LocalPipeline(Path(os.environ.get("HOMEIQ_DATA_DIR", ".data")).resolve())
    try:
        pipeline.start()
    except (ConfigError, ServiceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        pipeline.stop()
        return 2 if isinstance(exc, ConfigError) else 1
    crashed = None
    try:
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)
        log.info("pipeline_running", stop="press Ctrl-C to stop everything")
        while crashed is None:
            crashed = pipeline.exited()
            time.sleep(CHILD_CHECK_S)
    except _Stopping:
        pass
    finally:
        stopping = True  # from here on a signal only says so: nothing may cut the stop below
    if crashed is not None:
        log.error("process_exited", child=crashed.name, code=crashed.poll())
    clean = pipeline.stop() and crashed is None
    log.info("pipeline_stopped", clean=clean)
    return 0 if clean else 1
