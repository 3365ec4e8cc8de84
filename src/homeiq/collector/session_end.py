"""Why a Home Assistant session ended: one table from the failure to the metric label and the reason logged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, NamedTuple

import aiohttp

from homeiq.shared.ha.client import AuthInvalid, CommandFailed, ConnectionLost, HeartbeatTimeout, MessageTooBig


class Stopped(Exception):
    """Raised inside a session's task group when the process is asked to stop."""


class SessionEnd(NamedTuple):
    """A kind of end: the failures it covers, its `homeiq_ha_disconnects_total` label (None: not a disconnect,
    the process stops), and how its reason reads given the failure and the connect timeout."""

    failures: type[BaseException] | tuple[type[BaseException], ...]
    label: str | None
    reason: Callable[[BaseException, float], str]


# In priority order: a session's task group can fail in several tasks at once; the first kind any of its
# failures is explains the end. Anything else is a bug and propagates.
SESSION_ENDS: Final = (
    SessionEnd(Stopped, None, lambda _exc, _t: "stopping"),
    SessionEnd(AuthInvalid, "auth_invalid", lambda exc, _t: f"auth_invalid: {exc}"),
    SessionEnd(HeartbeatTimeout, "heartbeat", lambda exc, _t: str(exc)),
    SessionEnd(MessageTooBig, "message_too_big", lambda exc, _t: f"{exc} (raise HA_MAX_MESSAGE_MB: the events in it "
               "that have recorder history are backfilled, the others are lost)"),
    SessionEnd((ConnectionLost, CommandFailed), "closed", lambda exc, _t: str(exc)),
    SessionEnd(TimeoutError, "timeout", lambda _exc, timeout_s: f"no WebSocket within {timeout_s:g} s"),
    SessionEnd((aiohttp.ClientError, OSError), "error", lambda exc, _t: f"{type(exc).__name__}: {exc}"),
)
DISCONNECT_LABELS: Final = tuple(end.label for end in SESSION_ENDS if end.label is not None)


def why_ended(failure: BaseException, connect_timeout_s: float) -> tuple[str | None, str] | None:
    """(label, reason) of the end `failure` (or the group of failures) stands for; None when it is none of them."""
    leaves: list[BaseException] = []
    pending = [failure]
    while pending:
        current = pending.pop()
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        else:
            leaves.append(current)
    for end in SESSION_ENDS:
        for leaf in leaves:
            if isinstance(leaf, end.failures):
                return end.label, end.reason(leaf, connect_timeout_s)
    return None
