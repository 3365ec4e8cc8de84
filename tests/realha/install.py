"""Released Home Assistant in virtual environments of its own, cached outside the repo and keyed by version: installed
from hash-locked requirements (`tests/realha/locks/`, made by `scripts/lock-ha`), with the requirements of the
integrations the tests load, so HA starts with `--skip-pip` and installs nothing itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

LOCKS = Path(__file__).parent / "locks"
CACHE = Path(os.environ.get("HOMEIQ_HA_CACHE", Path.home() / ".cache" / "homeiq-ha"))


@dataclass(frozen=True)
class Release:
    """A Home Assistant release and the Python it runs on."""

    version: str
    python: str  # "3.11"

    @property
    def key(self) -> str:
        """The cache key: one environment per release and Python."""
        return f"ha-{self.version}-py{self.python}"

    @property
    def lock(self) -> Path:
        """Its hash-locked requirements."""
        return LOCKS / f"{self.key}.txt"


RELEASES = (Release("2024.3.3", "3.11"), Release("2025.4.4", "3.13"))


def interpreter(python: str) -> Path | None:
    """A `pythonX.Y` on PATH or in pyenv's versions; None when this machine has none."""
    found = shutil.which(f"python{python}")
    candidates = [Path(found)] if found else []
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if pyenv.is_dir():
        candidates += sorted(pyenv.glob(f"{python}.*/bin/python{python}"), reverse=True)
    for candidate in candidates:
        if subprocess.run([candidate, "-c", "import venv, ssl, sqlite3"], capture_output=True,
                          check=False).returncode == 0:
            return candidate
    return None


@dataclass(frozen=True)
class Installed:
    """An environment ready to run `hass`; `seconds` is what this call took (0 when cached)."""

    release: Release
    path: Path
    seconds: float

    @property
    def hass(self) -> Path:
        """The `hass` console script."""
        return self.path / "bin" / "hass"

    @property
    def python(self) -> Path:
        """The environment's interpreter."""
        return self.path / "bin" / "python"


def install(release: Release) -> Installed:
    """The cached environment of `release`, built first when missing (or when its lock changed)."""
    target = CACHE / release.key
    stamp = target / ".homeiq-installed"
    lock_text = release.lock.read_text()
    if stamp.exists() and stamp.read_text() == lock_text:
        return Installed(release, target, 0.0)
    python = interpreter(release.python)
    if python is None:
        raise FileNotFoundError(f"no Python {release.python} here (nor in pyenv) to run Home Assistant "
                                f"{release.version}")
    started = time.monotonic()
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([python, "-m", "venv", target], check=True)
    subprocess.run([target / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--require-hashes",
                    "-r", release.lock], check=True)
    stamp.write_text(lock_text)
    return Installed(release, target, time.monotonic() - started)
