"""Configuration files read by Home Assistant and by us, compared: HA's own YAML loader (`load_yaml_config_file`,
with its `Secrets`) and the integration's `CONFIG_SCHEMA`, imported from each pinned release and run by its own
interpreter (`ha_config_worker.py`, one process per release for the whole batch), against `load_config`.

The files are drawn by hypothesis (blocks of the integration's keys with values of every YAML type: numbers,
numeric strings, booleans and their words, nulls, lists, mappings, dates, `!secret` of any type from the file's
folder or above, `!include` and `!include_dir_*` of values or of the whole block, `!env_var`, paths with `~`)
and written out by hand for the cases the issue names (`HAND`). For each, both must accept it with the same
effective values (what the integration passes to its InfluxDB client, and the rules it writes points by), or
both refuse it, ours naming the key (or the tag, or the YAML). The only differences allowed are `DELIBERATE`'s,
each checked to be what it says (HA's client sends root:root; its URL is unusable; its client refuses the
precision) and each met at least once."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from homeiq.shared.config import ConfigFile, Customize, Integration
from homeiq.shared.config_reader import load_config
from homeiq.shared.settings import ConfigError
from tests.realha.install import Installed

WORKER = Path(__file__).with_name("ha_config_worker.py")
DRAWN = 3000

DELIBERATE = {
    "v1_no_username": "api_version 1 without username/password: HA's client (influxdb-python) sends root:root "
                      "(basic auth); we send no credentials",
    "unusable_url": "a host (or a v2 path) that makes the integration's URL one its client cannot use, or one that "
                    "means another host, port or path (`::1`, an empty host, `a b`, `a/b`, `h:1` with a port, a v2 "
                    "path without `/`): HA accepts the block and fails to connect, for ever; we refuse it, naming "
                    "influxdb.host or influxdb.path",
    "other_top_level_key": "a top-level key other than influxdb: and homeiq: (say, an anchor's holder): the "
                           "file is not configuration.yaml, and an unknown key is an error naming it",
    "input_tag": "!input (a blueprint's): HA's loader makes an Input object that cv.string turns into the text "
                 "\"Input(name='x')\"; we refuse the tag, naming it",
    "v1_precision": "api_version 1 with precision us or ns: HA's schema accepts it and its v1 client refuses it "
                    "(the integration does not start); we refuse it, naming influxdb.precision",
}

# The environment both readers see: `~` is HOME, and the variables `!env_var` reads.
ENV = {"HOMEIQ_CFG_HOST": "env.local", "HOMEIQ_CFG_PORT": "8087", "HOMEIQ_CFG_EMPTY": ""}


@dataclass(frozen=True)
class Files:
    """One configuration: relative path → text; `config.yaml` is the file read. `{DIR}` stands for its folder."""

    files: tuple[tuple[str, str], ...]
    label: str = ""

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True)
        for name in ("ca.pem", "sub/ca.pem"):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text("not a certificate: only its path is read\n")
        for name, text in self.files:
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text.replace("{DIR}", str(folder)))
        return folder / "config.yaml"


def block(lines: dict[str, str], *, extra: dict[str, str] | None = None, top: str = "influxdb:") -> Files:
    """A config.yaml with `influxdb:` holding `key: token` lines, and other files."""
    text = top + "\n" + "".join(f"  {key}: {token}\n" for key, token in lines.items())
    return Files((("config.yaml", text), *(extra or {}).items()))


# ---------------------------------------------------------------------------------------------------------------
# The hand list: what the issue names, and the loader's corners.

V2 = {"api_version": "2", "token": "t", "organization": "o"}
HAND: list[Files] = [
    block(V2),  # bucket: "Home Assistant"
    block({"max_retries": "'3'", "ssl": "1", "port": "'8086'", "verify_ssl": "'yes'", "database": "2024"}),
    block({"max_retries": "2.7", "ssl": "2", "port": "' 8086 '", "verify_ssl": "0.0", "path": "influx"}),
    block({"ssl": ".nan", "port": "8086.9", "max_retries": "true", "verify_ssl": "' Enable '"}),
    block({"port": ".inf"}), block({"max_retries": "-.inf"}), block({"port": "'8_086'"}),
    block({"username": "u", "password": "''"}),
    block({"username": "u", "password": "~"}),
    block({"database": "''"}), block({"database": "~"}), block({"bucket": "~"}),
    *(block({key: "~"}) for key in ("api_version", "host", "port", "path", "ssl", "verify_ssl", "ssl_ca_cert",
                                    "precision", "database", "bucket", "max_retries", "include", "exclude", "tags",
                                    "tags_attributes", "ignore_attributes", "default_measurement",
                                    "override_measurement", "measurement_attr", "component_config",
                                    "component_config_domain", "component_config_glob")),
    block({"include": "{entities: ~}"}), block({"include": "{domains: ~, entity_globs: ~}"}),
    block({"component_config": "{sensor.a: ~}"}),
    block({"component_config": "{sensor.a: {override_measurement: ~}}"}),
    block({"component_config_domain": "{sensor: {ignore_attributes: [a]}}",
           "component_config": "{sensor.a: {ignore_attributes: ~}}"}),
    block({"tags": "{a: ~}"}), block({"tags": "{~: a}"}), block({"tags": "{1: 2, '1': b, true: x}"}),
    block({"component_config": "{Sensor.A: {override_measurement: m}, sensor.a: {override_measurement: n}}"}),
    block({"include": "{entities: {sensor.a: 1, light.b: ~}}"}),
    block({"include": "{entities: 'Sensor.A, light.b'}"}), block({"exclude": "{entities: ''}"}),
    # hosts
    block({"host": "'::1'"}), block({"host": "'[::1]'"}), block({"host": "''"}), block({"host": "'a b'"}),
    block({"host": "'a/b'"}), block({"host": "'h:1'"}), block({"host": "'h:1'", **V2}),
    block({"host": "'h:1'", "port": "1", **V2}), block({"host": "h", "path": "x", **V2}),
    block({"host": "h", "path": "x", "port": "80", **V2}), block({"host": "'a@b'"}), block({"host": "'[x]'"}),
    block({"host": "Influx.Local", "path": "/a b"}), block({"host": "true", "port": "true"}),
    # v1 and precision
    block({"precision": "us"}), block({"precision": "ns"}), block({"precision": "ms"}),
    block({"precision": "us", **V2}),
    # secrets keep their type; they are looked up beside the requesting file, then above
    block({"tags_attributes": "!secret list", "port": "!secret port", "include": "!secret filter",
           "username": "!secret number", "password": "!secret number"},
          extra={"secrets.yaml": "list: [friendly_name, 1]\nport: 8087\nfilter: {domains: sensor}\nnumber: 12\n"}),
    block({"username": "!secret list", "password": "p"}, extra={"secrets.yaml": "list: [a]\n"}),
    block({"username": "!secret none", "password": "p"}, extra={"secrets.yaml": "none:\n"}),
    block({"username": "!secret missing", "password": "p"}, extra={"secrets.yaml": "other: 1\n"}),
    block({"username": "!secret logger", "password": "p"}, extra={"secrets.yaml": "logger: debug\n"}),
    block({"username": "!secret a", "password": "p"}, extra={"secrets.yaml": "- a\n"}),
    block({"username": "!secret a", "password": "p"}, extra={"secrets.yaml": ""}),
    block({"username": "!secret a", "password": "p"}, extra={"secrets.yaml": "a: !secret b\nb: 1\n"}),
    block({"username": "!secret a", "password": "p"}, extra={"secrets.yaml": "a: !include inc/u.yaml\n",
                                                             "inc/u.yaml": "from-include\n"}),
    # includes: relative to the including file; the whole block; an empty file is a mapping
    Files((("config.yaml", "influxdb: !include sub/influxdb.yaml\n"),
           ("sub/influxdb.yaml", "api_version: 2\ntoken: !secret token\norganization: !secret org\n"
                                 "tags: !include tags.yaml\nssl_ca_cert: sub/ca.pem\n"),
           ("sub/tags.yaml", "site: !secret site\n"), ("sub/secrets.yaml", "token: near\n"),
           ("secrets.yaml", "token: far\norg: home\nsite: 7\n"))),
    Files((("config.yaml", "influxdb: !include influxdb.yaml\n"), ("influxdb.yaml", ""))),
    Files((("config.yaml", "influxdb: !include influxdb.yaml\n"), ("influxdb.yaml", "[a]\n"))),
    block({"tags": "!include missing.yaml"}), block({"tags": "!include ''"}), block({"tags": "!include sub"}),
    block({"tags": "!include {DIR}/abs.yaml"}, extra={"abs.yaml": "a: b\n"}),
    block({"tags": "!include '~/x.yaml'"}),
    Files((("config.yaml", "influxdb: !include a.yaml\n"), ("a.yaml", "tags: !include a.yaml\n"))),
    block({"tags": "!include_dir_named parts", "tags_attributes": "!include_dir_list lists",
           "ignore_attributes": "!include_dir_merge_list lists", "include": "!include_dir_merge_named filters"},
          extra={"parts/a.yaml": "x\n", "parts/.hidden.yaml": "h\n", "parts/deep/b.yaml": "2\n",
                 "parts/c.yml": "no\n", "parts/secrets.yaml": "s: 1\n", "lists/1.yaml": "[a, b]\n",
                 "lists/2.yaml": "c\n", "lists/3.yaml": "", "filters/f.yaml": "domains: [light]\n",
                 "filters/g.yaml": "[not, a, mapping]\n"}),
    block({"tags": "!include_dir_named nowhere"}),
    block({"tags": "!include_dir_named parts"}, extra={"parts/a.yaml": "x: [\n"}),
    # the block itself, tags, YAML
    Files((("config.yaml", "influxdb:\n"),)), Files((("config.yaml", "influxdb: ''\n"),)),
    Files((("config.yaml", "influxdb: 0\n"),)), Files((("config.yaml", "influxdb: []\n"),)),
    Files((("config.yaml", "influxdb: [a]\n"),)), Files((("config.yaml", "influxdb: 1\n"),)),
    Files((("config.yaml", ""),)), Files((("config.yaml", "- a\n"),)),
    Files((("config.yaml", "influxdb:\n  tags_attributes: &names [a, b]\n  ignore_attributes: *names\n"),)),
    Files((("config.yaml", "base: &base {host: influx.local, port: 8087}\ninfluxdb: *base\n"),)),
    Files((("config.yaml", "influxdb:\n  <<: {host: a, port: 1}\n  host: b\n"),)),
    Files((("config.yaml", "influxdb:\n  host: a\n  host: b\n"),)),
    Files((("config.yaml", "influxdb:\n  host: [\n"),)),
    Files((("config.yaml", "influxdb:\n  host: !foo x\n"),)),
    Files((("config.yaml", "influxdb:\n  host: !input x\n"),)),
    Files((("config.yaml", "influxdb:\n  ? [a]\n  : b\n"),)),
    block({"host": "!env_var HOMEIQ_CFG_HOST", "port": "!env_var HOMEIQ_CFG_PORT",
           "database": "!env_var HOMEIQ_CFG_NOPE fall back", "path": "!env_var HOMEIQ_CFG_EMPTY /x"}),
    block({"host": "!env_var HOMEIQ_CFG_NOPE"}),
    # paths
    block({"ssl_ca_cert": "ca.pem"}), block({"ssl_ca_cert": "./sub/ca.pem"}), block({"ssl_ca_cert": "'~/ca.pem'"}),
    block({"ssl_ca_cert": "'{DIR}/ca.pem'"}), block({"ssl_ca_cert": "missing.pem"}), block({"ssl_ca_cert": "sub"}),
    block({"ssl_ca_cert": "''"}), block({"ssl_ca_cert": "[ca.pem]"}),
    block({"ssl_ca_cert": "'~/nope.pem'"}),
    # types YAML makes
    block({"database": "2024-01-01", "bucket": "!!binary aGk=", "default_measurement": "1.0e+3",
           "override_measurement": "!!set {a}", "tags_attributes": "!!omap [{a: 1}]"}),
    block({"api_version": "2.0", **{k: v for k, v in V2.items() if k != "api_version"}}),
    block({"api_version": "'2'", "token": "1", "organization": "true"}),
    block({"measurement_attr": "ENTITY_ID"}), block({"precision": "MS"}),
]


# ---------------------------------------------------------------------------------------------------------------
# Drawn files.

NULLS = ["~", "null", ""]
STRINGS = ["influx.local", "'Home Assistant'", "hass", "''", "' '", "'8086'", "'3'", "'yes'", "'off'", "' 80 '",
           "'2.7'", "'0x10'", "'-1'", "'true'", "'1'", "'0'", "'ms'", "sensor.a", "'a,b'", '"tab\\there"']
INTS = ["0", "1", "2", "3", "-1", "8086", "65535", "65536", "017", "0x1F", "1_000", "+5"]
FLOATS = ["2.7", "1.0", "0.0", ".nan", ".inf", "-.inf", "1.0e+3", "8086.9", "-0.5"]
BOOLS = ["true", "false", "yes", "no", "on", "off", "True", "FALSE", "y"]
OTHER = ["2024-01-01", "[]", "[a, b]", "[1, 2]", "[~]", "{}", "{a: b}", "!!binary aGk=", "[[a]]"]
ANY = NULLS + STRINGS + INTS + FLOATS + BOOLS + OTHER

# Per key: values HA takes (VALID: what a clean file is drawn from, coercions included) and values to try it with
# (ODD); a wild file draws from both, and from ANY.
VALID: dict[str, list[str]] = {
    "host": ["influx.local", "10.0.0.5", "'[::1]'", "Influx.Local", "true", "123", "'a_b'"],
    "port": ["8086", "'8086'", "' 8086 '", "8086.9", "true", "65535", "'8_086'", "443", "'+5'"],
    "path": ["/influx", "''", "'/a b'", "'//x'", "/", "'/a%20b'"],
    "ssl": ["true", "false", "yes", "no", "on", "off", "True", "FALSE", "1", "0", "2", "0.5", ".nan", "'Enable'",
            "' on '", "'0'"],
    "ssl_ca_cert": ["ca.pem", "./ca.pem", "sub/ca.pem", "'~/ca.pem'", "'{DIR}/ca.pem'"],
    "precision": ["ms", "s"],
    "max_retries": ["3", "'3'", "2.7", "true", "0", "1.0e+3", "' 4 '", "'+5'"],
    "measurement_attr": ["unit_of_measurement", "domain__device_class", "entity_id"],
    "tags": ["{source: hass}", "{1: 2}", "{a: b, A: c}", "{'1': x, 1: y}", "{}", "{a: 1.5, b: true}",
             "{a: 2024-01-01}"],
    "list": ["friendly_name", "[a, b]", "[]", "[1, true]", "''", "[a, a]", "~", "2.5"],
    "text": ["hass", "''", "2024", "'Home Assistant'", "1.5", "true", "2024-01-01", "'8086'"],
    "token": ["t0k3n", "'123'", "123", "''", "hass"],
    "organization": ["home", "1", "''"],
    "username": ["u", "admin", "''", "7"],
    "password": ["p", "''", "s3cret", "1.0"],
    "entities": ["sensor.a", "Sensor.A", "'sensor.a, light.b'", "[sensor.a, light.B]", "{sensor.a: 1}", "[]",
                 "[sensor.a]"],
    "domains": ["sensor", "[sensor, light]", "[]", "1", "''", "~"],
    "entity_globs": ["'sensor.*_battery'", "['*', 'light.?']", "'[ab]*'", "~"],
    "entry": ["{override_measurement: m}", "{ignore_attributes: x}", "{ignore_attributes: ~}", "{}",
              "{override_measurement: 5}", "{override_measurement: '', ignore_attributes: [a, b]}"],
}
VALID["verify_ssl"] = VALID["ssl"]
ODD: dict[str, list[str]] = {
    "host": ["'::1'", "''", "'a b'", "'h:1'", "'a/b'", "'a@b'", "'a?b'", "'a#b'", "'h:'", "'[x]'", "'a%20b'",
             "'a\\b'"],
    "port": ["0", "65536", ".inf", ".nan", "'x'", "[8086]"],
    "path": ["influx", "'/x?y'", "'#'", "':80'"],
    "ssl": ["'maybe'", "y", "[true]"],
    "ssl_ca_cert": ["'~/nope.pem'", "missing.pem", "''", "1", "[ca.pem]", "sub"],
    "precision": ["us", "ns", "h", "1", "'ms '", "MS"],
    "max_retries": ["-1", "'-1'", "'x'", ".inf", "[1]"],
    "measurement_attr": ["unit", "1", "ENTITY_ID"],
    "tags": ["{a: [1]}", "{a: ~}", "{~: a}", "[]", "a"],
    "list": ["{a: b}", "[[a]]", "[~]"],
    "text": ["[a]", "{a: b}"],
    "entities": ["'not an id'", "''", "5", "[sensor.a, 1]", "'sensor.a,'", "~"],
    "domains": ["[~]", "{a: b}"],
    "entity_globs": ["[[a]]"],
    "entry": ["~", "{other: 1}", "[]", "{override_measurement: ~}"],
}
ODD["verify_ssl"] = ODD["ssl"]
for _key in ("token", "organization", "username", "password"):
    ODD[_key] = ODD["text"]
CUSTOM_KEYS = {"component_config": (["sensor.a", "Sensor.A", "light.b"], ["'bad key'", "1", "~"]),
               "component_config_domain": (["sensor", "1", "light"], ["~"]),
               "component_config_glob": (["'sensor.*'", "'*'", "1"], ["~"])}
TEXT_KEYS = ["database", "bucket", "default_measurement", "override_measurement"]


@dataclass
class Draft:
    """Files being drawn: values may move to secrets.yaml (here or in sub/), to included files, or to env_var;
    a clean file takes only what HA takes, a wild one anything."""

    wild: bool
    files: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, list[str]] = field(default_factory=lambda: {"secrets.yaml": [], "sub/secrets.yaml": []})
    n: int = 0

    def name(self) -> str:
        self.n += 1
        return f"v{self.n}"


@st.composite
def token(draw: st.DrawFn, draft: Draft, kind: str, where: str) -> str:
    """A value's YAML text, written in place or moved behind a tag; `where` is the folder of the file it is in."""
    if not draft.wild or draw(st.integers(0, 2)):
        text = draw(st.sampled_from(VALID[kind]))
    else:
        text = draw(st.sampled_from(ODD[kind] if draw(st.booleans()) else ANY))
    how = draw(st.integers(0, 11))
    if how == 0:  # a secret: beside the file, or (from sub/) in the folder above, or (wild) nowhere
        name = draft.name()
        places = ["secrets.yaml", "sub/secrets.yaml"] if where else ["secrets.yaml"]
        place = draw(st.sampled_from([*places, None] if draft.wild else places))
        if place is not None:
            draft.secrets[place].append(f"{name}: {text}\n")
        return f"!secret {name}"
    if how == 1:  # an included file, beside this one or in inc/
        name = f"{draw(st.sampled_from(['', 'inc/']))}{draft.name()}.yaml"
        draft.files[f"{where}{name}"] = f"{text}\n"
        return f"!include {name}"
    if how == 2 and kind in ("text", "host", "port") and draw(st.booleans()):
        return draw(st.sampled_from(["!env_var HOMEIQ_CFG_HOST", "!env_var HOMEIQ_CFG_PORT",
                                     "!env_var HOMEIQ_CFG_NOPE 2", "!env_var HOMEIQ_CFG_EMPTY x"]))
    return text


@st.composite
def filters(draw: st.DrawFn, draft: Draft, where: str) -> str:
    if draft.wild and draw(st.integers(0, 7)) == 0:
        return draw(st.sampled_from(["~", "[]", "sensor"]))
    parts = [f"{key}: {draw(token(draft, key, where))}" for key in ("entities", "domains", "entity_globs")
             if draw(st.booleans())]
    if draft.wild and draw(st.integers(0, 15)) == 0:
        parts.append("domain: [x]")
    text = "{" + ", ".join(parts) + "}"
    if draw(st.integers(0, 9)) == 0:  # the whole filter from an included file
        name = f"{draft.name()}.yaml"
        draft.files[f"{where}{name}"] = f"{text}\n"
        return f"!include {name}"
    return text


@st.composite
def customizations(draw: st.DrawFn, draft: Draft, key: str, where: str) -> str:
    valid, odd = CUSTOM_KEYS[key]
    keys = valid + odd if draft.wild else valid
    entries = [f"{draw(st.sampled_from(keys))}: {draw(token(draft, 'entry', where))}"
               for _ in range(draw(st.integers(0, 3)))]
    return "{" + ", ".join(entries) + "}"


@st.composite
def files(draw: st.DrawFn) -> Files:
    draft = Draft(wild=draw(st.booleans()))
    included = draw(st.integers(0, 4)) == 0  # influxdb: !include sub/influxdb.yaml
    where = "sub/" if included else ""
    lines: dict[str, str] = {}
    version = draw(st.sampled_from(["1", "2", "2", None, "'2'", *(["3", "2.0"] if draft.wild else [])]))
    if version is not None:
        lines["api_version"] = version
    v2 = version in ("2", "'2'")
    odd = 1 if draft.wild else 0  # the chance, in tenths, of a pair given in half or on the wrong version
    if draw(st.integers(0, 9)) < (10 - odd if v2 else odd):
        lines["token"] = draw(token(draft, "token", where))
    if ("token" in lines and draw(st.integers(0, 9)) >= odd) or draw(st.integers(0, 19)) < odd:
        lines["organization"] = draw(token(draft, "organization", where))
    if draw(st.integers(0, 9)) < (odd if v2 else 5):
        lines["username"] = draw(token(draft, "username", where))
    if ("username" in lines and draw(st.integers(0, 9)) >= odd) or draw(st.integers(0, 19)) < odd:
        lines["password"] = draw(token(draft, "password", where))
    for key in ("host", "port", "path", "ssl", "verify_ssl", "ssl_ca_cert", "precision", "max_retries",
                "measurement_attr", "tags", *TEXT_KEYS):
        if draw(st.integers(0, 3)) == 0:
            lines[key] = draw(token(draft, "text" if key in TEXT_KEYS else key, where))
    for key in ("tags_attributes", "ignore_attributes"):
        if draw(st.integers(0, 3)) == 0:
            lines[key] = draw(token(draft, "list", where))
    for key in ("include", "exclude"):
        if draw(st.integers(0, 3)) == 0:
            lines[key] = draw(filters(draft, where))
    for key in CUSTOM_KEYS:
        if draw(st.integers(0, 4)) == 0:
            lines[key] = draw(customizations(draft, key, where))
    if draft.wild and draw(st.integers(0, 30)) == 0:
        lines["hots"] = "x"
    order = draw(st.permutations(list(lines)))
    body = "".join(f"  {key}: {lines[key]}\n" for key in order)
    if included:
        draft.files["config.yaml"] = "influxdb: !include sub/influxdb.yaml\n"
        draft.files["sub/influxdb.yaml"] = body.replace("\n  ", "\n").removeprefix("  ") or "\n"
    else:
        draft.files["config.yaml"] = "influxdb:\n" + body
    for name, entries in draft.secrets.items():
        if entries:
            draft.files[name] = "".join(entries)
    return Files(tuple(sorted(draft.files.items())))


def drawn(count: int) -> list[Files]:
    """`count` files drawn by hypothesis, the same ones each run."""
    found: list[Files] = []

    @settings(max_examples=count, database=None, derandomize=True, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(files())
    def collect(example: Files) -> None:
        found.append(example)

    collect()
    return list(dict.fromkeys(found))


# ---------------------------------------------------------------------------------------------------------------
# Comparing.

def _filter(words: dict[str, Any]) -> dict[str, list[str]]:
    return {key: sorted(words[key]) for key in ("entities", "domains", "entity_globs")}


def _custom(entries: dict[str, dict[str, Any]]) -> dict[str, list[Any]]:
    return {key: [entry.get("override_measurement"), entry.get("ignore_attributes")] for key, entry in
            entries.items()}


def theirs(answer: dict[str, Any], folder: Path) -> dict[str, Any]:
    """What HA's integration does with a block it accepted: its client's arguments, and its rules."""
    conf, client = answer["conf"], answer["client"]
    ca = conf.get("ssl_ca_cert")
    v1 = client["kind"] == "v1"
    return {
        "api_version": conf["api_version"], "url": client["url"],
        "auth": [client["username"], client["password"]] if v1 else None,
        "database": conf["database"], "bucket": conf["bucket"], "token": conf.get("token"),
        "organization": conf.get("organization"), "verify_ssl": conf["verify_ssl"],
        "ssl_ca_cert": None if ca is None else os.path.normpath(os.path.join(folder, ca)),
        "precision": conf.get("precision"), "max_retries": conf["max_retries"],
        "include": _filter(conf["include"]), "exclude": _filter(conf["exclude"]),
        "tags": [list(item) for item in conf["tags"].items()], "tags_attributes": conf["tags_attributes"],
        "ignore_attributes": conf["ignore_attributes"], "default_measurement": conf.get("default_measurement"),
        "override_measurement": conf.get("override_measurement"), "measurement_attr": conf["measurement_attr"],
        "component_config": _custom(conf["component_config"]),
        "component_config_domain": _custom(conf["component_config_domain"]),
        "component_config_glob": _custom(conf["component_config_glob"]),
    }


def _our_custom(entries: tuple[tuple[str, Customize], ...]) -> dict[str, list[Any]]:
    return {key: [c.override_measurement, None if c.ignore_attributes is None else list(c.ignore_attributes)]
            for key, c in entries}


def ours(words: Integration) -> dict[str, Any]:
    """The same, as our reader has it."""
    return {
        "api_version": words.api_version, "url": words.url(),
        "auth": ([words.username, words.password.value] if words.username is not None else None)
        if words.api_version == "1" else None,
        "database": words.database, "bucket": words.bucket,
        "token": words.token.value if words.organization is not None else None,
        "organization": words.organization, "verify_ssl": words.verify_ssl,
        "ssl_ca_cert": None if words.ssl_ca_cert is None else os.path.normpath(words.ssl_ca_cert),
        "precision": words.precision, "max_retries": words.max_retries,
        "include": {"entities": sorted(words.include.entities), "domains": sorted(words.include.domains),
                    "entity_globs": sorted(words.include.entity_globs)},
        "exclude": {"entities": sorted(words.exclude.entities), "domains": sorted(words.exclude.domains),
                    "entity_globs": sorted(words.exclude.entity_globs)},
        "tags": [list(item) for item in words.tags], "tags_attributes": list(words.tags_attributes),
        "ignore_attributes": list(words.ignore_attributes), "default_measurement": words.default_measurement,
        "override_measurement": words.override_measurement, "measurement_attr": words.measurement_attr,
        "component_config": _our_custom(words.component_config),
        "component_config_domain": _our_custom(words.component_config_domain),
        "component_config_glob": _our_custom(words.component_config_glob),
    }


def url_unusable(answer: dict[str, Any]) -> bool:
    """HA's URL, as urllib3 and requests read it (in its interpreter), is not one, or means another host or path
    than the block's: userinfo, a query or fragment, a host with a space, `%` or `\\`, or a path not as given."""
    url, conf = answer["url"], answer["conf"]
    if not url["ok"]:
        return True
    host = url["host"] or ""
    path = conf.get("path", "")
    if answer["client"]["kind"] == "v1" and path and not path.startswith("/"):
        path = "/" + path
    return (url["auth"] is not None or url["query"] is not None or url["fragment"] is not None or not host
            or any(c.isspace() or c in "%\\" for c in host) or unquote(url["path"] or "") != path)


KEY = re.compile(r"^HOMEIQ_CONFIG \([^)]*\): (?P<key>influxdb(?:[.\[].*?)?|\(the file\)): ")
LOADER = re.compile(r"^HOMEIQ_CONFIG \([^)]*\): .*(!secret|!include|!env_var|not valid YAML|includes itself|"
                    r"not a mapping of names|is not allowed in|needs an argument|\(the file\): expected a mapping)")


def names_the_key(error: str, answer: dict[str, Any]) -> bool:
    """Our refusal names a key HA's names (or one within it, or any when HA's names only the block), or the tag
    or YAML that HA's loader refused."""
    if answer["stage"] == "load":
        return LOADER.match(error) is not None
    found = KEY.match(error)
    if found is None:
        return False
    ours_path = [p for p in re.split(r"[.\[\]]", found["key"]) if p]
    if not answer["paths"] or any(len(p) <= 1 or p[-1].startswith("<") for p in answer["paths"]):
        # HA names the block, or an Inclusive pair (voluptuous checks those first, and stops): any key will do
        return True
    return any(ours_path[:len(p)] == p[:len(ours_path)] or ours_path[:2] == p[:2] for p in answer["paths"])


def verdict(answer: dict[str, Any], outcome: ConfigFile | ConfigError, folder: Path) -> str:
    """'same', a reason of DELIBERATE, or what differs."""
    if isinstance(outcome, ConfigError):
        error = str(outcome)
        if not answer["ok"]:
            return "same" if names_the_key(error, answer) else \
                f"both refuse; ours names no key of HA's {answer['paths']} ({answer['error']}): {error}"
        if re.search(r"\): [^ ]+: unknown key \(known: homeiq, influxdb\)", error):
            return "other_top_level_key"
        if "constructor for the tag '!input'" in error:
            return "input_tag"
        if answer["conf"] is not None:
            if url_unusable(answer) and re.search(r": influxdb\.(host|path): ", error):
                return "unusable_url"
            if answer["client"].get("precision_refused") and ": influxdb.precision: " in error:
                return "v1_precision"
        return f"HA accepts, we refuse: {error}"
    if not answer["ok"]:
        return f"HA refuses ({answer['error']}), we accept"
    if answer["conf"] is None or outcome.integration is None:
        return "same" if answer["conf"] is None and outcome.integration is None else "one has no block"
    want, got = theirs(answer, folder), ours(outcome.integration)
    if want["auth"] == ["root", "root"] and got["auth"] is None and "username" not in answer["conf"]:
        want["auth"] = None
        if want == got:
            return "v1_no_username"
    if want == got:
        return "same"
    return "differ: " + ", ".join(f"{k}: HA {want[k]!r}, ours {got[k]!r}" for k in want if want[k] != got.get(k))


def read_ours(path: Path) -> ConfigFile | ConfigError:
    try:
        config = load_config(str(path))
    except ConfigError as exc:
        return exc
    assert config is not None
    return config


@pytest.fixture(scope="module")
def examples() -> list[Files]:
    return HAND + drawn(DRAWN)


def test_config_files_read_as_home_assistant_reads_them(ha_installed: Installed, examples: list[Files],
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "ca.pem").write_text("x\n")
    env = {**ENV, "HOME": str(home)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HOMEIQ_CFG_NOPE", raising=False)
    paths = [example.write(tmp_path / f"c{i}") for i, example in enumerate(examples)]
    done = subprocess.run([str(ha_installed.python), str(WORKER)], input=json.dumps([str(p) for p in paths]),
                          capture_output=True, text=True, check=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "HOMEIQ_CFG_NOPE"} | env)
    answers = json.loads(done.stdout)
    tally: Counter[str] = Counter()
    differences = []
    for example, path, answer in zip(examples, paths, answers, strict=True):
        result = verdict(answer, read_ours(path), path.parent)
        tally[result if result in DELIBERATE or result == "same" else "different"] += 1
        tally["HA accepts" if answer["ok"] else "HA refuses"] += 1
        if result != "same" and result not in DELIBERATE:
            differences.append(f"{path.parent.name} {dict(example.files)}\n    {result}")
    texts = [" ".join(text for _, text in example.files) for example in examples]
    tags = {tag: sum(tag in text for text in texts) for tag in ("!secret", "!include ", "!include_dir", "!env_var")}
    tags["influxdb: !include"] = sum("influxdb: !include" in text for text in texts)
    print(f"\n{ha_installed.release.key}: {len(examples)} configuration files ({len(HAND)} by hand), "
          f"{dict(sorted(tally.items()))}; files with {tags}")
    assert not differences, f"{len(differences)} differ:\n" + "\n".join(differences[:40])
    for reason in DELIBERATE:
        assert tally[reason] > 0, f"no file showed {reason!r}"
