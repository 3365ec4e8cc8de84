"""Process lifecycle: signals set a stop event; a second signal forces exit."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from homeiq.shared.logs import Log

log = Log(__name__)


def run(main: Callable[[asyncio.Event], Coroutine[Any, Any, int]]) -> int:
    """Run `main(stop)` in a fresh loop; SIGINT/SIGTERM set `stop`, a second one exits at once."""

    async def _wrapper() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def _on_signal(sig: signal.Signals) -> None:
            if stop.is_set():
                log.warning("forced_exit", signal=sig.name)
                os._exit(130)
            log.info("stopping", signal=sig.name)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, _on_signal, sig)
        return await main(stop)

    return asyncio.run(_wrapper())


async def wait_or_stop(stop: asyncio.Event, delay_s: float) -> bool:
    """Sleep up to `delay_s`; return True if `stop` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay_s)
    except TimeoutError:
        return False
    return True
