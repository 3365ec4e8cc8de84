"""HA's socket read in bursts (ReadPacing): events that trickle in wake the reader once a burst, not once each, and
none is lost, reordered or held longer than the interval; commands are still answered; a high rate is read
continuously. Against ha-sim's real WebSocket server on a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from homeiq.ha_sim.hub import Hub
from homeiq.ha_sim.runner import SimServer
from homeiq.shared.ha import frames
from homeiq.shared.ha.client import ConnectionLost, HAConnection, LoggedOnly, ReadPacing, _paceable

TOKEN = "sim-token"
INTERVAL_S = 0.05


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    server = SimServer(Hub.create(entity_count=50, token=TOKEN, commit_interval_s=0))
    await server.start()
    yield server
    await server.stop()


class Arrivals:
    """When each event reached the handler (our monotonic clock), and its context id (HA's order)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.ids: list[str] = []

    def __call__(self, frame: frames.EventFrame | frames.StateEventFrame) -> None:
        self.times.append(time.monotonic())
        assert isinstance(frame, frames.StateEventFrame) and frame.event.context is not None
        self.ids.append(frame.event.context.id)

    def bursts(self, gap_s: float = 0.004) -> int:
        """Runs of arrivals with no pause longer than `gap_s` between them: each run is one wakeup's work."""
        return 1 + sum(1 for a, b in zip(self.times, self.times[1:], strict=False) if b - a > gap_s)


async def stream(sim: SimServer, pacing: ReadPacing | None, count: int, rate: float) -> tuple[Arrivals, list[str]]:
    """`count` state changes at `rate` through one connection; what arrived, and what ha-sim sent in order."""
    arrivals = Arrivals()
    async with aiohttp.ClientSession() as http, http.ws_connect(sim.url, decode_text=False) as ws:
        conn = HAConnection(ws, LoggedOnly(), pacing)
        await conn.authenticate(TOKEN, 5)
        reader = asyncio.create_task(conn.read_forever())
        await conn.subscribe(arrivals, 5, "state_changed")
        sent_before = len(sim.hub.sent)
        await sim.hub.emit(count, rate)
        await conn.ping(5)  # answered after every event before it
        reader.cancel()
    return arrivals, [event.context_id for event in sim.hub.sent[sent_before:]]


async def test_a_trickle_of_events_is_read_in_bursts_each_event_once_in_order(sim: SimServer) -> None:
    pacing = ReadPacing(INTERVAL_S)
    paced, sent = await stream(sim, pacing, 200, 100.0)  # 2 s at 100/s: a burst every 50 ms, ~5 events each
    assert paced.ids == sent  # every event, once, in HA's order
    assert pacing.rests >= 20  # it rested between bursts...
    assert paced.bursts() <= 2.0 / INTERVAL_S * 1.5  # ...so the reader woke about once an interval
    assert not pacing.resting.is_set()

    unpaced, sent = await stream(sim, None, 200, 100.0)  # the same without: a wakeup per event (or per tick)
    assert unpaced.ids == sent
    assert unpaced.bursts() >= 2 * paced.bursts()


async def test_no_event_waits_much_longer_than_the_interval(sim: SimServer) -> None:
    fired: list[float] = []
    original = sim.hub.fire_state_change

    def stamped() -> object:  # when ha-sim fired each event, on our clock
        fired.append(time.monotonic())
        return original()

    sim.hub.fire_state_change = stamped  # type: ignore[method-assign]
    arrivals, sent = await stream(sim, ReadPacing(INTERVAL_S), 150, 50.0)
    assert arrivals.ids == sent
    waits = sorted(got - at for got, at in zip(arrivals.times, fired, strict=True))
    assert waits[len(waits) // 2] <= INTERVAL_S  # half of them within the interval
    assert waits[-1] <= INTERVAL_S + 0.1  # the longest: one interval and the loop's turn (a busy machine's slack)


async def test_a_high_rate_is_read_continuously(sim: SimServer) -> None:
    """Bursts of `max_burst` events or more: the socket does not rest (HA's queue for us must not wait on it)."""
    pacing = ReadPacing(INTERVAL_S, max_burst=10)
    arrivals, sent = await stream(sim, pacing, 2_000, 20_000.0)
    assert arrivals.ids == sent
    assert pacing.rests <= 5  # only once the flood ebbed into a small burst


async def test_a_rate_above_the_threshold_is_read_continuously_not_only_its_first_burst(sim: SimServer) -> None:
    """50 events an interval of 50 ms is 1,000/s: at 2,000/s every burst after the first is small (ha-sim sends
    every 5 ms, and aiohttp's queue empties in between), yet the rate stays high, and so must the reading."""
    pacing = ReadPacing(INTERVAL_S, max_burst=50)
    arrivals, sent = await stream(sim, pacing, 2_000, 2_000.0)
    assert arrivals.ids == sent
    assert pacing.rests <= 3


async def test_aiohttps_internals_that_pacing_needs_are_there(sim: SimServer) -> None:
    """The pinned aiohttp has what resting the socket uses: an upgrade that moves it fails here, not silently
    in a home's CPU bill (without them the socket is read continuously)."""
    async with aiohttp.ClientSession() as http, http.ws_connect(sim.url, decode_text=False) as ws:
        assert _paceable(ws) is not None


@contextlib.asynccontextmanager
async def connection_checked_for_unretrieved_futures(sim: SimServer) -> AsyncIterator[HAConnection]:
    """An authenticated connection; once it is gone, no future of it may have failed unseen (asyncio reports
    "Future exception was never retrieved" when one is collected)."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(sim.url, decode_text=False) as ws:
            conn = HAConnection(ws, LoggedOnly(), None)
            await conn.authenticate(TOKEN, 5)
            yield conn
            del conn  # the futures it held go with it
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert not [context for context in reported if "never retrieved" in str(context.get("message"))]


async def test_a_command_that_could_not_be_sent_leaves_nothing_for_the_reader_to_fail(sim: SimServer) -> None:
    """The soak's logs: a backfill's command hit a transport already closing, and when the reader ended it failed
    that command's future too, which nobody awaited any more."""
    async with connection_checked_for_unretrieved_futures(sim) as conn:
        reader = asyncio.create_task(conn.read_forever())

        async def closing(data: str, compress: int | None = None) -> None:
            raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")

        conn._ws.send_str = closing  # type: ignore[method-assign]  # the transport closing under the command
        with pytest.raises(aiohttp.ClientConnectionResetError):
            await conn.command({"type": "get_states"}, 5)
        sim.drop_connections()
        with pytest.raises(ConnectionLost):
            await reader
        del conn, reader


async def test_a_command_cancelled_as_the_connection_ends_leaves_nothing_unretrieved(sim: SimServer) -> None:
    """A session's tasks end together: the reader fails a waiting command's future, and the task group cancels that
    command's task before it looks at it."""
    async with connection_checked_for_unretrieved_futures(sim) as conn:
        sim.hub.faults.ignore_pings = True
        with pytest.raises(ExceptionGroup):
            async with asyncio.TaskGroup() as group:
                group.create_task(conn.read_forever())
                group.create_task(conn.command({"type": "ping"}, 30))
                await asyncio.sleep(0.2)
                sim.drop_connections()
        del conn, group
