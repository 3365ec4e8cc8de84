"""Settings: each one declared once (its variable, flag, default, help and check) on a `Settings` struct;
secrets from the environment or a file; validation errors that name the variable."""

from __future__ import annotations

import os
import ssl
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import msgspec

Check = Callable[[str, Any], Any]
"""`check(variable, value)` returns the value (possibly normalised) or raises ConfigError naming the variable."""


@dataclass(frozen=True)
class Var:
    """Where a setting comes from and what it must be: its environment variable, its help, its check; `flag`
    when it is not `--<field-name>`, `default_text` when --help should say more than the default."""

    env: str
    help: str
    check: Check | None = None
    flag: str = ""
    default_text: str = ""


@dataclass(frozen=True)
class Nested:
    """On a field whose type is a `Settings`: its settings' flags start with `prefix`; `only` limits which
    of them this command offers (the others keep their defaults)."""

    prefix: str = ""
    only: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Field:
    """One field of a `Settings` struct: a setting (`var`), a nested `Settings` (`nested`), or neither."""

    name: str
    type: Any
    default: Any
    var: Var | None
    nested: Nested | None


def settings_fields(cls: type[Settings]) -> Iterator[Field]:
    """The fields of `cls`, with what their annotations declare."""
    for info in msgspec.structs.fields(cls):
        kind, extras = info.type, []
        if typing.get_origin(kind) is typing.Annotated:
            kind, *extras = typing.get_args(kind)
        var = next((x for x in extras if isinstance(x, Var)), None)
        nested = next((x for x in extras if isinstance(x, Nested)), None)
        if nested is None and isinstance(kind, type) and issubclass(kind, Settings):
            nested = Nested()
        yield Field(info.name, kind, info.default, var, nested)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """A group of settings; `validate` runs every field's check (nested ones too), then `check_together`."""

    @classmethod
    def layered(cls, given: dict[str, Any]) -> Self:
        """Build from the values given (flag or variable); what is not given takes the default. A subclass
        may put another layer (a configuration file) between the two."""
        return cls(**given)

    def check_together(self) -> None:
        """Checks that involve more than one setting; raise ConfigError naming the variables."""

    def validate(self) -> Self:
        """Raise ConfigError naming the variable that is wrong; return the settings with values normalised."""
        changes: dict[str, Any] = {}
        for field in settings_fields(type(self)):
            value = getattr(self, field.name)
            if isinstance(value, Settings):
                checked = value.validate()
            elif field.var is not None and field.var.check is not None:
                checked = field.var.check(field.var.env, value)
            else:
                continue
            if checked is not value:
                changes[field.name] = checked
        result = msgspec.structs.replace(self, **changes) if changes else self
        result.check_together()
        return result


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the variable and what is wrong."""


def read_secret(name: str, environ: Mapping[str, str] | None = None, *, required: bool = True) -> str:
    """Return the secret from `NAME` or from the file named by `NAME_FILE` (never both)."""
    env = os.environ if environ is None else environ
    direct, file_var = env.get(name), f"{name}_FILE"
    path = env.get(file_var)
    if direct and path:
        raise ConfigError(f"{name} and {file_var} are both set; set only one")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{file_var}: cannot read {path!r} ({exc.strerror})") from None
        if not value:
            raise ConfigError(f"{file_var}: file {path!r} is empty")
        return value
    if direct:
        return direct.strip()
    if required:
        raise ConfigError(f"{name} is not set (set {name} or {file_var})")
    return ""


def check_url(name: str, url: str, schemes: tuple[str, ...]) -> str:
    """Validate that `url` has one of `schemes` and a host (a socket path for unix://); return it unchanged."""
    parts = urlsplit(url)
    if parts.scheme == "unix" and "unix" in schemes:
        if not parts.path.strip("/"):
            raise ConfigError(f"{name}: a unix:// URL needs the socket path, e.g. unix:///run/redis/redis.sock?db=0")
        return url
    if parts.scheme not in schemes or not parts.hostname:
        wanted = " or ".join(f"{s}://" for s in schemes)
        raise ConfigError(f"{name}: expected a {wanted} URL with a host, got {redact_url(url)!r}")
    return url


def check_positive(name: str, value: float) -> None:
    """Raise ConfigError unless `value` > 0."""
    if not value > 0:
        raise ConfigError(f"{name}: must be greater than 0, got {value}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """Raise ConfigError unless `value` is one of `choices`."""
    if value not in choices:
        raise ConfigError(f"{name}: must be one of {', '.join(choices)}, got {value!r}")
    return value


def positive(name: str, value: float) -> float:
    """Check: greater than 0."""
    check_positive(name, value)
    return value


def at_least(low: float) -> Check:
    """Check: `low` or more."""
    def check(name: str, value: float) -> float:
        if value < low:
            raise ConfigError(f"{name}: must be {low:g} or more, got {value}")
        return value
    return check


def between(low: float, high: float) -> Check:
    """Check: from `low` to `high`, both included."""
    def check(name: str, value: float) -> float:
        if not low <= value <= high:
            raise ConfigError(f"{name}: must be between {low:g} and {high:g}, got {value}")
        return value
    return check


def one_of(*choices: str) -> Check:
    """Check: one of `choices`."""
    return lambda name, value: check_choice(name, value, choices)


def url_of(*schemes: str) -> Check:
    """Check: a URL of one of `schemes` with a host."""
    return lambda name, value: check_url(name, value, schemes)


REDIS_URL_CHECK: Check = url_of("redis", "rediss", "unix")


def host_ports(value: str) -> list[tuple[str, int]]:
    """`host:port,host:port` parsed (empty: none); raises ValueError naming the item that is not host:port."""
    found = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r} is not host:port")
        found.append((host.strip("[]"), int(port)))
    return found


def host_port_list(name: str, value: str) -> str:
    """Check: a comma-separated host:port list, or empty."""
    try:
        host_ports(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc} (expected host:port,host:port, e.g. 10.0.0.1:26379,10.0.0.2:26379)") from None
    return value


def not_empty(name: str, value: str) -> str:
    """Check: not an empty string."""
    if not value:
        raise ConfigError(f"{name}: must not be empty")
    return value


def a_file_or_empty(name: str, value: str) -> str:
    """Check: empty, or the path of an existing file."""
    if value and not Path(value).is_file():
        raise ConfigError(f"{name}: {value!r} is not a file")
    return value


def redact_url(url: str) -> str:
    """Return `url` with any password replaced, safe to log."""
    parts = urlsplit(url)
    if "password=" in parts.query:  # unix:///path?password=… (redis-py's form for sockets)
        query = "&".join("password=***" if kv.startswith("password=") else kv for kv in parts.query.split("&"))
        parts = parts._replace(query=query)
        url = urlunsplit(parts)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def ssl_context(verify: bool, ca_file: str = "") -> ssl.SSLContext:
    """TLS for a client: the system's CAs (or only `ca_file`'s), hostname checked; or no checks at all when
    `verify` is false (Home Assistant's `verify_ssl: false`)."""
    context = ssl.create_default_context(cafile=ca_file or None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
