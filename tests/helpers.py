"""Test helpers: waiting on conditions, running the console scripts, a slow TCP proxy, Influx queries."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from homeiq_local.services import InfluxServer, free_port


async def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """Poll `condition` (sync or async) until truthy; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(interval_s)


class Service:
    """A console script (`collector run`, `writer run`, …) as a child process with its own log file."""

    def __init__(self, script: str, env: dict[str, str], log_dir: Path, name: str | None = None) -> None:
        self.name = name or script
        self.metrics_port = free_port()
        self.log_path = log_dir / f"{self.name}.log"
        full_env = {**os.environ, **env, "METRICS_HOST": "127.0.0.1", "METRICS_PORT": str(self.metrics_port),
                    "LOG_FORMAT": "json", "LOG_LEVEL": env.get("LOG_LEVEL", "INFO")}
        bin_dir = Path(sys.executable).parent
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen([str(bin_dir / script), "run"], env=full_env, stdout=self._log,
                                        stderr=subprocess.STDOUT)

    def terminate(self, timeout_s: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout_s)
        finally:
            self._log.close()
        return code

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.process.kill()
        self.process.wait()
        self._log.close()

    def logs(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(errors="replace")


def influx_points(influx: InfluxServer, database: str) -> list[dict[str, Any]]:
    """Every point of the measurement as a dict of column → value (time in ns)."""
    answer = influx.query("SELECT * FROM home_assistant_events", database)
    points: list[dict[str, Any]] = []
    for result in answer.get("results", []):
        assert "error" not in result, result
        for series in result.get("series", []):
            points.extend(dict(zip(series["columns"], row, strict=True)) for row in series["values"])
    return points


def influx_count(influx: InfluxServer, database: str) -> int:
    """How many points the measurement holds (counted on the always-present `source` field)."""
    answer = influx.query("SELECT COUNT(source) FROM home_assistant_events", database)
    series = answer["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


class DelayProxy:
    """A TCP proxy on loopback that holds every answer from upstream for `delay_s` (a slow InfluxDB)."""

    def __init__(self, upstream_port: int, delay_s: float) -> None:
        self.upstream_port, self.delay_s = upstream_port, delay_s
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen on a free port; returns it."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay_s: float) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if delay_s:
                        await asyncio.sleep(delay_s)
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        tasks = [asyncio.create_task(pipe(reader, up_writer, 0)),
                 asyncio.create_task(pipe(up_reader, writer, self.delay_s))]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.difference_update(tasks)

    async def stop(self) -> None:
        """Close the listener and every proxied connection."""
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
