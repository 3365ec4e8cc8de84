"""The pipeline benchmark's point-by-point check: a point missing from InfluxDB's first answer is asked for again
before it counts as lost, and a loss comes with what the processes counted."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import pipeline_bench


class Influx:
    """Answers the queries in turn (the last one again and again)."""

    def __init__(self, *answers: list[tuple[str, int]]) -> None:
        self.answers = list(answers)
        self.asked = 0

    def points(self, database: str) -> list[dict[str, Any]]:
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        return [{"entity_id": entity, "time": time_ns} for entity, time_ns in answer]


def _pipeline(influx: Influx) -> Any:
    sent = [SimpleNamespace(entity_id=f"sensor.s{n}", last_updated_us=n) for n in range(4)]
    return SimpleNamespace(influx=influx, hub=SimpleNamespace(sent=sent), writers=[SimpleNamespace(name="writer-0")],
                           others={})


ALL = [(f"sensor.s{n}", n * 1000) for n in range(4)]


def test_every_point_found_at_once_is_asked_for_once() -> None:
    influx = Influx(ALL)
    report = pipeline_bench.exact(_pipeline(influx), reread_s=0)
    assert report == {"sent": 4, "points": 4, "lost": 0, "duplicated": 0, "unexpected": 0}
    assert influx.asked == 1


def test_a_point_influxd_answers_late_is_not_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline_bench, "samples", lambda process: {})
    influx = Influx(ALL[1:], ALL)
    report = pipeline_bench.exact(_pipeline(influx), reread_s=0)
    assert (report["lost_first_read"], report["lost"]) == (1, 0)
    assert influx.asked == 2  # no more rereads once every point is found


def test_a_point_never_found_is_lost_with_what_the_processes_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = {'homeiq_dead_lettered_total{reason=rejected}': 1.0, 'homeiq_points_written_total{}': 3.0}
    monkeypatch.setattr(pipeline_bench, "samples", lambda process: counts)
    influx = Influx(ALL[:2] + ALL[3:])
    report = pipeline_bench.exact(_pipeline(influx), reread_s=0)
    assert (report["lost_first_read"], report["lost"]) == (1, 1)
    assert report["missing_examples"] == [("sensor.s2", 2000)]
    assert report["counted"] == {"writer-0 homeiq_dead_lettered_total{reason=rejected}": 1.0}
    assert influx.asked == 1 + pipeline_bench.REREADS
