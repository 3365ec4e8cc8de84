"""A batch's body groups each series' points (influxd digests them for less CPU) and keeps their order."""

from __future__ import annotations

from homeiq.shared.influx.batch import Batch, Encoded


def item(n: int, line: bytes) -> Encoded:
    return Encoded(f"{n}-0".encode(), None, b"", line, None)


def test_points_of_one_series_go_side_by_side_in_the_order_they_came() -> None:
    lines = [b"m,entity_id=b v=1 10", b"m,entity_id=a v=1 10", b"m,entity_id=b v=2 20", b"",
             b"m,entity_id=a\\ x v=1 10", b"m,entity_id=a v=2 10", b"m,entity_id=b v=3 30", b"m,entity_id=a\\ x v=2 5"]
    batch = Batch([item(n, line) for n, line in enumerate(lines)])
    assert batch.body.split(b"\n") == [
        b"m,entity_id=a v=1 10", b"m,entity_id=a v=2 10",  # one time twice: the later still comes last
        b"m,entity_id=a\\ x v=1 10", b"m,entity_id=a\\ x v=2 5",  # an escaped space: still one group, in order
        b"m,entity_id=b v=1 10", b"m,entity_id=b v=2 20", b"m,entity_id=b v=3 30"]
    assert sorted(i.entry_id for i in batch.items) == sorted(f"{n}-0".encode() for n in range(len(lines)))
    assert batch.points() == 7
