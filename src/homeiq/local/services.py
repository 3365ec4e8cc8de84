"""Private `redis-server`, `redis-sentinel` and `influxd` processes on free loopback ports, in a directory of their
own."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
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
                 replica_of: int | None = None, config_file: bool = False, password: str = "",
                 min_replicas: tuple[int, int] = (0, 10), aclfile: Path | None = None,
                 login: tuple[str, str] | None = None, master_login: tuple[str, str] | None = None,
                 tls: Path | None = None) -> None:
        super().__init__(workdir, port)
        self.tls = tls  # a folder with ca.pem, server.pem, server.key: TLS only, replication included
        self.master_login = master_login  # the user a replica syncs as (masteruser, masterauth): any node may be one
        self.appendonly = appendonly
        self.maxmemory = maxmemory  # a cap (Redis's units: 256mb), then XADD is refused and the collector spools
        self.replica_of = replica_of  # the port of its primary on 127.0.0.1 (replicaof), for a Sentinel set-up
        # A config file (empty: the flags say everything) that CONFIG REWRITE can write, as Sentinel's does when it
        # turns a node into a primary or a replica; without one the node runs as started.
        self.config_file = config_file or replica_of is not None
        self.password = password  # requirepass, and masterauth: any node may become the primary
        self.min_replicas = min_replicas  # min-replicas-to-write, min-replicas-max-lag (s): 0, off
        self.aclfile = aclfile  # its users (`replayer acl-file`); `login` is one of them that may run INFO
        self.login = login

    @property
    def url(self) -> str:
        """redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> RedisServer:
        """Start (or restart, keeping the data directory, and the config file Sentinel may have rewritten, where
        the flags do not say otherwise) and wait for PING."""
        config: list[str] = []
        if self.config_file:
            path = self.workdir / "redis.conf"
            if not path.exists():
                path.write_text(f"replicaof 127.0.0.1 {self.replica_of}\n" if self.replica_of else "")
            config = [str(path)]
        self._spawn([
            _binary("redis-server", "redis-server"), *config, *_tls_flags(self.port, self.tls), "--bind", "127.0.0.1",
            "--dir", str(self.workdir), "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
            "--save", "", "--maxmemory", self.maxmemory, "--maxmemory-policy", "noeviction",
            "--daemonize", "no", "--protected-mode", "no",
            *(["--requirepass", self.password, "--masterauth", self.password] if self.password else []),
            "--min-replicas-to-write", str(self.min_replicas[0]), "--min-replicas-max-lag", str(self.min_replicas[1]),
            *(["--aclfile", str(self.aclfile)] if self.aclfile else []),
            *(["--masteruser", self.master_login[0], "--masterauth", self.master_login[1]]
              if self.master_login else []),
        ])
        self._wait_until(self._pong, timeout_s)
        return self

    def _pong(self) -> bool:
        """Ready when the server on our port is our process (another one may have taken a free port)."""
        if self.process is None:
            return False
        try:
            with _connect(self.port, self.tls) as sock:
                sock.sendall(_auth(self.login or self.password) + b"INFO server\r\n")
                reply = b""
                while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
        except OSError:
            return False
        return f"process_id:{self.process.pid}\r\n".encode() in reply


SENTINEL_CONFIG = """\
port {port}
bind 127.0.0.1
protected-mode no
daemonize no
dir {dir}
sentinel monitor {service} 127.0.0.1 {primary_port} {quorum}
sentinel down-after-milliseconds {service} {down_after_ms}
sentinel failover-timeout {service} {failover_timeout_ms}
sentinel parallel-syncs {service} 1
"""


def _auth(password: str | tuple[str, str]) -> bytes:
    """An AUTH command to send first (nothing without a password; a user and password as a RESP array, whatever
    they hold); its +OK comes before the reply wanted."""
    if isinstance(password, tuple):
        words = [b"AUTH", *(part.encode() for part in password)]
        return b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
    return f"AUTH {password}\r\n".encode() if password else b""


def _after_auth(reply: bytes, password: str | tuple[str, str]) -> bytes:
    return reply.removeprefix(b"+OK\r\n") if password else reply


class RedisSentinel(_Process):
    """redis-sentinel monitoring the primary on 127.0.0.1:`primary_port` as `service`. Its config file is written
    on the first start only: Sentinel rewrites it with what it learns (its id, the replicas, the other sentinels,
    the current primary), and a restart goes on from there. Low `down_after_ms` and `failover_timeout_ms` make a
    failover on loopback take a few seconds (the defaults: 30 s and 3 minutes)."""

    name = "sentinel"

    def __init__(self, workdir: Path, port: int | None, primary_port: int, service: str = "homeiq",
                 quorum: int = 2, down_after_ms: int = 1000, failover_timeout_ms: int = 5000,
                 password: str = "", data_password: str = "", data_user: str = "", tls: Path | None = None) -> None:
        super().__init__(workdir, port)
        self.tls = tls  # TLS only, as RedisServer's; to the data nodes too (tls-replication)
        self.data_user = data_user  # the user it logs in to the data nodes as (sentinel auth-user), with data_password
        self.primary_port, self.service, self.quorum = primary_port, service, quorum
        self.password, self.data_password = password, data_password  # its own (requirepass), the data nodes'
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms

    @property
    def address(self) -> str:
        """host:port, as REDIS_SENTINELS lists it."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> RedisSentinel:
        """Start (or restart with what it rewrote) and wait until it answers."""
        path = self.workdir / "sentinel.conf"
        if not path.exists():
            path.write_text(SENTINEL_CONFIG.format(
                port=self.port, dir=self.workdir, service=self.service, primary_port=self.primary_port,
                quorum=self.quorum, down_after_ms=self.down_after_ms, failover_timeout_ms=self.failover_timeout_ms)
                + (f"requirepass {self.password}\n" if self.password else "")
                + (f"sentinel auth-user {self.service} {self.data_user}\n" if self.data_user else "")
                + _as_config(_tls_flags(self.port, self.tls))
                + (f"sentinel auth-pass {self.service} {self.data_password}\n" if self.data_password else ""))
        self._spawn([_binary("redis-sentinel", "redis-sentinel"), str(path)])
        self._wait_until(self._answers, timeout_s)
        return self

    def _answers(self) -> bool:
        try:
            return self.primary() is not None
        except OSError:
            return False

    def primary(self) -> tuple[str, int] | None:
        """The primary this sentinel names now (`SENTINEL GET-MASTER-ADDR-BY-NAME`), None when it names none."""
        with _connect(self.port, self.tls) as sock:
            sock.sendall(_auth(self.password) + f"SENTINEL GET-MASTER-ADDR-BY-NAME {self.service}\r\n".encode())
            reply = b""
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    raise OSError("sentinel closed the connection")
                reply += chunk
                answer = _after_auth(reply, self.password)
                if answer.startswith((b"*-1", b"_", b"-")) or answer.count(b"\r\n") >= 5:
                    break
        lines = answer.split(b"\r\n")
        if not lines[0].startswith(b"*2"):
            return None
        return lines[2].decode(), int(lines[4])


class SentinelSet:
    """One primary, `replicas` replicas of it and `sentinels` sentinels watching it as `service`, all on loopback
    under `workdir` (the lab set-up of a Redis with Sentinel). `start()` returns once every sentinel knows every
    replica and every other sentinel, so that a failover can happen."""

    def __init__(self, workdir: Path, replicas: int = 2, sentinels: int = 3, service: str = "homeiq",
                 down_after_ms: int = 1000, failover_timeout_ms: int = 5000, password: str = "",
                 sentinel_password: str = "", min_replicas: tuple[int, int] = (0, 10), aclfile: Path | None = None,
                 logins: Mapping[str, tuple[str, str]] | None = None, tls: Path | None = None) -> None:
        # With an ACL file (`replayer acl-file`), `logins` holds the users of "admin" (readiness checks), "replica"
        # (masteruser) and "sentinel" (sentinel auth-user).
        logins = logins or {}

        def node(n: int, replica_of: int | None) -> RedisServer:
            return RedisServer(workdir / f"redis-{n}", None, replica_of=replica_of, config_file=True,
                               password=password, min_replicas=min_replicas, aclfile=aclfile,
                               login=logins.get("admin"), master_login=logins.get("replica"), tls=tls)

        primary = node(0, None)
        self.servers = [primary, *(node(n, primary.port) for n in range(1, replicas + 1))]
        data_user, data_password = logins.get("sentinel", ("", password))
        self.sentinels = [RedisSentinel(workdir / f"sentinel-{n}", None, primary.port, service, sentinels // 2 + 1,
                                        down_after_ms, failover_timeout_ms, sentinel_password, data_password,
                                        data_user, tls)
                          for n in range(sentinels)]
        self.service = service

    @property
    def addresses(self) -> str:
        """REDIS_SENTINELS for this set."""
        return ",".join(sentinel.address for sentinel in self.sentinels)

    def start(self, timeout_s: float = 30.0) -> SentinelSet:
        for server in self.servers:
            server.start()
        for sentinel in self.sentinels:
            sentinel.start()
        deadline = time.monotonic() + timeout_s
        while not all(self._knows_all(sentinel) for sentinel in self.sentinels):
            if time.monotonic() > deadline:
                raise ServiceError(f"the sentinels did not discover each other and the replicas in {timeout_s:g} s")
            time.sleep(0.2)
        return self

    def _knows_all(self, sentinel: RedisSentinel) -> bool:
        """The replicas are in sync with the primary (not still loading its first copy: a primary killed then
        would leave them without what it had acknowledged), and `sentinel` knows them and the other sentinels."""
        primary = self.servers[0]
        in_sync = _info(primary.port, "replication", primary.login or primary.password, primary.tls).count(
            ",state=online,")
        wanted = f"slaves={len(self.servers) - 1},sentinels={len(self.sentinels)}"
        return in_sync == len(self.servers) - 1 and wanted in _info(sentinel.port, "sentinel", sentinel.password,
                                                                     sentinel.tls)

    def primary(self) -> RedisServer | None:
        """The server that the first sentinel which names a primary names (None: none does)."""
        for sentinel in self.sentinels:
            with contextlib.suppress(OSError):
                named = sentinel.primary()
                if named is not None:
                    return next((s for s in self.servers if s.port == named[1]), None)
        return None

    def stop(self) -> None:
        for process in [*self.sentinels, *self.servers]:
            process.stop()


def _tls_flags(port: int, tls: Path | None) -> list[str]:
    """Where a server listens: `--port`, or with a TLS folder `--port 0` and TLS on `port`, replication and (for a
    sentinel) its links to the data nodes over TLS too, clients checked against nothing (no client certificates)."""
    if tls is None:
        return ["--port", str(port)]
    return ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tls / "server.pem"),
            "--tls-key-file", str(tls / "server.key"), "--tls-ca-cert-file", str(tls / "ca.pem"),
            "--tls-auth-clients", "no", "--tls-replication", "yes"]


def _as_config(flags: list[str]) -> str:
    """`--name value` pairs as lines of a configuration file."""
    return "".join(f"{name.removeprefix('--')} {value}\n" for name, value in zip(flags[::2], flags[1::2], strict=True))


def _connect(port: int, tls: Path | None) -> socket.socket:
    """A connection to 127.0.0.1:`port`, over TLS checked against the folder's CA when there is one."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=1)
    if tls is None:
        return sock
    return ssl.create_default_context(cafile=str(tls / "ca.pem")).wrap_socket(sock, server_hostname="127.0.0.1")


def _info(port: int, section: str, password: str | tuple[str, str] = "", tls: Path | None = None) -> str:
    """INFO `section` of the server on 127.0.0.1:`port`, as text ("" when it does not answer)."""
    try:
        with _connect(port, tls) as sock:
            sock.sendall(_auth(password) + f"INFO {section}\r\n".encode())
            reply = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
                header, _, body = _after_auth(reply, password).partition(b"\r\n")
                if header.startswith(b"-"):
                    break
                if header.startswith(b"$") and len(body) >= int(header[1:]):
                    break
    except OSError:
        return ""
    return reply.decode(errors="replace")


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

    @contextlib.contextmanager
    def scratch_database(self, name: str) -> Iterator[str]:
        """A database created for a block and dropped after it. Each database keeps its shard's files open for
        influxd's life: a test server that gathers ~2,000 of them runs out of descriptors and answers nonsense."""
        self.create_database(name)
        try:
            yield name
        finally:
            self.query(f'DROP DATABASE "{name}"', epoch=None)

    def databases(self) -> list[str]:
        """SHOW DATABASES, `_internal` left out."""
        series = self.query("SHOW DATABASES", epoch=None)["results"][0].get("series", [])
        return [row[0] for s in series for row in s.get("values", []) if row[0] != "_internal"]
