"""The collector's buffer: bounded, FIFO, never waits to offer, and a stop marker ends a batch."""

from __future__ import annotations

import asyncio

from homeiq.collector.publisher import _STOP, Buffer


def test_offer_refuses_when_full_and_keeps_order() -> None:
    buffer = Buffer(2)
    assert buffer.offer(b"1") and buffer.offer(b"2")
    assert not buffer.offer(b"3")
    assert buffer.take_ready(10) == [b"1", b"2"] and len(buffer) == 0


def test_take_ready_takes_at_most_the_batch_and_stops_at_the_marker() -> None:
    buffer = Buffer(10)
    for item in (b"1", b"2", _STOP, b"3"):
        buffer.offer(item)
    assert buffer.items() == [b"1", b"2", b"3"]
    assert buffer.take_ready(1) == [b"1"]
    assert buffer.take_ready(10) == [b"2", _STOP]
    assert buffer.take_ready(10) == [b"3"]


async def test_put_waits_for_room_and_take_waits_for_an_item() -> None:
    buffer = Buffer(1)
    buffer.offer(b"1")
    put = asyncio.create_task(buffer.put(b"2"))
    await asyncio.sleep(0)
    assert not put.done()
    assert await buffer.take(5) == [b"1"]
    await asyncio.wait_for(put, 1)
    assert buffer.items() == [b"2"]
    buffer.take_ready(5)
    take = asyncio.create_task(buffer.take(5))
    await asyncio.sleep(0)
    assert not take.done()
    buffer.offer(b"3")
    assert await asyncio.wait_for(take, 1) == [b"3"]


async def test_unbound_takes_everything_and_wakes_a_waiting_put() -> None:
    buffer = Buffer(1)
    buffer.offer(b"1")
    put = asyncio.create_task(buffer.put(b"2"))
    await asyncio.sleep(0)
    buffer.unbound()
    await asyncio.wait_for(put, 1)
    assert all(buffer.offer(bytes([n])) for n in range(100))
    assert len(buffer) == 102
