"""The configuration file (HOMEIQ_CONFIG): Home Assistant's `influxdb:` block in its own words, plus ours.

```yaml
influxdb:            # pasted from configuration.yaml as it is: the integration's keys only
  api_version: 2
  host: influx.local
  ...
homeiq:              # our own words (optional)
  schema: ha         # or homeiq (INFLUXDB_SCHEMA overrides it)
  event_types:
    exclude: [call_service]
  device_fields: [manufacturer, model]   # of the device's five strings, those every point carries
```

Reading and checking the file: `config_reader.py`.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import Final

import msgspec

ENV_NAME: Final = "HOMEIQ_CONFIG"
SCHEMAS: Final = ("homeiq", "ha")
MEASUREMENT_ATTRS: Final = ("unit_of_measurement", "domain__device_class", "entity_id")
PRECISIONS: Final = ("ms", "s", "us", "ns")
# The strings that describe an entity's device, repeated on every point of the homeiq schema; each is a value of its
# own to InfluxDB: all five are 38 % of influxd's CPU a point (README, "What InfluxDB digests best").
DEVICE_FIELDS: Final = ("manufacturer", "model", "sw_version", "area_name", "friendly_name")


class Secret:
    """A password or token: never shown by repr or str (settings structs end up in error messages)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "Secret(***)" if self.value else "Secret()"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


class EntityWords(msgspec.Struct, frozen=True):
    """One side of the integration's `include` / `exclude`."""

    entities: tuple[str, ...] = ()
    entity_globs: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.entities or self.entity_globs or self.domains)


class Customize(msgspec.Struct, frozen=True):
    """A `component_config*` entry."""

    override_measurement: str | None = None
    ignore_attributes: tuple[str, ...] | None = None


class EventTypes(msgspec.Struct, frozen=True):
    """Our `homeiq.event_types`: which event types are written (include wins when given)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def allows(self, event_type: str) -> bool:
        """True when events of this type are written."""
        if self.include:
            return event_type in self.include
        return event_type not in self.exclude


class Integration(msgspec.Struct, frozen=True):
    """The `influxdb:` block, validated and with the integration's defaults."""

    api_version: str = "1"
    host: str | None = None
    port: int | None = None
    path: str | None = None
    ssl: bool | None = None
    verify_ssl: bool = True
    ssl_ca_cert: str | None = None
    precision: str | None = None
    username: str | None = None
    password: Secret = Secret("")
    database: str = "home_assistant"
    token: Secret = Secret("")
    organization: str | None = None
    bucket: str | None = None
    max_retries: int = 0
    include: EntityWords = EntityWords()
    exclude: EntityWords = EntityWords()
    tags: tuple[tuple[str, str], ...] = ()
    tags_attributes: tuple[str, ...] = ()
    ignore_attributes: tuple[str, ...] = ()
    default_measurement: str | None = None
    override_measurement: str | None = None
    measurement_attr: str = "unit_of_measurement"
    component_config: tuple[tuple[str, Customize], ...] = ()
    component_config_domain: tuple[tuple[str, Customize], ...] = ()
    component_config_glob: tuple[tuple[str, Customize], ...] = ()

    def url(self) -> str:
        """The InfluxDB URL the integration builds from host/port/ssl/path (v2: `create_influx_url`)."""
        if self.api_version == "2":
            ssl = True if self.ssl is None else self.ssl
            host = "us-west-2-1.aws.cloud2.influxdata.com" if self.host is None else self.host
            url = f"{'https' if ssl else 'http'}://{host}"
            if self.port is not None:
                url = f"{url}:{self.port}"
            return url + (self.path or "")
        # influxdb-python's InfluxDBClient defaults: localhost, 8086, http, no path.
        scheme = "https" if self.ssl else "http"
        path = self.path or ""
        if path and not path.startswith("/"):
            path = "/" + path
        host = "localhost" if self.host is None else self.host  # given empty, it stays empty (and is refused)
        return f"{scheme}://{host}:{8086 if self.port is None else self.port}{path}"

    def customize(self, entity_id: str) -> Customize:
        """`EntityValues.get`: domain entries, then matching globs in order, then the exact entity; later wins."""
        override: str | None = None
        ignore: tuple[str, ...] | None = None
        domain = entity_id.partition(".")[0]
        layers = [c for d, c in self.component_config_domain if d == domain]
        layers += [c for g, c in self.component_config_glob if _glob(g).match(entity_id)]
        layers += [c for e, c in self.component_config if e == entity_id]
        for layer in layers:
            if layer.override_measurement is not None:
                override = layer.override_measurement
            if layer.ignore_attributes is not None:
                ignore = layer.ignore_attributes
        return Customize(override, ignore)

    def ignored_attributes(self, entity_id: str) -> frozenset[str]:
        """The entity's `ignore_attributes` plus the global ones (the integration takes the union)."""
        return frozenset(self.customize(entity_id).ignore_attributes or ()) | frozenset(self.ignore_attributes)


class Homeiq(msgspec.Struct, frozen=True):
    """The `homeiq:` block."""

    schema: str | None = None
    event_types: EventTypes = EventTypes()
    device_fields: tuple[str, ...] = DEVICE_FIELDS  # which of DEVICE_FIELDS each point carries (homeiq schema)


class ConfigFile(msgspec.Struct, frozen=True):
    """The whole file; `integration` is None when it has no `influxdb:` block."""

    path: str
    integration: Integration | None
    homeiq: Homeiq
    notes: tuple[str, ...] = ()

    @property
    def words(self) -> Integration:
        """The integration's block, or its defaults."""
        return self.integration or Integration()


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


class EntityFilter:
    """The integration's include/exclude, exactly as `helpers/entityfilter.py`
    (`_generate_filter_from_sets_and_pattern_lists`, cases 1 to 6) decides; globs are fnmatch patterns
    matched case-sensitively against the whole entity id."""

    def __init__(self, include: EntityWords, exclude: EntityWords) -> None:
        self._ie, self._ee = frozenset(include.entities), frozenset(exclude.entities)
        self._id, self._ed = frozenset(include.domains), frozenset(exclude.domains)
        self._ig = _globs(include.entity_globs)
        self._eg = _globs(exclude.entity_globs)
        self.active = bool(include or exclude)
        self._decide = self._case()
        self._cache: dict[str, bool] = {}

    def __call__(self, entity_id: str) -> bool:
        """True when the entity's states are written."""
        allowed = self._cache.get(entity_id)
        if allowed is None:
            if len(self._cache) >= 100_000:
                self._cache.clear()
            allowed = self._cache[entity_id] = self._decide(entity_id)
        return allowed

    def _case(self) -> Callable[[str], bool]:
        ie, ee, i_d, e_d, ig, eg = self._ie, self._ee, self._id, self._ed, self._ig, self._eg
        have_include, have_exclude = bool(ie or i_d or ig), bool(ee or e_d or eg)

        def domain(entity_id: str) -> str:
            return entity_id.partition(".")[0]

        def matches(pattern: re.Pattern[str] | None, entity_id: str) -> bool:
            return pattern is not None and pattern.match(entity_id) is not None

        if not have_include and not have_exclude:  # case 1
            return lambda entity_id: True
        if have_include and not have_exclude:  # case 2
            return lambda e: e in ie or domain(e) in i_d or matches(ig, e)
        if not have_include and have_exclude:  # case 3
            return lambda e: not (e in ee or domain(e) in e_d or matches(eg, e))
        if i_d or ig:  # case 4
            return lambda e: e in ie or (e not in ee and (matches(ig, e) or (domain(e) in i_d and not matches(eg, e))))
        if e_d or eg:  # case 5
            return lambda e: (e in ie) if (domain(e) in e_d or matches(eg, e)) else (e not in ee)
        return lambda e: e in ie  # case 6


def _globs(globs: tuple[str, ...]) -> re.Pattern[str] | None:
    if not globs:
        return None
    return re.compile("(?:" + "|".join(fnmatch.translate(g) for g in sorted(set(globs))) + ")")
