"""The batch evaluator: a whole plan over many keys at once.

Walks the plan children-first, so each shared node is computed once, and hands
each operator handler its children's span sets.
"""

from __future__ import annotations

from dsl.compiler import Plan, compile_expression
from dsl.events import EventFrame
from dsl.operators import derived_handler, leaf_handler
from dsl.spans import SpanSet


def evaluate(plan: Plan, events: EventFrame, nodes: set[str] | None = None) -> dict[str, SpanSet]:
    """Span sets of every plan node (or of `nodes` and what they need)."""
    results: dict[str, SpanSet] = {}
    wanted = _closure(plan, nodes) if nodes is not None else set(plan.nodes)
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


def _closure(plan: Plan, nodes: set[str]) -> set[str]:
    out: set[str] = set()
    stack = list(nodes)
    while stack:
        n = stack.pop()
        if n not in out:
            out.add(n)
            stack.extend(plan.nodes[n].children)
    return out


def root_timelines(expression: str, records: list[dict], key: str, time: str) -> dict:
    """Each key's root timeline (KeyTimeline) for JSON-able events, as `timeline eval` computes it:
    the reference the streaming runtime is checked against (demo, benchmark, tests)."""
    import msgspec

    from dsl.decode import decode_jsonl
    from dsl.events import split_key_paths, split_path
    from dsl.incremental import from_span_set

    plan = compile_expression(expression)
    data = b"\n".join(msgspec.json.encode(r) for r in records)
    decoded = decode_jsonl(data, split_key_paths(key), split_path(time), plan.columns())
    root = evaluate_root(plan, decoded.events)
    return dict(zip(decoded.key_names, from_span_set(root, len(decoded.key_names))))
