"""Start and stop the simulator inside an event loop (tests, the pipeline check, the CLI)."""

from __future__ import annotations

import ssl

from aiohttp import web

from homeiq.ha_sim.hub import Hub
from homeiq.ha_sim.server import make_app


class SimServer:
    """An ha-sim listening on `host:port` (0: a free port); `url` is its WebSocket URL once started."""

    def __init__(self, hub: Hub, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.hub, self._host, self._port, self._tls = hub, host, port, tls
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        """Listen (HA starting: its recorder's commit timer starts over); returns the ws:// (wss:// with `tls`) URL
        of `/api/websocket`."""
        self.hub.recorder.restart()
        self._runner = web.AppRunner(make_app(self.hub), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._tls)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"{'wss' if self._tls else 'ws'}://{self._host}:{port}/api/websocket"
        return self.url

    def drop_connections(self) -> None:
        """Abort every client connection, as a restarting HA or a network fault would."""
        for connection in list(self.hub.connections):
            connection.abort("dropped by the simulator")

    async def stop(self) -> None:
        """Close every connection and stop listening; the recorder commits what it holds, as HA's does on shutdown."""
        self.drop_connections()
        self.hub.recorder.commit()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
