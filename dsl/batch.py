"""The batch evaluator: a whole plan over many keys at once.

Walks the plan children-first, so each shared node is computed once, and hands
each operator handler its children's span sets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from timeline.dsl import ast as A
from timeline.dsl.compiler import Plan, compile_expression
from timeline.dsl.decode import DecodedEvents, decode_jsonl
from timeline.dsl.errors import UsageError
from timeline.dsl.events import EventFrame, split_key_paths, split_path
from timeline.dsl.operators import LatestEventToState, derived_handler, leaf_handler
from timeline.dsl.results import aggregate_json, timelines_json, values_at_json
from timeline.dsl.spans import SpanSet, values_at


def evaluate(plan: Plan, events: EventFrame, nodes: set[str] | None = None) -> dict[str, SpanSet]:
    """Span sets of every plan node (or of `nodes` and what they need)."""
    results: dict[str, SpanSet] = {}
    wanted = plan.closure(nodes) if nodes is not None else set(plan.nodes)
    for node in plan.nodes.values():  # children come before parents
        if node.id not in wanted:
            continue
        if node.is_leaf:
            results[node.id] = leaf_handler(node.expr)(node.expr, events)
        else:
            children = tuple(results[c] for c in node.children)
            results[node.id] = derived_handler(node.expr)(node.expr, events.frame, *children)
    return results


def evaluate_root(plan: Plan, events: EventFrame) -> SpanSet:
    return evaluate(plan, events, {plan.root})[plan.root]



def root_timelines(expression: str, records: list[dict], key: str, time: str) -> dict:
    """Each key's root timeline (KeyTimeline) for JSON-able events, as `timeline eval` computes it:
    the reference the streaming runtime is checked against (demo, benchmark, tests)."""
    import msgspec

    from timeline.dsl.events import split_key_paths, split_path
    from timeline.dsl.incremental import from_span_set

    plan = compile_expression(expression)
    data = b"\n".join(msgspec.json.encode(r) for r in records)
    decoded = decode_jsonl(data, split_key_paths(key), split_path(time), plan.columns())
    root = evaluate_root(plan, decoded.events)
    return dict(zip(decoded.key_names, from_span_set(root, len(decoded.key_names))))


def load_events(plan: Plan, data: bytes, key: str, time: str) -> DecodedEvents:
    """JSON lines -> the events of a plan's columns: Arrow's parallel reader where it gives the
    exact answer, else the exact decoder (dsl/columnar.py says when)."""
    from timeline.dsl.columnar import read_jsonl

    return read_jsonl(data, split_key_paths(key), split_path(time), plan.columns())


def run_eval(plan: Plan, decoded: DecodedEvents, at: int | None, frm: int | None, to: int | None) -> Any:
    """The JSON answer of `timeline eval` for decoded events."""
    events = decoded.events
    names = decoded.key_names
    if plan.aggregation is not None:
        if frm is not None or to is not None:
            raise UsageError("an aggregation answers at one time: use --at T, not --from/--to")
        when = at if at is not None else (int(events.time.max()) if len(events) else 0)
        root = evaluate(plan, events, {plan.root})[plan.root]
        group_expr = A.LatestEventToState(column=plan.aggregation.group_by)
        groups_spans = LatestEventToState(group_expr, events)
        # A key counts only from its first event on (before it, the key does not exist yet).
        keys = np.flatnonzero(events.frame.origin <= when).astype(np.int64)
        ts = np.full(len(keys), when, dtype=np.int64)
        values = values_at(root, keys, ts, events.frame)
        groups = values_at(groups_spans, keys, ts, events.frame)
        return aggregate_json(values, groups, plan.aggregation)
    if len(events) == 0:
        return {}
    root = evaluate(plan, events, {plan.root})[plan.root]
    if at is not None:
        if frm is not None or to is not None:
            raise UsageError("give either --at T or --from/--to, not both")
        return values_at_json(root, events.frame, names, at)
    if frm is not None and to is not None and frm >= to:
        raise UsageError(f"--from ({frm}) must be before --to ({to})")
    return timelines_json(root, names, frm, to)
