"""HOMEIQ_CONFIG: the integration's own keys as Home Assistant validates them, ours, and what wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from homeiq.shared.config import EntityWords, Integration
from homeiq.shared.config_reader import load_config, parse_config
from homeiq.shared.entity_filter import PatternFilter
from homeiq.shared.events import NormalisedEvent
from homeiq.shared.influx.settings import InfluxSettings
from homeiq.shared.settings import ConfigError
from tests.events import state_event

# A block as people have it in configuration.yaml (home-assistant.io's examples, with !secret).
PASTED = """
influxdb:
  api_version: 2
  ssl: false
  host: influx.local
  port: 8086
  token: !secret influx_token
  organization: home
  bucket: hass
  max_retries: 3
  precision: s
  tags:
    source: hass
  tags_attributes:
    - friendly_name
  default_measurement: state
  include:
    domains: [sensor, binary_sensor]
    entities: Switch.Kettle, switch.fan
  exclude:
    entity_globs: "sensor.*_battery"
  ignore_attributes: icon
  component_config:
    sensor.kitchen:
      override_measurement: kitchen
  component_config_glob:
    binary_sensor.*motion*:
      override_measurement: motion
      ignore_attributes: [friendly_name]
homeiq:
  schema: ha
  event_types:
    exclude: [call_service]
"""


def write(folder: Path, text: str, secrets: str = "influx_token: s3cret-token-xyz\n") -> str:
    (folder / "secrets.yaml").write_text(secrets)
    path = folder / "config.yaml"
    path.write_text(text)
    return str(path)


def test_a_pasted_block_reads_as_home_assistant_reads_it(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, PASTED))
    assert config is not None and config.integration is not None
    words = config.integration
    assert words.token.value == "s3cret-token-xyz"  # !secret from secrets.yaml beside the file
    assert words.include == EntityWords(entities=("switch.kettle", "switch.fan"), domains=("sensor", "binary_sensor"))
    assert words.exclude.entity_globs == ("sensor.*_battery",)  # one string is a list of one
    assert words.ignore_attributes == ("icon",) and words.tags == (("source", "hass"),)
    assert words.url() == "http://influx.local:8086"
    assert config.homeiq.schema == "ha" and not config.homeiq.event_types.allows("call_service")
    assert config.notes == ("influxdb.max_retries: ignored: nothing is ever dropped here, every write is retried "
                            "until InfluxDB takes it",)
    assert words.customize("binary_sensor.hall_motion").override_measurement == "motion"
    assert words.ignored_attributes("binary_sensor.hall_motion") == {"friendly_name", "icon"}


def test_settings_come_from_the_file_and_the_environment_overrides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, PASTED)
    settings = InfluxSettings.layered({"config_path": path}).validate()
    assert (settings.url, settings.api, settings.org, settings.bucket, settings.schema) == (
        "http://influx.local:8086", "v2", "home", "hass", "ha")
    assert "s3cret" not in repr(settings)  # secrets never show in a settings repr (errors, logs)
    overridden = InfluxSettings.layered(
        {"config_path": path, "url": "http://other:8086", "bucket": "b2", "schema": "homeiq"}).validate()
    assert (overridden.url, overridden.bucket, overridden.schema, overridden.org) == (
        "http://other:8086", "b2", "homeiq", "home")
    monkeypatch.setenv("INFLUXDB_TOKEN", "from-env")
    assert settings.secret() == "from-env"
    monkeypatch.delenv("INFLUXDB_TOKEN")
    assert settings.secret() == "s3cret-token-xyz"


def test_v1_defaults_are_the_integrations() -> None:
    words = parse_config("influxdb:\n  username: u\n  password: p\n", "t").integration
    assert words is not None
    assert (words.api_version, words.url(), words.database) == ("1", "http://localhost:8086", "home_assistant")
    settings = InfluxSettings.layered({"config_path": ""}).validate()
    assert (settings.url, settings.api, settings.schema) == ("http://127.0.0.1:8086", "v2", "homeiq")


@pytest.mark.parametrize(("text", "message"), [
    ("influxdb:\n  hots: x\n", r"influxdb\.hots: unknown key"),
    ("influxdb:\n  include: {domain: [sensor]}\n", r"influxdb\.include\.domain: unknown key"),
    ("influxdb:\n  component_config:\n    sensor.a: {override: x}\n",
     r"influxdb\.component_config\.sensor\.a\.override: unknown key"),
    ("homeiq:\n  scheme: ha\n", r"homeiq\.scheme: unknown key"),
    ("influxdbb: {}\n", r"influxdbb: unknown key"),
    ("influxdb:\n  include: {entities: [not an id]}\n",
     r"influxdb\.include\.entities\[0\]: 'not an id' is not a valid"),
    ("influxdb:\n  api_version: 3\n", r"influxdb\.api_version: must be one of 1, 2"),
    ("influxdb:\n  api_version: 2\n  bucket: b\n", r"influxdb\.token: required when api_version is 2"),
    ("influxdb:\n  token: t\n  organization: o\n", r"influxdb\.token: only allowed when api_version is 2"),
    ("influxdb:\n  username: u\n", r"influxdb\.username: username and password must be given together"),
    ("influxdb:\n  measurement_attr: area\n", r"influxdb\.measurement_attr: must be one of"),
    ("influxdb:\n  precision: h\n", r"influxdb\.precision: must be one of ms, s, us, ns"),
    ("influxdb:\n  precision: us\n", r"influxdb\.precision: 'us' with api_version 1 stops Home Assistant"),
    ("influxdb:\n  api_version: 1\n  precision: ns\n", r"influxdb\.precision: 'ns' with api_version 1"),
    ("influxdb:\n  port: 99999\n", r"influxdb\.port: expected a port between 1 and 65535"),
    ("influxdb:\n  verify_ssl: maybe\n", r"influxdb\.verify_ssl: expected a boolean"),
    ("influxdb:\n  ssl_ca_cert: /nonexistent.pem\n", r"influxdb\.ssl_ca_cert: '/nonexistent.pem' is not a file"),
    ("homeiq:\n  schema: influx\n", r"homeiq\.schema: must be one of homeiq, ha"),
    ("influxdb: [1\n", "not valid YAML"),
])
def test_a_wrong_key_or_value_is_an_error_naming_it(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text, "config.yaml")


@pytest.mark.parametrize(("text", "expected"), [
    # const.py: vol.Optional(CONF_BUCKET, default=DEFAULT_BUCKET)
    ("influxdb:\n  api_version: 2\n  token: t\n  organization: o\n", {"bucket": "Home Assistant"}),
    # cv.positive_int is vol.Coerce(int): a numeric string, and a float cut down
    ("influxdb:\n  max_retries: '3'\n", {"max_retries": 3}),
    ("influxdb:\n  max_retries: 2.7\n", {"max_retries": 2}),
    # vol.Inclusive looks at presence: an empty password goes with a username
    ("influxdb:\n  username: u\n  password: ''\n", {"username": "u"}),
    # vol.Optional(CONF_DB_NAME, default=...) fills only what is absent
    ("influxdb:\n  database: ''\n", {"database": ""}),
    # cv.string makes a number a string; cv.boolean takes 1 and 'on'
    ("influxdb:\n  database: 2024\n  ssl: 1\n  verify_ssl: 'off'\n", {"database": "2024", "ssl": True,
                                                                       "verify_ssl": False}),
])
def test_values_coerce_and_default_as_home_assistant_s_schema_does(text: str, expected: dict[str, object]) -> None:
    words = parse_config(text, "config.yaml").integration
    assert words is not None
    assert {key: getattr(words, key) for key in expected} == expected


@pytest.mark.parametrize("key", ["host", "path", "port", "ssl", "username", "database", "precision",
                                 "default_measurement", "override_measurement", "max_retries"])
def test_a_key_given_as_null_is_an_error_as_in_home_assistant(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"influxdb\.{key}: "):
        parse_config(f"influxdb:\n  {key}:\n", "config.yaml")


def test_secrets_never_appear_in_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "influxdb:\n  api_version: 2\n  token: !secret influx_token\n  organization: o\n"
                           "  username: u\n  password: p\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)  # a user with api_version 2: an error, which must not echo the token
    assert "influxdb.username" in str(caught.value) and "s3cret" not in str(caught.value)
    with pytest.raises(ConfigError) as caught:  # a YAML error shows where, never the line's text
        parse_config('influxdb:\n  token: "s3cret-token-xyz\n  bucket: [\n', "t")
    assert "line" in str(caught.value) and "s3cret" not in str(caught.value)
    with pytest.raises(ConfigError, match="!secret missing: not found"):
        load_config(write(tmp_path, "influxdb:\n  password: !secret missing\n  username: u\n"))


def test_env_var_tag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFLUX_HOST", "db.example")
    config = load_config(write(tmp_path, "influxdb:\n  host: !env_var INFLUX_HOST\n  database: !env_var NOPE hass\n"))
    assert config is not None and config.integration is not None
    assert (config.integration.host, config.integration.database) == ("db.example", "hass")


def state(entity_id: str) -> NormalisedEvent:
    return state_event(entity_id=entity_id)


def test_the_collector_filters_in_the_integrations_words(tmp_path: Path) -> None:
    rules = PatternFilter.from_settings("", "", load_config(write(tmp_path, PASTED)))
    assert rules is not None
    assert rules.allows(state("sensor.kitchen")) and rules.allows(state("switch.kettle"))
    assert not rules.allows(state("sensor.phone_battery")) and not rules.allows(state("light.desk"))
    assert rules.allows(NormalisedEvent(event_type="call_service", time_ns=1))


def test_the_old_variable_still_works_but_not_both(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    legacy = PatternFilter.from_settings('{"patterns": [{"domain": "update"}]}', "", None)
    assert legacy is not None and not legacy.allows(state("update.x"))
    assert "deprecated_setting" in caplog.text
    with pytest.raises(ConfigError, match="set only one"):
        PatternFilter.from_settings('{"patterns": [{"domain": "update"}]}', "", load_config(write(tmp_path, PASTED)))


def tree(folder: Path, files: dict[str, str]) -> str:
    """Write `files` (relative path → text) under `folder`; the path of its config.yaml."""
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(folder / "config.yaml")


def words_in(folder: Path, files: dict[str, str]) -> Integration:
    """The integration's block of the config.yaml among `files`, written under `folder`."""
    config = load_config(tree(folder, files))
    assert config is not None and config.integration is not None
    return config.integration


def test_a_secret_keeps_its_yaml_type_and_is_looked_up_beside_the_file_then_above(tmp_path: Path) -> None:
    words = words_in(tmp_path, {
        "config.yaml": "influxdb: !include sub/influxdb.yaml\n",
        "sub/influxdb.yaml": "port: !secret port\ntags_attributes: !secret names\ninclude: !secret filter\n"
                             "username: !secret user\npassword: !secret number\n",
        "sub/secrets.yaml": "user: near\n",
        "secrets.yaml": "user: far\nport: 8087\nnames: [friendly_name, 1]\nfilter: {domains: sensor}\nnumber: 12\n",
    })
    assert (words.port, words.tags_attributes, words.include.domains) == (8087, ("friendly_name", "1"), ("sensor",))
    assert (words.username, words.password.value) == ("near", "12")  # the nearest secrets.yaml wins
    # a list where a string is wanted is an error naming the key, as cv.string says
    with pytest.raises(ConfigError, match=r"influxdb\.username: expected a string, got list"):
        load_config(tree(tmp_path / "b", {"config.yaml": "influxdb:\n  username: !secret u\n  password: p\n",
                                          "secrets.yaml": "u: [a]\n"}))


@pytest.mark.parametrize(("secrets", "message"), [
    ("logger: debug\n", r"!secret logger: not found"),  # Home Assistant's loader takes `logger` out
    ("a: !secret b\nb: 1\n", r"!secret is not allowed in '.*secrets\.yaml'"),
    ("- a\n", r"secrets\.yaml' is not a mapping"),
])
def test_secrets_yaml_is_read_as_home_assistant_reads_it(tmp_path: Path, secrets: str, message: str) -> None:
    name = "logger" if "logger" in secrets else "a"
    with pytest.raises(ConfigError, match=message):
        load_config(tree(tmp_path, {"config.yaml": f"influxdb:\n  username: !secret {name}\n  password: p\n",
                                    "secrets.yaml": secrets}))


def test_include_is_relative_to_the_including_file(tmp_path: Path) -> None:
    words = words_in(tmp_path, {
        "config.yaml": "influxdb: !include sub/influxdb.yaml\n",
        "sub/influxdb.yaml": "tags: !include tags.yaml\nignore_attributes: !include_dir_merge_list lists\n"
                             "include: !include_dir_merge_named f\n",
        "sub/tags.yaml": "site: 7\n",
        "sub/lists/a.yaml": "[icon, x]\n", "sub/lists/b.yaml": "not a list\n", "sub/lists/.c.yaml": "[hidden]\n",
        "sub/f/1.yaml": "domains: [light]\n",
    })
    assert words.tags == (("site", "7"),) and words.ignore_attributes == ("icon", "x")
    assert words.include.domains == ("light",)


def test_an_empty_included_file_is_a_mapping(tmp_path: Path) -> None:
    """As in Home Assistant: so it is no string, and as the whole block it is an empty one."""
    with pytest.raises(ConfigError, match=r"influxdb\.default_measurement: expected a string, got dict"):
        load_config(tree(tmp_path, {"config.yaml": "influxdb:\n  default_measurement: !include empty.yaml\n",
                                    "empty.yaml": ""}))
    words = words_in(tmp_path / "b", {"config.yaml": "influxdb: !include empty.yaml\n", "empty.yaml": ""})
    assert words.database == "home_assistant"


@pytest.mark.parametrize(("text", "message"), [
    ("influxdb:\n  tags: !include missing.yaml\n", r"!include missing\.yaml: no file"),
    ("influxdb:\n  tags: !include ''\n", r"!include needs an argument"),
    ("influxdb:\n  host: !foo x\n", r"could not determine a constructor for the tag '!foo'"),
    ("influxdb:\n  host: !input x\n", r"could not determine a constructor for the tag '!input'"),
    ("influxdb: !include config.yaml\n", r"includes itself"),
])
def test_a_tag_that_cannot_be_read_is_an_error_naming_it(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(tree(tmp_path, {"config.yaml": text}))


def test_relative_paths_start_in_the_file_s_folder_and_tilde_expands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir("/")
    tree(tmp_path, {"certs/ca.pem": "x", "home/ca.pem": "x"})
    words = words_in(tmp_path, {"config.yaml": "influxdb:\n  ssl_ca_cert: certs/ca.pem\n"})
    assert words.ssl_ca_cert == str(tmp_path / "certs/ca.pem")
    words = words_in(tmp_path, {"config.yaml": "influxdb:\n  ssl_ca_cert: ~/ca.pem\n"})
    assert words.ssl_ca_cert == str(tmp_path / "home/ca.pem")


@pytest.mark.parametrize(("block", "message"), [
    ("host: '::1'", r"influxdb\.host: it makes the URL 'http://::1:8086', which is not one \(an IPv6 address goes "
                    r"in brackets: '\[::1\]'\)"),
    ("host: ''", r"influxdb\.host: it makes the URL 'http://:8086', which has no usable host"),
    ("host: a b", r"influxdb\.host: .* no usable host"),
    ("host: a/b", r"influxdb\.host: .* means another host, port or path"),
    ("host: h:1", r"influxdb\.host: it makes the URL 'http://h:1:8086', which is not one"),
    ("{api_version: 2, token: t, organization: o, host: h, port: 80, path: x}",
     r"influxdb\.path: it makes the URL 'https://h:80x', which is not one"),
    ("{api_version: 2, token: t, organization: o, host: h, path: x}", r"influxdb\.path: .* means another"),
])
def test_a_host_or_path_that_makes_no_usable_url_is_an_error_naming_the_key(block: str, message: str) -> None:
    text = f"influxdb: {block}\n" if block.startswith("{") else f"influxdb:\n  {block}\n"
    with pytest.raises(ConfigError, match=message):
        parse_config(text, "config.yaml")


@pytest.mark.parametrize(("block", "url"), [
    ("host: '[::1]'", "http://[::1]:8086"),
    ("{host: Influx.Local, path: influx}", "http://Influx.Local:8086/influx"),
    ("{api_version: 2, token: t, organization: o, host: 'h:1'}", "https://h:1"),  # as HA's URL, which works
])
def test_hosts_home_assistant_s_client_can_use(block: str, url: str) -> None:
    text = f"influxdb: {block}\n" if block.startswith("{") else f"influxdb:\n  {block}\n"
    assert parse_config(text, "config.yaml").words.url() == url


@pytest.mark.parametrize(("text", "expected"), [
    # cv.boolean: any number that is not 0 is true; its words in any case, stripped
    ("influxdb:\n  ssl: 2\n  verify_ssl: ' Enable '\n", {"ssl": True, "verify_ssl": True}),
    ("influxdb:\n  ssl: 0.0\n  verify_ssl: .nan\n", {"ssl": False, "verify_ssl": True}),
    # vol.Coerce(int): what int() takes
    ("influxdb:\n  port: '8_086'\n  max_retries: ' 4 '\n", {"port": 8086, "max_retries": 4}),
    ("influxdb:\n  port: 8086.9\n", {"port": 8086}),
    # a top-level value that is false is an empty block (load_yaml_config_file: `value or {}`)
    ("influxdb: ''\n", {"database": "home_assistant"}),
    # dict keys coerce and a later equal key wins; entity ids lowercase
    ("influxdb:\n  tags: {1: a, '1': b}\n", {"tags": (("1", "b"),)}),
    ("influxdb:\n  include: {entities: {Sensor.A: 1}}\n", {"include": EntityWords(entities=("sensor.a",))}),
    # null lists are empty lists; an entity's `ignore_attributes: ~` is [] and overrides its domain's
    ("influxdb:\n  tags_attributes: ~\n  include: {domains: ~}\n", {"tags_attributes": ()}),
])
def test_more_values_coerce_as_home_assistant_s_schema_does(text: str, expected: dict[str, object]) -> None:
    words = parse_config(text, "config.yaml").integration
    assert words is not None
    assert {key: getattr(words, key) for key in expected} == expected


def test_an_entity_s_null_ignore_attributes_overrides_its_domain_s() -> None:
    words = parse_config("influxdb:\n  component_config_domain: {sensor: {ignore_attributes: [a]}}\n"
                         "  component_config: {sensor.x: {ignore_attributes: ~}}\n", "config.yaml").words
    assert words.ignored_attributes("sensor.x") == frozenset()
    assert words.ignored_attributes("sensor.y") == {"a"}


@pytest.mark.parametrize("text", [
    "influxdb:\n  include:\n", "influxdb:\n  exclude: ~\n", "influxdb:\n  tags: ~\n",
    "influxdb:\n  component_config:\n", "influxdb:\n  component_config_domain: ~\n",
    "influxdb:\n  component_config_glob: ~\n", "influxdb:\n  include: {entities: ~}\n",
    "influxdb:\n  component_config: {sensor.a: ~}\n", "influxdb:\n  tags: {a: ~}\n",
    "influxdb:\n  component_config: {sensor.a: {override_measurement: ~}}\n",
    "influxdb:\n  ssl_ca_cert: ~\n", "influxdb:\n  verify_ssl: ~\n", "influxdb:\n  measurement_attr: ~\n",
    "influxdb:\n  api_version: ~\n", "influxdb:\n  bucket: ~\n", "influxdb:\n  port: .inf\n",
])
def test_null_mappings_and_more_are_errors_as_in_home_assistant(text: str) -> None:
    with pytest.raises(ConfigError, match=r"\): influxdb\.\w+"):
        parse_config(text, "config.yaml")
