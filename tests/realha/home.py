"""A real Home Assistant for the tests: a configuration of its own (input helpers, template sensors that follow them,
the recorder on SQLite with a chosen commit interval, optionally HA's own `influxdb:` block), a long-lived access
token written into its auth storage before the first start, its REST API to drive it, and its recorder database as
the ground truth."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from homeiq.local.services import free_port
from homeiq.shared.times import float_ns
from tests.realha.install import Installed

BOOLEANS = 12
NUMBERS = 12
TEN_YEARS_S = 10 * 365 * 86_400


@dataclass(frozen=True)
class RecordedState:
    """A row of the recorder's `states` table: what HA keeps, and the time as a live event shows it."""

    entity_id: str
    state: str
    time_ns: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def access_token(refresh_id: str, jwt_key: str) -> str:
    """HA's long-lived access token for a refresh token: a HS256 JWT (`auth/__init__.py` async_create_access_token)."""
    now = int(time.time())
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps({"iss": refresh_id, "iat": now, "exp": now + TEN_YEARS_S}).encode())
    signature = hmac.new(jwt_key.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def auth_storage(version: str) -> tuple[dict[str, Any], str]:
    """`.storage/auth` with one owner and a long-lived access token, and that token."""
    user_id, refresh_id, jwt_key = uuid.uuid4().hex, uuid.uuid4().hex, secrets.token_hex(64)
    data = {
        "users": [{"id": user_id, "group_ids": ["system-admin"], "is_owner": True, "is_active": True,
                   "name": "homeiq-tests", "system_generated": False, "local_only": False}],
        "groups": [{"id": "system-admin", "name": "Administrators"}, {"id": "system-users", "name": "Users"},
                   {"id": "system-read-only", "name": "Read Only"}],
        "credentials": [],
        "refresh_tokens": [{
            "id": refresh_id, "user_id": user_id, "client_id": None, "client_name": "homeiq-tests",
            "client_icon": None, "token_type": "long_lived_access_token",
            "created_at": datetime.now(UTC).isoformat(), "access_token_expiration": float(TEN_YEARS_S),
            "token": secrets.token_hex(64), "jwt_key": jwt_key, "last_used_at": None, "last_used_ip": None,
            "expire_at": None, "credential_id": None, "version": version,
        }],
    }
    return {"version": 1, "minor_version": 1, "key": "auth", "data": data}, access_token(refresh_id, jwt_key)


def configuration(port: int, commit_interval_s: int, influxdb: str = "") -> str:
    """configuration.yaml: the API, history and the recorder, input helpers, and template sensors that follow them
    (one change of a helper makes several states in one instant)."""
    booleans = "".join(f"  switch_{n}:\n    name: Switch {n}\n" for n in range(BOOLEANS))
    numbers = "".join(f"  level_{n}:\n    name: Level {n}\n    min: 0\n    max: 1000\n    step: 0.5\n"
                      for n in range(NUMBERS))
    templates = "".join(
        f"      - name: Level {n} doubled\n        unit_of_measurement: W\n        state_class: measurement\n"
        f"        state: \"{{{{ states('input_number.level_{n}') | float(0) * 2 }}}}\"\n"
        f"      - name: Level {n} band\n        state: \"{{{{ 'high' if states('input_number.level_{n}') "
        f"| float(0) > 500 else 'low' }}}}\"\n" for n in range(NUMBERS))
    return (
        "homeassistant:\n  name: HomeIQ tests\n  latitude: 52.37\n  longitude: 4.89\n  elevation: 0\n"
        "  unit_system: metric\n  time_zone: UTC\n  currency: EUR\n  country: NL\n"
        f"http:\n  server_host: 127.0.0.1\n  server_port: {port}\n"
        "api:\nwebsocket_api:\nhistory:\n"
        f"recorder:\n  commit_interval: {commit_interval_s}\n  purge_keep_days: 10\n"
        f"input_boolean:\n{booleans}input_number:\n{numbers}"
        f"template:\n  - sensor:\n{templates}"
        f"{influxdb}"
    )


def influxdb_block(port: int, database: str, extra: str = "") -> str:
    """HA's own `influxdb:` integration writing `database` on a local influxd (v1), with more of its words (its
    `max_retries` is 0 unless they say otherwise, as in HA)."""
    return f"influxdb:\n  host: 127.0.0.1\n  port: {port}\n  database: {database}\n{extra}"


class HomeAssistant:
    """`hass` in `config_dir` on a free loopback port; `token` is a long-lived access token."""

    def __init__(self, installed: Installed, config_dir: Path, commit_interval_s: int = 5, influxdb: str = "",
                 skip_pip: bool = True) -> None:
        self.installed, self.config_dir, self._skip_pip = installed, config_dir, skip_pip
        self.port = free_port()
        self.commit_interval_s = commit_interval_s
        self.process: subprocess.Popen[bytes] | None = None
        config_dir.mkdir(parents=True, exist_ok=True)
        self.write_configuration(influxdb)
        storage, self.token = auth_storage(installed.release.version)
        (config_dir / ".storage").mkdir(exist_ok=True)
        (config_dir / ".storage" / "auth").write_text(json.dumps(storage))
        (config_dir / ".storage" / "onboarding").write_text(json.dumps(
            {"version": 4, "minor_version": 1, "key": "onboarding",
             "data": {"done": ["user", "core_config", "analytics", "integration"]}}))

    def write_configuration(self, influxdb: str = "") -> None:
        """configuration.yaml, with HA's own `influxdb:` block when given (taken up at the next start)."""
        (self.config_dir / "configuration.yaml").write_text(configuration(self.port, self.commit_interval_s, influxdb))

    @property
    def url(self) -> str:
        """The base URL (the collector takes it as HA_URL)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def database(self) -> Path:
        """The recorder's SQLite file."""
        return self.config_dir / "home-assistant_v2.db"

    def start(self, timeout_s: float = 180.0) -> HomeAssistant:
        """Start `hass` and wait until its API answers with our token and its helpers exist."""
        log = (self.config_dir / "hass.out").open("ab")
        self.process = subprocess.Popen([self.installed.hass, "-c", self.config_dir,
                                         *(["--skip-pip"] if self._skip_pip else [])],
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"hass exited {self.process.returncode}: see {self.config_dir / 'hass.out'}")
            try:
                if any(s["entity_id"] == f"sensor.level_{NUMBERS - 1}_band" for s in self.api("GET", "states")):
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"Home Assistant did not start within {timeout_s:g} s: see {self.config_dir / 'hass.out'}")

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM and wait: HA stops in order (its recorder commits what it holds)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One REST call (`/api/<path>`) with the token."""
        request = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Authorization": f"Bearer {self.token}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def change(self, n: int) -> None:
        """The `n`th change of a steady load: a number (and its two template sensors), or a switch."""
        if n % 3:
            self.api("POST", "services/input_number/set_value",
                     {"entity_id": f"input_number.level_{n % NUMBERS}", "value": (n * 7.5) % 1000})
        else:
            self.api("POST", "services/input_boolean/toggle", {"entity_id": f"input_boolean.switch_{n % BOOLEANS}"})

    def fire(self, event_type: str, data: dict[str, Any]) -> None:
        """A custom event through the REST API (HA records it, but no history shows it)."""
        self.api("POST", f"events/{event_type}", data)

    def recorded_states(self, since: float = 0.0) -> list[RecordedState]:
        """Every committed state row since `since` (epoch seconds) with a state, read from the recorder's database."""
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT m.entity_id, s.state, s.last_updated_ts FROM states s JOIN states_meta m "
                "ON s.metadata_id = m.metadata_id WHERE s.last_updated_ts > ? AND s.state IS NOT NULL", (since,),
            ).fetchall()
        return [RecordedState(entity_id, state, float_ns(updated)) for entity_id, state, updated in rows]

    def recorded_events(self, event_type: str) -> list[str]:
        """The context ids of the recorded events of a type."""
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT e.context_id_bin FROM events e JOIN event_types t ON e.event_type_id = t.event_type_id "
                "WHERE t.event_type = ?", (event_type,)).fetchall()
        return [ulid_of(row[0]) for row in rows if row[0]]


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_of(binary: bytes) -> str:
    """A ULID as text from the 16 bytes the recorder stores (`context_id_bin`)."""
    number = int.from_bytes(binary, "big")
    return "".join(_CROCKFORD[(number >> shift) & 31] for shift in range(125, -1, -5))
