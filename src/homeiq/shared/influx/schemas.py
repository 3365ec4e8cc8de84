"""The schemas a writer can write (INFLUXDB_SCHEMA): `homeiq` (the default) and `ha` (Home Assistant's own)."""

from __future__ import annotations

from typing import Final, Protocol

from homeiq.shared.config import ConfigFile
from homeiq.shared.events import NormalisedEvent
from homeiq.shared.influx import haschema, lineprotocol

SCHEMAS: Final = ("homeiq", "ha")
SKIP_REASONS: Final = tuple(dict.fromkeys((*lineprotocol.SKIP_REASONS, *haschema.SKIP_REASONS)))
ATTRIBUTE_REASONS: Final = tuple(dict.fromkeys((*lineprotocol.ATTRIBUTE_REASONS, *haschema.ATTRIBUTE_REASONS)))
OVERWRITE_REASONS: Final = haschema.OVERWRITE_REASONS


class Encoder(Protocol):
    """Turns one event into one line of line protocol, or None when the event has no point in the schema;
    counts what it leaves out (entries in `skipped`, attributes in `attributes_dropped`, by reason), and the
    points it gave the series and time of another state's point (`overwritten`, the last in `overwrite_example`)."""

    skipped: dict[str, int]
    attributes_dropped: dict[str, int]
    overwritten: dict[str, int]
    overwrite_example: str

    def encode(self, event: NormalisedEvent) -> str | None:
        """The line, without a trailing newline, or None."""
        ...

    def remembered(self) -> int:
        """How many entities' parts it holds (for the next events of those entities)."""
        ...

    def forget(self) -> None:
        """Drop every entity's parts (each is made again from the entity's next event, the same)."""
        ...


def make_encoder(schema: str, config: ConfigFile | None = None) -> Encoder:
    """The encoder of `schema`, with the configuration file's rules (None: no file)."""
    words = config.integration if config is not None else None
    event_types = config.homeiq.event_types if config is not None else None
    if schema == "ha":
        return haschema.HaEncoder(words, event_types)
    if config is None:
        return lineprotocol.LineEncoder(words, event_types)
    return lineprotocol.LineEncoder(words, event_types, config.homeiq.device_fields)
