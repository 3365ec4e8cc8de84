"""Reading HOMEIQ_CONFIG: YAML as Home Assistant reads it, checked key by key into `config.ConfigFile`.

The integration's keys and their coercions are those of home-assistant/core
`homeassistant/components/influxdb/__init__.py` and `const.py` as read at commit
01ae64906312f8ed31da2ee514b50cc33b758291 (`_INFLUX_BASE_SCHEMA`, `COMPONENT_CONFIG_SCHEMA_CONNECTION`,
`validate_version_specific_config`, `create_influx_url`), with `homeassistant/helpers/entityfilter.py`
(include/exclude) and `helpers/config_validation.py`'s `string`, `ensure_list`, `entity_ids`, `boolean`, `port`,
`positive_int`, `isfile`. An unknown key is an error that names it; `max_retries` has no meaning here (we never
drop) and is accepted with a note. `tests/realha/test_config_schema.py` reads many files with both releases'
own loader and schema and with this module, and compares.

The YAML is read as `homeassistant/util/yaml/loader.py` reads `configuration.yaml` (the file's folder plays Home
Assistant's configuration folder): PyYAML's safe loader (libyaml's first, Python's when that one fails), plus
`!secret name` (from `secrets.yaml` in the requesting file's folder, then each folder above it up to the
configuration folder; the value keeps its YAML type), `!env_var NAME [default]`, `!include file` (relative to
the file that has the tag; the whole block may be one: `influxdb: !include influxdb.yaml`) and
`!include_dir_list`, `!include_dir_named`, `!include_dir_merge_list`, `!include_dir_merge_named`. Where we
differ, on purpose: a relative `ssl_ca_cert` is relative to the configuration file's folder (Home Assistant: to
its working directory, which is /config in its images), and a host (or a v2 path) that makes the integration's
URL one its client cannot use, or one that points elsewhere than the block says (`::1`, an empty host, `a/b`),
is an error naming the key (Home Assistant takes the block and then fails to connect, for ever).

PyYAML is a runtime dependency for this module alone: the integration's configuration is YAML, and a
user's block must paste as it is, tags included; it is read once at start.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Collection, Iterator, Mapping
from numbers import Number
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec
import yaml

from homeiq.shared.config import (
    DEVICE_FIELDS,
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
_SECRETS: Final = "secrets.yaml"


class _Files:
    """The files one configuration reads, as Home Assistant's loader reads them: `config_dir` is the
    configuration file's folder; paths are joined as strings, as the loader joins them."""

    def __init__(self, where: str, config_dir: Path) -> None:
        self.where = where
        self.config_dir = config_dir
        self._secrets: dict[Path, dict[Any, Any]] = {}
        self._reading: list[str] = []

    def fail(self, what: str) -> ConfigError:
        return ConfigError(f"{ENV_NAME} ({self.where}): {what}")

    def load(self, name: str, *, secrets: bool = True) -> Any:
        """One file's document (FileNotFoundError when it is missing)."""
        if name in self._reading:
            raise self.fail(f"{name!r} includes itself")
        with open(name, encoding="utf-8") as file:
            try:
                text = file.read()
            except UnicodeDecodeError:
                raise self.fail(f"{name!r} is not UTF-8 text") from None
        self._reading.append(name)
        try:
            return self.parse(text, name, secrets=secrets)
        finally:
            self._reading.pop()

    def parse(self, text: str, name: str, *, secrets: bool = True) -> Any:
        """A document, read by libyaml's loader, else (a YAML error) by Python's, as Home Assistant does."""
        loaders = [_CLoader, _PyLoader] if _CLoader is not None else [_PyLoader]
        for i, kind in enumerate(loaders):
            loader = kind(text)
            loader.homeiq_name, loader.homeiq_files, loader.homeiq_secrets = name, self, secrets
            try:
                return loader.get_single_data()
            except yaml.YAMLError as exc:
                if i + 1 < len(loaders):
                    continue
                raise self.fail(f"{self._shown(name)}not valid YAML{_at(exc)}") from None
            finally:
                loader.dispose()
        raise AssertionError  # pragma: no cover - the loop returns or raises

    def _shown(self, name: str) -> str:
        return "" if not self._reading else f"{name}: "

    def secret(self, requester: str, key: Any) -> Any:
        """`Secrets.get`: secrets.yaml beside the requesting file, then in each folder above, up to config_dir."""
        folder = Path(requester)
        while True:
            above = folder.parent
            if above == folder:
                break
            folder = above
            try:
                folder.relative_to(self.config_dir)
            except ValueError:
                break
            secrets = self._secrets_in(folder)
            if key in secrets:
                return secrets[key]
        raise self.fail(f"!secret {key}: not found in {_SECRETS} (looked beside {requester!r} and above, up to "
                        f"{str(self.config_dir)!r})")

    def _secrets_in(self, folder: Path) -> dict[Any, Any]:
        path = folder / _SECRETS
        if path not in self._secrets:
            try:
                secrets = self.load(str(path), secrets=False)
            except FileNotFoundError:
                secrets = {}
            except OSError as exc:
                raise self.fail(f"cannot read {str(path)!r} ({exc.strerror})") from None
            if not isinstance(secrets, dict):
                raise self.fail(f"{str(path)!r} is not a mapping of names to values")
            secrets.pop("logger", None)  # Home Assistant's: the loader's log level, never a secret
            self._secrets[path] = secrets
        return self._secrets[path]


def _at(exc: yaml.YAMLError) -> str:
    """Where a YAML error is: the position only (PyYAML's snippet may show a secret)."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return ""
    mark = exc.problem_mark
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{at}: {exc.problem or exc.context}"


class _Tags:
    """What the loaders know beyond PyYAML's safe loader: Home Assistant's tags."""

    homeiq_name: str
    homeiq_files: _Files
    homeiq_secrets: bool


class _PyLoader(yaml.SafeLoader, _Tags):
    """PyYAML's safe loader in Python."""


_CSafeLoader: type[yaml.SafeLoader] | None = getattr(yaml, "CSafeLoader", None)
_CLoader: type[_PyLoader] | None = (
    None if _CSafeLoader is None else type("_CLoader", (_CSafeLoader, _Tags), {})
)


def _argument(loader: _PyLoader, node: yaml.Node) -> str:
    """A tag's scalar argument, not empty."""
    value = node.value if isinstance(node, yaml.ScalarNode) else None
    if not isinstance(value, str) or not value:
        raise loader.homeiq_files.fail(f"{node.tag} needs an argument (line {node.start_mark.line + 1})")
    return value


def _secret(loader: _PyLoader, node: yaml.Node) -> Any:
    if not loader.homeiq_secrets:
        raise loader.homeiq_files.fail(f"!secret is not allowed in {loader.homeiq_name!r}")
    return loader.homeiq_files.secret(loader.homeiq_name, _argument(loader, node))


def _env_var(loader: _PyLoader, node: yaml.Node) -> str:
    parts = _argument(loader, node).split()
    if not parts:
        raise loader.homeiq_files.fail("!env_var needs a variable name")
    value = os.environ.get(parts[0])
    if value is None:
        if len(parts) < 2:
            raise loader.homeiq_files.fail(f"!env_var {parts[0]}: the variable is not set and no default is given")
        return " ".join(parts[1:])
    return value


def _beside(loader: _PyLoader, node: yaml.Node) -> str:
    """The tag's path, joined to the folder of the file that has it (no `~`, as Home Assistant's loader)."""
    return os.path.join(os.path.dirname(loader.homeiq_name), _argument(loader, node))


def _include(loader: _PyLoader, node: yaml.Node) -> Any:
    name = _beside(loader, node)
    try:
        document = loader.homeiq_files.load(name, secrets=loader.homeiq_secrets)
    except FileNotFoundError:
        raise loader.homeiq_files.fail(f"!include {node.value}: no file {name!r}") from None
    except OSError as exc:
        raise loader.homeiq_files.fail(f"!include {node.value}: cannot read {name!r} ({exc.strerror})") from None
    return {} if document is None else document


def _dir_files(loader: _PyLoader, node: yaml.Node) -> Iterator[tuple[str, Any]]:
    """`_find_files(folder, '*.yaml')`: every file below, hidden files and folders and secrets.yaml left out."""
    for root, dirs, files in os.walk(_beside(loader, node), topdown=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for basename in sorted(files):
            if not basename.startswith(".") and fnmatch.fnmatch(basename, "*.yaml") and basename != _SECRETS:
                name = os.path.join(root, basename)
                try:
                    yield name, loader.homeiq_files.load(name, secrets=loader.homeiq_secrets)
                except OSError as exc:
                    raise loader.homeiq_files.fail(f"{node.tag} {node.value}: cannot read {name!r} "
                                                   f"({exc.strerror})") from None


def _include_dir_list(loader: _PyLoader, node: yaml.Node) -> list[Any]:
    return [document for _, document in _dir_files(loader, node) if document is not None]


def _include_dir_merge_list(loader: _PyLoader, node: yaml.Node) -> list[Any]:
    return [item for _, document in _dir_files(loader, node) if isinstance(document, list) for item in document]


def _include_dir_named(loader: _PyLoader, node: yaml.Node) -> dict[str, Any]:
    return {os.path.splitext(os.path.basename(name))[0]: {} if document is None else document
            for name, document in _dir_files(loader, node)}


def _include_dir_merge_named(loader: _PyLoader, node: yaml.Node) -> dict[Any, Any]:
    merged: dict[Any, Any] = {}
    for _, document in _dir_files(loader, node):
        if isinstance(document, dict):
            merged.update(document)
    return merged


for _kind in (_PyLoader, _CLoader):
    if _kind is not None:
        _kind.add_constructor("!secret", _secret)
        _kind.add_constructor("!env_var", _env_var)
        _kind.add_constructor("!include", _include)
        _kind.add_constructor("!include_dir_list", _include_dir_list)
        _kind.add_constructor("!include_dir_merge_list", _include_dir_merge_list)
        _kind.add_constructor("!include_dir_named", _include_dir_named)
        _kind.add_constructor("!include_dir_merge_named", _include_dir_merge_named)


class _Reader:
    """Coerces and checks one document as voluptuous and `config_validation` would, naming the key path."""

    def __init__(self, where: str, folder: Path) -> None:
        self.where = where
        self.folder = folder

    def fail(self, key: str, what: str) -> ConfigError:
        return ConfigError(f"{ENV_NAME} ({self.where}): {key}: {what}")

    def mapping(self, key: str, value: Any) -> dict[Any, Any]:
        """A vol.Schema of a dict: a mapping (null is not one)."""
        if not isinstance(value, dict):
            got = "null" if value is None else type(value).__name__
            raise self.fail(key, f"expected a mapping, got {got}")
        return value

    def known(self, key: str, value: dict[Any, Any], allowed: Mapping[str, object] | tuple[str, ...]) -> None:
        for name in value:
            if not isinstance(name, str) or name not in allowed:
                prefix = f"{key}." if key else ""
                raise self.fail(f"{prefix}{name}", f"unknown key (known: {', '.join(sorted(allowed))})")

    def string(self, key: str, value: Any) -> str:
        """cv.string: str, or a number (any scalar) made a str; never a list, mapping or null."""
        if isinstance(value, str):
            return value
        if value is None or isinstance(value, (list, dict)):
            raise self.fail(key, f"expected a string, got {'null' if value is None else type(value).__name__}")
        return str(value)

    def strings(self, key: str, value: Any) -> tuple[str, ...]:
        """cv.ensure_list + [cv.string]: one string is a list of one, null an empty list."""
        if value is None:
            return ()
        items = value if isinstance(value, list) else [value]
        return tuple(self.string(f"{key}[{i}]", v) for i, v in enumerate(items))

    def entity_ids(self, key: str, value: Any) -> tuple[str, ...]:
        """cv.entity_ids: a comma-separated string, or what iterates (a list; a mapping's keys), each an id."""
        if isinstance(value, str):
            items: list[Any] = [p.strip() for p in value.split(",")]
        elif isinstance(value, (list, dict, set)):
            items = list(value)
        else:
            got = "null" if value is None else type(value).__name__
            raise self.fail(key, f"expected a list of entity ids, got {got}")
        return tuple(self.entity_id(f"{key}[{i}]", item) for i, item in enumerate(items))

    def entity_id(self, key: str, value: Any) -> str:
        """cv.entity_id: cv.string, lowercased, a valid entity id."""
        entity_id = self.string(key, value).lower()
        if not _ENTITY_ID.match(entity_id):
            raise self.fail(key, f"{entity_id!r} is not a valid entity id")
        return entity_id

    def boolean(self, key: str, value: Any) -> bool:
        """cv.boolean: a bool, one of its words (any case, stripped), or a number (not 0 is true)."""
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower().strip() in _TRUE | _FALSE:
            return value.lower().strip() in _TRUE
        if isinstance(value, Number):
            return bool(value != 0)  # type: ignore[comparison-overlap]
        raise self.fail(key, f"expected a boolean (true/false), got {value!r}")

    def integer(self, key: str, value: Any, wanted: str, low: int, high: int | None = None) -> int:
        """vol.Coerce(int) and vol.Range: what int() takes (a numeric string, a float cut down, true is 1)."""
        try:
            number = int(value)
        except (TypeError, ValueError, OverflowError):
            raise self.fail(key, f"expected {wanted}, got {value!r}") from None
        if number < low or (high is not None and number > high):
            raise self.fail(key, f"expected {wanted}, got {value!r}")
        return number

    def choice(self, key: str, value: Any, choices: tuple[str, ...]) -> str:
        """vol.In: one of the strings as it is."""
        if not isinstance(value, str) or value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def file(self, key: str, value: Any) -> str:
        """cv.isfile (str() of the value, `~` expanded, a readable file); relative to the configuration's folder."""
        if value is None:
            raise self.fail(key, "expected a file, got null")
        path = self.folder / os.path.expanduser(str(value))
        if not path.is_file() or not os.access(path, os.R_OK):
            raise self.fail(key, f"{str(value)!r} is not a file, or not readable (a relative path starts in "
                            f"{str(self.folder)!r})")
        return str(path)

    def entity_words(self, key: str, value: Any) -> EntityWords:
        block = self.mapping(key, value)
        self.known(key, block, ("entities", "entity_globs", "domains"))
        return EntityWords(
            entities=self.entity_ids(f"{key}.entities", block["entities"]) if "entities" in block else (),
            entity_globs=self.strings(f"{key}.entity_globs", block.get("entity_globs")),
            domains=self.strings(f"{key}.domains", block.get("domains")),
        )

    def customizations(self, key: str, value: Any, entity_keys: bool) -> tuple[tuple[str, Customize], ...]:
        """{cv.entity_id or cv.string: {override_measurement, ignore_attributes}}; a later equal key wins."""
        result: dict[str, Customize] = {}
        for name, entry in self.mapping(key, value).items():
            where = f"{key}.{name}"
            name = self.entity_id(where, name) if entity_keys else self.string(where, name)  # noqa: PLW2901
            block = self.mapping(where, entry)
            self.known(where, block, ("override_measurement", "ignore_attributes"))
            result[name] = Customize(
                override_measurement=self.string(f"{where}.override_measurement", block["override_measurement"])
                if "override_measurement" in block else None,
                ignore_attributes=self.strings(f"{where}.ignore_attributes", block["ignore_attributes"])
                if "ignore_attributes" in block else None,
            )
        return tuple(result.items())

    def tags(self, key: str, value: Any) -> tuple[tuple[str, str], ...]:
        """{cv.string: cv.string}; a later equal key wins."""
        block = self.mapping(key, value)
        result = {self.string(f"{key}.{k}", k): self.string(f"{key}.{k}", v) for k, v in block.items()}
        return tuple(result.items())


_INTEGRATION_KEYS: Final = (
    "api_version", "host", "port", "path", "ssl", "verify_ssl", "ssl_ca_cert", "precision", "username", "password",
    "database", "token", "organization", "bucket", "max_retries", "include", "exclude", "tags", "tags_attributes",
    "ignore_attributes", "default_measurement", "override_measurement", "measurement_attr", "component_config",
    "component_config_domain", "component_config_glob",
)


def _integration(r: _Reader, raw: Any) -> tuple[Integration, list[str]]:
    block = r.mapping("influxdb", raw or {})  # load_yaml_config_file: a top-level value that is false is {}
    r.known("influxdb", block, _INTEGRATION_KEYS)
    notes = [f"influxdb.{key}: {why}" for key, why in NOTED_KEYS.items() if key in block]

    def given(key: str, read: Any, default: Any = None) -> Any:  # vol.Optional: a default only when absent
        return read(f"influxdb.{key}", block[key]) if key in block else default

    config = Integration(  # api_version: vol.Coerce(str), then vol.In
        api_version=r.choice("influxdb.api_version", given("api_version", lambda _, v: str(v), "1"), ("1", "2")),
        host=given("host", r.string),
        port=given("port", lambda k, v: r.integer(k, v, "a port between 1 and 65535", 1, 65535)),
        path=given("path", r.string),
        ssl=given("ssl", r.boolean),
        verify_ssl=given("verify_ssl", r.boolean, True),
        ssl_ca_cert=given("ssl_ca_cert", r.file),
        precision=given("precision", lambda k, v: r.choice(k, v, PRECISIONS)),
        username=given("username", r.string),
        password=Secret(given("password", r.string, "")),
        database=given("database", r.string, "home_assistant"),
        token=Secret(given("token", r.string, "")),
        organization=given("organization", r.string),
        bucket=given("bucket", r.string, "Home Assistant"),
        max_retries=given("max_retries", lambda k, v: r.integer(k, v, "a whole number of 0 or more", 0), 0),
        include=given("include", r.entity_words, EntityWords()),
        exclude=given("exclude", r.entity_words, EntityWords()),
        tags=given("tags", r.tags, ()),
        tags_attributes=r.strings("influxdb.tags_attributes", block.get("tags_attributes")),
        ignore_attributes=r.strings("influxdb.ignore_attributes", block.get("ignore_attributes")),
        default_measurement=given("default_measurement", r.string),
        override_measurement=given("override_measurement", r.string),
        measurement_attr=given("measurement_attr", lambda k, v: r.choice(k, v, MEASUREMENT_ATTRS),
                               "unit_of_measurement"),
        component_config=given("component_config", lambda k, v: r.customizations(k, v, True), ()),
        component_config_domain=given("component_config_domain", lambda k, v: r.customizations(k, v, False), ()),
        component_config_glob=given("component_config_glob", lambda k, v: r.customizations(k, v, False), ()),
    )
    _check_version_specific(r, config, block.keys())
    _check_url(r, config)
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


def _url_problem(config: Integration) -> str | None:
    """Why the URL the integration builds from host/port/ssl/path is not one to connect to, or None."""
    url = config.url()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - it raises when the port is not a number
    except ValueError:
        return f"it makes the URL {url!r}, which is not one"
    host = parts.hostname or ""
    if not host or any(c.isspace() or c in "%\\" for c in host):
        return f"it makes the URL {url!r}, which has no usable host"
    path = config.path or ""
    if config.api_version == "1" and path and not path.startswith("/"):
        path = "/" + path  # influxdb-python's
    if parts.username is not None or parts.query or parts.fragment or "?" in url or "#" in url or parts.path != path:
        return f"it makes the URL {url!r}, which means another host, port or path"
    return None


def _check_url(r: _Reader, config: Integration) -> None:
    """The integration's URL must be usable and mean what the block says (Home Assistant would take the block and
    fail to connect); the key to blame is the host unless the URL is as wrong with a plain host."""
    problem = _url_problem(config)
    if problem is None:
        return
    plain = msgspec.structs.replace(config, host="localhost")
    key = "influxdb.path" if config.host is not None and _url_problem(plain) is not None else "influxdb.host"
    hint = " (an IPv6 address goes in brackets: '[::1]')" if key == "influxdb.host" and ":" in (config.host or "") \
        else ""
    raise r.fail(key, f"{problem}{hint}")


def _homeiq(r: _Reader, raw: Any) -> Homeiq:
    block = r.mapping("homeiq", raw or {})
    r.known("homeiq", block, ("schema", "event_types", "device_fields"))
    types = r.mapping("homeiq.event_types", block.get("event_types") or {})
    r.known("homeiq.event_types", types, ("include", "exclude"))
    device_fields: tuple[str, ...] = DEVICE_FIELDS  # left out: all, as the HomeIQ readers expect
    if "device_fields" in block:
        if block["device_fields"] is None:  # null is an empty list elsewhere in the file: ask which was meant
            raise r.fail("homeiq.device_fields", "null: write [] for none, or leave the key out for all five")
        device_fields = r.strings("homeiq.device_fields", block["device_fields"])
        for n, name in enumerate(device_fields):
            r.choice(f"homeiq.device_fields[{n}]", name, DEVICE_FIELDS)
    return Homeiq(
        schema=None if block.get("schema") is None else r.choice("homeiq.schema", block["schema"], SCHEMAS),
        event_types=EventTypes(include=r.strings("homeiq.event_types.include", types.get("include")),
                               exclude=r.strings("homeiq.event_types.exclude", types.get("exclude"))),
        device_fields=device_fields,
    )


def parse_config(text: str, where: str) -> ConfigFile:
    """Parse and validate a configuration document read from the file `where` (its folder is where `!include`,
    `!secret` and relative paths start); ConfigError names the key and what is wrong."""
    name = os.path.abspath(where)
    folder = Path(os.path.dirname(name))
    files = _Files(where, folder)
    document = files.parse(text, name)
    reader = _Reader(where, folder)
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise reader.fail("(the file)", f"expected a mapping, got {type(document).__name__}")
    reader.known("", document, ("influxdb", "homeiq"))
    integration, notes = (None, []) if "influxdb" not in document else _integration(reader, document["influxdb"])
    return ConfigFile(path=where, integration=integration, homeiq=_homeiq(reader, document.get("homeiq")),
                      notes=tuple(notes))


def load_config(path: str) -> ConfigFile | None:
    """Read the file named by HOMEIQ_CONFIG (None when `path` is empty)."""
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{ENV_NAME}: cannot read {path!r} ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{ENV_NAME}: {path!r} is not UTF-8 text") from None
    return parse_config(text, path)
