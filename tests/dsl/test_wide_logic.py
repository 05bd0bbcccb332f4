"""And/Or with any number of operands (issue 9, item 4).

`spans.align` once tagged each breakpoint with its operand number in an int8:
past 127 operands the tags wrapped (wrong answers), past 255 they indexed out
of range (IndexError, which failed a streaming workflow task for good). These
tests check wide fan-in against the per-ms reference, in batch and
incrementally."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_evaluators_agree import check_against_reference, check_incremental_against_batch

from timeline.dsl.spans import BoolSpans, Frame, align

KEYS = ["a", "b"]
event_fields = st.fixed_dictionaries(
    {},
    optional={"s": st.sampled_from(["x", "y", "z"]), "n": st.integers(0, 4)},
)
events_strategy = st.lists(st.tuples(st.sampled_from(KEYS), st.integers(0, 20), event_fields),
                           min_size=1, max_size=8)
# Widths around the old int8 edges, and anything up to 600.
width_strategy = st.one_of(st.sampled_from([2, 127, 128, 129, 255, 256, 257, 600]), st.integers(2, 600))


def random_operand(rng: random.Random) -> str:
    a, w, s = rng.randrange(5), rng.randrange(1, 30), rng.choice("xyz")
    return rng.choice([
        f"has_existed_within(n == {a}, {w}ms)",
        f'has_existed_within(s == "{s}", {w}ms)',
        f'!has_existed(s == "{s}")',
        f"latest_event_to_state(n) >= {a}",  # unknown until some event has n
        f'latest_event_to_state(s) != "{s}"',
    ])


def wide_expression(width: int, rng: random.Random) -> str:
    operator = rng.choice(["Or", "And"])
    body = f"{operator}({', '.join(random_operand(rng) for _ in range(width))})"
    return f"duration_where({body})" if rng.random() < 0.3 else body


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(width=width_strategy, rng=st.randoms(use_true_random=False), events=events_strategy)
def test_wide_and_or_batch_equals_reference(width, rng, events):
    check_against_reference(wide_expression(width, rng), events)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(width=width_strategy, rng=st.randoms(use_true_random=False), events=events_strategy,
       cuts=st.lists(st.integers(0, 8), max_size=3))
def test_wide_and_or_incremental_equals_batch(width, rng, events, cuts):
    check_incremental_against_batch(wide_expression(width, rng), events, cuts)


def test_or_of_129_operands_is_false_until_one_holds(timeline_of):
    """The issue's case: 128 operands that never hold and one that holds from
    2000 on. Or is false on [1000, 2000) and true from 2000."""
    never = [f'has_existed(n == {100 + i})' for i in range(128)]
    source = f"Or({', '.join(never + ['has_existed(n == 1)'])})"
    events = [{"k": "a", "t": 1000, "n": 0}, {"k": "a", "t": 2000, "n": 1}]
    assert timeline_of(source, events) == [(1000, False), (2000, True)]


def test_and_of_257_operands_evaluates(timeline_of):
    holds = [f'has_existed(n >= {-i})' for i in range(256)]
    source = f"And({', '.join(holds + ['has_existed(n == 1)'])})"
    events = [{"k": "a", "t": 1000, "n": 0}, {"k": "a", "t": 2000, "n": 1}]
    assert timeline_of(source, events) == [(1000, False), (2000, True)]


def test_align_indexes_every_set_of_many():
    """align over 700 sets: each breakpoint points at the span of each set in force."""
    frame = Frame(np.array([0, 0], dtype=np.int64))
    sets = []
    for i in range(700):
        # key 0: origin, then a change at time i+1; key 1: origin only.
        key = np.array([0, 0, 1], dtype=np.int64)
        start = np.array([0, i + 1, 0], dtype=np.int64)
        sets.append(BoolSpans(key, start, np.array([0, 2, 0], dtype=np.int8)))
    key, start, idx = align(sets, frame)
    assert key.tolist() == [0] * 701 + [1]
    assert start.tolist() == list(range(701)) + [0]
    for i, ix in enumerate(idx):
        # set i's span 0 holds before time i+1, span 1 from then on, span 2 on key 1.
        expected = [0 if t < i + 1 else 1 for t in range(701)] + [2]
        assert ix.tolist() == expected, i
