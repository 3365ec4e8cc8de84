"""Command handlers, each answering as HA's handler of the same name does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from homeiq.ha_sim.hub import HA_VERSION, MATCH_ALL, Hub
from homeiq.ha_sim.messages import error_message, pong_message, result_message
from homeiq.ha_sim.recorder import Recorded


class Connection(Protocol):
    """What a handler needs of the connection it answers (the server's, or a test's)."""

    hub: Hub
    subscriptions: dict[int, str]
    coalesce: bool

    def send(self, message: bytes) -> None:
        """Queue one message for the client."""


Handler = Callable[[Connection, int, dict[str, Any]], None]

# Attribute-only changes of these domains count as significant (recorder/history/const.py).
SIGNIFICANT_DOMAINS = frozenset({"climate", "device_tracker", "humidifier", "thermostat", "water_heater"})


def dispatch(conn: Connection, msg_id: int, message: dict[str, Any]) -> None:
    """Run the handler of `message["type"]`, or answer `unknown_command`."""
    if message["type"] == "ping":
        faults = conn.hub.faults
        if faults.pong_delay_s:
            asyncio.get_running_loop().call_later(faults.pong_delay_s, conn.send, pong_message(msg_id))
        elif not faults.ignore_pings:
            conn.send(pong_message(msg_id))
        return
    handler = HANDLERS.get(message["type"])
    if handler is None:
        conn.send(error_message(msg_id, "unknown_command", "Unknown command."))
        return
    handler(conn, msg_id, message)


def supported_features(conn: Connection, msg_id: int, message: dict[str, Any]) -> None:
    """`supported_features {features: {coalesce_messages: 1}}`."""
    features = message.get("features")
    conn.coalesce = isinstance(features, dict) and bool(features.get("coalesce_messages"))
    conn.send(result_message(msg_id))


def subscribe_events(conn: Connection, msg_id: int, message: dict[str, Any]) -> None:
    """`subscribe_events {event_type?}`: the subscription's id is this command's id."""
    conn.subscriptions[msg_id] = message.get("event_type") or MATCH_ALL
    conn.hub.subscribes += 1
    conn.send(result_message(msg_id))


def unsubscribe_events(conn: Connection, msg_id: int, message: dict[str, Any]) -> None:
    """`unsubscribe_events {subscription}`."""
    if conn.subscriptions.pop(message.get("subscription", -1), None) is None:
        conn.send(error_message(msg_id, "not_found", "Subscription not found."))
    else:
        conn.send(result_message(msg_id))


def get_states(conn: Connection, msg_id: int, _: dict[str, Any]) -> None:
    """`get_states`: every current state as `State.as_dict()`."""
    conn.send(result_message(msg_id, [conn.hub.state_dict(e) for e in conn.hub.present]))


def get_config(conn: Connection, msg_id: int, _: dict[str, Any]) -> None:
    """`get_config`: the fields clients read."""
    conn.send(result_message(msg_id, {"version": HA_VERSION, "state": "RUNNING", "time_zone": "UTC",
                                      "location_name": "ha-sim", "unit_system": {"temperature": "°C"}}))


def device_registry_list(conn: Connection, msg_id: int, _: dict[str, Any]) -> None:
    """`config/device_registry/list`."""
    conn.send(result_message(msg_id, [
        {"area_id": d.area_id, "configuration_url": None, "config_entries": [d.config_entry],
         "connections": [], "disabled_by": None, "entry_type": None, "hw_version": None, "id": d.id,
         "identifiers": [["sim", d.id]], "labels": [], "manufacturer": d.manufacturer, "model": d.model,
         "model_id": None, "name_by_user": None, "name": d.name, "primary_config_entry": d.config_entry,
         "serial_number": None, "sw_version": d.sw_version, "via_device_id": None}
        for d in conn.hub.population.devices
    ]))


def entity_registry_list(conn: Connection, msg_id: int, _: dict[str, Any]) -> None:
    """`config/entity_registry/list` (the fields of the captured HA answer)."""
    conn.send(result_message(msg_id, [
        {"area_id": e.area_id, "categories": {}, "config_entry_id": None, "created_at": 0.0,
         "device_id": e.device_id, "disabled_by": None, "entity_category": e.entity_category,
         "entity_id": e.entity_id, "has_entity_name": True, "hidden_by": None, "icon": None, "id": e.registry_id,
         "labels": [], "modified_at": 0.0, "name": None, "options": {}, "original_name": e.friendly_name,
         "platform": e.platform, "translation_key": None, "unique_id": e.registry_id[:16]}
        for e in conn.hub.present if e.registry_id  # none: no unique id (a YAML template sensor), no entry
    ]))


def area_registry_list(conn: Connection, msg_id: int, _: dict[str, Any]) -> None:
    """`config/area_registry/list`."""
    conn.send(result_message(msg_id, [
        {"aliases": [], "area_id": area_id, "floor_id": floor_id, "icon": None, "labels": [], "name": name,
         "picture": None}
        for area_id, name, floor_id in conn.hub.population.areas
    ]))


def floor_registry_list(conn: Connection, msg_id: int, _: dict[str, Any]) -> None:
    """`config/floor_registry/list`."""
    conn.send(result_message(msg_id, [
        {"aliases": [], "floor_id": floor_id, "icon": None, "level": level, "name": name}
        for floor_id, name, level in conn.hub.population.floors
    ]))


def recorder_info(conn: Connection, msg_id: int, _: dict[str, Any]) -> None:
    """`recorder/info`."""
    conn.send(result_message(msg_id, {"backlog": 0, "max_backlog": 65000, "migration_in_progress": False,
                                      "migration_is_live": False, "recording": True, "thread_running": True}))


def history_during_period(conn: Connection, msg_id: int, message: dict[str, Any]) -> None:
    """`history/history_during_period`: compressed states from the recorder, as HA answers it."""
    start_ts = _parse_time(message.get("start_time"))
    if start_ts is None:
        conn.send(error_message(msg_id, "invalid_start_time", "Invalid start_time"))
        return
    end_ts = _parse_time(message.get("end_time")) if message.get("end_time") else None
    if message.get("end_time") and end_ts is None:
        conn.send(error_message(msg_id, "invalid_end_time", "Invalid end_time"))
        return
    entity_ids = message.get("entity_ids")
    if not isinstance(entity_ids, list) or not entity_ids:
        conn.send(error_message(msg_id, "invalid_entity_ids", "Invalid entity_ids"))
        return
    options = (message.get("include_start_time_state", True), message.get("significant_changes_only", True),
               message.get("minimal_response", False), message.get("no_attributes", False))
    result = {}
    for entity_id in entity_ids:
        rows = _history_rows(conn.hub.recorder.rows(entity_id), entity_id, start_ts, end_ts, *options)
        if rows:
            result[entity_id] = rows
    conn.send(result_message(msg_id, result))


def _history_rows(
    recorded: list[Recorded], entity_id: str, start_ts: float, end_ts: float | None,
    include_start: bool, significant_only: bool, minimal: bool, no_attributes: bool,
) -> list[dict[str, Any]]:
    """The recorder's query: `last_updated_ts > start` and `< end`, compared as the floats it stores, in the order
    of `last_updated_ts` (which a clock stepped back makes differ from the order of the changes)."""
    domain = entity_id.split(".", 1)[0]
    recorded = sorted(recorded, key=lambda r: r.last_updated)
    before = [r for r in recorded if r.last_updated <= start_ts]
    window = [r for r in recorded if start_ts < r.last_updated and (end_ts is None or r.last_updated < end_ts)]
    if significant_only and domain not in SIGNIFICANT_DOMAINS:
        window = [r for r in window if r.last_changed == r.last_updated]
    rows: list[dict[str, Any]] = []
    if include_start and before:
        first = before[-1]
        rows.append(_row(first.state, first.attributes, start_ts, start_ts, no_attributes))
    previous_state = rows[0]["s"] if rows else None
    for record in window:
        if minimal and rows:
            if record.state == previous_state:
                continue
            rows.append({"s": record.state, "lu": record.last_updated})
        else:
            rows.append(_row(record.state, record.attributes, record.last_updated, record.last_changed,
                             no_attributes))
        previous_state = record.state
    return rows


def _row(state: str, attributes: dict[str, Any], updated: float, changed: float, no_attributes: bool,
         ) -> dict[str, Any]:
    """A compressed state: the raw floats as stored; `lc` only when it differs from `lu`."""
    row: dict[str, Any] = {"s": state}
    if not no_attributes:
        row["a"] = attributes
    row["lu"] = updated
    if changed != updated:
        row["lc"] = changed
    return row


def _parse_time(value: object) -> float | None:
    """An ISO time as HA's `dt_util.parse_datetime` then `.timestamp()` gives it; None when invalid or naive."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp()


HANDLERS: dict[str, Handler] = {
    "supported_features": supported_features,
    "subscribe_events": subscribe_events,
    "unsubscribe_events": unsubscribe_events,
    "get_states": get_states,
    "get_config": get_config,
    "config/device_registry/list": device_registry_list,
    "config/entity_registry/list": entity_registry_list,
    "config/area_registry/list": area_registry_list,
    "config/floor_registry/list": floor_registry_list,
    "recorder/info": recorder_info,
    "history/history_during_period": history_during_period,
}
