"""Aggregates over keys: eval's answer at t, and the series the runtime keeps for every t."""

from __future__ import annotations

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from timeline.dsl.aggregate import (
    AggregateSeries,
    group_leaf_id,
    merge_series,
    patch_series,
    runtime_plan,
    series_of_keys,
    series_since,
)
from timeline.dsl.batch import evaluate, run_eval
from timeline.dsl.decode import decode_jsonl
from timeline.dsl.incremental import from_span_set

from conftest import run_timeline


def ev(t, key="a", **fields):
    return {"k": key, "t": t, **fields}


class TestKeysCountFromTheirFirstEvent:
    def test_a_key_whose_first_event_is_later_is_not_counted(self):
        events = [ev(0, "a", cdn="x"), ev(3, "b", cdn="y"), ev(10, "c", cdn="x"), ev(12, "d")]
        expr = "has_existed(cdn == \"x\") | aggregate(group_by(cdn), count, sum)"
        assert run_timeline(expr, events, at=6) == {"x": {"count": 1, "sum": 1}, "y": {"count": 1, "sum": 0}}
        # before anything happened: no group at all (it used to count every key, in group null)
        assert run_timeline(expr, events, at=-1) == {}
        assert run_timeline(expr, events, at=12) == {
            "null": {"count": 1, "sum": 0}, "x": {"count": 2, "sum": 2}, "y": {"count": 1, "sum": 0}}


# --- the runtime's series agree with eval at every time ------------------------------------------------

EXPRESSIONS = [
    'duration_where(latest_event_to_state(s) == "y") | aggregate(group_by(g), count, sum, avg, min, max)',
    'duration_in_cur_state(latest_event_to_state(s)) | aggregate(group_by(g), count, sum, avg, min, max)',
    'has_existed(n > 1) | aggregate(group_by(g), count, sum, avg, min, max)',
    'latest_event_to_state(n) | aggregate(group_by(g), count, sum, avg, min, max)',
    'latest_event_to_state(g) | aggregate(group_by(g), count, min)',
    'latest_event_to_state(s) | aggregate(group_by(s), count, sum)',
]

event = st.tuples(
    st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 40),
    st.fixed_dictionaries({}, optional={"s": st.sampled_from(["x", "y"]), "n": st.sampled_from([0, 1, 2, 2.5]),
                                        "g": st.sampled_from(["p", "q", 3])}))


def _series_by_shard(expr: str, events: list[dict], shards: int, since: int | None = None) -> AggregateSeries:
    """What the runtime computes: each shard's partial series from its keys' root and group timelines,
    then merged (the combiner)."""
    plan = runtime_plan(expr)
    data = b"\n".join(msgspec.json.encode(e) for e in events)
    decoded = decode_jsonl(data, ("k",), ("t",), plan.columns())
    gid = group_leaf_id(plan)
    results = evaluate(plan, decoded.events)
    n = len(decoded.key_names)
    values = from_span_set(results[plan.root], n)
    groups = from_span_set(results[gid], n)
    parts = []
    for shard in range(shards):
        mine = [i for i, name in enumerate(decoded.key_names) if hash(name) % shards == shard]
        parts.append(series_of_keys(((values[i], groups[i]) for i in mine), since))
    return merge_series(parts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=st.sampled_from(EXPRESSIONS), raw=st.lists(event, min_size=1, max_size=25),
       shards=st.integers(1, 3))
def test_series_equal_eval_at_every_time(expr, raw, shards):
    events = [{"k": k, "t": t, **f} for k, t, f in raw]
    series = _series_by_shard(expr, events, shards)
    functions = runtime_plan(expr).aggregation.functions
    for t in range(-1, 52, 3):
        assert series.at(t, functions) == run_timeline(expr, events, at=t), t
    for t in series.change_points():
        assert series.at(t, functions) == run_timeline(expr, events, at=t), t


def test_runtime_plan_adds_the_group_leaf_once():
    plan = runtime_plan('duration_where(has_existed(s == "x")) | aggregate(group_by(cdn), count)')
    gid = group_leaf_id(plan)
    assert plan.nodes[gid].label == "latest_event_to_state(cdn)" and plan.nodes[gid].is_leaf
    assert gid in [n.id for n in plan.leaves]
    shared = runtime_plan('latest_event_to_state(cdn) | aggregate(group_by(cdn), count)')
    assert list(shared.nodes) == [group_leaf_id(shared)]
    plain = runtime_plan('has_existed(s == "x")')
    assert group_leaf_id(plain) is None and len(plain.nodes) == 1


def test_eval_run_eval_is_used_unchanged_for_plain_timelines():
    # The eval path of a timeline without aggregation is untouched by the runtime plan.
    plan = runtime_plan('has_existed(s == "x")')
    decoded = decode_jsonl(b'{"k": "a", "t": 1, "s": "x"}', ("k",), ("t",), plan.columns())
    assert run_eval(plan, decoded, 5, None, None) == {"a": True}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=st.sampled_from(EXPRESSIONS), raw=st.lists(event, min_size=1, max_size=25),
       cut=st.integers(1, 24), since=st.integers(-2, 45))
def test_a_change_sent_from_since_on_rebuilds_the_new_series(expr, raw, cut, since):
    """A partial aggregate sends only `series_since(new, since)`; the combiner's `patch_series` of the old
    series with it is the new series, when nothing before `since` changed."""
    events = [{"k": k, "t": t, **f} for k, t, f in raw]
    old_events = [e for e in events[:cut] if e["t"] < since] if since > 0 else []
    new_events = old_events + [e for e in events if e not in old_events and e["t"] >= since]
    if not new_events:
        return
    old = _series_by_shard(expr, old_events, 1) if old_events else AggregateSeries()
    new = _series_by_shard(expr, new_events, 1)
    functions = runtime_plan(expr).aggregation.functions
    rebuilt = patch_series(old, since, series_since(new, since))
    for t in range(-2, 52):
        assert rebuilt.at(t, functions) == new.at(t, functions), t
    # what a partial sends: its keys' series computed from `since` on only, the same change
    from_since = _series_by_shard(expr, new_events, 1, since=since)
    for t in range(since, 52):
        assert from_since.at(t, functions) == new.at(t, functions), t
    rebuilt = patch_series(old, since, from_since)
    for t in range(-2, 52):
        assert rebuilt.at(t, functions) == new.at(t, functions), t
