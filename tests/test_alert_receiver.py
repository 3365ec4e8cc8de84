"""The default receiver: Home Assistant's own webhook, reached by a real Alertmanager started as shipped
(ops/alertmanager-start renders the URL in), with the payload the README's automation reads."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from homeiq.local.services import free_port
from tests.helpers import wait_for
from tests.monitoring import OPS, WEBHOOK_IN_CONFIG

START = OPS / "alertmanager-start"
README = OPS.parent / "README.md"
WEBHOOK_ID = "homeiq-alerts-5f2b9c"


class HomeAssistantWebhook:
    """A stand-in for HA's `/api/webhook/<id>`: keeps each JSON body posted to the one id it knows."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/api/webhook/{webhook_id}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}/api/webhook/{WEBHOOK_ID}"

    async def _receive(self, request: web.Request) -> web.Response:
        if request.match_info["webhook_id"] != WEBHOOK_ID:
            return web.Response()  # HA answers 200 to an unknown id too, and does nothing
        self.bodies.append(await request.json())
        return web.Response()

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [a for body in self.bodies for a in body["alerts"] if a["labels"]["alertname"] == name]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def start_alertmanager(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """ops/alertmanager-start on the shipped config (its group wait cut to 1 s), as compose runs it."""
    config = tmp_path / "alertmanager.yml"
    config.write_text((OPS / "alertmanager.yml").read_text().replace("group_wait: 10s", "group_wait: 1s"))
    port = free_port()
    process = subprocess.Popen(
        ["sh", str(START), f"--config.file={config}", f"--storage.path={tmp_path / 'am'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        env={"PATH": os.environ["PATH"], "TMPDIR": str(tmp_path), **env},
        stdout=(tmp_path / "am.log").open("wb"), stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture
async def home_assistant() -> AsyncIterator[tuple[HomeAssistantWebhook, str]]:
    ha = HomeAssistantWebhook()
    url = await ha.start()
    try:
        yield ha, url
    finally:
        await ha.stop()


async def post(url: str, *alerts: dict[str, Any]) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.post(f"{url}/api/v2/alerts", json=list(alerts)) as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


async def test_an_alert_reaches_home_assistants_webhook_with_what_the_automation_reads(
    tmp_path: Path, home_assistant: tuple[HomeAssistantWebhook, str]
) -> None:
    ha, url = home_assistant
    process, am = start_alertmanager(tmp_path, {"ALERTMANAGER_WEBHOOK_URL": url})
    try:
        drop = {"labels": {"alertname": "HomeiqEventsDropped", "severity": "critical", "team": "homeiq",
                           "reason": "spool_full"},
                "annotations": {"summary": "The collector dropped events (spool_full)", "runbook": "..."}}
        await wait_for(lambda: post(am, drop), 30, "Alertmanager to take an alert")
        [alert] = await wait_for(lambda: ha.alerts("HomeiqEventsDropped"), 30, "the alert at HA's webhook")
    finally:
        process.terminate()
        process.wait(10)
    # What the README's automation reads: each alert's status, name, summary; the group's status.
    assert alert["status"] == "firing" and alert["annotations"]["summary"] == drop["annotations"]["summary"]
    assert ha.bodies[0]["status"] == "firing"
    assert url not in (tmp_path / "am.log").read_text()  # the webhook id is all a caller needs: never logged
    automation = readme_automation()
    assert f"webhook_id: {WEBHOOK_IN_CONFIG.rsplit('/', 1)[1]}" in automation
    for read in ("trigger.json.alerts", "annotations.summary", "labels.alertname", "status"):
        assert read in automation, read


async def test_the_watchdog_reaches_home_assistant_at_once(
    tmp_path: Path, home_assistant: tuple[HomeAssistantWebhook, str]
) -> None:
    ha, url = home_assistant
    (tmp_path / "url").write_text(url + "\n")
    process, am = start_alertmanager(tmp_path, {"ALERTMANAGER_WEBHOOK_URL_FILE": str(tmp_path / "url")})
    try:
        watchdog = {"labels": {"alertname": "Watchdog", "severity": "none"},
                    "annotations": {"summary": "Alerting works"}}
        await wait_for(lambda: post(am, watchdog), 30, "Alertmanager to take an alert")
        await wait_for(lambda: ha.alerts("Watchdog"), 30, "the Watchdog at HA's webhook")
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize("url", ["ftp://ha/api/webhook/x", "http://ha/api/webhook/x\"; rm", "http://ha/a|b"])
def test_a_url_that_would_not_render_safely_is_refused(tmp_path: Path, url: str) -> None:
    done = subprocess.run(["sh", str(START), f"--config.file={OPS / 'alertmanager.yml'}"], capture_output=True,
                          env={"PATH": os.environ["PATH"], "ALERTMANAGER_WEBHOOK_URL": url}, timeout=10, check=False)
    assert done.returncode == 2 and url.encode() not in done.stderr, done.stderr


def test_the_shipped_receiver_is_home_assistants_webhook() -> None:
    config = yaml.safe_load((OPS / "alertmanager.yml").read_text())
    [receiver] = [r for r in config["receivers"] if r["name"] == config["route"]["routes"][-1]["receiver"]]
    assert receiver["webhook_configs"][0]["url"] == WEBHOOK_IN_CONFIG
    assert "/api/webhook/" in WEBHOOK_IN_CONFIG and WEBHOOK_IN_CONFIG in START.read_text()


def readme_automation() -> str:
    """The README's Home Assistant automation (the YAML block after "### Notifications in Home Assistant")."""
    text = README.read_text().split("### Notifications in Home Assistant", 1)[1]
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    yaml.safe_load(block)  # it is YAML
    return block
