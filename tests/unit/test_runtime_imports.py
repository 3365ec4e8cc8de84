"""The services import only what the runtime installs: requirements.lock, not requirements-test.lock. The tests'
virtualenv has both, so an import of a test tool's dependency (click, through check-jsonschema) passed every test
here and broke only the add-on's image; this runs the console scripts with those modules made unimportable."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _packages(lock: str) -> set[str]:
    text = (ROOT / lock).read_text()
    return {name.lower().replace("_", "-") for name in re.findall(r"^([A-Za-z0-9_.-]+)==", text, re.MULTILINE)}


def test_the_console_scripts_need_nothing_only_the_tests_install() -> None:
    test_only = _packages("requirements-test.lock") - _packages("requirements.lock")
    modules = sorted({module for module, dists in importlib.metadata.packages_distributions().items()
                      if all(d.lower().replace("_", "-") in test_only for d in dists)} - {"_pytest"})
    assert "click" in modules and "pytest" in modules  # what the check is about, found from the locks
    code = textwrap.dedent(f"""
        import sys
        for name in {modules!r}:
            sys.modules[name] = None  # `import name` raises ImportError
        from homeiq.collector.cli import app as collector
        from homeiq.local.all_in_one import app as all_in_one
        from homeiq.replayer.cli import app as replayer
        from homeiq.writer.cli import app as writer
        import homeiq.collector.service, homeiq.writer.service, homeiq.replayer.service, homeiq.local.pipeline
        for app, args in ((collector, ["run", "--help"]), (writer, ["run", "--help"]),
                          (replayer, ["run", "--help"]), (all_in_one, ["run", "--help"])):
            try:
                app(args)
            except SystemExit as exit:
                assert exit.code == 0, (args, exit.code)
        all_in_one(["run"])  # reads every service's settings: WRITER_BATCH_SIZE is wrong, exit 2
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "WRITER_BATCH_SIZE": "many"}, cwd=ROOT)
    assert done.returncode == 2 and "WRITER_BATCH_SIZE" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
