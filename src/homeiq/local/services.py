"""Private `redis-server` and `influxd` processes on free loopback ports, in a directory of their own."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class ServiceError(RuntimeError):
    """A local service could not be started; the message says what to do."""


_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago and that this process has not handed out before: the
    kernel's bind(0) returns a port freed a moment ago again, and a port picked for a process that binds it later
    (Home Assistant, seconds after it is configured) must not go to a server started meanwhile."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def _binary(name: str, package: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if found is None:
        raise ServiceError(f"{name} not found: install the Debian package with `apt-get install {package}`")
    return found


class _Process:
    """A child process with a log file; `stop()` terminates it."""

    name = "service"

    def __init__(self, workdir: Path, port: int | None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def _spawn(self, args: list[str]) -> None:
        log = (self.workdir / f"{self.name}.log").open("ab")
        # A session of its own: a Ctrl-C at the terminal reaches only the supervisor, which stops us in order.
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                        start_new_session=True)
        log.close()

    def _wait_until(self, ready: Any, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                tail = (self.workdir / f"{self.name}.log").read_text(errors="replace")[-2000:]
                raise ServiceError(f"{self.name} exited with {self.process.returncode}:\n{tail}")
            if ready():
                return
            time.sleep(0.05)
        raise ServiceError(f"{self.name} did not become ready on port {self.port} within {timeout_s:g} s")

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut would (no shutdown work: a server loses what it did not sync)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class RedisServer(_Process):
    """redis-server with AOF on (appendfsync everysec), as production runs it (`appendonly=False`: a Redis
    that persists nothing, for the tests of what the pipeline does with one)."""

    name = "redis"

    def __init__(self, workdir: Path, port: int | None, appendonly: bool = True, maxmemory: str = "0",
                 aclfile: Path | None = None, login: tuple[str, str] | None = None) -> None:
        super().__init__(workdir, port)
        self.appendonly = appendonly
        self.maxmemory = maxmemory  # a cap (Redis's units: 256mb), then XADD is refused and the collector spools
        self.aclfile = aclfile  # its users (`replayer acl-file`); `login` is one of them that may run INFO
        self.login = login

    @property
    def url(self) -> str:
        """redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> RedisServer:
        """Start (or restart, keeping the data directory) and wait for PING."""
        self._spawn([
            _binary("redis-server", "redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.workdir), "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
            "--save", "", "--maxmemory", self.maxmemory, "--maxmemory-policy", "noeviction",
            "--daemonize", "no", "--protected-mode", "no",
            *(["--aclfile", str(self.aclfile)] if self.aclfile else []),
        ])
        self._wait_until(self._pong, timeout_s)
        return self

    def _pong(self) -> bool:
        """Ready when the server on our port is our process (another one may have taken a free port)."""
        if self.process is None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                if self.login:
                    words = [b"AUTH", *(part.encode() for part in self.login)]
                    sock.sendall(b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words))
                sock.sendall(b"INFO server\r\n")
                reply = b""
                while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
        except OSError:
            return False
        return f"process_id:{self.process.pid}\r\n".encode() in reply


INFLUXD_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{dir}/meta"
[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  auth-enabled = {auth}
  log-enabled = false
  max-body-size = 25000000
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"""


class InfluxServer(_Process):
    """Debian's influxd (InfluxDB 1.x, v1 write API) with its own config, data and ports."""

    name = "influxd"

    def __init__(self, workdir: Path, port: int | None, admin_password: str | None = None) -> None:
        super().__init__(workdir, port)
        self.admin_password = admin_password  # auth on, with user `admin`, when set

    @property
    def url(self) -> str:
        """Base http:// URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> InfluxServer:
        """Start and wait until /ping answers 204."""
        config = self.workdir / "influxd.conf"
        auth = "true" if self.admin_password else "false"
        config.write_text(INFLUXD_CONFIG.format(dir=self.workdir, port=self.port, rpc_port=free_port(), auth=auth))
        self._spawn([_binary("influxd", "influxdb"), "-config", str(config)])
        self._wait_until(self._ping, timeout_s)
        if self.admin_password:  # the first user may be created without credentials
            self.query(f"CREATE USER admin WITH PASSWORD '{self.admin_password}' WITH ALL PRIVILEGES", epoch=None,
                       authenticate=False)
        return self

    def _ping(self) -> bool:
        """Ready when the influxd answering on our port runs our config (not a neighbour's on a reused port)."""
        try:
            with urllib.request.urlopen(f"{self.url}/debug/vars", timeout=1) as resp:  # noqa: S310 - loopback
                return str(self.workdir / "influxd.conf") in json.loads(resp.read()).get("cmdline", [])
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def query(self, statement: str, database: str | None = None, epoch: str | None = "ns",
              authenticate: bool = True) -> dict[str, Any]:
        """Run an InfluxQL statement (POST /query) and return the decoded JSON answer."""
        with urllib.request.urlopen(self._request(statement, database, epoch, authenticate),  # noqa: S310
                                    timeout=60) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
        return answer

    def query_chunks(self, statement: str, database: str, chunk_size: int = 50_000) -> Iterator[dict[str, Any]]:
        """Run a query whose answer comes in chunks of `chunk_size` rows (one JSON document a line)."""
        request = self._request(statement, database, "ns", True, {"chunked": "true", "chunk_size": str(chunk_size)})
        with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310 - loopback; 60 s per chunk
            for line in resp:
                if line.strip():
                    yield json.loads(line)

    def _request(self, statement: str, database: str | None, epoch: str | None, authenticate: bool,
                 extra: dict[str, str] | None = None) -> urllib.request.Request:
        params = {"q": statement, **(extra or {})}
        headers = {}
        if self.admin_password and authenticate:  # influxd reads credentials from the URL or Basic auth only
            token = base64.b64encode(f"admin:{self.admin_password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        if database:
            params["db"] = database
        if epoch:
            params["epoch"] = epoch
        data = urllib.parse.urlencode(params).encode()
        return urllib.request.Request(f"{self.url}/query", data=data, headers=headers)  # noqa: S310

    def points(self, database: str) -> list[dict[str, Any]]:
        """Every point of `home_assistant_events` as a dict of column → value (time in ns). Read in chunks:
        one answer of millions of points would outlast the request's timeout."""
        points: list[dict[str, Any]] = []
        for answer in self.query_chunks("SELECT * FROM home_assistant_events", database):
            for result in answer.get("results", []):
                if "error" in result:
                    raise ServiceError(f"query failed: {result['error']}")
                for series in result.get("series", []):
                    points.extend(dict(zip(series["columns"], row, strict=True)) for row in series["values"])
        return points

    def count(self, database: str) -> int:
        """How many points `home_assistant_events` holds (counted on the always-present `source` field)."""
        answer = self.query("SELECT COUNT(source) FROM home_assistant_events", database)
        series = answer["results"][0].get("series")
        return int(series[0]["values"][0][1]) if series else 0

    def create_database(self, name: str) -> None:
        """CREATE DATABASE (idempotent)."""
        self.query(f'CREATE DATABASE "{name}"', epoch=None)
