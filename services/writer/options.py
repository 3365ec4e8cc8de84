"""InfluxDB options shared by `writer run` and the replayer's commands.

Those the configuration file (HOMEIQ_CONFIG) can also set default to None, meaning "not given": a flag or its
environment variable overrides the file, the file overrides the built-in default (shown in the help)."""

from __future__ import annotations

from typing import Annotated

import typer

from homeiq_writer.settings import InfluxSettings

InfluxUrl = Annotated[
    str | None,
    typer.Option(envvar="INFLUXDB_URL", show_default=False,
                 help="InfluxDB base URL [default: the file's host/port/ssl/path, else http://127.0.0.1:8086]."),
]
InfluxApi = Annotated[
    str | None,
    typer.Option(envvar="INFLUXDB_API", show_default=False,
                 help="v2 (org, bucket, token) or v1 (db, rp, user) [default: the file's api_version, else v2]."),
]
InfluxOrg = Annotated[
    str | None,
    typer.Option(envvar="INFLUXDB_ORG", show_default=False,
                 help="v2 organisation [default: the file's organization, else homeiq]."),
]
InfluxBucket = Annotated[
    str | None,
    typer.Option(envvar="INFLUXDB_BUCKET", show_default=False,
                 help="v2 bucket, or v1 database [default: the file's bucket or database, else "
                      "home_assistant_events]."),
]
InfluxRetentionPolicy = Annotated[
    str, typer.Option(envvar="INFLUXDB_RETENTION_POLICY", help="v1 retention policy (empty: default).")
]
InfluxUsername = Annotated[
    str | None,
    typer.Option(envvar="INFLUXDB_USERNAME", show_default=False,
                 help="v1 user [default: the file's username]; the password comes from INFLUXDB_PASSWORD or "
                      "INFLUXDB_PASSWORD_FILE, else the file's password."),
]
InfluxTimeout = Annotated[
    float, typer.Option(envvar="INFLUXDB_TIMEOUT_S", help="Timeout of one write request, seconds.")
]
InfluxSchema = Annotated[
    str | None,
    typer.Option(envvar="INFLUXDB_SCHEMA", show_default=False,
                 help="homeiq (one measurement, the HomeIQ services' schema) or ha (Home Assistant's influxdb "
                      "integration, point for point) [default: the file's homeiq.schema, else homeiq]."),
]
InfluxVerifySsl = Annotated[
    bool | None,
    typer.Option("--influxdb-verify-ssl/--no-influxdb-verify-ssl", envvar="INFLUXDB_VERIFY_SSL", show_default=False,
                 help="Check InfluxDB's TLS certificate and host name [default: the file's verify_ssl, else on]."),
]
InfluxCaCert = Annotated[
    str | None,
    typer.Option(envvar="INFLUXDB_SSL_CA_CERT", show_default=False,
                 help="CA file that signs InfluxDB's certificate (instead of the system's) [default: the file's "
                      "ssl_ca_cert]."),
]
HomeiqConfig = Annotated[
    str,
    typer.Option("--config", envvar="HOMEIQ_CONFIG",
                 help="YAML file with Home Assistant's `influxdb:` block (the integration's keys) and our "
                      "`homeiq:` block; flags and environment variables override it."),
]

DEFAULTS = InfluxSettings(url="http://127.0.0.1:8086")
