"""`ha-sim` console script."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from homeiq_shared.cli import ServiceMain, run_service
from homeiq_shared.options import LogFormat, LogLevel
from homeiq_shared.settings import ConfigError, check_positive, read_secret

app = typer.Typer(help="A Home Assistant WebSocket simulator: realistic entities, exact protocol.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


@app.callback()
def _main() -> None:
    """A Home Assistant WebSocket simulator: realistic entities, exact protocol."""


@app.command()
def run(
    host: Annotated[str, typer.Option(envvar="HA_SIM_HOST", help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="HA_SIM_PORT", help="Listen port.")] = 8123,
    entities: Annotated[int, typer.Option(envvar="HA_SIM_ENTITIES", help="Number of entities.")] = 200,
    rate: Annotated[float, typer.Option(envvar="HA_SIM_RATE", help="state_changed events per second.")] = 20.0,
    seed: Annotated[int, typer.Option(envvar="HA_SIM_SEED", help="Seed of the population.")] = 1,
    events: Annotated[int, typer.Option(
        envvar="HA_SIM_EVENTS", help="Fire this many state_changed events, then only serve (0: until stopped).")] = 0,
    record: Annotated[str, typer.Option(
        envvar="HA_SIM_RECORD", help="After the last event, write every fired state here as JSON lines (entity_id, "
                                     "time_ns of its point, state): the ground truth of a test.")] = "",
    log_level: LogLevel = "INFO",
    log_format: LogFormat = "auto",
) -> None:
    """Serve ws://HOST:PORT/api/websocket; clients authenticate with HA_TOKEN (or HA_TOKEN_FILE).

    Events start once a client has subscribed: none is fired into the void."""
    from homeiq_hasim.hub import Hub  # noqa: PLC0415 - keep --help fast
    from homeiq_hasim.runner import SimServer  # noqa: PLC0415
    from homeiq_shared.lifecycle import wait_or_stop  # noqa: PLC0415
    from homeiq_shared.logs import Log  # noqa: PLC0415

    def build() -> ServiceMain:
        check_positive("HA_SIM_RATE", rate)
        if events < 0:
            raise ConfigError(f"HA_SIM_EVENTS: must be 0 or more, got {events}")
        if entities < 1:
            raise ConfigError(f"HA_SIM_ENTITIES: must be at least 1, got {entities}")
        hub = Hub.create(entities, read_secret("HA_TOKEN"), seed)
        server = SimServer(hub, host, port)

        async def main(stop: asyncio.Event) -> None:
            url = await server.start()
            Log("ha_sim").info("ha_sim_started", url=url, entities=entities, rate_per_s=rate)
            try:
                while not hub.subscribed:
                    if await wait_or_stop(stop, 0.1):
                        return
                fired = await hub.emit(events or None, rate, stop)
                if record:
                    lines = [json.dumps({"entity_id": e.entity_id, "time_ns": e.last_updated_us * 1000,
                                         "state": e.state}) + "\n" for e in hub.sent]
                    await asyncio.to_thread(Path(record).write_text, "".join(lines))
                Log("ha_sim").info("ha_sim_done", events_fired=fired, record=record or None)
                await stop.wait()
            finally:
                await server.stop()
                Log("ha_sim").info("ha_sim_stopped", events_fired=len(hub.sent))

        return main

    run_service("ha-sim", log_level, log_format, build)
