"""One cause pages once: ops/alertmanager.yml's inhibit rules, checked in a real Alertmanager."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.monitoring import Alertmanager, Webhook

W, C = "writer-1:8002", "collector:8001"


@pytest.fixture
async def alertmanager(tmp_path: Path) -> AsyncIterator[tuple[Alertmanager, Webhook]]:
    webhook = Webhook()
    manager = Alertmanager(tmp_path, await webhook.start())
    try:
        await wait_for(manager.ready, 30, "Alertmanager's API")
        yield manager, webhook
    finally:
        manager.stop()
        await webhook.stop()


async def states(manager: Alertmanager, count: int) -> dict[str, str]:
    """alertname[job or instance] → active | suppressed, once Alertmanager holds `count` alerts."""
    alerts = await wait_for(lambda: _at_least(manager, count), 10, f"{count} alerts held")
    return {f"{a['labels']['alertname']}[{a['labels'].get('job') or a['labels'].get('instance', '')}]":
            a["status"]["state"] for a in alerts}


async def _at_least(manager: Alertmanager, count: int) -> list[dict[str, object]] | None:
    alerts = await manager.alerts()
    return alerts if len(alerts) >= count else None


async def test_an_influxdb_outage_pages_once(alertmanager: tuple[Alertmanager, Webhook]) -> None:
    manager, webhook = alertmanager
    # What one InfluxDB outage raises: writes failing, the held batch stuck pending, the backlog getting old.
    await manager.post({"alertname": "HomeiqWritesFailing", "severity": "critical", "instance": W},
                       {"alertname": "HomeiqPendingStuck", "severity": "critical", "instance": "replayer:8003"},
                       {"alertname": "HomeiqDataDelayed", "severity": "warning", "instance": "replayer:8003"},
                       {"alertname": "HomeiqDeadLetterGrowing", "severity": "warning", "reason": "rejected"})
    held = await states(manager, 4)
    assert held == {f"HomeiqWritesFailing[{W}]": "active", "HomeiqPendingStuck[replayer:8003]": "suppressed",
                    "HomeiqDataDelayed[replayer:8003]": "suppressed",
                    "HomeiqDeadLetterGrowing[]": "active"}  # poison is its own cause
    await wait_for(lambda: {"HomeiqWritesFailing", "HomeiqDeadLetterGrowing"} <= {n for n, _ in webhook.notified},
                   30, "the two causes notified")
    assert {n for n, _ in webhook.notified} == {"HomeiqWritesFailing", "HomeiqDeadLetterGrowing"}


async def test_a_stage_down_silences_its_targets_and_symptoms_not_other_causes(
    alertmanager: tuple[Alertmanager, Webhook],
) -> None:
    manager, _ = alertmanager
    await manager.post({"alertname": "HomeiqStageDown", "severity": "critical", "job": "homeiq-collector"},
                       {"alertname": "HomeiqTargetDown", "severity": "warning", "job": "homeiq-collector",
                        "instance": C},
                       {"alertname": "HomeiqTargetDown", "severity": "warning", "job": "homeiq-writer", "instance": W},
                       {"alertname": "HomeiqPendingStuck", "severity": "critical", "instance": "replayer:8003"})
    held = await states(manager, 4)
    assert held == {"HomeiqStageDown[homeiq-collector]": "active", "HomeiqTargetDown[homeiq-collector]": "suppressed",
                    "HomeiqTargetDown[homeiq-writer]": "active",  # another job's target
                    "HomeiqPendingStuck[replayer:8003]": "active"}  # no collector does not explain a stuck entry
    await manager.post({"alertname": "HomeiqStageDown", "severity": "critical", "job": "homeiq-writer"})
    held = await states(manager, 5)
    assert held["HomeiqTargetDown[homeiq-writer]"] == "suppressed"
    assert held["HomeiqPendingStuck[replayer:8003]"] == "suppressed"


async def test_redis_and_home_assistant_causes_silence_their_symptoms(
    alertmanager: tuple[Alertmanager, Webhook],
) -> None:
    manager, _ = alertmanager
    await manager.post({"alertname": "HomeiqRedisNotPersistent", "severity": "critical", "instance": W},
                       {"alertname": "HomeiqEventsSpooling", "severity": "critical", "instance": C},
                       {"alertname": "HomeiqHaTokenRejected", "severity": "critical", "instance": C},
                       {"alertname": "HomeiqCollectorDisconnected", "severity": "warning", "instance": C},
                       {"alertname": "HomeiqCollectorDisconnected", "severity": "warning", "instance": "other:8001"})
    held = await states(manager, 5)
    assert held == {f"HomeiqRedisNotPersistent[{W}]": "active", f"HomeiqEventsSpooling[{C}]": "suppressed",
                    f"HomeiqHaTokenRejected[{C}]": "active", f"HomeiqCollectorDisconnected[{C}]": "suppressed",
                    "HomeiqCollectorDisconnected[other:8001]": "active"}
