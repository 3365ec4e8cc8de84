"""InfluxDB options shared by `writer run` and the replayer's commands."""

from __future__ import annotations

from typing import Annotated

import typer

from homeiq_writer.settings import InfluxSettings

InfluxUrl = Annotated[str, typer.Option(envvar="INFLUXDB_URL", help="InfluxDB base URL.")]
InfluxApi = Annotated[
    str, typer.Option(envvar="INFLUXDB_API", help="v2 (org, bucket, token) or v1 (db, rp, user).")
]
InfluxOrg = Annotated[str, typer.Option(envvar="INFLUXDB_ORG", help="v2 organisation.")]
InfluxBucket = Annotated[str, typer.Option(envvar="INFLUXDB_BUCKET", help="v2 bucket, or v1 database.")]
InfluxRetentionPolicy = Annotated[
    str, typer.Option(envvar="INFLUXDB_RETENTION_POLICY", help="v1 retention policy (empty: default).")
]
InfluxUsername = Annotated[
    str,
    typer.Option(envvar="INFLUXDB_USERNAME",
                 help="v1 user; the password comes from INFLUXDB_PASSWORD or INFLUXDB_PASSWORD_FILE."),
]
InfluxTimeout = Annotated[
    float, typer.Option(envvar="INFLUXDB_TIMEOUT_S", help="Timeout of one write request, seconds.")
]

DEFAULTS = InfluxSettings(url="http://127.0.0.1:8086")
