"""`writer` console script; its options are WriterSettings' settings."""

from __future__ import annotations

from homeiq.shared.binding import bind
from homeiq.shared.cli import ServiceMain, console_app, run_service
from homeiq.writer.settings import WriterSettings

app = console_app("Write stream entries to InfluxDB; ack only after InfluxDB accepted them.")


@app.command()
@bind()
def run(settings: WriterSettings) -> None:
    """Consume the stream in the writers' group and write batches to InfluxDB.

    The token comes from INFLUXDB_TOKEN or INFLUXDB_TOKEN_FILE (else the configuration file), never from a flag.
    """
    run_service("writer", settings, lambda: writer_main(settings))


def writer_main(settings: WriterSettings) -> ServiceMain:
    """A writer built from its settings, ready to run."""
    from homeiq.writer.service import Writer  # noqa: PLC0415 - keep --help fast

    settings.influx.log_config_notes()
    return Writer(settings).run
