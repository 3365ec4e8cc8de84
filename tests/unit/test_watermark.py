"""The watermark moves only past events that are durable, in the order they were offered."""

from __future__ import annotations

from homeiq.collector.gap import Watermark


def test_nothing_settled_keeps_the_watermark_where_it_was_read() -> None:
    mark = Watermark(5, b"1-0")
    mark.mark(10, 100, b"2-0")
    assert mark.advance(9) == (5, b"1-0")


def test_it_advances_to_the_last_mark_whose_events_all_settled() -> None:
    mark = Watermark()
    mark.mark(10, 100, b"2-0")
    mark.mark(20, 200, b"3-0")
    mark.mark(30, 300, b"4-0")
    assert mark.advance(25) == (200, b"3-0")
    assert mark.advance(30) == (300, b"4-0")
    assert mark.advance(1_000) == (300, b"4-0")  # nothing more to move to


def test_a_repeated_mark_is_kept_once() -> None:
    mark = Watermark()
    mark.mark(10, 100, b"2-0")
    mark.mark(10, 100, b"2-0")
    mark.mark(10, 150, b"2-0")  # a newer state at the same count (a backfill between) is a new mark
    assert mark.advance(10) == (150, b"2-0")
