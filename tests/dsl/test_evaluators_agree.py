"""Property tests: batch == incremental == the per-ms reference, on random
events (out-of-order arrival, equal timestamps, missing fields) and random
well-typed expressions."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from timeline_reference import Reference

from timeline.dsl import ast as A
from timeline.dsl.batch import evaluate
from timeline.dsl.checker import typecheck
from timeline.dsl.compiler import compile_expression
from timeline.dsl.errors import DslTypeError
from timeline.dsl.events import EventFrame, encode_column
from timeline.dsl.incremental import EventBatch, IncrementalEvaluator, from_span_set
from timeline.dsl.parser import parse

KEYS = ["a", "b", "c"]
FIELDS = ["s", "n", "f"]

# --- random events ---------------------------------------------------------------

event_fields = st.fixed_dictionaries(
    {},
    optional={
        "s": st.sampled_from(["x", "y", "z"]),
        "n": st.one_of(st.integers(0, 4), st.sampled_from([1.0, 2.5])),
        "f": st.booleans(),
    },
)
event = st.tuples(st.sampled_from(KEYS), st.integers(0, 40), event_fields)
events_strategy = st.lists(event, min_size=1, max_size=25)

# --- random expressions (as text, so the parser and checker are exercised too) ---

predicate_leaf = st.sampled_from([
    's == "x"', 's != "y"', 'n > 1', 'n <= 2', 'n == 2.5', 'f == true', 'col("s") == "z"', 'n >= 1 && s == "x"',
    '!(s == "x")', 's == "y" || n < 1', 'n == s', 'col("n") != col("n")',
])
window = st.sampled_from(["1ms", "3ms", "7ms", "15ms"])
small_duration = st.sampled_from(["0ms", "1ms", "2ms", "5ms", "9ms", "0.004"])
COMPARISONS = st.sampled_from(["<", "<=", ">", ">=", "==", "!="])
state_leaf = st.sampled_from(["latest_event_to_state(s)", "latest_event_to_state(n)", 'TL_LatestEventToState(col("f"))',
                             "latest_event_to_state(n, f == true)", 'latest_event_to_state(s, n > 1 || s == "z")'])


def boolean_exprs():
    base = st.one_of(
        predicate_leaf.map(lambda p: f"has_existed({p})"),
        st.tuples(predicate_leaf, window).map(lambda t: f"has_existed_within({t[0]}, {t[1]})"),
        state_leaf.filter(lambda s: "(s)" in s).map(lambda s: f'{s} == "y"'),
        st.sampled_from(["latest_event_to_state(n) >= 2", "latest_event_to_state(n) < 2",
                         'latest_event_to_state(f) == true', 'latest_event_to_state(s) != "x"']),
    )

    def extend(inner):
        numeric = numeric_exprs(inner)
        return st.one_of(
            st.tuples(inner, inner).map(lambda t: f"({t[0]} && {t[1]})"),
            st.tuples(inner, inner).map(lambda t: f"({t[0]} || {t[1]})"),
            inner.map(lambda b: f"!({b})"),
            st.tuples(inner, inner).map(lambda t: f"And({t[0]}, {t[1]})"),
            st.tuples(numeric, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), small_duration)
            .map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
            inner.map(lambda b: f"({b}) == false"),
            # two timelines compared (issue 13): numeric, boolean and state sides
            st.tuples(numeric, COMPARISONS, numeric).map(lambda t: f"({t[0]}) {t[1]} ({t[2]})"),
            st.tuples(inner, st.sampled_from(["==", "!="]), inner).map(lambda t: f"({t[0]}) {t[1]} ({t[2]})"),
            st.tuples(state_leaf, COMPARISONS, state_leaf).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
            st.tuples(st.sampled_from(["LessThan", "GreaterThanOrEqualTo", "NotEqualTo"]), numeric, numeric)
            .map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
        )

    return st.recursive(base, extend, max_leaves=6)


def numeric_exprs(boolean):
    return st.one_of(
        boolean.map(lambda b: f"duration_where({b})"),
        state_leaf.map(lambda s: f"duration_in_cur_state({s})"),
        boolean.map(lambda b: f"TL_DurationInCurState({b})"),
    )


BOOLEAN = boolean_exprs()
TIMELINE = st.one_of(BOOLEAN, state_leaf, numeric_exprs(BOOLEAN))


# --- helpers -----------------------------------------------------------------------

def batch_timelines(plan, events):
    names = list(dict.fromkeys(k for k, _, _ in events))
    index = {k: i for i, k in enumerate(names)}
    key = np.array([index[k] for k, _, _ in events])
    time = np.array([t for _, t, _ in events])
    names_of_fields = sorted({f for _, _, fields in events for f in fields} | set(FIELDS))
    columns = {(f,): encode_column([fields.get(f) for _, _, fields in events]) for f in names_of_fields}
    frame = EventFrame.build(key, time, columns, n_keys=len(names))
    results = evaluate(plan, frame)
    return {nid: dict(zip(names, from_span_set(s, len(names)))) for nid, s in results.items()}


def windows_total(plan) -> int:
    total = 0
    for node in plan.nodes.values():
        if isinstance(node.expr, A.HasExistedWithin):
            total += int(node.expr.window.ms)
    return total


def compile_or_skip(source):
    """Compile a random expression; one comparing a timeline with itself is a type error by
    design (tests/dsl/test_compare_timelines.py), so hypothesis skips it."""
    try:
        return compile_expression(source)
    except DslTypeError as exc:
        assume("compared with itself" not in str(exc))
        raise


def check_against_reference(source, events):
    plan = compile_or_skip(source)
    checked = typecheck(parse(source), source)
    timelines = batch_timelines(plan, events)
    hi = max(t for _, t, _ in events) + windows_total(plan) + 12
    for name in dict.fromkeys(k for k, _, _ in events):
        mine = [(t, seq, f) for seq, (k, t, f) in enumerate(events) if k == name]
        ref = Reference(mine, lo=-2, hi=hi)
        for node in plan.nodes.values():
            tl = timelines[node.id][name]
            expected = ref.series(node.expr)
            got = [tl.value_at(t) for t in range(-2, hi)]
            assert got == expected, (source, name, node.label, tl, list(zip(range(-2, hi), expected)))
    assert checked.root == plan.root_node.expr


def feed_in_batches(evaluator, events, cuts):
    """Apply the events in arrival order, split at `cuts`; yields how many were applied so far."""
    bounds = sorted(set([0, len(events)] + [c for c in cuts if c < len(events)]))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        chunk = events[lo:hi]
        evaluator.apply(EventBatch(
            keys=[k for k, _, _ in chunk], times=[t for _, t, _ in chunk],
            columns={f: [fields.get(f) for _, _, fields in chunk] for f in FIELDS},
        ))
        yield hi


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=TIMELINE, events=events_strategy)
def test_batch_equals_per_ms_reference(source, events):
    check_against_reference(source, events)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=TIMELINE, events=events_strategy, cuts=st.lists(st.integers(0, 25), max_size=6))
def test_incremental_equals_batch_after_every_batch(source, events, cuts):
    check_incremental_against_batch(source, events, cuts)


def check_incremental_against_batch(source, events, cuts):
    """After every batch of arrivals, each node's timeline of each key equals the batch evaluator's."""
    plan = compile_or_skip(source)
    evaluator = IncrementalEvaluator(plan)
    for hi in feed_in_batches(evaluator, events, cuts):
        expected = batch_timelines(plan, events[:hi])
        for node_id, per_key in expected.items():
            for name, tl in per_key.items():
                assert evaluator.timeline(name, node_id) == tl, (source, node_id, name)


def test_spec_cir_example_matches_reference():
    source = ('TL_DurationWhere(TL_HasExisted(col("playerStateChange") == "play") && '
              '!TL_HasExistedWithin(col("playerStateChange") == "seek", 5ms) && '
              'TL_LatestEventToState(col("playerStateChange")) == "buffer")')
    events = [("s", 1, {"playerStateChange": "play"}), ("s", 2, {"playerStateChange": "seek"}),
              ("s", 5, {"playerStateChange": "buffer"}), ("s", 9, {"playerStateChange": "play"})]
    check_against_reference(source, events)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=TIMELINE, events=events_strategy, cuts=st.lists(st.integers(0, 25), max_size=4))
def test_snapshot_restore_between_batches_changes_nothing(source, events, cuts):
    """Continue-as-new carries a step's snapshot as JSON: a restored step must
    go on exactly as the original would have."""
    from timeline.dsl.incremental import (
        DerivedSnapshot,
        DerivedStep,
        LeafSnapshot,
        LeafStep,
    )

    plan = compile_or_skip(source)
    evaluator = IncrementalEvaluator(plan)
    for hi in feed_in_batches(evaluator, events, cuts):
        for node_id, step in list(evaluator.steps.items()):
            node = plan.nodes[node_id]
            wire = step.snapshot().model_dump_json()
            if isinstance(step, LeafStep):
                evaluator.steps[node_id] = LeafStep(node).restore(LeafSnapshot.model_validate_json(wire))
            else:
                fresh = DerivedStep(node, [plan.nodes[c].kind for c in node.children])
                evaluator.steps[node_id] = fresh.restore(DerivedSnapshot.model_validate_json(wire))
    expected = batch_timelines(plan, events)
    for node_id, per_key in expected.items():
        for name, tl in per_key.items():
            assert evaluator.timeline(name, node_id) == tl, (source, node_id, name)
