"""What the collector remembers of the events no backfill can bring back, for a Redis that forgets (pure logic)."""

from __future__ import annotations

import sys

import msgspec

from homeiq.collector.unrecoverable import Unrecoverable, UnrecoverableLog, encoded, marked
from homeiq.shared.events import Context, NormalisedEvent, State, decode_event

STATE_EVENT = NormalisedEvent("state_changed", 1, entity_id="light.a", domain="light",
                              new_state=State("on", last_changed_ns=1, last_updated_ns=1),
                              old_state=State("off", last_changed_ns=0, last_updated_ns=0))
REMOVAL = msgspec.structs.replace(STATE_EVENT, new_state=None)
CALL_EVENT = NormalisedEvent("call_service", 1, context=Context(id="c1"),
                             data=msgspec.Raw(b'{"new_state":{"state":"on"},"event_type":"state_changed"}'))
CALL = encoded(CALL_EVENT)
STATE = encoded(STATE_EVENT)


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


def test_what_no_backfill_can_bring_back_is_marked_where_it_is_encoded_and_again_when_read_back_from_disk() -> None:
    """A service call (whose data looks like a state change), a removal, one whose old attributes hold a key
    `new_state` (a sensor keeping a trigger's data): marked; a state change: not. Read back from the spool as plain
    bytes, each is marked again the same from its bytes alone (a byte search for `"new_state":` took the last for a
    state change: lost uncounted had Redis forgotten it after a drain)."""
    trigger = msgspec.structs.replace(REMOVAL, old_state=State(
        "off", attributes=msgspec.Raw(b'{"trigger":{"from_state":"a","new_state":"b"}}'), last_changed_ns=0))
    events = [STATE_EVENT, CALL_EVENT, REMOVAL, trigger]
    payloads = [encoded(event) for event in events]
    assert [type(p) is Unrecoverable for p in payloads] == [False, True, True, True]
    assert [decode_event(p) for p in payloads] == events  # the mark changes no byte
    read_back = marked([bytes(p) for p in payloads])
    assert [type(p) is Unrecoverable for p in read_back] == [False, True, True, True]
    assert read_back == payloads
    log = UnrecoverableLog(capacity=10)
    log.added(b"5-0", read_back)
    log.added(b"6-0", [bytes(p) for p in payloads])  # unmarked: taken for states (hence `marked` on the way back)
    assert log.after(b"4-0") == (3, True)
