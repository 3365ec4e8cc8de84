"""How every process reaches Home Assistant: its URL, TLS and token, declared once for the collector and the
replayer's audit (anything that talks to HA must take the same settings)."""

from __future__ import annotations

import ssl
from typing import Annotated, Final
from urllib.parse import urlsplit, urlunsplit

from homeiq.shared.settings import Var, a_file_or_empty, check_url, positive, read_secret, ssl_context

DEFAULT_HA_URL: Final = "ws://127.0.0.1:8123/api/websocket"


def websocket_url(name: str, url: str) -> str:
    """Accept HA's base URL or its WebSocket URL; return the ws(s)://…/api/websocket URL."""
    check_url(name, url, ("ws", "wss", "http", "https"))
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path.rstrip("/") else "/api/websocket"
    return urlunsplit(parts._replace(scheme=scheme, path=path))


def _websocket_url_or_empty(name: str, url: str) -> str:
    return websocket_url(name, url) if url else ""


HaUrl = Annotated[str, Var("HA_URL", "HA base URL or ws(s)://host:8123/api/websocket.", websocket_url)]
# The same variable where HA is optional (the replayer daemon's periodic audit): empty means none.
HaUrlOrNone = Annotated[str, Var(
    "HA_URL", "HA base URL or its WebSocket URL, for the periodic audit.", _websocket_url_or_empty, flag="--ha-url")]
HaVerifySsl = Annotated[bool, Var(
    "HA_VERIFY_SSL", "With wss:// (https://): check HA's certificate and host name.",
    flag="--ha-verify-ssl/--no-ha-verify-ssl")]
HaSslCaCert = Annotated[str, Var(
    "HA_SSL_CA_CERT", "With wss://: CA file that signs HA's certificate (instead of the system's).",
    a_file_or_empty, flag="--ha-ssl-ca-cert")]

HaCommandTimeout = Annotated[float, Var("HA_COMMAND_TIMEOUT_S", "Timeout of one command (registries, history), s.",
                                        positive)]


def ha_tls(url: str, verify_ssl: bool, ssl_ca_cert: str) -> ssl.SSLContext | None:
    """The TLS settings of a wss:// connection to HA (None for ws://)."""
    if not url.startswith("wss:"):
        return None
    return ssl_context(verify_ssl, ssl_ca_cert)


def read_ha_token() -> str:
    """HA's long-lived access token, from HA_TOKEN or the file HA_TOKEN_FILE names."""
    return read_secret("HA_TOKEN")
