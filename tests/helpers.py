"""Test helpers: waiting on conditions, running the console scripts, a slow TCP proxy, Influx queries."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from homeiq_local.processes import ScriptProcess
from homeiq_local.waiting import wait_for

__all__ = ["DelayProxy", "Service", "wait_for"]


class Service(ScriptProcess):
    """A console script under test: JSON logs to a file in `log_dir`, metrics on a free loopback port."""

    def __init__(self, script: str, env: dict[str, str], log_dir: Path, name: str | None = None) -> None:
        name = name or script
        test_env = {"METRICS_HOST": "127.0.0.1", "LOG_FORMAT": "json", "LOG_LEVEL": "INFO",
                    "COLLECTOR_SPOOL_DIR": str(log_dir / f"{name}-spool"), **env}
        super().__init__(script, test_env, log_dir / f"{name}.log", name)


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
