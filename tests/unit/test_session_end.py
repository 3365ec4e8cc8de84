"""Why an HA session ended: the first kind in the table that any failure of the group is, its label and reason."""

from __future__ import annotations

import aiohttp
import pytest

from homeiq.collector.session_end import DISCONNECT_LABELS, Stopped, why_ended
from homeiq.shared.ha.client import AuthInvalid, CommandFailed, ConnectionLost, HeartbeatTimeout, MessageTooBig


@pytest.mark.parametrize(("failure", "label", "reason_has"), [
    (Stopped(), None, "stopping"),
    (AuthInvalid("bad token"), "auth_invalid", "auth_invalid: bad token"),
    (HeartbeatTimeout("no pong in 10 s"), "heartbeat", "no pong"),
    (MessageTooBig("message over 64 MiB"), "message_too_big", "raise HA_MAX_MESSAGE_MB"),
    (ConnectionLost("closed 1006"), "closed", "closed 1006"),
    (CommandFailed("get_states", "unknown_error", "x"), "closed", "get_states failed"),
    (TimeoutError(), "timeout", "within 7 s"),
    (aiohttp.ClientConnectionError("refused"), "error", "ClientConnectionError: refused"),
    (ConnectionRefusedError("refused"), "error", "ConnectionRefusedError"),
])
def test_each_failure_has_its_label_and_reason(failure: BaseException, label: str | None, reason_has: str) -> None:
    ended = why_ended(failure, 7.0)
    assert ended is not None and ended[0] == label and reason_has in ended[1]


def test_in_a_group_the_kind_first_in_the_table_explains_the_end() -> None:
    group = BaseExceptionGroup("session", [ConnectionLost("closed"), ExceptionGroup("inner", [AuthInvalid("x")])])
    assert why_ended(group, 1.0) == ("auth_invalid", "auth_invalid: x")
    stopping = BaseExceptionGroup("session", [TimeoutError(), Stopped()])
    assert why_ended(stopping, 1.0) == (None, "stopping")


def test_a_subclass_is_taken_for_its_own_kind_before_its_parent() -> None:
    ended = why_ended(ExceptionGroup("session", [ConnectionLost("closed"), MessageTooBig("big")]), 1.0)
    assert ended is not None and ended[0] == "message_too_big"


def test_anything_else_is_a_bug_and_is_not_explained() -> None:
    assert why_ended(ValueError("ours"), 1.0) is None
    assert why_ended(ExceptionGroup("session", [KeyError("k")]), 1.0) is None


def test_the_disconnect_labels_are_the_table_s() -> None:
    assert DISCONNECT_LABELS == ("auth_invalid", "heartbeat", "message_too_big", "closed", "timeout", "error")
