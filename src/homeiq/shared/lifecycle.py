"""Process lifecycle: signals set a stop event; a second signal forces exit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from homeiq.shared.logs import Log
from homeiq.shared.settings import ConfigError

log = Log(__name__)


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event, on_signal: Callable[[signal.Signals], None] | None = None) -> Iterator[None]:
    """For the length of the block, SIGINT/SIGTERM set `stop` (after `on_signal`); a second one exits at once (130).
    Outside the main thread (a test runner's) no handler can be set: the block runs without."""
    loop = asyncio.get_running_loop()

    def _on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("forced_exit", signal=sig.name)
            os._exit(130)
        if on_signal is not None:
            on_signal(sig)
        stop.set()

    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, _on_signal, sig)
        except (RuntimeError, ValueError):
            break
        installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def run(main: Callable[[asyncio.Event], Coroutine[Any, Any, int]],
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> int:
    """Run `main(stop)` in a fresh loop (`loop_factory`'s, else asyncio's); SIGINT/SIGTERM set `stop`, a second one
    exits at once."""

    async def _wrapper() -> int:
        stop = asyncio.Event()
        with stop_on_signals(stop, lambda sig: log.info("stopping", signal=sig.name)):
            return await main(stop)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_wrapper())


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed, unless HOMEIQ_EVENT_LOOP=asyncio; None: the standard library's.

    Every message (a frame from HA, a Redis command, an HTTP request) costs a few turns of the event loop, and at a
    home's rate that is most of the CPU: on uvloop's (libuv, in C) the all-in-one process took 8-9 % less of a
    core than on asyncio's at 50 events/s (benchmarks/footprint.py, three pairs run side by side). Where no wheel
    exists (32-bit ARM) it is not installed."""
    choice = os.environ.get("HOMEIQ_EVENT_LOOP", "uvloop")
    if choice not in ("uvloop", "asyncio"):
        raise ConfigError(f"HOMEIQ_EVENT_LOOP: expected uvloop or asyncio, got {choice!r}")
    if choice == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:
        return None
    return uvloop.new_event_loop


async def wait_or_stop(stop: asyncio.Event, delay_s: float) -> bool:
    """Sleep up to `delay_s`; return True if `stop` was set meanwhile."""
    if delay_s <= 0 or stop.is_set():  # no task to create and cancel; still the loop's turn, as any wait gives
        await asyncio.sleep(0)
        return stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay_s)
    except TimeoutError:
        return False
    return True
