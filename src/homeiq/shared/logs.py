"""Structured logging: one line per event, JSON in containers, key=value on a terminal."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON object per line."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "event": record.getMessage(),
        }
        out.update(_fields(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Render a record as `time level service event key=value ...` for people at a terminal."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        pairs = " ".join(f"{k}={_text(v)}" for k, v in _fields(record).items())
        line = f"{stamp} {record.levelname:<7} {self.service:<9} {record.getMessage()} {pairs}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED}


def _text(value: object) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if (" " in text or not text or '"' in text) else text


def setup_logging(level: str = "INFO", fmt: str = "auto", service: str = "homeiq") -> None:
    """Configure the root logger once: `fmt` is json, text, or auto (json unless stderr is a terminal)."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if use_json else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class Log:
    """A logger whose calls take an event name and key=value fields: `log.info("connected", url=u)`."""

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def debug(self, event: str, **fields: object) -> None:
        """Log at DEBUG."""
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: object) -> None:
        """Log at INFO."""
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: object) -> None:
        """Log at WARNING."""
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, *, exc_info: bool = False, **fields: object) -> None:
        """Log at ERROR, with the traceback when `exc_info`."""
        self._log(logging.ERROR, event, fields, exc_info=exc_info)

    def _log(self, level: int, event: str, fields: dict[str, object], exc_info: bool = False) -> None:
        if self._logger.isEnabledFor(level):
            safe = {k if k not in _RESERVED else f"{k}_": v for k, v in fields.items()}
            self._logger.log(level, event, extra=safe, exc_info=exc_info, stacklevel=3)


class SampledLog:
    """Logs a recurring problem once per `interval_s` per key, with how many were suppressed meanwhile."""

    def __init__(self, log: Log, interval_s: float = 10.0) -> None:
        self._log, self._interval_s = log, interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, event: str, **fields: object) -> None:
        """Log `event` at WARNING unless `key` was logged less than `interval_s` ago."""
        now = time.monotonic()
        if now - self._last.get(key, -self._interval_s) < self._interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        self._log.warning(event, reason=key, suppressed_since_last=self._suppressed.pop(key, 0), **fields)
