"""The shipped Grafana dashboards, read as the dashboard tests read them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.monitoring import OPS

DASHBOARDS = sorted((OPS / "grafana" / "dashboards").glob("*.json"))
OPERATOR, HOME = (OPS / "grafana" / "dashboards" / name for name in ("homeiq-ingest.json", "homeiq-home.json"))


def dashboard_json(dashboard: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(dashboard.read_text())
    return loaded


def every_panel(dashboard: Path) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels a collapsed row holds included."""
    for panel in dashboard_json(dashboard)["panels"]:
        yield panel
        yield from panel.get("panels", []) if panel["type"] == "row" else []


def panels(dashboard: Path) -> Iterator[dict[str, Any]]:
    """Every panel that queries (rows only group them)."""
    for panel in every_panel(dashboard):
        if panel["type"] != "row":
            yield panel


def targets(dashboard: Path, kind: str) -> Iterator[tuple[dict[str, Any], str]]:
    """(panel, query) of every target whose data source is `kind`."""
    for panel in panels(dashboard):
        if panel["datasource"]["type"] == kind:
            for target in panel["targets"]:
                yield panel, target["expr" if kind == "prometheus" else "query"]
