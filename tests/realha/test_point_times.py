"""Point times under `precision`, against the clients Home Assistant's integration writes with, imported from the
installed release: influxdb-client (api_version 2) turns a datetime into `int(ns / unit)` through a float, which
is a unit earlier for some times; influxdb-python (api_version 1) cuts. Ours must give the same time, or a
database HA also wrote gets near-duplicate points."""

from __future__ import annotations

import json
import random
import subprocess

import pytest

from homeiq.shared.influx.haschema import PRECISION_NS, point_time_ns
from tests.realha.install import Installed

# Run with the release's own interpreter: its influxdb-client turns HA's `time_fired` (an aware datetime of whole
# microseconds) into the line's time, as `Point._append_time` does.
HA_CLIENT = """
import json, sys
from datetime import datetime, timedelta, timezone
from influxdb_client.client.write.point import _convert_timestamp
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
precision, micros = sys.argv[1], json.loads(sys.stdin.read())
print(json.dumps([int(_convert_timestamp(EPOCH + timedelta(microseconds=us), precision)) for us in micros]))
"""


@pytest.mark.parametrize("precision", ["us", "ms", "s"])
def test_v2_point_times_are_the_integration_s(ha_installed: Installed, precision: str) -> None:
    rng = random.Random(precision)
    micros = [1_700_000_000_000_000 + rng.randrange(400 * 86_400 * 10**6) for _ in range(20_000)]
    done = subprocess.run([ha_installed.python, "-c", HA_CLIENT, precision], input=json.dumps(micros),
                          capture_output=True, text=True, check=True, timeout=120)
    unit = PRECISION_NS[precision]
    theirs = [value * unit for value in json.loads(done.stdout)]
    ours = [point_time_ns(us * 1000, unit, through_float=True) for us in micros]
    assert ours == theirs
    cut = sum(1 for us, t in zip(micros, theirs, strict=True) if t != us * 1000 - us * 1000 % unit)
    if precision == "us":  # the float is a unit short for some times: the case this test is for
        assert cut > 0
