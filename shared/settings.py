"""Settings helpers: secrets from the environment or a file, validation errors that name the variable."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


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
