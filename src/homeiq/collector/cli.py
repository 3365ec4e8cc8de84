"""`collector` console script; its options are CollectorSettings' settings."""

from __future__ import annotations

from homeiq.collector.settings import CollectorSettings
from homeiq.shared.binding import bind
from homeiq.shared.cli import ServiceMain, console_app, run_service
from homeiq.shared.ha.settings import read_ha_token

app = console_app("Keep the Home Assistant WebSocket connection and XADD every event to the stream.")


@app.command()
@bind()
def run(settings: CollectorSettings) -> None:
    """Connect to Home Assistant, subscribe to all events and publish them to the Redis stream.

    The token comes from HA_TOKEN or HA_TOKEN_FILE (a long-lived access token), never from a flag.
    """
    run_service("collector", settings, lambda: collector_main(settings))


def collector_main(settings: CollectorSettings) -> ServiceMain:
    """The collector built from its settings (ConfigError names what is wrong), ready to run."""
    from homeiq.collector.service import Collector  # noqa: PLC0415
    from homeiq.shared.config_reader import load_config  # noqa: PLC0415
    from homeiq.shared.entity_filter import PatternFilter  # noqa: PLC0415 - keep --help fast

    rules = PatternFilter.from_settings(settings.entity_filter, settings.entity_filter_file,
                                       load_config(settings.config_path))
    return Collector(settings, read_ha_token(), rules).run
