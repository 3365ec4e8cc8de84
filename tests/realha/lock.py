"""`scripts/lock-ha VERSION PYTHON`: the hash-locked requirements of a Home Assistant release for tests/realha.

Home Assistant sets up a set of default integrations (frontend, backup, person, ...) besides those configured, and
pip-installs their requirements at its first start. So the lock is made by doing exactly that once, in a scratch
environment with the tests' own configuration, and freezing what is then installed: every package with the sha256
of the file pip chose for this platform (`pip install --report`). The tests install from it and start HA with
`--skip-pip`: nothing unpinned is ever downloaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.realha.install import Installed, Release, interpreter

# A release's own pins that PyPI broke since (acme, which hass-nabucasa imports, predates josepy 2).
EXTRA = {"2024.3.3": ["josepy<2"]}
# A release's own pins replaced in the lock (installed --no-deps, so HA's exact pin does not refuse them): orjson
# 3.9.11-3.9.15 crash Python at random (ijl/orjson#452, home-assistant/core#110464: a segfault in
# State.json_fragment; seen once in CI, HA gone mid-test); 3.9.10 is the version before.
REPLACED = {"2024.3.3": {"orjson": "3.9.10"}}
FIRST_START_S = 900.0  # HA installs the requirements of every integration it sets up
SETTLED_S = 30.0  # ... some of them (HA's own influxdb) after its API answers: until nothing more comes this long


def lock(release: Release) -> str:
    """The lock file's text."""
    python = interpreter(release.python)
    if python is None:
        raise SystemExit(f"no Python {release.python} here")
    with tempfile.TemporaryDirectory() as scratch:
        venv = Path(scratch) / "venv"
        subprocess.run([python, "-m", "venv", venv], check=True)
        pip = [venv / "bin" / "python", "-m", "pip"]
        subprocess.run([*pip, "install", "-q", f"homeassistant=={release.version}", *EXTRA.get(release.version, [])],
                       check=True)
        first_start(Installed(release, venv, 0.0), Path(scratch) / "config")
        frozen = subprocess.run([*pip, "freeze", "--exclude-editable"], check=True, capture_output=True,
                                text=True).stdout.split()
        replaced = REPLACED.get(release.version, {})
        frozen = [f"{name}=={replaced[name]}" if (name := line.partition("==")[0]) in replaced else line
                  for line in frozen]
        report = Path(scratch) / "report.json"
        subprocess.run([*pip, "install", "-q", "--dry-run", "--ignore-installed", "--no-deps", "--report", report,
                        *frozen], check=True)
        chosen = json.loads(report.read_text())["install"]
    lines = sorted(f"{item['metadata']['name']}=={item['metadata']['version']} "
                   f"--hash=sha256:{item['download_info']['archive_info']['hashes']['sha256']}" for item in chosen)
    return (f"# Home Assistant {release.version} on Python {release.python}, with what its first start with the tests' "
            f"configuration installed: scripts/lock-ha {release.version} {release.python}\n" + "\n".join(lines) + "\n")


def first_start(installed: Installed, config_dir: Path) -> None:
    """Start HA once with the tests' configuration (HA's own `influxdb:` block included), letting it install what
    it needs, until its API answers; then stop it."""
    from tests.realha.home import HomeAssistant, influxdb_block  # noqa: PLC0415 - home imports this package too

    home = HomeAssistant(installed, config_dir, influxdb=influxdb_block(8086, "unused"), skip_pip=False)
    try:
        home.start(FIRST_START_S)
        installed_now, steady_since = _frozen(installed), time.monotonic()
        while time.monotonic() - steady_since < SETTLED_S:
            time.sleep(2)
            if (now := _frozen(installed)) != installed_now:
                installed_now, steady_since = now, time.monotonic()
    finally:
        home.stop()


def _frozen(installed: Installed) -> list[str]:
    return subprocess.run([installed.python, "-m", "pip", "freeze"], check=True, capture_output=True,
                          text=True).stdout.split()


def main() -> None:
    """Write the lock of the release named on the command line."""
    release = Release(sys.argv[1], sys.argv[2])
    release.lock.parent.mkdir(parents=True, exist_ok=True)
    release.lock.write_text(lock(release))
    print(release.lock)


if __name__ == "__main__":
    main()
