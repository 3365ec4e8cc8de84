"""InfluxDB write endpoints (v2 through influxdb-client's async API, v1 through `/write`) and answer classes."""

from __future__ import annotations

import asyncio
import base64
import enum
import ssl
from collections.abc import Mapping
from typing import Final, Protocol

import aiohttp
import msgspec
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException
from isal import igzip

from homeiq_shared.settings import redact_url


class Outcome(enum.Enum):
    """What the writer must do after an answer (the design's answer table)."""

    OK = "ok"
    BAD_DATA = "bad_data"  # 400 about lines / 413 / 422: bisect, dead-letter a single entry that still fails
    REFUSED = "refused"  # 400 about the request / 401 / 403 / 404 / other 4xx: not ready, retry, never dead-letter
    RETRY = "retry"  # 429 / 5xx / timeout / connection refused: back off and retry the same batch


class WriteResult(msgspec.Struct, frozen=True):
    """The classified answer to one write request."""

    outcome: Outcome
    status: int | None = None
    detail: str = ""
    retry_after_s: float | None = None


# How a 400 about the request itself (its parameters, its encoding) starts, as influxd 1.x and InfluxDB 2.x word
# it: bisecting cannot help. Only the start of the structured error counts: influxd repeats a rejected line in
# answers that start "unable to parse" or "partial write:", so user data may follow any of these words.
_REQUEST_PROBLEMS: Final = (
    "database is required",  # 1.x: no db parameter
    "invalid consistency level",  # 1.x
    "gzip: ", "flate: ", "unexpected EOF",  # 1.x: a body that does not decompress
    "invalid precision",  # 2.x
    "unable to read data",  # 2.x: a body that does not decompress (413 when too large)
    "writing requires points",  # 2.x: an empty body
    "Please provide either orgID or org",  # 2.x: no org parameter
)
# How answers about lines start (1.x and 2.x alike), whatever they go on to repeat.
_LINE_PROBLEMS: Final = ("unable to parse", "partial write:", "field type conflict")


def _error_message(body: str) -> str | None:
    """InfluxDB's error message: `error` (1.x) or `message` (2.x) of a JSON object; None if there is none."""
    try:
        answer = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    message = answer.get("message", answer.get("error")) if isinstance(answer, dict) else None
    return message if isinstance(message, str) else None


def classify(status: int, body: str, retry_after: str | None) -> WriteResult:
    """Map an HTTP answer to an Outcome, from its status and the start of InfluxDB's structured error."""
    detail = body.strip()[:500]
    if 200 <= status < 300:
        return WriteResult(Outcome.OK, status)
    if status == 429 or status >= 500:
        return WriteResult(Outcome.RETRY, status, detail, _retry_after_s(retry_after))
    if status in (413, 422):
        return WriteResult(Outcome.BAD_DATA, status, detail)
    if status == 400 and (message := _error_message(body)) is not None:
        message = message.lstrip()
        if message.startswith(_LINE_PROBLEMS) or not message.startswith(_REQUEST_PROBLEMS):
            return WriteResult(Outcome.BAD_DATA, status, detail)  # any other 400 of InfluxDB's is about lines too
    # A 400 about the request, or not InfluxDB's own (a proxy's, say): hold the batch, bisecting cannot help.
    return WriteResult(Outcome.REFUSED, status, detail)


def _retry_after_s(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP-date: fall back to our own backoff


def gzip_body(body: bytes) -> bytes:
    """gzip level 1 through ISA-L: the same ratio as zlib's level 1 at about four times the speed."""
    return igzip.compress(body, 1)


async def compress(body: bytes) -> bytes:
    """gzip_body in a thread: ISA-L releases the GIL, so it overlaps with the event loop's work."""
    return await asyncio.to_thread(gzip_body, body)


def _probe_answer(status: int, body: str, retry_after: str | None) -> WriteResult:
    """The answer to a write of no points. Authentication, authorization and the database or bucket are checked
    before the body in every version, so past those an answer about the (empty) lines means we may write:
    InfluxDB 2.0 answers "writing requires points", later versions 204."""
    result = classify(status, body, retry_after)
    if result.outcome is Outcome.BAD_DATA:
        return WriteResult(Outcome.OK, status)
    message = _error_message(body) or ""
    if status == 400 and message.lstrip().startswith("writing requires points"):
        return WriteResult(Outcome.OK, status)
    return result


class InfluxSink(Protocol):
    """Where batches of line protocol go."""

    url: str

    async def write(self, body: bytes, gzipped: bytes | None = None) -> WriteResult:
        """Write one batch of newline-separated lines (ns precision; `gzipped` when already compressed)."""
        ...

    async def check(self) -> WriteResult:
        """Whether InfluxDB is reachable, accepts our credentials and has our database or bucket: a write of no
        points, which every version answers (1.x, 2.x, 3.x's compatibility endpoints) and which needs nothing
        but the permission to write."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class V1Sink:
    """InfluxDB 1.x `/write` (also InfluxDB 2/3's v1 compatibility endpoint)."""

    def __init__(
        self, url: str, database: str, retention_policy: str, username: str, password: str, timeout_s: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._tls = tls
        self._params = {"db": database, "precision": "ns"}
        if retention_policy:
            self._params["rp"] = retention_policy
        self._headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"}
        if username:
            credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {credentials}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._tls) if self._tls else None)
        return self._session

    async def write(self, body: bytes, gzipped: bytes | None = None) -> WriteResult:
        """POST the gzip-compressed batch."""
        self._session = self._http()
        try:
            async with self._session.post(
                f"{self.url}/write",
                params=self._params,
                data=gzipped or await compress(body),
                headers=self._headers,
            ) as resp:
                text = await resp.text()
                return classify(resp.status, text, resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            return WriteResult(Outcome.RETRY, None, f"{type(exc).__name__} at {redact_url(self.url)}: {exc}")

    async def check(self) -> WriteResult:
        """An empty write with our credentials: 2xx → ready; 401/403 (credentials), 404 (no such database) →
        refused. Needs only the permission to write, and InfluxDB 2 and 3 answer it on their /write too."""
        headers = {k: v for k, v in self._headers.items() if k == "Authorization"}
        try:
            async with self._http().post(f"{self.url}/write", params=self._params, data=b"", headers=headers) as resp:
                return _probe_answer(resp.status, await resp.text(), resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            return WriteResult(Outcome.RETRY, None, f"{type(exc).__name__} at {redact_url(self.url)}: {exc}")

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class V2Sink:
    """InfluxDB 2.x `/api/v2/write` through influxdb-client's async write API (gzip, synchronous answer)."""

    def __init__(self, url: str, org: str, bucket: str, token: str, timeout_s: float,
                 tls: ssl.SSLContext | None = None) -> None:
        self.url = url.rstrip("/")
        self._org, self._bucket, self._token = org, bucket, token
        self._tls = tls
        self._timeout_ms = int(timeout_s * 1000)
        self._client: InfluxDBClientAsync | None = None

    async def write(self, body: bytes, gzipped: bytes | None = None) -> WriteResult:
        """Write through WriteApiAsync (which compresses itself); its await returns after InfluxDB answered."""
        if self._client is None:
            self._client = InfluxDBClientAsync(
                url=self.url, token=self._token, org=self._org, timeout=self._timeout_ms, enable_gzip=True,
                **({"ssl_context": self._tls} if self._tls is not None else {}),
            )
        try:
            await self._client.write_api().write(
                bucket=self._bucket, org=self._org, record=body, write_precision=WritePrecision.NS,  # type: ignore[arg-type]
            )
        except ApiException as exc:
            headers: Mapping[str, str] = exc.headers or {}
            body_text = exc.body.decode() if isinstance(exc.body, bytes) else str(exc.body or "")
            return classify(int(exc.status or 0), body_text, headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            return WriteResult(Outcome.RETRY, None, f"{type(exc).__name__} at {redact_url(self.url)}: {exc}")
        return WriteResult(Outcome.OK, 204)

    async def check(self) -> WriteResult:
        """An empty write to /api/v2/write with our token: 2xx (or 2.0's 400 "writing requires points") → ready;
        401/403 (token) or 404 (org or bucket) → refused. Never /api/v2/buckets: InfluxDB 3 does not serve it,
        and a write-only token may not read it."""
        timeout = aiohttp.ClientTimeout(total=self._timeout_ms / 1000)
        try:
            async with aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(ssl=self._tls) if self._tls else None,
            ) as session, session.post(
                f"{self.url}/api/v2/write", params={"org": self._org, "bucket": self._bucket, "precision": "ns"},
                data=b"", headers={"Authorization": f"Token {self._token}"},
            ) as resp:
                return _probe_answer(resp.status, await resp.text(), resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            return WriteResult(Outcome.RETRY, None, f"{type(exc).__name__} at {redact_url(self.url)}: {exc}")

    async def close(self) -> None:
        """Close the client."""
        if self._client is not None:
            await self._client.close()  # type: ignore[no-untyped-call]
            self._client = None
