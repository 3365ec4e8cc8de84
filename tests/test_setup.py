"""Setting the project up: locked dependencies, the systemd units, and scripts/bootstrap on a bare Debian 12 (a
container of the local Debian base, where a Docker engine runs)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_stack import engine_problem

ROOT = Path(__file__).resolve().parents[1]


def pins(lock: str) -> dict[str, str]:
    text = (ROOT / lock).read_text()
    requirements = [line for line in text.splitlines() if line[:1] not in ("", "#", " ")]
    found = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)( ; [^\n]+)? \\$", text, re.MULTILINE)
    assert found and len(requirements) == len(found), f"{lock}: every requirement pinned with =="
    assert all(f"{name}=={version}{marker} \\\n    --hash=sha256:" in text for name, version, marker in found), lock
    return {name: version for name, version, _ in found}


def test_the_image_and_the_tests_install_the_same_pinned_and_hashed_versions() -> None:
    runtime, test = pins("requirements.lock"), pins("requirements-test.lock")
    assert {name: test.get(name) for name in runtime} == runtime
    assert {"redis", "aiohttp", "msgspec", "setuptools"} <= runtime.keys()
    assert {"pytest", "mypy", "ruff"} <= test.keys() and not {"pytest", "mypy"} & runtime.keys()
    assert "--require-hashes -r /tmp/requirements.lock" in (ROOT / "Dockerfile").read_text()
    assert "--require-hashes" in (ROOT / "scripts" / "bootstrap").read_text()


def test_the_systemd_units_verify(tmp_path: Path) -> None:
    venv_bin = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
    for unit in (ROOT / "ops" / "systemd").glob("*.service"):  # checked where the console scripts exist
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/homeiq/bin/", f"{venv_bin}/"))
    shutil.copy(tmp_path / "homeiq-writer@.service", tmp_path / "homeiq-writer@2.service")
    units = [str(tmp_path / name) for name in
             ("homeiq-collector.service", "homeiq-writer@2.service", "homeiq-replayer.service")]
    done = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_bootstrap_on_a_bare_debian_12(tmp_path: Path) -> None:
    problem = engine_problem()
    if problem:
        pytest.skip(problem)
    built = subprocess.run([str(ROOT / "scripts" / "stack-images")], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr[-3000:]
    # The tree as committed plus what is changed, without the host's .venv and build/.
    source = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    # pip trusts what this host trusts (a TLS-intercepting proxy's CA, where there is one); nothing else is given.
    ca = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
    script = ("set -e; python3 --version 2>&1 || echo 'no python3 yet'; scripts/bootstrap; "
              ".venv/bin/collector --help >/dev/null; .venv/bin/python -c 'import homeiq.writer, redis, msgspec'; "
              "echo BOOTSTRAPPED")
    done = subprocess.run(
        ["docker", "run", "--rm", "-v", f"{source}:/src", "-v", f"{ca}:/host-ca.pem:ro", "-e", "PIP_CERT=/host-ca.pem",
         "-w", "/src", "homeiq/debian:bookworm", "bash", "-c", script],
        capture_output=True, text=True, check=False, timeout=1100)
    assert done.returncode == 0 and "BOOTSTRAPPED" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    assert "no python3 yet" in done.stdout  # bare indeed: bootstrap installed python3 and python3-venv itself
    print(done.stderr[-1500:])
