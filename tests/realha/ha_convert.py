"""Run by a pinned Home Assistant release's own interpreter (tests/realha/test_differential.py): Home Assistant's
conversion of events to InfluxDB points, exactly as its `influxdb` integration does it, and the WebSocket frame the
same event reaches our collector as.

Reads JSON requests, one a line, on stdin: `{"block": {...}, "events": [...]}`, and answers each with one line
on stdout: `{"error": "..."}` where HA's schema refuses the block, else `{"answers": [...]}`. The block goes
through the integration's `CONFIG_SCHEMA` and `_generate_event_to_json`; each event is built as HA builds one
(a `State` whose attributes may hold Python types JSON cannot carry: tuples, sets, datetimes, enums, NaN, keys that
are not strings, described with `{"$": kind, "v": ...}`) and answered with:

- `frame`: the bytes `subscribe_events` sends for it (`websocket_api.messages.cached_event_message`);
- `v1`, `v2`: the line the integration's client writes for it with `api_version` 1 (influxdb-python's
  `make_lines`, as `write_points`) and 2 (influxdb-client's `Point.from_dict`, as `write_api.write`), or null
  where it writes no point, `!raised <error>` where the client raises (the integration would drop the batch);
- `v1_json`, `v2_json`: the same for the event rebuilt with the attributes JSON carried (a tuple as a list, NaN as
  None...): what HA would write had it held the values our collector receives.
"""

from __future__ import annotations

import enum
import inspect
import json
import sys
from datetime import UTC, datetime
from typing import Any

import voluptuous as vol
from homeassistant.components import influxdb
from homeassistant.components.light import ColorMode
from homeassistant.components.websocket_api import messages
from homeassistant.core import Context, Event, State
from influxdb.line_protocol import make_lines
from influxdb_client.client.write.point import Point


class PlainEnum(enum.Enum):
    RED = "red"


class Number(enum.IntEnum):
    ONE = 1


class Word(enum.StrEnum):
    ON = "on"


ENUMS = {"plain": PlainEnum.RED, "int": Number.ONE, "str": Word.ON, "color_mode_hs": ColorMode.HS,
         "color_mode_onoff": ColorMode.ONOFF}


def materialise(value: Any) -> Any:
    """A described value as the Python object HA holds."""
    if isinstance(value, list):
        return [materialise(item) for item in value]
    if not isinstance(value, dict):
        return value
    kind = value.get("$") if set(value) == {"$", "v"} else None  # drawn.py draws no other dict with a key "$"
    if kind is None:
        return {key: materialise(item) for key, item in value.items()}
    inner = value.get("v")
    match kind:
        case "tuple":
            return tuple(materialise(item) for item in inner)
        case "set":
            return set(materialise(item) for item in inner)
        case "float":
            return float(inner)  # "nan", "inf", "-inf"
        case "datetime":
            return datetime.fromisoformat(inner)
        case "enum":
            return ENUMS[inner]
        case "color_modes":
            return [ColorMode(mode) for mode in inner]
        case "intkeys":
            return {int(key): materialise(item) for key, item in inner.items()}
    raise ValueError(kind)


def make_event(description: dict[str, Any], attributes: dict[str, Any] | None = None) -> Event:
    fired = description["time_fired"]  # a float timestamp, as HA's clock gives it
    when = datetime.fromtimestamp(fired, UTC)
    context = Context(id=description.get("context_id"))
    if attributes is None:
        attributes = {name: materialise(value) for name, value in description["attributes"].items()}
    state = State(description["entity_id"], description["state"], attributes,
                  last_changed=when, last_updated=when, context=context)
    data = {"entity_id": description["entity_id"], "old_state": None, "new_state": state}
    if "time_fired_timestamp" in inspect.signature(Event).parameters:  # 2024.4 on: a float
        return Event("state_changed", data, time_fired_timestamp=fired, context=context)
    return Event("state_changed", data, time_fired=when, context=context)


def frame_of(event: Event) -> str:
    parameter = next(iter(inspect.signature(messages.cached_event_message).parameters))
    message = messages.cached_event_message(b"1" if parameter == "message_id_as_bytes" else 1, event)
    return message.decode() if isinstance(message, bytes) else message


def v1_line(point: dict[str, Any], precision: str | None) -> str | None:
    try:
        return make_lines({"points": [point]}, precision=precision).rstrip("\n")
    except (ValueError, TypeError) as exc:
        return f"!raised {type(exc).__name__}"


def v2_line(point: dict[str, Any], precision: str | None) -> str | None:
    kwargs = {"write_precision": precision} if precision else {}
    try:
        return Point.from_dict(point, **kwargs).to_line_protocol() or None
    except (ValueError, TypeError) as exc:
        return f"!raised {type(exc).__name__}"


def convert(request: dict[str, Any]) -> dict[str, Any]:
    try:
        conf = influxdb.CONFIG_SCHEMA({"influxdb": request["block"]})["influxdb"]
    except vol.Invalid as exc:
        return {"error": str(exc)}
    event_to_json = influxdb._generate_event_to_json(conf)
    precision = conf.get("precision")
    answers = []
    for description in request["events"]:
        event = make_event(description)
        frame = frame_of(event)
        # The same event with the attributes JSON gave back: what HA would write had it held JSON's types.
        carried = json.loads(frame)["event"]["data"]["new_state"]["attributes"]
        answer = {"frame": frame}
        for suffix, point in (("", event_to_json(event)),
                              ("_json", event_to_json(make_event(description, carried)))):
            answer["v1" + suffix] = None if point is None else v1_line(point, precision)
            answer["v2" + suffix] = None if point is None else v2_line(point, precision)
        answers.append(answer)
    return {"answers": answers}


def main() -> None:
    for line in sys.stdin:
        sys.stdout.write(json.dumps(convert(json.loads(line))) + "\n")
        sys.stdout.flush()

if __name__ == "__main__":
    main()
