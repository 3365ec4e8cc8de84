"""Reading HOMEIQ_CONFIG: YAML as Home Assistant reads it, checked key by key into `config.ConfigFile`.

The integration's keys and their coercions are those of home-assistant/core
`homeassistant/components/influxdb/__init__.py` and `const.py` as read at commit
01ae64906312f8ed31da2ee514b50cc33b758291 (`_INFLUX_BASE_SCHEMA`, `COMPONENT_CONFIG_SCHEMA_CONNECTION`,
`validate_version_specific_config`), with `homeassistant/helpers/entityfilter.py` (include/exclude) and
`helpers/config_validation.py`'s `string`, `ensure_list`, `entity_ids`, `boolean`, `port`. An unknown key is
an error that names it; `max_retries` has no meaning here (we never drop) and is accepted with a note.
YAML tags Home Assistant users have in their blocks work: `!secret name` (from `secrets.yaml` beside the
file) and `!env_var NAME [default]`.

PyYAML is a runtime dependency for this module alone: the integration's configuration is YAML, and a
user's block must paste as it is, tags included; it is read once at start.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from homeiq.shared.config import (
    ENV_NAME,
    MEASUREMENT_ATTRS,
    PRECISIONS,
    SCHEMAS,
    ConfigFile,
    Customize,
    EntityWords,
    EventTypes,
    Homeiq,
    Integration,
    Secret,
)
from homeiq.shared.settings import ConfigError

# Keys the integration accepts that mean nothing here, and why (one line each, logged at start).
NOTED_KEYS: Final = {
    "max_retries": "ignored: nothing is ever dropped here, every write is retried until InfluxDB takes it",
}
# homeassistant/core.py valid_entity_id
_ENTITY_ID: Final = re.compile(r"^(?!.+__)(?!_)[\da-z_]+(?<!_)\.(?!_)[\da-z_]+(?<!_)$")
_TRUE: Final = frozenset({"1", "true", "yes", "on", "enable"})
_FALSE: Final = frozenset({"0", "false", "no", "off", "disable"})


class _Loader(yaml.SafeLoader):
    """SafeLoader plus Home Assistant's `!secret` and `!env_var`."""

    secrets_path: Path


def _secret(loader: _Loader, node: yaml.Node) -> str:
    name = loader.construct_scalar(node)  # type: ignore[arg-type]
    try:
        secrets = yaml.safe_load(loader.secrets_path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"!secret {name}: cannot read {str(loader.secrets_path)!r} ({exc.strerror})") from None
    if not isinstance(secrets, dict) or name not in secrets:
        raise ConfigError(f"!secret {name}: not found in {str(loader.secrets_path)!r}")
    return str(secrets[name])


def _env_var(loader: _Loader, node: yaml.Node) -> str:
    parts = str(loader.construct_scalar(node)).split()  # type: ignore[arg-type]
    if not parts:
        raise ConfigError("!env_var needs a variable name")
    value = os.environ.get(parts[0])
    if value is None:
        if len(parts) < 2:
            raise ConfigError(f"!env_var {parts[0]}: the variable is not set and no default is given")
        return " ".join(parts[1:])
    return value


_Loader.add_constructor("!secret", _secret)
_Loader.add_constructor("!env_var", _env_var)


class _Reader:
    """Coerces and checks one document as voluptuous and `config_validation` would, naming the key path."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, key: str, what: str) -> ConfigError:
        return ConfigError(f"{ENV_NAME} ({self.where}): {key}: {what}")

    def mapping(self, key: str, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {type(value).__name__}")
        return {str(k): v for k, v in value.items()}

    def known(self, key: str, value: dict[str, Any], allowed: Mapping[str, object] | tuple[str, ...]) -> None:
        for name in value:
            if name not in allowed:
                prefix = f"{key}." if key else ""
                raise self.fail(f"{prefix}{name}", f"unknown key (known: {', '.join(sorted(allowed))})")

    def string(self, key: str, value: Any) -> str:
        """cv.string: str, or a number made a str; never a list, mapping or null."""
        if isinstance(value, str):
            return value
        if value is None or isinstance(value, (list, dict)):
            raise self.fail(key, f"expected a string, got {'null' if value is None else type(value).__name__}")
        return str(value)

    def strings(self, key: str, value: Any) -> tuple[str, ...]:
        """cv.ensure_list + [cv.string]: one string is a list of one."""
        if value is None:
            return ()
        items = value if isinstance(value, list) else [value]
        return tuple(self.string(f"{key}[{i}]", v) for i, v in enumerate(items))

    def entity_ids(self, key: str, value: Any) -> tuple[str, ...]:
        """cv.entity_ids: a list or a comma-separated string, lowercased, each a valid entity id."""
        if value is None:
            return ()
        items = [p.strip() for p in value.split(",")] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise self.fail(key, f"expected a list of entity ids, got {type(value).__name__}")
        result = []
        for i, item in enumerate(items):
            entity_id = self.string(f"{key}[{i}]", item).lower()
            if not _ENTITY_ID.match(entity_id):
                raise self.fail(f"{key}[{i}]", f"{entity_id!r} is not a valid entity id")
            result.append(entity_id)
        return tuple(result)

    def boolean(self, key: str, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower().strip() in _TRUE | _FALSE:
            return value.lower().strip() in _TRUE
        raise self.fail(key, f"expected a boolean (true/false), got {value!r}")

    def port(self, key: str, value: Any) -> int:
        try:
            port = int(value)
        except (TypeError, ValueError):
            raise self.fail(key, f"expected a port number, got {value!r}") from None
        if not 1 <= port <= 65535:
            raise self.fail(key, f"expected a port between 1 and 65535, got {port}")
        return port

    def choice(self, key: str, value: Any, choices: tuple[str, ...]) -> str:
        text = self.string(key, value)
        if text not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, got {text!r}")
        return text

    def entity_words(self, key: str, value: Any) -> EntityWords:
        block = self.mapping(key, value)
        self.known(key, block, ("entities", "entity_globs", "domains"))
        return EntityWords(
            entities=self.entity_ids(f"{key}.entities", block.get("entities")),
            entity_globs=self.strings(f"{key}.entity_globs", block.get("entity_globs")),
            domains=self.strings(f"{key}.domains", block.get("domains")),
        )

    def customizations(self, key: str, value: Any, entity_keys: bool) -> tuple[tuple[str, Customize], ...]:
        result = []
        for name, entry in self.mapping(key, value).items():
            where = f"{key}.{name}"
            if entity_keys:
                name = name.lower()  # noqa: PLW2901 - cv.entity_id lowercases
                if not _ENTITY_ID.match(name):
                    raise self.fail(where, f"{name!r} is not a valid entity id")
            block = self.mapping(where, entry)
            self.known(where, block, ("override_measurement", "ignore_attributes"))
            override = block.get("override_measurement")
            ignore = block.get("ignore_attributes")
            result.append((name, Customize(
                override_measurement=None if override is None else self.string(f"{where}.override_measurement",
                                                                                override),
                ignore_attributes=None if ignore is None else self.strings(f"{where}.ignore_attributes", ignore),
            )))
        return tuple(result)


_INTEGRATION_KEYS: Final = (
    "api_version", "host", "port", "path", "ssl", "verify_ssl", "ssl_ca_cert", "precision", "username", "password",
    "database", "token", "organization", "bucket", "max_retries", "include", "exclude", "tags", "tags_attributes",
    "ignore_attributes", "default_measurement", "override_measurement", "measurement_attr", "component_config",
    "component_config_domain", "component_config_glob",
)


def _max_retries(r: _Reader, value: Any) -> int:
    """cv.positive_int: vol.Coerce(int) (a numeric string, a float cut down, true is 1), then 0 or more."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise r.fail("influxdb.max_retries", f"expected a whole number of 0 or more, got {value!r}") from None
    if number < 0:
        raise r.fail("influxdb.max_retries", f"expected a whole number of 0 or more, got {value!r}")
    return number


def _integration(r: _Reader, raw: Any) -> tuple[Integration, list[str]]:
    block = r.mapping("influxdb", raw)
    r.known("influxdb", block, _INTEGRATION_KEYS)
    notes = [f"influxdb.{key}: {why}" for key, why in NOTED_KEYS.items() if key in block]

    def text(key: str) -> str | None:  # absent: None; given as null: an error, as cv.string says
        return r.string(f"influxdb.{key}", block[key]) if key in block else None

    api_version = r.choice("influxdb.api_version", block.get("api_version", "1"), ("1", "2"))
    max_retries = _max_retries(r, block.get("max_retries", 0))
    ca = text("ssl_ca_cert")
    if ca is not None and not Path(ca).is_file():
        raise r.fail("influxdb.ssl_ca_cert", f"{ca!r} is not a file")
    tags = tuple((k, r.string(f"influxdb.tags.{k}", v))
                 for k, v in r.mapping("influxdb.tags", block.get("tags")).items())
    config = Integration(
        api_version=api_version,
        host=text("host"),
        port=r.port("influxdb.port", block["port"]) if "port" in block else None,
        path=text("path"),
        ssl=r.boolean("influxdb.ssl", block["ssl"]) if "ssl" in block else None,
        verify_ssl=r.boolean("influxdb.verify_ssl", block.get("verify_ssl", True)),
        ssl_ca_cert=ca,
        precision=r.choice("influxdb.precision", block["precision"], PRECISIONS) if "precision" in block else None,
        username=text("username"),
        password=Secret(text("password") or ""),
        database=r.string("influxdb.database", block["database"]) if "database" in block else "home_assistant",
        token=Secret(text("token") or ""),
        organization=text("organization"),
        bucket=text("bucket") if "bucket" in block else "Home Assistant",
        max_retries=max_retries,
        include=r.entity_words("influxdb.include", block.get("include")),
        exclude=r.entity_words("influxdb.exclude", block.get("exclude")),
        tags=tags,
        tags_attributes=r.strings("influxdb.tags_attributes", block.get("tags_attributes")),
        ignore_attributes=r.strings("influxdb.ignore_attributes", block.get("ignore_attributes")),
        default_measurement=text("default_measurement"),
        override_measurement=text("override_measurement"),
        measurement_attr=r.choice("influxdb.measurement_attr", block.get("measurement_attr", "unit_of_measurement"),
                                  MEASUREMENT_ATTRS),
        component_config=r.customizations("influxdb.component_config", block.get("component_config"), True),
        component_config_domain=r.customizations("influxdb.component_config_domain",
                                                  block.get("component_config_domain"), False),
        component_config_glob=r.customizations("influxdb.component_config_glob", block.get("component_config_glob"),
                                               False),
    )
    _check_version_specific(r, config, block.keys())
    return config, notes


def _check_version_specific(r: _Reader, config: Integration, given: Collection[str]) -> None:
    """HA's vol.Inclusive pairs and validate_version_specific_config: both look at which keys are given."""
    if ("username" in given) != ("password" in given):
        raise r.fail("influxdb.username", "username and password must be given together")
    if ("token" in given) != ("organization" in given):
        raise r.fail("influxdb.token", "token and organization must be given together")
    if config.api_version == "2":
        if "token" not in given:
            raise r.fail("influxdb.token", "required when api_version is 2")
        if "username" in given:
            raise r.fail("influxdb.username", "username and password are only allowed when api_version is 1")
    else:
        if "token" in given:
            raise r.fail("influxdb.token", "only allowed when api_version is 2")
        if config.precision in ("us", "ns"):  # influxdb-python's write_points: 'n', 'u', 'ms', 's', 'm', 'h'
            raise r.fail("influxdb.precision", f"{config.precision!r} with api_version 1 stops Home Assistant's "
                         "integration from starting (its v1 client refuses it); use ms or s, or leave it out")


def _homeiq(r: _Reader, raw: Any) -> Homeiq:
    block = r.mapping("homeiq", raw)
    r.known("homeiq", block, ("schema", "event_types"))
    types = r.mapping("homeiq.event_types", block.get("event_types"))
    r.known("homeiq.event_types", types, ("include", "exclude"))
    return Homeiq(
        schema=None if block.get("schema") is None else r.choice("homeiq.schema", block["schema"], SCHEMAS),
        event_types=EventTypes(include=r.strings("homeiq.event_types.include", types.get("include")),
                               exclude=r.strings("homeiq.event_types.exclude", types.get("exclude"))),
    )


def parse_config(text: str, where: str, secrets_path: Path | None = None) -> ConfigFile:
    """Parse and validate a configuration document; ConfigError names the key and what is wrong."""
    loader = _Loader(text)
    loader.secrets_path = secrets_path or Path("secrets.yaml")
    try:
        document = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:  # the position and the problem only: PyYAML's snippet may show a secret
        mark = exc.problem_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{ENV_NAME} ({where}): not valid YAML{at}: {exc.problem or exc.context}") from None
    except yaml.YAMLError:
        raise ConfigError(f"{ENV_NAME} ({where}): not valid YAML") from None
    finally:
        loader.dispose()
    reader = _Reader(where)
    top = reader.mapping("", document)
    reader.known("", top, ("influxdb", "homeiq"))
    integration, notes = (None, []) if "influxdb" not in top else _integration(reader, top["influxdb"])
    return ConfigFile(path=where, integration=integration, homeiq=_homeiq(reader, top.get("homeiq")),
                      notes=tuple(notes))


def load_config(path: str) -> ConfigFile | None:
    """Read the file named by HOMEIQ_CONFIG (None when `path` is empty)."""
    if not path:
        return None
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{ENV_NAME}: cannot read {path!r} ({exc.strerror})") from None
    return parse_config(text, path, file.parent / "secrets.yaml")
