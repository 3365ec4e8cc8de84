"""The fault suite: every test here is marked `faults` (`pytest -m faults` runs it alone) and adds a row to
the report printed at the end of the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.truth import ROWS, table

# A scenario runs for up to ~65 s on a 2-core machine (writers killed for 60 s); the suite's default (30 s)
# is for tests that should never take long, so that a hung one shows quickly.
FAULT_TIMEOUT_S = 240


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.timeout(FAULT_TIMEOUT_S))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if ROWS:
        terminalreporter.section("fault suite: InfluxDB against ha-sim's ground truth, point by point")
        terminalreporter.write_line(table(ROWS))
