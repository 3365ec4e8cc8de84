"""Home Assistant's own conversion against ours, as influxd stores both: the harness of test_differential.py.

`Converter` keeps one process of a pinned release's interpreter running `ha_convert.py` (HA's `CONFIG_SCHEMA`,
`_generate_event_to_json`, its two InfluxDB clients and its WebSocket frames); `ours` takes the frame through our
collector's normalisation, the stream codec and `HaEncoder`; `stored` writes lines into a fresh influxd database
and reads back every point (measurement, tags, time → fields) as influxd keeps it."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import yaml

from homeiq.collector.normalise import event_of
from homeiq.local.services import InfluxServer
from homeiq.shared.config import Integration
from homeiq.shared.config_reader import parse_config
from homeiq.shared.events import decode_event, encode_event
from homeiq.shared.ha import frames
from homeiq.shared.ha.registry import Registry
from homeiq.shared.influx.haschema import HaEncoder

WORKER = Path(__file__).with_name("ha_convert.py")
_databases = count(1)
DIFFERENTIAL: dict[str, Counter[str]] = {}  # what test_differential.py compared and found, by release and kind

Point = tuple[str, tuple[tuple[str, str], ...], int]  # measurement, tags, time (ns)


class Converter:
    """One long-lived process of a release's interpreter answering conversion requests."""

    def __init__(self, python: Path) -> None:
        self._process = subprocess.Popen([str(python), str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True, encoding="utf-8")

    def convert(self, block: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
        """HA's answer to one request: `{"error": ...}` or `{"answers": [{"frame", "v1", "v2"}, ...]}`."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps({"block": block, "events": events}) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"{WORKER.name} ended (exit {self._process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=30)


def words_of(block: dict[str, Any], api_version: str) -> Integration:
    """Our reading of the same block, with `api_version` set."""
    extra = {"api_version": 2, "token": "t", "organization": "o"} if api_version == "2" else {"api_version": 1}
    # YAML's own dump: JSON's surrogate escapes would read back as two characters, a raw U+2028 as a line break.
    text = yaml.safe_dump({"influxdb": {**block, **extra}}, allow_unicode=True)
    return parse_config(text, "differential").words


def ours(encoder: HaEncoder, frame: str) -> str | None:
    """The line our pipeline writes for the event HA sent as `frame`: collector, stream payload, writer."""
    parsed = frames.fast_frame_decoder.decode(frame)
    assert isinstance(parsed, frames.EventFrame | frames.StateEventFrame)
    event = decode_event(encode_event(event_of(parsed, Registry())))
    return encoder.encode(event)


@dataclass
class Stored:
    """What influxd kept of some lines: each point's fields, and the lines it refused."""

    points: dict[Point, dict[str, Any]] = field(default_factory=dict)
    refused: list[tuple[int, str, str]] = field(default_factory=list)  # (index, line, influxd's answer)


def stored(influx: InfluxServer, lines: list[str | None], precision: str) -> Stored:
    """Write `lines` in order into a fresh database, a thousand a request; a request influxd refuses in part is
    written again a line each, so a refused line takes no other with it and is known. Read back every point."""
    database = f"differential_{next(_databases)}"
    influx.query(f'CREATE DATABASE "{database}"')
    result = Stored()
    try:
        written = [(index, line) for index, line in enumerate(lines) if line is not None]
        for start in range(0, len(written), 1000):
            chunk = written[start:start + 1000]
            if _write(influx, database, "\n".join(line for _, line in chunk), precision) is None:
                continue
            for index, line in chunk:
                answer = _write(influx, database, line, precision)
                if answer is not None:
                    result.refused.append((index, line, answer))
        result.points = _points(influx, database)
    finally:
        influx.query(f'DROP DATABASE "{database}"')
    return result


def _write(influx: InfluxServer, database: str, line: str, precision: str) -> str | None:
    request = urllib.request.Request(f"{influx.url}/write?db={database}&precision={precision}",
                                     data=line.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10):
            return None
    except urllib.error.HTTPError as refused:
        return refused.read().decode(errors="replace")


def _points(influx: InfluxServer, database: str) -> dict[Point, dict[str, Any]]:
    answer = influx.query("SELECT * FROM /.*/ GROUP BY *", database)
    points: dict[Point, dict[str, Any]] = {}
    for result in answer["results"]:
        assert "error" not in result, result
        for series in result.get("series", []):
            tags = tuple(sorted((k, v) for k, v in (series.get("tags") or {}).items() if v != ""))
            for values in series["values"]:
                row = dict(zip(series["columns"], values, strict=True))
                time = row.pop("time")
                points[(series["name"], tags, time)] = {k: v for k, v in row.items() if v is not None}
    return points
