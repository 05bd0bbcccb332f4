"""Bounded state: with an allowed lateness, each step keeps only what can still
change a key's timeline, and the merged patches still equal the batch
evaluator over every event that was not late."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_evaluators_agree import TIMELINE, batch_timelines, compile_or_skip, events_strategy, feed_in_batches

from timeline.dsl.compiler import compile_expression
from timeline.dsl.incremental import EventBatch, IncrementalEvaluator

CIR = ('TL_DurationWhere(TL_HasExisted(col("s") == "play") && !TL_HasExistedWithin(col("s") == "seek", 5s) '
       '&& TL_LatestEventToState(col("s")) == "buffer")')


def not_late(events, lateness):
    """The events an evaluator with this lateness applies: an event is late when it is
    older than its key's latest earlier time minus the lateness."""
    latest: dict[str, int] = {}
    kept, late = [], []
    for k, t, f in events:
        if k in latest and t < latest[k] - lateness:
            late.append((k, t))
            continue
        latest[k] = max(latest.get(k, t), t)
        kept.append((k, t, f))
    return kept, late


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=TIMELINE, events=events_strategy, cuts=st.lists(st.integers(0, 25), max_size=6),
       lateness=st.integers(0, 12))
def test_with_lateness_streaming_equals_batch_over_events_not_late(source, events, cuts, lateness):
    plan = compile_or_skip(source)
    evaluator = IncrementalEvaluator(plan, allowed_lateness_ms=lateness)
    for hi in feed_in_batches(evaluator, events, cuts):
        kept, late = not_late(events[:hi], lateness)
        assert [(e.key, e.time) for e in evaluator.late] == late
        expected = batch_timelines(plan, kept)
        for node_id, per_key in expected.items():
            for name, tl in per_key.items():
                assert evaluator.timeline(name, node_id) == tl, (source, node_id, name, lateness)


def _state_bytes(evaluator, key, node_id):
    step = evaluator.steps[node_id]
    snap = step.snapshot()
    return len(snap.model_dump_json())


def test_state_of_one_key_stays_constant_over_10000_events():
    """10,000 in-order events of one key: the leaves' and the root's state bytes
    stay within a small factor of what they were after 1,000."""
    plan = compile_expression(CIR)
    evaluator = IncrementalEvaluator(plan, allowed_lateness_ms=2_000)
    cycle = ["play", "buffer", "seek", "buffer", "play", None]
    sizes: dict[str, list[int]] = {nid: [] for nid in plan.nodes}
    t = 0
    for chunk in range(100):
        keys, times, values = [], [], []
        for i in range(100):
            t += 250 + (i % 7) * 100
            keys.append("k")
            times.append(t)
            values.append(cycle[(chunk * 100 + i) % len(cycle)])
        evaluator.apply(EventBatch(keys=keys, times=times, columns={"s": values}))
        if chunk in (9, 99):
            for nid in plan.nodes:
                sizes[nid].append(_state_bytes(evaluator, "k", nid))
    for nid, (at_1000, at_10000) in sizes.items():
        label = plan.nodes[nid].label
        assert at_10000 <= 2 * at_1000 + 200, f"{label}: {at_1000} bytes after 1,000 events, {at_10000} after 10,000"
    assert evaluator.late == []
    # ... and the merged result is still the batch evaluator's.
    events = []
    t = 0
    for chunk in range(100):
        for i in range(100):
            t += 250 + (i % 7) * 100
            value = cycle[(chunk * 100 + i) % len(cycle)]
            events.append(("k", t, {} if value is None else {"s": value}))
    expected = batch_timelines(plan, events)
    assert evaluator.timeline("k") == expected[plan.root]["k"]


def test_late_event_is_not_applied_and_is_reported():
    plan = compile_expression('latest_event_to_state(s)')
    evaluator = IncrementalEvaluator(plan, allowed_lateness_ms=1_000)
    evaluator.apply(EventBatch(keys=["a", "a"], times=[0, 10_000], columns={"s": ["buffer", "play"]}))
    before = evaluator.timeline("a")
    evaluator.apply(EventBatch(keys=["a", "a"], times=[5_000, 9_500], columns={"s": ["x", "y"]}))
    late = [(e.key, e.time, e.frontier) for e in evaluator.late]
    assert late == [("a", 5_000, 9_000)]  # 9,500 is within the lateness: applied
    assert evaluator.timeline("a").value_at(4_000) == before.value_at(4_000) == "buffer"
    assert evaluator.timeline("a").value_at(9_600) == "y"
