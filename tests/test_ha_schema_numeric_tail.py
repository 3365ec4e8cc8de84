"""The `ha` schema's numeric-tail rule: Home Assistant's answers for every text, in time linear in its length.

The oracle is the integration's own regular expression (`RE_DIGIT_TAIL` in home-assistant/core
`homeassistant/components/influxdb/const.py` at 01ae64906312f8ed31da2ee514b50cc33b758291), run only on short
texts, where its backtracking is cheap. Times are the thread's CPU time (other processes on a busy machine do not
add to it), the least of several runs, and compared as ratios between sizes of one shape, never to a wall clock.
"""

from __future__ import annotations

import gc
import json
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from homeiq.shared.events import NormalisedEvent, State
from homeiq.shared.influx.haschema import HaEncoder, has_numeric_tail

HA_RE_DIGIT_TAIL = re.compile(r"^[^\.]*\d+\.?\d+[^\.]*$")

# Characters the rule tells apart: ASCII and other Unicode decimal digits (\d), a superscript two (a digit to
# str.isdigit, not to \d), the dot and a full-width one, a newline (`$` matches before a final one), and others.
ALPHABET = "09\u0663\u00b2.\uff0e\na -e+"
REPEATS = 9
SCALE = 8  # a shape's runs grow this many times; linear time grows at most as much
GROWTH_BOUND = 2 * SCALE  # quadratic time would grow SCALE**2 times; HA's regex grows ~SCALE**4 times


def cpu_ratio(text: str, base: str) -> float:
    """The thread CPU time of encoding a state with attribute `text` over that of one with `base`: the least of
    REPEATS runs of each, interleaved so that a slow spell of the machine falls on both."""
    event, base_event = _event(text), _event(base)
    best_ns, best_base_ns = math.inf, math.inf
    with _gc_paused():
        for _ in range(REPEATS):
            best_ns = min(best_ns, _encode_cpu_ns(event))
            best_base_ns = min(best_base_ns, _encode_cpu_ns(base_event))
    return best_ns / max(best_base_ns, 1)


def _event(text: str) -> NormalisedEvent:
    attributes = msgspec.Raw(json.dumps({"tail": text}).encode())
    state = State(state="ok", attributes=attributes, last_changed_ns=1, last_updated_ns=1)
    return NormalisedEvent(event_type="state_changed", time_ns=1, time_fired_ns=1, entity_id="sensor.a",
                           domain="sensor", new_state=state)


def _encode_cpu_ns(event: NormalisedEvent) -> int:
    """Thread CPU time of one encoding by a fresh encoder (one keeps the shape of an entity's last attributes)."""
    encoder = HaEncoder()
    started_ns = time.thread_time_ns()
    line = encoder.encode(event)
    spent_ns = time.thread_time_ns() - started_ns
    assert line is not None
    return spent_ns


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No collection inside a measurement (one would land in whichever run it happens to hit)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@given(st.text(alphabet=ALPHABET, max_size=14))
@settings(max_examples=3000)
@example("1..")
@example("1.2\n")
@example("1.2.")
@example("\u0663\u0663")
@example("\u00b2\u00b2")
@example("a1.2b")
def test_the_numeric_tail_rule_answers_as_home_assistants_regex_for_every_short_text(text: str) -> None:
    assert has_numeric_tail(text) == bool(HA_RE_DIGIT_TAIL.match(text))


@given(st.text(max_size=20))
def test_the_numeric_tail_rule_answers_as_home_assistants_regex_for_any_unicode_text(text: str) -> None:
    assert has_numeric_tail(text) == bool(HA_RE_DIGIT_TAIL.match(text))


runs = st.lists(st.tuples(st.sampled_from("0\u0663.a\n"), st.integers(1, 250)), min_size=1, max_size=6)


@given(runs)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example([("1", 20), (".", 1), (".", 1)])  # the shape: digits, then two dots
@example([(".", 1), ("1", 20), (".", 1)])
def test_encoding_time_grows_at_most_linearly_with_the_attributes_length(shape: list[tuple[str, int]]) -> None:
    small = "".join(char * length for char, length in shape)
    large = "".join(char * length * SCALE for char, length in shape)
    growth = cpu_ratio(large, small)
    assert growth <= GROWTH_BOUND, f"{len(small)} → {len(large)} characters: {growth:.1f} times the CPU time"


def test_an_attribute_of_a_thousand_digits_and_two_dots_costs_what_as_many_letters_cost() -> None:
    adversarial = "1" * 1000 + ".."
    plain = "a" * len(adversarial)
    ratio = cpu_ratio(adversarial, plain)
    assert ratio <= 10, f"{ratio:.1f} times the CPU time of {len(plain)} letters"
