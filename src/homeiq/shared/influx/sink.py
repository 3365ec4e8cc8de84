"""InfluxDB write endpoints (v1 `/write`, v2 `/api/v2/write`) and the classes of their answers."""

from __future__ import annotations

import asyncio
import base64
import enum
import ssl
import time
from typing import TYPE_CHECKING, Final, Protocol
from urllib.parse import urlsplit

import aiohttp
import msgspec
from isal import igzip

from homeiq.shared.certs import peer_expiry
from homeiq.shared.settings import redact_url

if TYPE_CHECKING:
    from homeiq.shared.influx.settings import InfluxSettings


CERT_PROBE_INTERVAL_S: Final = 3600.0  # how often the writers read InfluxDB's certificate


class Outcome(enum.Enum):
    """What the writer must do after an answer: each member names the answers it stands for."""

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


_BEYOND_RETENTION: Final = "partial write: points beyond retention policy"


def beyond_retention(result: WriteResult) -> bool:
    """InfluxDB refused lines as older than its retention policy (1.x: 400 "partial write: points beyond retention
    policy dropped=N"; 2.x: 422, the same words after "failure writing points to database: "): a redrive cannot
    land them while the policy stands. Read from the structured error, never from a line it quotes."""
    if result.outcome is not Outcome.BAD_DATA:
        return False
    message = (_error_message(result.detail) or "").lstrip()
    return not message.startswith("unable to parse") and _BEYOND_RETENTION in message


def _retry_after_s(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP-date: fall back to our own backoff


def gzip_body(body: bytes) -> bytes:
    """gzip level 1 through ISA-L: the same ratio as zlib's level 1 at about four times the speed."""
    return igzip.compress(body, 1)


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
    """Where batches of line protocol go; the sink decides how a body travels (it compresses it)."""

    url: str

    def prepare(self, body: bytes) -> bytes:
        """The request body for `body` (newline-separated lines): what `write` sends. CPU-bound: callers run a
        large one in a thread."""
        ...

    async def write(self, prepared: bytes) -> WriteResult:
        """Write one batch that `prepare` made (ns precision)."""
        ...

    async def check(self) -> WriteResult:
        """Whether InfluxDB is reachable, accepts our credentials and has our database or bucket: a write of no
        points, which every version answers (1.x, 2.x, 3.x's compatibility endpoints) and which needs nothing
        but the permission to write."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class HttpSink:
    """One write endpoint over HTTP: the lines gzip-compressed once, by ISA-L (the same format and ratio as
    zlib's level 1 at four times its speed), and POSTed as they are."""

    def __init__(self, url: str, path: str, params: dict[str, str], auth: str, timeout_s: float,
                 tls: ssl.SSLContext | None = None) -> None:
        self.url = url.rstrip("/")
        self._endpoint, self._params, self._tls = f"{self.url}{path}", params, tls
        self._auth = {"Authorization": auth} if auth else {}
        self._headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8", **self._auth}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self.cert_expiry_s: float | None = None  # notAfter of the certificate an https:// InfluxDB last showed
        self._probed = -CERT_PROBE_INTERVAL_S

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._tls) if self._tls else None)
        return self._session

    def prepare(self, body: bytes) -> bytes:
        """gzip level 1 through ISA-L."""
        return gzip_body(body)

    async def write(self, prepared: bytes) -> WriteResult:
        """POST the compressed batch."""
        try:
            async with self._http().post(self._endpoint, params=self._params, data=prepared,
                                         headers=self._headers) as resp:
                await self._probe_certificate()
                return classify(resp.status, await resp.text(), resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            return WriteResult(Outcome.RETRY, None, f"{type(exc).__name__} at {redact_url(self.url)}: {exc}")

    async def check(self) -> WriteResult:
        """An empty write with our credentials: 2xx → ready; 401/403 (credentials), 404 (no such database or
        bucket) → refused. Never /api/v2/buckets: InfluxDB 3 does not serve it, a write-only token may not read it."""
        try:
            async with self._http().post(self._endpoint, params=self._params, data=b"", headers=self._auth) as resp:
                await self._probe_certificate()
                return _probe_answer(resp.status, await resp.text(), resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            return WriteResult(Outcome.RETRY, None, f"{type(exc).__name__} at {redact_url(self.url)}: {exc}")

    async def _probe_certificate(self) -> None:
        """Once an hour, after an answer over https://: a TLS handshake of its own with InfluxDB, for the notAfter
        of the certificate it shows (aiohttp gives a finished response no transport). Failures are the write's to
        report: they leave the last value."""
        now = time.monotonic()
        if self._tls is None or now - self._probed < CERT_PROBE_INTERVAL_S:
            return
        self._probed = now
        parts = urlsplit(self.url)
        host, port = parts.hostname or "", parts.port or 443
        try:
            async with asyncio.timeout(self._timeout.total or 10):
                _, writer = await asyncio.open_connection(host, port, ssl=self._tls, server_hostname=host)
            try:
                self.cert_expiry_s = peer_expiry(writer.get_extra_info("ssl_object"))
            finally:
                writer.close()
        except (OSError, TimeoutError, ValueError):
            return

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def v1_sink(url: str, database: str, retention_policy: str, username: str, password: str, timeout_s: float,
            tls: ssl.SSLContext | None = None) -> HttpSink:
    """InfluxDB 1.x `/write` (also InfluxDB 2/3's v1 compatibility endpoint)."""
    params = {"db": database, "precision": "ns", **({"rp": retention_policy} if retention_policy else {})}
    auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode() if username else ""
    return HttpSink(url, "/write", params, auth, timeout_s, tls)


def v2_sink(url: str, org: str, bucket: str, token: str, timeout_s: float,
            tls: ssl.SSLContext | None = None) -> HttpSink:
    """InfluxDB 2.x `/api/v2/write` (InfluxDB 3's too). Not through influxdb-client: its async write API
    compresses again, with the standard library's level 6, inside the event loop (~42 ms for a 3 MB batch, the
    writer's own 0.6 ms in a thread), and cannot send a body compressed already."""
    return HttpSink(url, "/api/v2/write", {"org": org, "bucket": bucket, "precision": "ns"}, f"Token {token}",
                    timeout_s, tls)


def sink_for(settings: InfluxSettings) -> InfluxSink:
    """The sink these settings describe; secrets are read from INFLUXDB_TOKEN / INFLUXDB_PASSWORD (or their *_FILE),
    else from the configuration file's `token` / `password`."""
    secret, tls, s = settings.secret(), settings.tls(), settings
    if s.api == "v2":
        return v2_sink(s.url, s.org, s.bucket, secret, s.timeout_s, tls)
    return v1_sink(s.url, s.bucket, s.retention_policy, s.username, secret, s.timeout_s, tls)
