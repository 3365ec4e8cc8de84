"""InfluxDB write endpoints (v2 through influxdb-client's async API, v1 through `/write`) and answer classes."""

from __future__ import annotations

import asyncio
import base64
import enum
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


class InfluxSink(Protocol):
    """Where batches of line protocol go."""

    url: str

    async def write(self, body: bytes, gzipped: bytes | None = None) -> WriteResult:
        """Write one batch of newline-separated lines (ns precision; `gzipped` when already compressed)."""
        ...

    async def check(self) -> WriteResult:
        """Whether InfluxDB is reachable, accepts our credentials and has our database or bucket."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class V1Sink:
    """InfluxDB 1.x `/write` (also InfluxDB 2/3's v1 compatibility endpoint)."""

    def __init__(
        self, url: str, database: str, retention_policy: str, username: str, password: str, timeout_s: float
    ) -> None:
        self.url = url.rstrip("/")
        self._params = {"db": database, "precision": "ns"}
        if retention_policy:
            self._params["rp"] = retention_policy
        self._headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"}
        if username:
            credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {credentials}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def write(self, body: bytes, gzipped: bytes | None = None) -> WriteResult:
        """POST the gzip-compressed batch."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
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
        """SHOW DATABASES with our credentials: 401 → refused; our database missing → refused."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {k: v for k, v in self._headers.items() if k == "Authorization"}
        try:
            async with self._session.get(f"{self.url}/query", params={"q": "SHOW DATABASES"}, headers=headers) as resp:
                text = await resp.text()
                if resp.status != 200:
                    return classify(resp.status, text, resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            return WriteResult(Outcome.RETRY, None, f"{type(exc).__name__} at {redact_url(self.url)}: {exc}")
        if f'["{self._params["db"]}"]' not in text:
            return WriteResult(Outcome.REFUSED, 404, f'database "{self._params["db"]}" not found')
        return WriteResult(Outcome.OK, 200)

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class V2Sink:
    """InfluxDB 2.x `/api/v2/write` through influxdb-client's async write API (gzip, synchronous answer)."""

    def __init__(self, url: str, org: str, bucket: str, token: str, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self._org, self._bucket, self._token = org, bucket, token
        self._timeout_ms = int(timeout_s * 1000)
        self._client: InfluxDBClientAsync | None = None

    async def write(self, body: bytes, gzipped: bytes | None = None) -> WriteResult:
        """Write through WriteApiAsync (which compresses itself); its await returns after InfluxDB answered."""
        if self._client is None:
            self._client = InfluxDBClientAsync(
                url=self.url, token=self._token, org=self._org, timeout=self._timeout_ms, enable_gzip=True
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
        """The buckets API with our token: 401 → refused; our bucket missing → refused."""
        # The async client has no buckets API: one plain GET of /api/v2/buckets with our token.
        timeout = aiohttp.ClientTimeout(total=self._timeout_ms / 1000)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
                f"{self.url}/api/v2/buckets", params={"org": self._org, "name": self._bucket},
                headers={"Authorization": f"Token {self._token}"},
            ) as resp:
                text = await resp.text()
                if resp.status != 200:
                    return classify(resp.status, text, resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            return WriteResult(Outcome.RETRY, None, f"{type(exc).__name__} at {redact_url(self.url)}: {exc}")
        if f'"name":"{self._bucket}"' not in text.replace(" ", ""):
            return WriteResult(Outcome.REFUSED, 404, f'bucket "{self._bucket}" not found in org "{self._org}"')
        return WriteResult(Outcome.OK, 200)

    async def close(self) -> None:
        """Close the client."""
        if self._client is not None:
            await self._client.close()  # type: ignore[no-untyped-call]
            self._client = None
