"""`all-in-one run`: the collector, one writer and the replayer in one process, for a home.

Each Python process of the pipeline holds ~60 MB of its own (the interpreter, asyncio with ssl, aiohttp, redis-py:
measured in benchmarks/footprint.py), whatever its share of the work. A home's few events a second need one
writer, so ./scripts/start and the add-on run the three services in one event loop: one interpreter instead of
three. Nothing about the delivery changes: they still meet only in the Redis stream (the collector XADDs, the
writer acks after InfluxDB took the batch, the replayer reclaims and trims), each with its own metrics, readiness
and health server, as the separate processes have. When one of them ends on its own the others stop and the
process exits 1, so whatever runs it restarts them together. Past a home's rate, run them as separate processes
and scale the writers (compose, systemd).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from homeiq.collector.cli import collector_main
from homeiq.collector.settings import CollectorSettings
from homeiq.replayer.cli import replayer_main
from homeiq.replayer.settings import ReplayerSettings
from homeiq.shared.binding import bind, from_environment
from homeiq.shared.cli import console_app, run_services
from homeiq.shared.options import LogSettings
from homeiq.shared.settings import Var, between
from homeiq.writer.cli import writer_main
from homeiq.writer.settings import WriterSettings

app = console_app("The collector, one writer and the replayer in one process (a home's pipeline).")


_PORT_HELP = "Port of the {}'s /metrics, /healthz and /readyz (0: any free port)."
_PORT = between(0, 65535)


class AllInOneSettings(LogSettings, frozen=True, kw_only=True):
    """The process's own settings; every other setting is the services' own variable (REDIS_URL, HA_URL,
    INFLUXDB_URL, …), read from the environment as each service reads it. METRICS_PORT is not used: each
    service serves its metrics on its own port, as it does in a process of its own."""

    collector_metrics_port: Annotated[int, Var("COLLECTOR_METRICS_PORT", _PORT_HELP.format("collector"), _PORT)] = 8001
    writer_metrics_port: Annotated[int, Var("WRITER_METRICS_PORT", _PORT_HELP.format("writer"), _PORT)] = 8002
    replayer_metrics_port: Annotated[int, Var("REPLAYER_METRICS_PORT", _PORT_HELP.format("replayer"), _PORT)] = 8003


@app.command()
@bind()
def run(settings: AllInOneSettings) -> None:
    """Run the collector, one writer and the replayer in one event loop until SIGINT/SIGTERM.

    Every service reads its settings from the environment as its own `run` does (see `collector run --help`,
    `writer run --help`, `replayer run --help`); a wrong one is named and the process exits 2. Secrets come from
    their variables or files, never from a flag.
    """
    collector = msgspec.structs.replace(from_environment(CollectorSettings),
                                        metrics_port=settings.collector_metrics_port)
    writer = msgspec.structs.replace(from_environment(WriterSettings), metrics_port=settings.writer_metrics_port)
    replayer = msgspec.structs.replace(from_environment(ReplayerSettings),
                                       metrics_port=settings.replayer_metrics_port)
    run_services("all-in-one", settings, {"writer": lambda: writer_main(writer),
                                          "replayer": lambda: replayer_main(replayer),
                                          "collector": lambda: collector_main(collector)})
