"""Comparing two timelines (issue 13, item 3): pointwise, unknown where either side
is unknown, exact crossing times on numeric timelines, both spellings, type-checked,
and the incremental evaluator equal to batch (it calls the same handler)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_evaluators_agree import (
    BOOLEAN,
    COMPARISONS,
    check_against_reference,
    check_incremental_against_batch,
    events_strategy,
    numeric_exprs,
    state_leaf,
)

from timeline.dsl import ast as A
from timeline.dsl.compiler import compile_expression
from timeline.dsl.errors import DslTypeError

WAITED = 'duration_where(latest_event_to_state(s) == "x")'   # t while s is x, then flat
IN_STATE = "duration_in_cur_state(latest_event_to_state(s))"  # resets at each change of s


def test_state_timelines_equal_pointwise(timeline_of):
    events = [{"k": "a", "t": 0, "x": "p", "y": "p"}, {"k": "a", "t": 5, "x": "q"}, {"k": "a", "t": 9, "y": "q"}]
    same = "latest_event_to_state(x) == latest_event_to_state(y)"
    assert timeline_of(same, events) == [(0, True), (5, False), (9, True)]
    assert timeline_of("NotEqualTo(latest_event_to_state(x), latest_event_to_state(y))", events) == [
        (0, False), (5, True), (9, False)]


def test_unknown_where_either_side_is_unknown(timeline_of):
    # y is unknown until its first value at 4; x is unknown after... never: unknown only before 4.
    events = [{"k": "a", "t": 0, "x": 3}, {"k": "a", "t": 4, "y": 5}, {"k": "a", "t": 8, "x": 7}]
    less = "latest_event_to_state(x) < latest_event_to_state(y)"
    assert timeline_of(less, events) == [(0, None), (4, True), (8, False)]
    # values of different kinds do not order: unknown, as against a constant
    events = [{"k": "a", "t": 0, "x": 3, "y": "3"}]
    assert timeline_of(less, events) == [(0, None)]
    assert timeline_of("latest_event_to_state(x) == latest_event_to_state(y)", events) == [(0, False)]


def test_numeric_crossings_are_exact_between_events(timeline_of):
    # s is x on [0, 10 s), then y: WAITED is t until 10 s then 10 s flat; IN_STATE is t, then t - 10 s.
    events = [{"k": "a", "t": 0, "s": "x"}, {"k": "a", "t": 10_000, "s": "y"}]
    assert timeline_of(f"{WAITED} > {IN_STATE}", events) == [(0, False), (10_000, True), (20_000, False)]
    # the lines meet at exactly 20 s, where no event is: == holds for that one millisecond
    assert timeline_of(f"{WAITED} == {IN_STATE}", events) == [
        (0, True), (10_000, False), (20_000, True), (20_001, False)]
    assert timeline_of(f"GreaterThanOrEqualTo({WAITED}, {IN_STATE})", events) == [(0, True), (20_001, False)]


def test_boolean_timelines_compare_for_equality(timeline_of):
    events = [{"k": "a", "t": 0, "e": "play"}, {"k": "a", "t": 3, "e": "seek"}, {"k": "a", "t": 6, "e": "stop"}]
    agree = 'has_existed(e == "seek") == has_existed_within(e == "seek", 2ms)'
    assert timeline_of(agree, events) == [(0, True), (5, False)]


def test_both_spellings_and_either_order_are_one_node():
    one = compile_expression("latest_event_to_state(x) < latest_event_to_state(y)").root_node.expr
    assert isinstance(one, A.CompareTimelines)
    for other in ("LessThan(latest_event_to_state(x), latest_event_to_state(y))",
                  "TL_GreaterThan(latest_event_to_state(y), latest_event_to_state(x))",
                  "latest_event_to_state(y) > latest_event_to_state(x)"):
        assert compile_expression(other).root_node.expr == one
    plan = compile_expression("latest_event_to_state(x) < latest_event_to_state(y)")
    assert [plan.nodes[c].op for c in plan.root_node.children] == ["LatestEventToState", "LatestEventToState"]
    assert plan.root_node.kind.value == "boolean"


@pytest.mark.parametrize("source,words", [
    (f"{WAITED} == latest_event_to_state(s)", "numeric (duration) timeline is compared with a state timeline"),
    ('has_existed(s == "x") < has_existed(s == "y")', "does not order booleans"),
    ("latest_event_to_state(s) == latest_event_to_state(s)", "compared with itself"),
    ("latest_event_to_state(s) == col(\"t\")", "is a column, not a constant"),
])
def test_type_errors(source, words):
    with pytest.raises(DslTypeError) as info:
        compile_expression(source)
    assert words in str(info.value)
    assert "^" in str(info.value)


COMPARED = st.one_of(
    st.tuples(numeric_exprs(BOOLEAN), COMPARISONS, numeric_exprs(BOOLEAN)).map(lambda t: f"({t[0]}) {t[1]} ({t[2]})"),
    st.tuples(state_leaf, COMPARISONS, state_leaf).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
    st.tuples(BOOLEAN, st.sampled_from(["==", "!="]), BOOLEAN).map(lambda t: f"({t[0]}) {t[1]} ({t[2]})"),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=COMPARED, events=events_strategy)
def test_comparisons_equal_per_ms_reference(source, events):
    check_against_reference(source, events)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=COMPARED, events=events_strategy, cuts=st.lists(st.integers(0, 25), max_size=6))
def test_incremental_comparisons_equal_batch(source, events, cuts):
    check_incremental_against_batch(source, events, cuts)
