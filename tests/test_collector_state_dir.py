"""The collector's directory (COLLECTOR_SPOOL_DIR) is its own: a second collector given the same one refuses to start,
naming the variable and the holder, and a stopped collector's directory can be taken again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from homeiq.local.services import free_port


def collector(spool: Path) -> subprocess.Popen[bytes]:
    # Nothing answers at either URL: a collector with its directory keeps retrying (and running).
    env = {**os.environ, "HA_URL": f"ws://127.0.0.1:{free_port()}/api/websocket", "HA_TOKEN": "state-dir-token",
           "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "COLLECTOR_SPOOL_DIR": str(spool),
           "METRICS_PORT": str(free_port()), "METRICS_HOST": "127.0.0.1", "LOG_FORMAT": "json"}
    script = Path(sys.executable).parent / "collector"
    return subprocess.Popen([str(script), "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def holds(spool: Path, process: subprocess.Popen[bytes]) -> None:
    """Wait until `process` holds the directory (its pid in the lock file), failing if it exits first."""
    deadline = time.monotonic() + 20
    lock = spool / ".lock"
    while not (lock.exists() and lock.read_text() == str(process.pid)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the collector never took its directory"
        time.sleep(0.1)


def test_a_second_collector_on_one_directory_refuses_to_start_and_the_first_goes_on(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    first = collector(spool)
    try:
        holds(spool, first)
        second = collector(spool)
        out, err = second.communicate(timeout=30)
        assert second.returncode == 2, (out, err)
        assert b"COLLECTOR_SPOOL_DIR" in err and str(spool).encode() in err, err
        assert f"pid {first.pid}".encode() in err, err
        assert first.poll() is None  # the first goes on
    finally:
        first.terminate()
        first.communicate(timeout=30)
    third = collector(spool)  # the directory is free again once the first stopped
    try:
        holds(spool, third)
    finally:
        third.terminate()
        third.communicate(timeout=30)


def test_a_directory_the_collector_cannot_write_is_a_configuration_error(tmp_path: Path) -> None:
    spool = tmp_path / "not-a-directory"
    spool.write_text("a file where the spool directory should be")
    run = collector(spool)
    out, err = run.communicate(timeout=30)
    assert run.returncode == 2, (out, err)
    assert b"COLLECTOR_SPOOL_DIR: cannot use" in err and b"Traceback" not in err, err
