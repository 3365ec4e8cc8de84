"""Real Prometheus and Alertmanager (the Debian packages' binaries) on free loopback ports, and the webhook that
Alertmanager notifies, for the tests of ops/."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from homeiq.local.services import free_port

OPS = Path(__file__).resolve().parents[1] / "ops"
WEBHOOK_IN_CONFIG = "http://homeassistant.local:8123/api/webhook/homeiq-alerts"


async def get_json(url: str, **params: str) -> Any:
    """GET `url` and decode its JSON (raises aiohttp.ClientError while nothing listens)."""
    async with aiohttp.ClientSession() as session, session.get(url, params=params) as resp:
        return await resp.json()


class Alertmanager:
    """prometheus-alertmanager with ops/alertmanager.yml, its webhook pointed at `webhook_url`, and its group
    wait and interval in seconds instead of minutes (routes, receivers and inhibitions as shipped)."""

    def __init__(self, workdir: Path, webhook_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "alertmanager.yml"
        shipped = (OPS / "alertmanager.yml").read_text()
        assert "group_wait: 10s" in shipped and "group_interval: 1m" in shipped
        config.write_text(shipped.replace(WEBHOOK_IN_CONFIG, webhook_url).replace("group_wait: 10s", "group_wait: 1s")
                          .replace("group_interval: 1m", "group_interval: 2s"))
        self.process = subprocess.Popen(
            ["prometheus-alertmanager", f"--config.file={config}", f"--storage.path={workdir / 'am'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            stdout=(workdir / "am.log").open("wb"), stderr=subprocess.STDOUT)

    async def ready(self) -> bool:
        """Alertmanager answers its API."""
        try:
            await get_json(f"{self.url}/api/v2/status")
        except aiohttp.ClientError:
            return False
        return True

    async def post(self, *alerts: dict[str, str]) -> None:
        """Send alerts (label sets) as Prometheus would."""
        body = [{"labels": {"team": "homeiq", **labels}} for labels in alerts]
        async with aiohttp.ClientSession() as session, session.post(f"{self.url}/api/v2/alerts", json=body) as resp:
            assert resp.status == 200, await resp.text()

    async def alerts(self) -> list[dict[str, Any]]:
        """Every alert Alertmanager holds, with its status (active, suppressed, inhibitedBy)."""
        try:
            answer: list[dict[str, Any]] = await get_json(f"{self.url}/api/v2/alerts")
        except aiohttp.ClientError:
            return []
        return answer

    async def firing(self, name: str) -> bool:
        """An alert `name` is active (neither inhibited nor silenced)."""
        return any(a["labels"]["alertname"] == name and a["status"]["state"] == "active" for a in await self.alerts())

    def stop(self) -> None:
        """Terminate and wait."""
        self.process.terminate()
        self.process.wait(10)


class Prometheus:
    """prometheus scraping `targets` (job name → ports) every second, with `rules` and one Alertmanager."""

    def __init__(self, workdir: Path, targets: dict[str, list[int]], rules: str, alertmanager_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "alerts.yml").write_text(rules)
        scrape = "\n".join(
            f"  - job_name: homeiq-{name}\n    static_configs:\n      - targets: "
            f"[{', '.join(repr(f'127.0.0.1:{port}') for port in ports)}]"
            for name, ports in targets.items())
        (workdir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files: ['{workdir / 'alerts.yml'}']\n"
            "alerting:\n  alertmanagers:\n    - static_configs:\n"
            f"        - targets: ['127.0.0.1:{alertmanager_port}']\n"
            f"scrape_configs:\n{scrape}\n")
        # A resend delay of 1 s: an alert that fires before the Alertmanager is discovered reaches it at once.
        self.process = subprocess.Popen(
            ["prometheus", f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'prom'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--rules.alert.resend-delay=1s"],
            stdout=(workdir / "prometheus.log").open("wb"), stderr=subprocess.STDOUT)

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector `expr` gives now ([] while Prometheus is not answering)."""
        try:
            answer = await get_json(f"{self.url}/api/v1/query", query=expr)
        except aiohttp.ClientError:
            return []
        result: list[dict[str, Any]] = answer.get("data", {}).get("result", [])
        return result

    def stop(self) -> None:
        """Terminate and wait."""
        self.process.terminate()
        self.process.wait(10)


class Webhook:
    """The receiver Alertmanager notifies: records (alert name, status) of every alert it was told about."""

    def __init__(self) -> None:
        self.notified: list[tuple[str, str]] = []
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Listen on a free loopback port; returns the URL to configure."""
        app = web.Application()
        app.router.add_post("/homeiq", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}/homeiq"

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.notified.extend((a["labels"]["alertname"], a["status"]) for a in body["alerts"])
        return web.Response()

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
