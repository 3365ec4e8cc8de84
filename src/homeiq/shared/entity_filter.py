"""Which entities' events the collector publishes: Home Assistant's own words, or the seed's JSON (deprecated).

The words are those of the `influxdb:` block in HOMEIQ_CONFIG: `include` / `exclude` with `entities`,
`entity_globs` and `domains`, decided exactly as Home Assistant decides them (`homeiq.shared.config.EntityFilter`).
A user who pastes the block from `configuration.yaml` gets the entities the integration wrote.

The seed service's format (ENTITY_FILTER_CONFIG / ENTITY_FILTER_CONFIG_FILE) is still read, with a deprecation
note at start; setting both is an error. `{"mode": "exclude"|"include", "patterns": [...], "exceptions": [...]}`;
each pattern is an object with any of `entity_id` (a glob), `domain`, `device_class`, `area_id`. Fixed against
the seed:
- exceptions work with any key, not only `entity_id`;
- `device_class` and `area_id` are matched against what live events carry (the state's attributes
  and the registries), not against fields the events never have;
- a pattern with several keys matches when all of them match (the seed matched any one);
- an unknown key, mode or a malformed document is a configuration error, not a silent no-op.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Annotated, Final, Literal, Protocol

import msgspec

from homeiq.shared import config as homeiq_config
from homeiq.shared.config import ConfigFile
from homeiq.shared.events import NormalisedEvent, enrichment_of
from homeiq.shared.logs import Log
from homeiq.shared.settings import ConfigError, Var

log = Log(__name__)

KEYS: Final = ("entity_id", "domain", "device_class", "area_id")


EntityFilterJson = Annotated[str, Var(
    "ENTITY_FILTER_CONFIG", "Deprecated (use HOMEIQ_CONFIG): entity filter as JSON: mode, patterns, exceptions.")]
EntityFilterFile = Annotated[str, Var(
    "ENTITY_FILTER_CONFIG_FILE", "Deprecated (use HOMEIQ_CONFIG): entity filter JSON file.")]

class Pattern(msgspec.Struct, forbid_unknown_fields=True):
    """One rule; every key given must match."""

    entity_id: str | None = None
    domain: str | None = None
    device_class: str | None = None
    area_id: str | None = None


class FilterConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The whole document."""

    mode: Literal["exclude", "include"] = "exclude"
    patterns: list[Pattern] = []
    exceptions: list[Pattern] = []


class _Compiled:
    def __init__(self, pattern: Pattern) -> None:
        self.entity_id = re.compile(fnmatch.translate(pattern.entity_id)) if pattern.entity_id else None
        self.domain, self.device_class, self.area_id = pattern.domain, pattern.device_class, pattern.area_id

    def matches(self, entity_id: str, domain: str | None, device_class: str | None, area_id: str | None) -> bool:
        return (
            (self.entity_id is None or self.entity_id.match(entity_id) is not None)
            and (self.domain is None or self.domain == domain)
            and (self.device_class is None or self.device_class == device_class)
            and (self.area_id is None or self.area_id == area_id)
        )


class EntityRules(Protocol):
    """Decides per event whether it is published."""

    def allows(self, event: NormalisedEvent) -> bool:
        """True when the event is to be published."""
        ...


class IntegrationFilter:
    """The `influxdb:` block's include/exclude; events without an entity always pass."""

    def __init__(self, words: homeiq_config.Integration) -> None:
        self._decide = homeiq_config.EntityFilter(words.include, words.exclude)

    def allows(self, event: NormalisedEvent) -> bool:
        """True when the event is to be published."""
        return event.entity_id is None or self._decide(event.entity_id)


class PatternFilter:
    """The seed's pattern format (ENTITY_FILTER_CONFIG): decides per event; events without an entity
    (call_service, …) always pass."""

    def __init__(self, config: FilterConfig) -> None:
        self.mode = config.mode
        self._patterns = [_Compiled(p) for p in config.patterns]
        self._exceptions = [_Compiled(p) for p in config.exceptions]
        self._cache: dict[str, tuple[msgspec.Raw, bool]] = {}  # entity → (the enrichment decided on, the decision)

    @classmethod
    def from_settings(cls, inline: str, path: str, config: ConfigFile | None = None) -> EntityRules | None:
        """From the configuration file's include/exclude, or from ENTITY_FILTER_CONFIG (JSON) or
        ENTITY_FILTER_CONFIG_FILE (deprecated); None when none is set."""
        words = config.integration if config is not None else None
        if words is not None and (words.include or words.exclude):
            if inline or path:
                raise ConfigError(f"{homeiq_config.ENV_NAME} ({config.path if config else ''}) has include/exclude "
                                  "and ENTITY_FILTER_CONFIG(_FILE) is set too; set only one (the file's words are "
                                  "the ones to keep)")
            return IntegrationFilter(words)
        legacy = cls._legacy(inline, path)
        if legacy is not None:
            log.warning("deprecated_setting", setting="ENTITY_FILTER_CONFIG_FILE" if path else "ENTITY_FILTER_CONFIG",
                        note="use include/exclude (entities, entity_globs, domains) in the influxdb: block of "
                             "HOMEIQ_CONFIG, Home Assistant's own words")
        return legacy

    @classmethod
    def _legacy(cls, inline: str, path: str) -> PatternFilter | None:
        if inline and path:
            raise ConfigError("ENTITY_FILTER_CONFIG and ENTITY_FILTER_CONFIG_FILE are both set; set only one")
        name, text = "ENTITY_FILTER_CONFIG", inline
        if path:
            name = "ENTITY_FILTER_CONFIG_FILE"
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"{name}: cannot read {path!r} ({exc.strerror})") from None
        if not text.strip():
            return None
        try:
            config = msgspec.json.decode(text, type=FilterConfig)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ConfigError(f"{name}: {exc}") from None
        for rule in (*config.patterns, *config.exceptions):
            if all(getattr(rule, key) is None for key in KEYS):
                raise ConfigError(f"{name}: a pattern needs at least one of {', '.join(KEYS)}")
        return cls(config)

    def allows(self, event: NormalisedEvent) -> bool:
        """True when the event is to be published."""
        if event.entity_id is None:
            return True
        last = self._cache.get(event.entity_id)
        if last is not None and last[0] == event.enrichment:  # compared where they are: no copy an event
            return last[1]
        enrichment = enrichment_of(event.enrichment)
        allowed = self._decide(event.entity_id, enrichment.device_class, enrichment.area_id, event.domain)
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[event.entity_id] = (msgspec.Raw(bytes(event.enrichment)), allowed)  # a copy, not a view
        return allowed

    def _decide(self, entity_id: str, device_class: str | None, area_id: str | None, domain: str | None) -> bool:
        if any(e.matches(entity_id, domain, device_class, area_id) for e in self._exceptions):
            return True
        matched = any(p.matches(entity_id, domain, device_class, area_id) for p in self._patterns)
        return not matched if self.mode == "exclude" else matched
