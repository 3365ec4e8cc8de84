"""What the collector remembers of entities HA removed, for a Redis that forgets (pure logic: no Redis call is
made by these methods)."""

from __future__ import annotations

from typing import Any

import pytest

from homeiq.collector import resume
from homeiq.collector.resume import KnownEntities


def test_forgotten_entities_come_back_when_redis_forgot_and_a_backfill_begun_before_can_tell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resume, "MAX_GONE", 3)
    client: Any = None
    known = KnownEntities(client, "k")
    known.saw_all([f"sensor.{n}" for n in range(6)])
    remembered = known.remembered  # as a backfill notes when it begins
    for n in range(4):  # removed one after the other
        known.forget({f"sensor.{n}"})
    known.saw("sensor.3")  # back in HA: no longer among the forgotten
    known.forget({"sensor.4"})
    assert known.ids == {"sensor.3", "sensor.5"}
    known.remember_gone()  # Redis forgot: the last MAX_GONE forgotten, and only those, are asked for again
    assert known.ids == {"sensor.1", "sensor.2", "sensor.3", "sensor.4", "sensor.5"}
    assert known.remembered != remembered  # the backfill begun before must not forget them again
