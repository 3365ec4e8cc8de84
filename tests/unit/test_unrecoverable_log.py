"""What the collector remembers of the events no backfill can bring back, for a Redis that forgets (pure logic)."""

from __future__ import annotations

import sys

from homeiq.collector.publisher import UnrecoverableLog

CALL = b'{"event_type":"call_service","time_ns":1}'
STATE = b'{"event_type":"state_changed","time_ns":1,"new_state":{"state":"on"}}'


def test_it_counts_the_events_after_the_id_redis_kept_and_forgets_them() -> None:
    log = UnrecoverableLog(capacity=100)
    log.added(b"10-0", [CALL, STATE])
    log.added(b"20-0", [STATE])  # nothing a backfill cannot bring back
    log.added(b"20-1", [CALL, CALL, STATE])
    log.added(b"30-0", [CALL])
    assert log.after(b"20-0") == (3, True)  # 20-1 and 30-0; everything since the first is remembered
    assert log.after(b"20-0") == (0, True)  # counted once
    assert log.after(None) == (1, True)  # Redis kept nothing of ours: 10-0's
    assert log.after(None) == (0, True)


def test_ids_compare_as_numbers_not_as_text() -> None:
    log = UnrecoverableLog(capacity=100)
    log.added(b"9-0", [CALL])
    log.added(b"10-0", [CALL, CALL])
    assert log.after(b"9-0") == (2, True)


def test_past_its_capacity_the_oldest_go_and_a_loss_reaching_back_further_is_not_known_whole() -> None:
    log = UnrecoverableLog(capacity=10)
    for ms in range(1, 26):
        log.added(b"%d-0" % ms, [CALL])
    assert log.after(b"20-0") == (5, True)
    lost, known = log.after(b"1-0")  # older than anything it still remembers
    assert known is False and 0 < lost <= 10


def test_a_full_log_holds_no_python_object_per_batch() -> None:
    """It is always full after an hour at a home's rate (a batch with a service call every few hundred ms): a
    tuple of tuples and ints per batch was ~3 memory blocks each, 60,000 blocks that took the soak millions of
    events to fill (a warm-up that looked like growth)."""
    log = UnrecoverableLog(capacity=20_000)
    log.added(b"1-0", [CALL])
    before = sys.getallocatedblocks()
    for ms in range(2, 20_002):
        log.added(b"%d-%d" % (ms, ms % 7), [CALL, STATE])
    assert sys.getallocatedblocks() - before < 100
    assert log.after(b"10001-7")[0] == 10_000
