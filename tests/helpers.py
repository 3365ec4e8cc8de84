"""Test helpers: waiting on conditions, running the console scripts, a slow TCP proxy, Influx queries."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client.metrics import MetricWrapperBase

from homeiq.local.processes import ScriptProcess
from homeiq.local.waiting import wait_for

__all__ = ["Certs", "DelayProxy", "FaultyHttp", "Service", "make_certs", "value", "wait_for"]


class Certs:
    """A test CA (ca.pem) and a server certificate of it for 127.0.0.1 and localhost."""

    def __init__(self, folder: Path) -> None:
        self.ca = folder / "ca.pem"
        self.cert, self.key = folder / "server.pem", folder / "server.key"

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_certs(folder: Path) -> Certs:
    """Make a CA and a server certificate in `folder` with the openssl command."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=homeiq test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return Certs(folder)


def value(metric: MetricWrapperBase, **labels: str) -> float:
    """A counter's or gauge's value through its public samples, summed over the label sets that match `labels`."""
    total = 0.0
    for family in metric.collect():
        for sample in family.samples:
            if sample.name in (family.name, f"{family.name}_total") and labels.items() <= sample.labels.items():
                total += sample.value
    return total


class Service(ScriptProcess):
    """A console script under test: JSON logs to a file in `log_dir`, metrics on a free loopback port."""

    def __init__(self, script: str, env: dict[str, str], log_dir: Path, name: str | None = None,
                 metrics_port: int | None = None) -> None:
        name = name or script
        test_env = {"METRICS_HOST": "127.0.0.1", "LOG_FORMAT": "json", "LOG_LEVEL": "INFO",
                    "COLLECTOR_SPOOL_DIR": str(log_dir / f"{name}-spool"), **env}
        super().__init__(script, test_env, log_dir / f"{name}.log", name, metrics_port)


class DelayProxy:
    """A TCP proxy on loopback that holds every answer from upstream for `delay_s` (a slow InfluxDB). After `cut()`,
    the next answer from upstream is swallowed and every connection closed (the request was carried out, its
    answer lost), and new connections are closed at once until `restore()`."""

    def __init__(self, upstream_port: int, delay_s: float) -> None:
        self.upstream_port, self.delay_s = upstream_port, delay_s
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._cut = False
        self.swallowed = 0  # answers swallowed after a cut

    def cut(self) -> None:
        self._cut = True

    def restore(self) -> None:
        self._cut = False

    async def start(self, port: int = 0) -> int:
        """Listen on `port` (0: a free one); returns it."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, answers: bool) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if answers and self.delay_s:  # read each time: a test may slow the answers down mid-run
                        await asyncio.sleep(self.delay_s)
                    if answers and self._cut:
                        self.swallowed += 1
                        break
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()
            if answers:  # the client's side closes with the answers' side
                with contextlib.suppress(OSError):
                    up_writer.close()

        tasks = [asyncio.create_task(pipe(reader, up_writer, answers=False)),
                 asyncio.create_task(pipe(up_reader, writer, answers=True))]
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


class FaultyHttp:
    """An HTTP proxy in front of a real influxd that answers the next writes with injected faults.

    Each queued fault is a status (with optional Retry-After) or "hang" (answer after `hang_s`); a `window`
    answers every write with one status until a deadline. Other requests are forwarded unchanged.
    """

    def __init__(self, upstream: str, hang_s: float = 5.0) -> None:
        self.upstream, self.hang_s = upstream, hang_s
        self.faults: list[tuple[int | str, str | None]] = []
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.window: tuple[float, int, str | None] | None = None  # (until, status, Retry-After) for every write
        self.answered: list[tuple[float, str, int]] = []  # (monotonic time, client address, status) of writes
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, port: int = 0) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((request.path_qs, dict(request.headers), body))
        client = f"{request.remote}:{request.transport.get_extra_info('peername')[1] if request.transport else 0}"
        lines = "write" in request.path and bool(body)  # a readiness check is a write of no points
        if self.window and "write" in request.path and time.monotonic() < self.window[0]:
            _, status, retry_after = self.window
            if lines:
                self.answered.append((time.monotonic(), client, status))
            headers = {"Retry-After": retry_after} if retry_after else {}
            return web.json_response({"error": f"injected {status}"}, status=status, headers=headers)
        if lines:
            self.answered.append((time.monotonic(), client, 0))
        if self.faults and lines:  # writes of lines only; readiness checks pass through
            fault, retry_after = self.faults.pop(0)
            if fault == "hang":
                await asyncio.sleep(self.hang_s)
            else:
                headers = {"Retry-After": retry_after} if retry_after else {}
                return web.json_response({"error": f"injected {fault}"}, status=int(fault), headers=headers)
        async with aiohttp.ClientSession() as session, session.request(
            request.method, self.upstream + request.path_qs, data=body,
            # aiohttp already decompressed the body: forward it plain.
            headers={k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization")},
        ) as upstream:
            return web.Response(status=upstream.status, body=await upstream.read(),
                                headers={"Content-Type": upstream.headers.get("Content-Type", "text/plain")})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
