"""The gap tracker: which span a backfill must cover, and which states in it arrived live already. Each case is an
edge the fault suite found against real processes, checked here in microseconds."""

from __future__ import annotations

from homeiq.collector.gap import MAX_PROBES, GapTracker

US = 1000  # one microsecond in ns: a gap starts at the microsecond after the last live state


def started(saved_ns: int | None = None, read_from: bytes = b"") -> GapTracker:
    gap = GapTracker()
    gap.resume(saved_ns, read_from)
    return gap


def test_a_fresh_collector_has_no_gap_once_it_knows_there_was_no_last_run() -> None:
    gap = GapTracker()
    assert gap.open  # it does not know yet where it left off
    gap.resume(None)
    assert not gap.open
    assert gap.begin(b"") is None  # no live state, no earlier session: nothing to backfill


def test_a_restart_opens_the_gap_at_the_microsecond_after_the_saved_watermark() -> None:
    gap = started(5_000_000, b"7-0")
    assert gap.open and gap.pending_start_ns == 5_000_000 + US
    assert gap.durable_until(9_000_000, b"9-0") == (5_000_000, b"7-0")  # the watermark waits before the gap


def test_a_reconnect_opens_the_gap_after_the_last_live_state_and_its_end_closes_it() -> None:
    gap = started()
    gap.live("sensor.a", 10_000)
    start = gap.begin(b"3-0")
    assert start == 10_000 + US
    assert not gap.clock_shown(0)  # the first live state: HA's clock did not go back
    gap.published("sensor.a", 12_000)
    assert ("sensor.a", 12_000) in gap.seen  # a backfill must not publish it again
    gap.end(start)
    assert not gap.open and gap.seen == set()
    assert gap.durable_until(12_000, b"4-0") == (12_000, b"4-0")


def test_the_watermark_follows_the_last_live_state_not_the_largest_when_ha_steps_back() -> None:
    gap = started()
    gap.live("sensor.a", 3_600_000_000_000)
    gap.live("sensor.a", 1_000)  # HA's clock stepped back an hour
    assert gap.begin(b"") == 1_000 + US  # the gap starts after the state received last, so nothing is hidden


def test_a_backfill_cut_short_by_a_second_reconnect_is_retried_whole() -> None:
    gap = started()
    gap.live("sensor.a", 10_000)
    first = gap.begin(b"1-0")
    gap.live("sensor.a", 50_000)  # live again, then disconnected before the backfill completed
    second = gap.begin(b"2-0")
    assert second == first  # the earlier start stays
    assert gap.durable_until(50_000, b"3-0") == (10_000, b"1-0")


def test_ending_an_older_backfill_leaves_a_gap_opened_earlier_meanwhile() -> None:
    gap = started()
    gap.live("sensor.a", 50_000)
    later = gap.begin(b"2-0")
    gap.unknown()  # Redis forgot: where we left off is read again, from an older watermark
    gap.resume(10_000, b"1-0")
    gap.end(later)  # the backfill that was running completes, but the gap it covered is not the earliest
    assert gap.open and gap.pending_start_ns == 10_000 + US


def test_after_redis_forgot_the_states_published_since_are_kept_until_the_read_back() -> None:
    gap = started()
    gap.unknown()
    gap.published("sensor.a", 7_000)
    assert ("sensor.a", 7_000) in gap.seen
    gap.resume(None)
    assert not gap.open


def test_untrusted_states_are_never_backfilled_again_even_by_a_later_gap() -> None:
    gap = started()
    gap.live("sensor.a", 10_000)
    gap.untrusted("sensor.a", 10**18)  # a year ahead: published, moves nothing
    assert gap.last_live_ns == 10_000
    gap.begin(b"")
    assert ("sensor.a", 10**18) in gap.seen


def test_probes_are_the_first_live_state_of_each_entity_and_new_ones_take_a_share_of_the_places() -> None:
    gap = started(1_000)
    for n in range(MAX_PROBES):
        gap.probe(f"sensor.{n}", n)
    gap.probe("sensor.0", 999)  # not its first
    assert gap.probes["sensor.0"] == 0
    for n in range(MAX_PROBES, 3 * MAX_PROBES):
        gap.probe(f"sensor.{n}", n)
    assert len(gap.probes) == MAX_PROBES
    newer = sum(1 for time_ns in gap.probes.values() if time_ns >= MAX_PROBES)
    assert MAX_PROBES // 3 <= newer <= MAX_PROBES - MAX_PROBES // 8  # about 2/3 of the places: their share


def test_no_probes_or_seen_states_are_kept_while_no_gap_is_open() -> None:
    gap = started()
    gap.probe("sensor.a", 1)
    gap.published("sensor.a", 1)
    assert gap.probes == {} and gap.seen == set()


def test_a_reconnect_before_any_trusted_state_backfills_from_the_session_start() -> None:
    gap = started()
    assert gap.begin(b"5-0", subscribed_ns=40_000) == 40_000 + US


def test_in_a_busy_home_some_probes_are_older_than_the_recorders_last_commit() -> None:
    """The soak found it: at 1,000 states/s over 2,000 entities, backfills after a plain reconnect waited 11-117 s
    for proof that the recorder had committed. With the oldest probe making room for each new entity, the 64
    probes were always the last 64 entities' changes (64 ms), newer than any commit (every 5 s), and the proof
    came only when a poll happened to fall within 64 ms after a commit."""
    gap = started(1_000)
    second = 10**9
    for n in range(10_000):  # 10 s at 1,000 states/s, 2,000 entities in turn
        gap.probe(f"sensor.{n % 2000}", n * second // 1000)
    committed_at = 5 * second  # HA's recorder commits every 5 s
    older = [time_ns for time_ns in gap.probes.values() if time_ns < committed_at]
    assert len(gap.probes) == MAX_PROBES
    assert len(older) >= MAX_PROBES // 4, sorted(gap.probes.values())[:3]


def test_a_rename_while_the_gap_is_open_names_the_new_ids_to_ask_for_and_maps_what_is_published_after_it() -> None:
    """The backfill asks the recorder for the entities it listed, then for the new ids of those renamed meanwhile,
    and again for an id asked before a rename (back) moved history onto it; a state it publishes under the old id
    (read before HA's recorder moved it) comes back under the new one, and is not published twice."""
    gap = started(5_000_000)
    asked_at = {"sensor.a": gap.renames, "sensor.x": gap.renames}
    gap.renamed("sensor.a", "sensor.b")
    gap.renamed("sensor.b", "sensor.a")  # and back again
    gap.renamed("sensor.c", "sensor.d")
    assert gap.renamed_since(asked_at) == {"sensor.b"}
    asked_at["sensor.b"] = gap.renames
    assert gap.renamed_since(asked_at) == {"sensor.a"}  # its history came back after it was asked
    asked_at["sensor.a"] = gap.renames
    assert gap.renamed_since(asked_at) == set()
    gap.published("sensor.c", 6_000_000)
    gap.published("sensor.a", 6_000_000)
    assert {("sensor.c", 6_000_000), ("sensor.d", 6_000_000), ("sensor.a", 6_000_000),
            ("sensor.b", 6_000_000)} == gap.seen
    gap.end(5_000_000 + US)
    assert gap.renames == 0  # a closed gap's renames are done with


def test_a_rename_while_no_gap_is_open_is_not_kept() -> None:
    gap = started()
    gap.renamed("sensor.a", "sensor.b")
    gap.begin(b"1-0", 4_000_000)
    assert gap.renames == 0 and gap.renamed_since({"sensor.a": 0}) == set()


def test_the_same_step_back_told_twice_moves_the_gap_once_and_a_larger_one_further() -> None:
    """The order of the states and the first live state's shortfall can both tell one step."""
    gap = started()
    gap.live("sensor.a", 10 * 10**9)
    gap.begin(b"1-0")
    gap.stepped_back(3 * 10**9)
    gap.stepped_back(3 * 10**9)
    assert gap.pending_start_ns == 7 * 10**9 + US
    gap.stepped_back(5 * 10**9)
    assert gap.pending_start_ns == 5 * 10**9 + US


def test_a_shortfall_shown_after_the_backfill_opens_the_gap_again_and_keeps_what_it_published() -> None:
    """A quiet home: no live state before the backfill was confirmed; the first one shows HA's clock 3 s back."""
    gap = started()
    gap.live("sensor.a", 10 * 10**9)
    start = gap.begin(b"1-0")
    assert start is not None and gap.clock_unchecked
    gap.published("sensor.b", 11 * 10**9)  # backfilled
    gap.end(start)
    assert gap.clock_shown(3 * 10**9)  # opened again
    assert gap.pending_start_ns == start - 4 * 10**9 and gap.durable_until(12 * 10**9, b"9-0") == (
        start - 4 * 10**9 - US, b"1-0")
    assert ("sensor.b", 11 * 10**9) in gap.seen  # not published a second time
    assert not gap.clock_unchecked


def test_no_shortfall_after_the_backfill_leaves_the_gap_closed_and_forgets_its_states() -> None:
    gap = started()
    gap.live("sensor.a", 10 * 10**9)
    start = gap.begin(b"1-0")
    assert start is not None
    gap.published("sensor.b", 11 * 10**9)
    gap.end(start)
    assert gap.seen  # kept until the first live state tells
    assert not gap.clock_shown(200 * 10**6)  # latency, not a step
    assert gap.pending_start_ns is None and not gap.seen
