"""Which event loop the services run on: uvloop's where it is installed, asyncio's on request (HOMEIQ_EVENT_LOOP),
and a wrong choice named."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from homeiq.shared import lifecycle
from homeiq.shared.settings import ConfigError

SEEN_LOOPS: list[str] = []


async def _note_loop(stop: asyncio.Event) -> int:
    SEEN_LOOPS.append(type(asyncio.get_running_loop()).__module__.split(".")[0])
    return 0


@pytest.mark.parametrize(("choice", "module"), [(None, "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_the_services_loop_is_uvloops_unless_asked_for_asyncios(monkeypatch: pytest.MonkeyPatch, choice: str | None,
                                                                module: str) -> None:
    if choice is None:
        monkeypatch.delenv("HOMEIQ_EVENT_LOOP", raising=False)
    else:
        monkeypatch.setenv("HOMEIQ_EVENT_LOOP", choice)
    factory = lifecycle.event_loop_factory()
    assert factory is (uvloop.new_event_loop if module == "uvloop" else None)
    SEEN_LOOPS.clear()
    assert lifecycle.run(_note_loop, factory) == 0
    assert [module] == SEEN_LOOPS, SEEN_LOOPS


def test_a_wrong_choice_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOMEIQ_EVENT_LOOP", "trio")
    with pytest.raises(ConfigError, match="HOMEIQ_EVENT_LOOP"):
        lifecycle.event_loop_factory()
