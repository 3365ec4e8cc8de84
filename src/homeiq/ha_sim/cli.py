"""`ha-sim` console script."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

from homeiq.shared.binding import bind
from homeiq.shared.cli import ServiceMain, console_app, run_service
from homeiq.shared.ha.settings import read_ha_token
from homeiq.shared.options import LogSettings
from homeiq.shared.settings import Var, at_least, between, positive

app = console_app("A Home Assistant WebSocket simulator: realistic entities, exact protocol.")


class SimSettings(LogSettings, frozen=True, kw_only=True):
    """What `ha-sim run` serves and fires."""

    host: Annotated[str, Var("HA_SIM_HOST", "Listen address.")] = "127.0.0.1"
    port: Annotated[int, Var("HA_SIM_PORT", "Listen port.", between(0, 65535))] = 8123
    entities: Annotated[int, Var("HA_SIM_ENTITIES", "Number of entities.", at_least(1))] = 200
    rate: Annotated[float, Var("HA_SIM_RATE", "state_changed events per second.", positive)] = 20.0
    seed: Annotated[int, Var("HA_SIM_SEED", "Seed of the population.")] = 1
    events: Annotated[int, Var(
        "HA_SIM_EVENTS", "Fire this many state_changed events, then only serve (0: until stopped).", at_least(0))] = 0
    commit_interval_s: Annotated[float, Var(
        "HA_SIM_RECORDER_COMMIT_INTERVAL_S", "The recorder's commit_interval: history shows a state from its next "
        "commit on, s (0: at once).", at_least(0))] = 5.0
    record: Annotated[str, Var(
        "HA_SIM_RECORD", "After the last event, write every fired state here as JSON lines (entity_id, time_ns of its "
        "point, state): the ground truth of a test.")] = ""


@app.command()
@bind()
def run(settings: SimSettings) -> None:
    """Serve ws://HOST:PORT/api/websocket; clients authenticate with HA_TOKEN (or HA_TOKEN_FILE).

    Events start once a client has subscribed: none is fired into the void."""
    from homeiq.ha_sim.hub import Hub  # noqa: PLC0415 - keep --help fast
    from homeiq.ha_sim.runner import SimServer  # noqa: PLC0415
    from homeiq.shared.lifecycle import wait_or_stop  # noqa: PLC0415
    from homeiq.shared.logs import Log  # noqa: PLC0415

    s = settings
    entities, rate, events, record = s.entities, s.rate, s.events, s.record

    def build() -> ServiceMain:
        hub = Hub.create(entities, read_ha_token(), s.seed, s.commit_interval_s)
        server = SimServer(hub, s.host, s.port)

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

    run_service("ha-sim", s, build)
