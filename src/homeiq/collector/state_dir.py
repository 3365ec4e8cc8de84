"""The collector's own directory (COLLECTOR_SPOOL_DIR): its spool, its first-run copy, its name, and a lock that
keeps a second collector out of it (two collectors on one machine each need their own)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from pathlib import Path
from typing import Final

from homeiq.shared.settings import ConfigError

LOCK: Final = ".lock"


class StateDirLock:
    """An exclusive lock on the directory for as long as this collector runs (released when it stops, or by the
    kernel when the process dies): two collectors sharing a spool would drain and delete each other's segments."""

    def __init__(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:  # the spool must be writable: it is what keeps events while Redis is away
            raise ConfigError(f"COLLECTOR_SPOOL_DIR: cannot use {directory} ({exc.strerror})") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            self._fd = None
            raise ConfigError(f"COLLECTOR_SPOOL_DIR: {directory} is in use by another collector (pid {holder}); "
                              "give each collector a directory of its own") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        """Let another collector have the directory (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def collector_id(directory: Path) -> str:
    """This collector's name among others on one Redis (its own tail key): random, made once and kept in its state
    directory, so a restart is the same collector; a directory it cannot write gives one per run."""
    path = directory / "collector_id"
    with contextlib.suppress(OSError):
        known = path.read_text().strip()
        if known:
            return known
    made = secrets.token_hex(6)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(made)
        partial.replace(path)
    return made
