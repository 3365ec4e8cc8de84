"""The real-HA lane: every test here is marked `realha` (`pytest -m realha` runs it alone) and runs once per pinned
Home Assistant release, each installed into a cached environment (a release whose Python this machine lacks is
skipped, saying so); the report table is printed at the end of the run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.realha.differential import DIFFERENTIAL
from tests.realha.install import RELEASES, Installed, Release, install, interpreter
from tests.realha.pipeline import ROWS, table

REALHA_TIMEOUT_S = 600  # an install of up to ~3 min on a cold cache, then a scenario of a minute or two
INSTALLS: dict[str, tuple[float, bool]] = {}  # release key → seconds, whether it was cached


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.realha)
            item.add_marker(pytest.mark.timeout(REALHA_TIMEOUT_S))


@pytest.fixture(scope="session", params=RELEASES, ids=lambda release: f"ha-{release.version}")
def ha_installed(request: pytest.FixtureRequest) -> Installed:
    """A pinned Home Assistant release, installed (or found in the cache)."""
    release: Release = request.param
    if interpreter(release.python) is None:
        why = f"Home Assistant {release.version} needs Python {release.python}, which this machine lacks"
        if os.environ.get("HOMEIQ_REALHA_REQUIRED"):  # CI: a missing release is a failure, not a skip
            pytest.fail(why)
        pytest.skip(f"{why} (pyenv install {release.python}; CI has it)")
    installed = install(release)
    INSTALLS[release.key] = (installed.seconds, installed.seconds == 0)
    return installed


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if ROWS:
        terminalreporter.section("real Home Assistant: InfluxDB against its recorder, state for state")
        terminalreporter.write_line(table(ROWS))
    if DIFFERENTIAL:
        terminalreporter.section("the ha schema against Home Assistant's own conversion, as influxd stores both")
        for kind, tally in sorted(DIFFERENTIAL.items()):
            terminalreporter.write_line(f"{kind}: " + ", ".join(f"{k} {n}" for k, n in sorted(tally.items())))
    if ROWS or DIFFERENTIAL:
        for key, (seconds, cached) in INSTALLS.items():
            terminalreporter.write_line(f"{key}: {'cached' if cached else f'installed in {seconds:.0f} s'}")
