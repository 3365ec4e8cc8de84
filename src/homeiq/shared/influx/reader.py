"""Reading state points back from InfluxDB with InfluxQL (`/query`: InfluxDB 1.x, and 2.x/3.x through their
v1-compatible endpoint with a token), one query per batch of entities and time window."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import aiohttp
import msgspec

from homeiq.shared.influx.haschema import PRECISION_NS
from homeiq.shared.influx.lineprotocol import MEASUREMENT, original_tag_value, tag_value
from homeiq.shared.influx.settings import InfluxSettings
from homeiq.shared.settings import redact_url


class InfluxReadError(Exception):
    """InfluxDB did not answer a query; the message names the URL and what it said."""


class StoredState(msgspec.Struct, frozen=True):
    """One state point as InfluxDB holds it."""

    entity_id: str
    time_ns: int
    state: str
    # Written from a live event, so the pipeline ran then (the `homeiq` schema's `source`; in the `ha` schema a live
    # point is written as HA's integration writes it, so one of the integration's from before a migration looks alike).
    live: bool = False


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def states_query(entity_ids: list[str], start_ns: int, end_ns: int, schema: str = "homeiq") -> str:
    """InfluxQL for the state points of `entity_ids` in [start, end): in the `homeiq` schema one measurement
    with the full entity id; in the `ha` schema any measurement, tags `domain` and object id, and the state
    as `state` (a string) or `value` (a number)."""
    window = f"time >= {start_ns} AND time < {end_ns}"
    if schema == "ha":
        entities = " OR ".join(
            f'("domain" = {_quote(tag_value(domain))} AND "entity_id" = {_quote(tag_value(object_id))})'
            for domain, _, object_id in (e.partition(".") for e in entity_ids))
        return f'SELECT "state", "value", "entity_id", "domain" FROM /.*/ WHERE ({entities}) AND {window}'  # noqa: S608
    entities = " OR ".join(f'"entity_id" = {_quote(tag_value(e))}' for e in entity_ids)
    return (f'SELECT "state_value", "entity_id", "source" FROM "{MEASUREMENT}" '  # noqa: S608 - values quoted
            f"WHERE \"event_type\" = 'state_changed' AND ({entities}) AND {window}")


class InfluxReader:
    """Runs InfluxQL against the writer's InfluxDB settings (v1 credentials or the v2 token)."""

    def __init__(self, settings: InfluxSettings, username: str = "", password: str = "", token: str = "") -> None:
        self.url = settings.url.rstrip("/")
        self._params = {"db": settings.bucket, "epoch": "ns", "chunked": "true", "chunk_size": "10000"}
        if settings.retention_policy:
            self._params["rp"] = settings.retention_policy
        self._headers: dict[str, str] = {}
        if token:
            self._headers["Authorization"] = f"Token {token}"
        elif username:
            self._headers["Authorization"] = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self._timeout = aiohttp.ClientTimeout(total=max(60.0, settings.timeout_s))
        self._tls = settings.tls()
        self.schema = settings.schema
        self.precision_ns = point_precision_ns(settings)
        # The `ha` schema of an api_version 2 file stamps times as the integration's v2 client does (`point_time_ns`).
        self.through_float = settings.schema == "ha" and settings.config is not None \
            and settings.config.words.api_version == "2"
        self._session: aiohttp.ClientSession | None = None

    async def states(self, entity_ids: list[str], start_ns: int, end_ns: int) -> list[StoredState]:
        """Every state point of these entities in [start, end)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._tls) if self._tls is not None else None
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
        query = states_query(entity_ids, start_ns, end_ns, self.schema)
        try:
            async with self._session.post(f"{self.url}/query", data={"q": query}, params=self._params,
                                          headers=self._headers) as resp:
                text = await resp.text()
                if resp.status != 200:
                    raise InfluxReadError(f"InfluxDB at {redact_url(self.url)} answered {resp.status}: {text[:300]}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise InfluxReadError(f"InfluxDB at {redact_url(self.url)} is unreachable: {exc}") from None
        return list(_parse(text, self.url))

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Series(msgspec.Struct):
    columns: list[str]
    values: list[list[Any]] = []


class _Result(msgspec.Struct):
    series: list[_Series] = []
    error: str | None = None


class _Answer(msgspec.Struct):
    results: list[_Result] = []


_answer_decoder = msgspec.json.Decoder(_Answer)


def _parse(text: str, url: str) -> Iterator[StoredState]:
    """The rows of a chunked answer: one JSON document per line. Anything else (a proxy's HTML page with a 200)
    is InfluxDB not answering, not a bug of ours."""
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            answer = _answer_decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise InfluxReadError(f"InfluxDB at {redact_url(url)} answered 200 with something that is not JSON "
                                  f"of a query ({exc}): {line[:200]!r}") from None
        for result in answer.results:
            if result.error is not None:
                raise InfluxReadError(f"InfluxDB at {redact_url(url)} refused the query: {result.error}")
            for series in result.series:
                for row in series.values:
                    yield from _state_of(dict(zip(series.columns, row, strict=True)))


def _state_of(row: dict[str, Any]) -> Iterator[StoredState]:
    """The stored state of one row of either schema (a number as its repr: the audit compares numbers)."""
    if "state_value" in row:
        if row["state_value"] is not None:
            yield StoredState(original_tag_value(row["entity_id"]), int(row["time"]), row["state_value"],
                              row.get("source") == "live")
        return
    state = row["state"] if row["state"] is not None else (repr(float(row["value"])) if row["value"] is not None
                                                           else None)
    if state is not None:
        entity_id = f"{original_tag_value(row['domain'])}.{original_tag_value(row['entity_id'])}"
        yield StoredState(entity_id, int(row["time"]), state)  # live or HA's own integration's: not told apart


def point_precision_ns(settings: InfluxSettings) -> int:
    """How finely the writers stamp points: the `ha` schema cuts times to the file's `precision`, as HA's
    integration does; the `homeiq` schema keeps nanoseconds."""
    if settings.schema != "ha" or settings.config is None:
        return 1
    return PRECISION_NS[settings.config.words.precision]


def reader_for(settings: InfluxSettings) -> InfluxReader:
    """A reader with the writer's credentials and TLS settings."""
    secret = settings.secret()
    if settings.api == "v2":
        return InfluxReader(settings, token=secret)
    return InfluxReader(settings, username=settings.username, password=secret)
