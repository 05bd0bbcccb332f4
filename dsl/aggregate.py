"""Aggregates over keys as timelines: the algebra behind live `| aggregate(...)`.

`timeline eval ... --at T` aggregates the keys' values at one time. The runtime
keeps the aggregate for every time instead, as a `GroupSeries` per group:
breakpoints `starts`, and for each interval `[starts[i], starts[i+1])` what is
needed to answer every function at any t inside it, exactly:

- `count`: keys in the group (a key counts from its first event on);
- `n`: of them, keys whose value is a number (booleans as 0/1);
- the sum as a line `total(t) = sum_c + sum_m * t` (each key's value is linear
  inside the interval: the interval boundaries include every span boundary);
- `mins` / `maxs`: per slope, the least / greatest intercept `c` of the lines
  `c + slope * t` (values of a duration have slope 0 or 1, so these stay tiny):
  the lower / upper envelope of the keys' lines at any t inside the interval.

Series of different shards merge exactly (`merge_series`): counts and sums
add, envelopes keep the extreme intercept per slope. So per-shard partial
aggregates combine into the whole answer, and the answer at t equals
`aggregate_json` over the keys' values at t, which is what `timeline eval`
prints (`tests/dsl/test_aggregate.py` checks it on random timelines).
"""

from __future__ import annotations

import bisect
import functools
import heapq
import math
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from timeline.dsl import ast as A
from timeline.dsl.compiler import Plan, PlanNode, node_id, plan_for
from timeline.dsl.errors import UsageError
from timeline.dsl.incremental import KeyTimeline
from timeline.dsl.limits import MAX_AGGREGATE_SAMPLES
from timeline.dsl.results import group_label

Number = int | float


class GroupSeries(BaseModel):
    """One group's aggregate over time (see the module docstring); before `starts[0]` the group is empty."""

    starts: list[int] = []
    count: list[int] = []
    n: list[int] = []
    sum_c: list[Number] = []
    sum_m: list[Number] = []
    mins: list[list[tuple[Number, Number]]] = []   # per interval: (slope, least intercept)
    maxs: list[list[tuple[Number, Number]]] = []   # per interval: (slope, greatest intercept)

    def row_at(self, t: int, functions: Iterable[str]) -> dict[str, Any] | None:
        """The group's row at t (as `aggregate_json` prints it), or None when no key is in it."""
        i = bisect.bisect_right(self.starts, t) - 1
        if i < 0 or self.count[i] == 0:
            return None
        n = self.n[i]
        total = self.sum_c[i] + self.sum_m[i] * t
        row: dict[str, Any] = {}
        for fn in functions:
            if fn == "count":
                row["count"] = self.count[i]
            elif fn == "sum":
                row["sum"] = _num(total) if n else None
            elif fn == "avg":
                row["avg"] = _num(total / n) if n else None
            elif fn == "min":
                row["min"] = _num(min(c + m * t for m, c in self.mins[i])) if n else None
            elif fn == "max":
                row["max"] = _num(max(c + m * t for m, c in self.maxs[i])) if n else None
        return row


class AggregateSeries(BaseModel):
    """Every group's series: a shard's partial aggregate, or the whole (merged) aggregate."""

    groups: dict[str, GroupSeries] = {}

    def at(self, t: int, functions: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The groups at t, shaped as `timeline eval ... | aggregate(...) --at t` prints them."""
        functions = tuple(functions)
        out: dict[str, dict[str, Any]] = {}
        for label in sorted(self.groups):
            row = self.groups[label].row_at(t, functions)
            if row is not None:
                out[label] = row
        return out

    def change_points(self, frm: int | None = None, to: int | None = None) -> list[int]:
        """The times in [frm, to) where some group's count, sum or envelope changes line."""
        points = sorted({s for g in self.groups.values() for s in g.starts})
        lo = 0 if frm is None else bisect.bisect_left(points, frm)
        hi = len(points) if to is None else bisect.bisect_left(points, to)
        return points[lo:hi]


# --- building a series from keys' timelines ---------------------------------------------------


def key_pieces(value: KeyTimeline, group: KeyTimeline, since: int | None = None
               ) -> list[tuple[int, int | None, str, Any, Number]]:
    """One key's contributions: (start, end or None, group label, value at start, slope) on the
    pieces where both its value and its group keep one line, from the key's first event on (and
    from `since` on, when given)."""
    origins = [tl.starts[0] for tl in (value, group) if tl.starts]
    if not origins:
        return []
    lo = min(origins) if since is None else max(min(origins), since)
    cuts = sorted({lo, *(s for s in value.starts if s > lo), *(s for s in group.starts if s > lo)})
    out = []
    for i, start in enumerate(cuts):
        end = cuts[i + 1] if i + 1 < len(cuts) else None
        g = group.value_at(start)
        j = bisect.bisect_right(value.starts, start) - 1
        v: Any = None
        slope: Number = 0
        if j >= 0:
            v = value.value_at(start)
            if value.slopes is not None and value.values[j] is not None:
                slope = _num(value.slopes[j])
        out.append((start, end, group_label(g), v, slope))
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))


def series_of_keys(timelines: Iterable[tuple[KeyTimeline, KeyTimeline]], since: int | None = None
                   ) -> AggregateSeries:
    """The aggregate series of keys given as (value timeline, group timeline) pairs (its part on
    [since, +inf) when given: what a change from `since` on must carry)."""
    pieces: dict[str, list[tuple[int, int | None, Any, Number]]] = {}
    for value, group in timelines:
        for start, end, label, v, slope in key_pieces(value, group, since):
            pieces.setdefault(label, []).append((start, end, v, slope))
    return AggregateSeries(groups={label: _group_series(ps) for label, ps in pieces.items()})


def _group_series(pieces: list[tuple[int, int | None, Any, Number]]) -> GroupSeries:
    points = sorted({p[0] for p in pieces} | {p[1] for p in pieces if p[1] is not None})
    index = {t: i for i, t in enumerate(points)}
    size = len(points) + 1
    d_count = [0] * size
    d_n = [0] * size
    d_c: list[Number] = [0] * size
    d_m: list[Number] = [0] * size
    opens: list[list[tuple[int, Number, Number]]] = [[] for _ in points]  # interval -> (piece, slope, c)
    for pid, (start, end, v, slope) in enumerate(pieces):
        a = index[start]
        b = index[end] if end is not None else len(points)
        d_count[a] += 1
        d_count[b] -= 1
        if _is_number(v):
            num = int(v) if isinstance(v, bool) else v
            c = num - slope * start
            d_n[a] += 1
            d_n[b] -= 1
            d_c[a] += c
            d_c[b] -= c
            d_m[a] += slope
            d_m[b] -= slope
            opens[a].append((b, slope, c))
    out = GroupSeries()
    count = n = 0
    total_c: Number = 0
    total_m: Number = 0
    low: dict[Number, list] = {}   # slope -> heap of (c, closes at)
    high: dict[Number, list] = {}  # slope -> heap of (-c, closes at)
    for i, t in enumerate(points):
        count += d_count[i]
        n += d_n[i]
        total_c += d_c[i]
        total_m += d_m[i]
        for b, slope, c in opens[i]:
            heapq.heappush(low.setdefault(slope, []), (c, b))
            heapq.heappush(high.setdefault(slope, []), (-c, b))
        mins, maxs = [], []
        for slope in sorted(low):
            for heap, sign, dest in ((low[slope], 1, mins), (high[slope], -1, maxs)):
                while heap and heap[0][1] <= i:   # closed before this interval
                    heapq.heappop(heap)
                if heap:
                    dest.append((slope, sign * heap[0][0]))
        _append(out, t, count, n, total_c, total_m, mins, maxs)
    return out


def _append(out: GroupSeries, t: int, count: int, n: int, c: Number, m: Number, mins, maxs) -> None:
    """Add an interval, merging it into the previous one when nothing changed (one canonical form)."""
    c, m = _num(c), _num(m)
    if out.starts and (out.count[-1], out.n[-1], out.sum_c[-1], out.sum_m[-1], out.mins[-1], out.maxs[-1]) == (
            count, n, c, m, mins, maxs):
        return
    if not out.starts and count == 0:
        return
    out.starts.append(t)
    out.count.append(count)
    out.n.append(n)
    out.sum_c.append(c)
    out.sum_m.append(m)
    out.mins.append(mins)
    out.maxs.append(maxs)


# --- merging series (shards, closed keys) ---------------------------------------------------


def merge_series(parts: Iterable[AggregateSeries]) -> AggregateSeries:
    """The aggregate of disjoint sets of keys, from each set's series."""
    by_group: dict[str, list[GroupSeries]] = {}
    for part in parts:
        for label, g in part.groups.items():
            if g.starts:
                by_group.setdefault(label, []).append(g)
    return AggregateSeries(groups={label: gs[0] if len(gs) == 1 else _merge_groups(gs)
                                   for label, gs in by_group.items()})


def _merge_groups(parts: list[GroupSeries]) -> GroupSeries:
    points = sorted({s for g in parts for s in g.starts})
    out = GroupSeries()
    for t in points:
        count = n = 0
        c: Number = 0
        m: Number = 0
        low: dict[Number, Number] = {}
        high: dict[Number, Number] = {}
        for g in parts:
            i = bisect.bisect_right(g.starts, t) - 1
            if i < 0:
                continue
            count += g.count[i]
            n += g.n[i]
            c += g.sum_c[i]
            m += g.sum_m[i]
            for slope, ic in g.mins[i]:
                low[slope] = min(ic, low.get(slope, ic))
            for slope, ic in g.maxs[i]:
                high[slope] = max(ic, high.get(slope, ic))
        _append(out, t, count, n, c, m, sorted(low.items()), sorted(high.items()))
    return out


# --- changes: what a partial aggregate sends ---------------------------------------------------


def series_since(series: AggregateSeries, since: int) -> AggregateSeries:
    """The part of a series on [since, +inf): the interval holding `since` starts at it (its lines are
    in absolute time, so clipping changes no value)."""
    out: dict[str, GroupSeries] = {}
    for label, g in series.groups.items():
        i = max(0, bisect.bisect_right(g.starts, since) - 1)
        if i >= len(g.starts) or (i == len(g.starts) - 1 and g.count[i] == 0 and g.starts[i] <= since):
            continue  # empty from `since` on
        part = GroupSeries(starts=[max(since, g.starts[i]), *g.starts[i + 1:]], count=g.count[i:], n=g.n[i:],
                           sum_c=g.sum_c[i:], sum_m=g.sum_m[i:], mins=g.mins[i:], maxs=g.maxs[i:])
        out[label] = part
    return AggregateSeries(groups=out)


def patch_series(old: AggregateSeries, since: int, part: AggregateSeries) -> AggregateSeries:
    """`old` up to `since`, then `part` (a `series_since(new, since)`): the receiving end of a change.
    Costs the part's size per group, plus a slice of the old lists."""
    out: dict[str, GroupSeries] = {}
    for label in sorted(set(old.groups) | set(part.groups)):
        before = old.groups.get(label)
        if before is not None:
            cut = bisect.bisect_left(before.starts, since)
            g = GroupSeries(starts=before.starts[:cut], count=before.count[:cut], n=before.n[:cut],
                            sum_c=before.sum_c[:cut], sum_m=before.sum_m[:cut], mins=before.mins[:cut],
                            maxs=before.maxs[:cut])
        else:
            g = GroupSeries()
        if g.starts:
            _append(g, since, 0, 0, 0, 0, [], [])  # empty from `since` unless `part` says otherwise
        after = part.groups.get(label)
        if after is not None:
            for i, t in enumerate(after.starts):
                if g.starts and g.starts[-1] == t:  # `part` starts at `since`: it replaces the empty mark
                    for column in (g.starts, g.count, g.n, g.sum_c, g.sum_m, g.mins, g.maxs):
                        column.pop()
                _append(g, t, after.count[i], after.n[i], after.sum_c[i], after.sum_m[i], after.mins[i],
                        after.maxs[i])
        if g.starts:
            out[label] = g
    return AggregateSeries(groups=out)


def answer_times(series: AggregateSeries, t: int | None, frm: int | None, to: int | None, step: int | None
                 ) -> tuple[list[int], bool]:
    """The times an aggregate query asks about: t; or from `frm` every `step` ms before `to`; or `frm`
    and every change point in [frm, to). Returns (times, truncated at MAX_AGGREGATE_SAMPLES)."""
    if t is not None:
        return [t], False
    if frm is None or to is None:
        raise UsageError("give t (the groups at one time), or from and to (over time, with an optional step)")
    if step is not None:
        return sample_times(frm, to, step), False
    if to <= frm:
        raise UsageError(f"from ({frm}) must be before to ({to})")
    times = sorted({frm, *series.change_points(frm, to)})
    return times[:MAX_AGGREGATE_SAMPLES], len(times) > MAX_AGGREGATE_SAMPLES


# --- the runtime's plan: the group-by column as a leaf -----------------------------------------


def group_leaf_expr(aggregation: A.Aggregation) -> A.LatestEventToState:
    """A key's group over time: its latest value of the group-by column."""
    return A.LatestEventToState(column=aggregation.group_by)


def group_leaf_id(plan: Plan) -> str | None:
    return None if plan.aggregation is None else node_id(group_leaf_expr(plan.aggregation))


@functools.lru_cache(maxsize=512)
@functools.lru_cache(maxsize=512)
def runtime_plan(source: str) -> Plan:
    """The plan the runtime runs: the expression's plan, plus, with an aggregation suffix, the leaf
    `latest_event_to_state(<group-by column>)` (shared when the expression already reads it), whose
    timelines say each key's group over time."""
    plan = plan_for(source)
    gid = group_leaf_id(plan)
    if gid is None or gid in plan.nodes:
        return plan
    expr = group_leaf_expr(plan.aggregation)  # type: ignore[arg-type]
    leaf = PlanNode(id=gid, op=type(expr).__name__, kind=A.Kind.STATE, children=(),
                    label=A.strip_parens(expr.text()), expr=expr)
    return plan.model_copy(update={"nodes": {gid: leaf, **plan.nodes}})


def sample_times(frm: int, to: int, step: int) -> list[int]:
    """The times frm, frm+step, ... before `to`, within the documented limit."""
    if step <= 0:
        raise UsageError(f"step must be a positive number of ms, got {step}")
    if to <= frm:
        raise UsageError(f"from ({frm}) must be before to ({to})")
    count = -(-(to - frm) // step)
    if count > MAX_AGGREGATE_SAMPLES:
        raise UsageError(f"{count} samples asked for, at most {MAX_AGGREGATE_SAMPLES}: use a larger step")
    return list(range(frm, to, step))


def series_of_snapshots(values: Mapping[str, KeyTimeline], groups: Mapping[str, KeyTimeline],
                        keys: Iterable[str], since: int | None = None) -> AggregateSeries:
    """The series of some keys of a partial aggregator's state (from `since` on, when given)."""
    empty = KeyTimeline()
    return series_of_keys(((values.get(k, empty), groups.get(k, empty)) for k in keys), since)


def _num(v: Number) -> Number:
    return int(v) if float(v).is_integer() else v
