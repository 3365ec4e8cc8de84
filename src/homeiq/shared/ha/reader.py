"""A short Home Assistant session (the audit's): the same connection code as the collector's, a few commands at a
time."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any, Final

import aiohttp
import msgspec

from homeiq.shared.ha.client import (
    WS_TIMEOUT,
    AuthInvalid,
    CommandFailed,
    ConnectionLost,
    HAConnection,
    LoggedOnly,
    reading,
)
from homeiq.shared.ha.frames import UNDECODABLE
from homeiq.shared.ha.history import HistoryRow, history_command, history_decoder
from homeiq.shared.ha.registry import REGISTRY_COMMANDS, Registry
from homeiq.shared.settings import redact_url

MAX_MESSAGE_BYTES: Final = 256 * 1024 * 1024  # a day of history of 50 busy entities, attributes included


class StateInfo(msgspec.Struct):
    """What the audit needs of a `get_states` entry."""

    entity_id: str
    attributes: msgspec.Raw = msgspec.Raw(b"{}")


_states_decoder = msgspec.json.Decoder(list[StateInfo])


class HAReadError(Exception):
    """Home Assistant could not be reached or refused; the message names the URL."""


class HAReader:
    """Commands on one authenticated connection; at most `concurrency` in flight (HA answers them in turn,
    and a history answer can be large)."""

    def __init__(self, conn: HAConnection, timeout_s: float, concurrency: int) -> None:
        self._conn, self._timeout_s = conn, timeout_s
        self._slots = asyncio.Semaphore(concurrency)

    async def command(self, payload: dict[str, Any]) -> msgspec.Raw:
        """One command's result."""
        async with self._slots:
            return await self._conn.command(payload, self._timeout_s)

    async def states(self) -> list[StateInfo]:
        """Every entity HA has now, with its attributes."""
        return _states_decoder.decode(await self.command({"type": "get_states"}))

    async def registry(self) -> Registry:
        """The device, entity, area and floor registries, as the collector enriches with them."""
        registry = Registry()
        for kind, command in REGISTRY_COMMANDS.items():
            registry.load(kind, bytes(await self.command({"type": command})))
        return registry

    async def history(self, entity_ids: list[str], start_ns: int, end_ns: int,
                      attributes: bool = False) -> dict[str, list[HistoryRow]]:
        """Every recorded state of these entities from `start_ns` to `end_ns`, attribute-only changes included;
        both ends a little wider (QUERY_MARGIN_NS), for the caller to cut exactly."""
        return history_decoder.decode(await self.command(history_command(entity_ids, start_ns, end_ns, attributes)))


@contextlib.asynccontextmanager
async def ha_session(url: str, token: str, timeout_s: float, concurrency: int,
                     tls: ssl.SSLContext | None = None) -> AsyncIterator[HAReader]:
    """Connect (with the collector's TLS settings for wss://) and authenticate; the reader task routes answers
    until the block ends."""
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(timeout_s):
                ws = await http.ws_connect(url, max_msg_size=MAX_MESSAGE_BYTES, timeout=WS_TIMEOUT,
                                           ssl=tls or True, decode_text=False)
            async with ws:
                conn = HAConnection(ws, LoggedOnly())
                await conn.authenticate(token, timeout_s)
                async with reading(conn, "audit-ha-reader"):
                    yield HAReader(conn, timeout_s, concurrency)
    except AuthInvalid:
        raise HAReadError(f"Home Assistant at {redact_url(url)} refused the token (auth_invalid): set HA_TOKEN or "
                          "HA_TOKEN_FILE to a long-lived access token of an admin user") from None
    except (ConnectionLost, CommandFailed) as exc:
        raise HAReadError(f"Home Assistant at {redact_url(url)}: {exc}") from None
    except UNDECODABLE as exc:
        raise HAReadError(f"Home Assistant at {redact_url(url)} sent an answer that cannot be read: "
                          f"{type(exc).__name__}: {str(exc)[:200]}") from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise HAReadError(f"Home Assistant at {redact_url(url)} is unreachable: {exc}") from None
