"""The meaning of every operator (SPEC.md), vectorised over many keys.

Leaf handlers turn an EventFrame into span sets; derived handlers turn their
children's span sets into theirs. Both evaluators (batch and incremental) and
so the durable workflows call exactly these functions: their results are
equal by construction. Each table has a loud default (`no rule for X`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from timeline.dsl import ast as A
from timeline.dsl.events import EventFrame, compare_values, evaluate_predicate
from timeline.dsl.spans import (
    FALSE,
    TRUE,
    UNKNOWN,
    BoolSpans,
    Frame,
    NumericSpans,
    SpanSet,
    StateSpans,
    align,
    assemble,
    canonical_bool,
    canonical_numeric,
    canonical_state,
    first_of_key,
    next_start,
    origin_part,
)

# --- leaves: events -> timeline ------------------------------------------------


def LatestEventToState(expr: A.LatestEventToState, events: EventFrame) -> StateSpans:
    """The latest non-null value of a field (among the events matching `where`, if given);
    at equal times the later arrival wins."""
    col = events.column(expr.column.path)
    key, time, code = events.key, events.time, col.codes
    if expr.where is not None:  # an event that does not match carries no value
        code = np.where(evaluate_predicate(expr.where, events) == TRUE, code, -1)
    n = len(key)
    if n == 0:
        return StateSpans(key, time, code, tuple(col.vocab))
    # Events are sorted by (key, time, arrival): carry each key's latest
    # non-null code forward (a running max of positions), unknown until the first.
    position = np.where(code >= 0, np.arange(n), -1)
    latest = np.maximum.accumulate(position)
    known = (latest >= 0) & (key[np.maximum(latest, 0)] == key)
    value = np.where(known, code[np.maximum(latest, 0)], -1).astype(np.int32)
    # One span per distinct (key, time): the last event at that time decides.
    last = np.ones(n, dtype=bool)
    last[:-1] = (key[1:] != key[:-1]) | (time[1:] != time[:-1])
    return canonical_state(key[last], time[last], value[last], col.vocab)


def HasExisted(expr: A.HasExisted, events: EventFrame) -> BoolSpans:
    """False from the key's first event, true from the first matching event."""
    match = evaluate_predicate(expr.predicate, events) == TRUE
    key, time = events.key[match], events.time[match]
    first = first_of_key(key)
    frame = events.frame
    parts = [origin_part(frame, np.int8(FALSE)), (key[first], time[first], np.full(int(first.sum()), TRUE, np.int8))]
    return canonical_bool(*assemble(parts, frame.base, frame.horizon()))


def HasExistedWithin(expr: A.HasExistedWithin, events: EventFrame) -> BoolSpans:
    """True on the union of [e.t, e.t + window) over matching events."""
    window = int(expr.window.ms)  # type: ignore[attr-defined]
    match = evaluate_predicate(expr.predicate, events) == TRUE
    key, start = events.key[match], events.time[match]
    end = start + window
    frame = events.frame
    # Union of intervals per key (sorted by start): a new run begins where the
    # start lies past every earlier end of the same key. Offsetting by key
    # makes one running maximum serve all keys at once.
    run_end = _segmented_running_max(key, end, frame.base)
    new_run = first_of_key(key)
    if len(key) > 1:
        new_run[1:] |= start[1:] > run_end[:-1]
    last_of_run = np.ones(len(key), dtype=bool)
    if len(key) > 1:
        last_of_run[:-1] = new_run[1:]
    run_key = key[new_run]
    parts = [
        origin_part(frame, np.int8(FALSE)),
        (run_key, start[new_run], np.full(len(run_key), TRUE, np.int8)),
        (key[last_of_run], run_end[last_of_run], np.full(len(run_key), FALSE, np.int8)),
    ]
    return canonical_bool(*assemble(parts, frame.base, frame.horizon()))


def _segmented_running_max(key: np.ndarray, value: np.ndarray, base: int) -> np.ndarray:
    """Running maximum of `value` restarting at each key (arrays sorted by key)."""
    if len(key) == 0:
        return value
    rel = value - base
    stride = int(rel.max()) + 1
    if stride > 0 and int(key.max()) < (np.iinfo(np.int64).max // stride) - 1:
        shift = key * stride
        return np.maximum.accumulate(rel + shift) - shift + base
    out = np.empty_like(value)  # keys x range too large to pack: per key
    bounds = np.flatnonzero(first_of_key(key)).tolist() + [len(key)]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        out[lo:hi] = np.maximum.accumulate(value[lo:hi])
    return out


# --- derived: timelines -> timeline ---------------------------------------------

_NEGATED = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "==": "==", "!=": "!="}


def Compare(expr: A.Compare, frame: Frame, child: SpanSet) -> BoolSpans:
    """A timeline against a constant, pointwise; exact crossings on numeric timelines."""
    constant = expr.right.ms if isinstance(expr.right, A.Duration) else expr.right.value  # type: ignore[attr-defined]
    if isinstance(child, StateSpans):
        table = np.array([compare_values(v, expr.op, constant) for v in child.vocab] + [UNKNOWN], dtype=np.int8)
        return canonical_bool(child.key, child.start, table[child.code])
    if isinstance(child, BoolSpans):
        table = np.array([compare_values(v, expr.op, constant) for v in (False, None, True)], dtype=np.int8)
        return canonical_bool(child.key, child.start, table[child.value])
    if isinstance(child, NumericSpans):
        return _compare_numeric(child, expr.op, float(constant), frame)
    raise NotImplementedError(f"no Compare rule for {type(child).__name__}")


def _compare_numeric(x: NumericSpans, op: str, c: float, frame: Frame) -> BoolSpans:
    """Split each linear span where `v0 + slope*(t - start) op c` changes.

    Times are whole milliseconds, so the switch happens at the first whole ms
    on the other side of the exact crossing x = start + (c - v0) / slope.
    """
    n = len(x)
    start, end = x.start, next_start(x.key, x.start)
    v0, slope = x.v0, x.slope
    known = ~np.isnan(v0)
    # A falling line is a rising one with both sides negated.
    falling = slope < 0
    v0n = np.where(falling, -v0, v0)
    cn = np.where(falling, -c, c)
    m = np.abs(slope)
    ops = np.where(falling, _NEGATED[op], op)
    constant_value = _vector_compare(v0n, ops, cn)
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = start + (cn - v0n) / np.where(m > 0, m, 1.0)
    # first whole ms where the rising value is > c, and where it is >= c
    after_gt = np.floor(cross) + 1
    after_ge = np.ceil(cross)
    horizon = float(frame.horizon())
    pieces_start = np.empty((n, 3), dtype=np.float64)
    pieces_value = np.full((n, 3), UNKNOWN, dtype=np.int8)
    valid = np.zeros((n, 3), dtype=bool)
    pieces_start[:, 0] = start
    valid[:, 0] = True
    rising = known & (m > 0)
    flat = ~rising
    pieces_value[flat, 0] = np.where(known[flat], constant_value[flat], UNKNOWN)
    op_arr = ops
    for o in (">", ">=", "<", "<="):
        sel = rising & (op_arr == o)
        if not sel.any():
            continue
        switch = (after_gt if o in (">", "<=") else after_ge)[sel]
        before, after = (FALSE, TRUE) if o in (">", ">=") else (TRUE, FALSE)
        s, e = start[sel].astype(np.float64), end[sel].astype(np.float64)
        switch = np.clip(switch, s, None)
        pieces_value[sel, 0] = np.where(switch <= s, after, before)
        inner = (switch > s) & (switch < e) & (switch < horizon)
        rows = np.nonzero(sel)[0][inner]
        pieces_start[rows, 1] = switch[inner]
        pieces_value[rows, 1] = after
        valid[rows, 1] = True
    for o in ("==", "!="):
        sel = rising & (op_arr == o)
        if not sel.any():
            continue
        hit_value, miss_value = (TRUE, FALSE) if o == "==" else (FALSE, TRUE)
        xs = cross[sel]
        s, e = start[sel].astype(np.float64), end[sel].astype(np.float64)
        exact = (xs == np.floor(xs)) & (xs >= s) & (xs < e) & (xs < horizon)
        at_start = exact & (xs == s)
        pieces_value[sel, 0] = np.where(at_start, hit_value, miss_value)
        rows = np.nonzero(sel)[0]
        mid = exact & (xs > s)
        pieces_start[rows[mid], 1] = xs[mid]
        pieces_value[rows[mid], 1] = hit_value
        valid[rows[mid], 1] = True
        after = exact & (xs + 1 < e) & (xs + 1 < horizon)
        pieces_start[rows[after], 2] = xs[after] + 1
        pieces_value[rows[after], 2] = miss_value
        valid[rows[after], 2] = True
    flat_valid = valid.reshape(-1)
    key = np.repeat(x.key, 3)[flat_valid]
    new_start = pieces_start.reshape(-1)[flat_valid].astype(np.int64)
    value = pieces_value.reshape(-1)[flat_valid]
    return canonical_bool(key, new_start, value)


def CompareTimelines(expr: A.CompareTimelines, frame: Frame, left: SpanSet, right: SpanSet) -> BoolSpans:
    """Two timelines, pointwise: unknown where either is unknown. Numeric sides compare through
    their difference (a line per aligned span, slope in -1..1), so crossings are exact."""
    key, start, (li, ri) = align((left, right), frame)
    if isinstance(left, NumericSpans) and isinstance(right, NumericSpans):
        def value(x: NumericSpans, ix: np.ndarray) -> np.ndarray:
            return x.v0[ix] + x.slope[ix] * (start - x.start[ix])

        difference = canonical_numeric(key, start, value(left, li) - value(right, ri),
                                       left.slope[li] - right.slope[ri])
        return _compare_numeric(difference, expr.op, 0.0, frame)
    # State and boolean sides: a table of every (left value, right value) pair; the last row
    # and column are unknown.
    lvals, lcode = _values_and_codes(left, li)
    rvals, rcode = _values_and_codes(right, ri)
    table = np.full((len(lvals) + 1, len(rvals) + 1), UNKNOWN, dtype=np.int8)
    for i, a in enumerate(lvals):
        for j, b in enumerate(rvals):
            table[i, j] = compare_values(a, expr.op, b)
    return canonical_bool(key, start, table[lcode, rcode])


def _values_and_codes(x: SpanSet, ix: np.ndarray) -> tuple[list, np.ndarray]:
    """The distinct values of a state or boolean span set and, per aligned span, its row
    (len(values) = unknown)."""
    if isinstance(x, StateSpans):
        code = x.code[ix].astype(np.int64)
        return list(x.vocab), np.where(code < 0, len(x.vocab), code)
    if isinstance(x, BoolSpans):
        value = x.value[ix].astype(np.int64)  # FALSE 0, UNKNOWN 1, TRUE 2
        return [False, True], np.select([value == FALSE, value == TRUE], [0, 1], 2)
    raise NotImplementedError(f"no CompareTimelines rule for {type(x).__name__}")


def _vector_compare(v0: np.ndarray, ops: np.ndarray, c: np.ndarray) -> np.ndarray:
    out = np.full(len(v0), UNKNOWN, dtype=np.int8)
    known = ~np.isnan(v0)
    for o, fn in (("==", np.equal), ("!=", np.not_equal), ("<", np.less), ("<=", np.less_equal),
                  (">", np.greater), (">=", np.greater_equal)):
        sel = known & (ops == o)
        out[sel] = np.where(fn(v0[sel], c[sel]), TRUE, FALSE)
    return out


def _logic(frame: Frame, children: tuple[BoolSpans, ...], reduce) -> BoolSpans:
    if len(children) == 1:
        return children[0]
    key, start, idx = align(children, frame)
    value = children[0].value[idx[0]]
    for child, ix in zip(children[1:], idx[1:]):
        value = reduce(value, child.value[ix])
    return canonical_bool(key, start, value)


def And(expr: A.And, frame: Frame, *children: BoolSpans) -> BoolSpans:
    """Kleene and: false wins over unknown."""
    return _logic(frame, children, np.minimum)


def Or(expr: A.Or, frame: Frame, *children: BoolSpans) -> BoolSpans:
    """Kleene or: true wins over unknown."""
    return _logic(frame, children, np.maximum)


def Not(expr: A.Not, frame: Frame, child: BoolSpans) -> BoolSpans:
    return BoolSpans(child.key, child.start, (2 - child.value).astype(np.int8))


def DurationWhere(expr: A.DurationWhere, frame: Frame, child: BoolSpans) -> NumericSpans:
    """Time spent true since the key's first event: slope 1 while true, else 0."""
    end = next_start(child.key, child.start)
    last = end == np.iinfo(np.int64).max
    true = child.value == TRUE
    length = np.where(last, 0, end - child.start)
    contribution = np.where(true, length, 0).astype(np.int64)
    total = np.cumsum(contribution)
    before = total - contribution  # exclusive running sum, all keys together
    first = first_of_key(child.key)
    key_base = before[first]
    v0 = (before - key_base[np.cumsum(first) - 1]).astype(np.float64)
    slope = true.astype(np.float64)
    return canonical_numeric(child.key, child.start, v0, slope)


def DurationInCurState(expr: A.DurationInCurState, frame: Frame, child: SpanSet) -> NumericSpans:
    """Time since the current value began; resets at every change; unknown where the input is."""
    if isinstance(child, StateSpans):
        known = child.code >= 0
    elif isinstance(child, BoolSpans):
        known = child.value != UNKNOWN
    else:
        raise NotImplementedError(f"no DurationInCurState rule for {type(child).__name__}")
    v0 = np.where(known, 0.0, np.nan)
    return canonical_numeric(child.key, child.start, v0, known.astype(np.float64))


def _handlers(evaluation: str) -> dict[type[A.Node], Callable[..., SpanSet]]:
    """Each operator's handler is the function of this module named after its class."""
    found = {cls: globals().get(cls.__name__) for cls in A.OPERATOR_CLASSES if cls.evaluation == evaluation}
    return {cls: fn for cls, fn in found.items() if callable(fn)}  # a missing one fails loudly below


LEAF_HANDLERS: dict[type[A.Node], Callable[..., SpanSet]] = _handlers("leaf")
DERIVED_HANDLERS: dict[type[A.Node], Callable[..., SpanSet]] = _handlers("derived")


def leaf_handler(expr: A.Node) -> Callable[..., SpanSet]:
    try:
        return LEAF_HANDLERS[type(expr)]
    except KeyError:
        raise NotImplementedError(f"no leaf rule for {type(expr).__name__}") from None


def derived_handler(expr: A.Node) -> Callable[..., SpanSet]:
    try:
        return DERIVED_HANDLERS[type(expr)]
    except KeyError:
        raise NotImplementedError(f"no derived rule for {type(expr).__name__}") from None
