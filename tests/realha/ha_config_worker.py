"""Run by a pinned Home Assistant release's own interpreter (not by pytest): reads configuration files as that
release does and reports, for each, what its `influxdb` integration would connect with, or why it refuses.

stdin: a JSON list of configuration file paths. stdout: a JSON list, one entry per path, in order:
`{"ok": false, "stage": "load" | "schema", "error": ..., "paths": [[key, ...], ...]}` or
`{"ok": true, "conf": <the validated block>, "client": <the kwargs HA's code gives its InfluxDB client, and what
that client makes of them>, "url": <urllib3's and requests' reading of the client's URL>}`.

Each file is read as Home Assistant reads `configuration.yaml` (`homeassistant.config.load_yaml_config_file`, with
`Secrets` rooted at the file's folder, which plays Home Assistant's configuration folder) and validated as
`async_process_component_config` validates an integration with a `CONFIG_SCHEMA`: the schema over the whole
configuration (2025.4 wraps the call in `cv.async_validate`, which only moves validators such as `cv.isfile` to an
executor); any exception is a refusal. The process runs in the file's folder, as Home
Assistant runs in /config in its images (relative paths such as `ssl_ca_cert` are relative to the working
directory). What the integration then passes to its client comes from its own `get_influx_connection`, with the
client classes replaced by recorders: influxdb-python's client is still built from those arguments (its URL, and
its default user), influxdb-client's is not (its URL is the integration's `create_influx_url`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import voluptuous as vol

logging.disable(logging.CRITICAL)

from homeassistant.components import influxdb  # noqa: E402
from homeassistant.config import load_yaml_config_file  # noqa: E402
from homeassistant.util.yaml import Secrets  # noqa: E402
from influxdb import InfluxDBClient  # noqa: E402
from requests.models import PreparedRequest  # noqa: E402
from urllib3.util import parse_url  # noqa: E402

RECORDED: dict[str, Any] = {}


def _v1_client(**kwargs: Any) -> InfluxDBClient:
    RECORDED.update(kind="v1", kwargs=kwargs)
    return InfluxDBClient(**kwargs)


class _V2Client:
    def __init__(self, **kwargs: Any) -> None:
        RECORDED.update(kind="v2", kwargs=kwargs)

    def query_api(self) -> None:
        return None

    def write_api(self, write_options: Any = None) -> None:
        return None


influxdb.InfluxDBClient = _v1_client  # type: ignore[attr-defined]
influxdb.InfluxDBClientV2 = _V2Client  # type: ignore[attr-defined]


def _paths(exc: BaseException) -> list[list[str]]:
    if isinstance(exc, vol.MultipleInvalid):
        return [[str(p) for p in error.path] for error in exc.errors]
    if isinstance(exc, vol.Invalid):
        return [[str(p) for p in exc.path]]
    return []


def _url(url: str) -> dict[str, Any]:
    """How the clients' HTTP stacks read the URL: urllib3's parse_url (both clients), requests' prepare_url (v1)."""
    try:
        parts = parse_url(url)
        prepared = PreparedRequest()
        prepared.prepare_url(url + "/ping", None)
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "scheme": parts.scheme, "host": parts.host, "port": parts.port, "path": parts.path,
            "auth": parts.auth, "query": parts.query, "fragment": parts.fragment}


def _v1_precision_refused(precision: str | None) -> bool:
    """influxdb-python's write_points checks the precision before it connects (here: to a closed port)."""
    client = InfluxDBClient(host="127.0.0.1", port=9, timeout=0.2, retries=1)
    try:
        client.write_points([{"measurement": "m", "fields": {"v": 1}}], time_precision=precision)
    except ValueError:
        return True
    except Exception:
        return False
    finally:
        client.close()
    return False


def read(path: str) -> dict[str, Any]:
    folder = Path(path).parent
    os.chdir(folder)
    try:
        config = load_yaml_config_file(path, Secrets(folder))
    except Exception as exc:
        return {"ok": False, "stage": "load", "error": f"{type(exc).__name__}: {exc}", "paths": []}
    try:
        validated = influxdb.CONFIG_SCHEMA(config)
    except Exception as exc:
        return {"ok": False, "stage": "schema", "error": f"{type(exc).__name__}: {exc}", "paths": _paths(exc)}
    if influxdb.DOMAIN not in validated:
        return {"ok": True, "conf": None}
    conf = validated[influxdb.DOMAIN]
    RECORDED.clear()
    influxdb.get_influx_connection(dict(conf), test_write=False, test_read=False)
    client: dict[str, Any] = {"kind": RECORDED["kind"], "kwargs": dict(RECORDED["kwargs"])}
    if client["kind"] == "v1":
        built = InfluxDBClient(**RECORDED["kwargs"])
        client.update(url=built._baseurl, username=built._username, password=built._password,
                      database=built._database,
                      precision_refused=_v1_precision_refused(conf.get("precision")))
        built.close()
    else:
        client["url"] = RECORDED["kwargs"]["url"]
    return {"ok": True, "conf": json.loads(json.dumps(conf, default=str)), "client": client,
            "url": _url(client["url"])}


def main() -> None:
    paths = json.loads(sys.stdin.read())
    json.dump([read(path) for path in paths], sys.stdout)


if __name__ == "__main__":
    main()
