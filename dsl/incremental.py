"""The incremental evaluator: per key, batches of events in, span changes out.

Every operator is causal (a timeline's value at t depends only on events at or
before t), so a batch whose earliest event is at time s changes timelines only
on [s, +inf). A change is a `SpanPatch`: "from `since` on, the timeline is
these spans". Node steps are pure state machines:

- `LeafStep` keeps, per key, the key's origin and the events the leaf needs,
  and re-evaluates the affected keys with the leaf's operator handler;
- `DerivedStep` keeps, per key, its children's timelines, applies their
  patches, and re-evaluates the affected keys with its operator handler.

Both call the handlers of `dsl.operators` on multi-key span sets, the same
functions the batch evaluator calls, so streaming and batch results are equal
by construction. `IncrementalEvaluator` wires the steps of a whole plan in one
process; the durable runtime runs each step in its own workflow.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from timeline.dsl import ast as A
from timeline.dsl.ast import Kind
from timeline.dsl.compiler import Plan, PlanNode
from timeline.dsl.events import EventFrame, ValueEncoder, evaluate_predicate, same_value
from timeline.dsl.operators import derived_handler, leaf_handler
from timeline.dsl.spans import (
    TRUE,
    UNKNOWN,
    BoolSpans,
    Frame,
    NumericSpans,
    SpanSet,
    StateSpans,
    key_offsets,
)


class EventBatch(BaseModel):
    """Events in arrival order, as columns (not a dict per event)."""

    model_config = ConfigDict(frozen=True)

    keys: list[str]
    times: list[int]
    columns: dict[str, list[Any]] = {}   # dotted path -> value per event (None = missing)

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def from_events(cls, events: Iterable[tuple[str, int, dict[str, Any]]], paths: Sequence[str]) -> "EventBatch":
        keys, times = [], []
        columns: dict[str, list[Any]] = {p: [] for p in paths}
        for key, time, fields in events:
            keys.append(key)
            times.append(time)
            for p in paths:
                columns[p].append(fields.get(p))
        return cls(keys=keys, times=times, columns=columns)


class KeyTimeline(BaseModel):
    """One key's canonical timeline: spans from `starts[i]` to the next start.

    `slopes` is set for numeric timelines only; a value of None is unknown.
    Built with `model_construct` inside this module (the values are ours, and
    validating every key's timeline on every batch cost more than the algebra).
    """

    model_config = ConfigDict(frozen=True)

    starts: list[int] = []
    values: list[Any] = []
    slopes: list[float] | None = None

    def value_at(self, t: int) -> Any:
        i = bisect.bisect_right(self.starts, t) - 1
        if i < 0:
            return None
        v = self.values[i]
        if self.slopes is None or v is None:
            return v
        return _num(v + self.slopes[i] * (t - self.starts[i]))

    def since(self, t: int) -> "KeyTimeline":
        """The part on [t, +inf), its first span clipped to start at t."""
        i = bisect.bisect_right(self.starts, t) - 1
        if i < 0 or (i == 0 and self.starts[0] == t):  # nothing to clip (timelines are never changed in place)
            return self
        starts = [t] + self.starts[i + 1:]
        values = list(self.values[i:])
        slopes = None if self.slopes is None else list(self.slopes[i:])
        if slopes is not None and values[0] is not None:
            values[0] = _num(values[0] + slopes[0] * (t - self.starts[i]))
        return _timeline(starts, values, slopes)

    def then(self, later: "KeyTimeline") -> "KeyTimeline":
        """This timeline up to where `later` starts, then `later` (a node's live part, which
        starts at the key's frontier, after what was published before it)."""
        if not later.starts:
            return self
        return self.with_patch(_patch("", later.starts[0], later.starts, later.values, later.slopes))

    def with_patch(self, patch: "SpanPatch") -> "KeyTimeline":
        cut = bisect.bisect_left(self.starts, patch.since)
        starts = self.starts[:cut] + list(patch.starts)
        values = self.values[:cut] + list(patch.values)
        slopes = None
        if patch.slopes is not None or self.slopes is not None:
            slopes = list(self.slopes or [])[:cut] + list(patch.slopes or [])
        # Our part before the cut is canonical already: merge from there on.
        return _canonical(starts, values, slopes, done=cut if self.slopes is not None or slopes is None else 0)


_setattr = object.__setattr__


def _timeline(starts: list[int], values: list[Any], slopes: list[float] | None) -> KeyTimeline:
    """A KeyTimeline from values that are ours (what `model_construct` does, without its
    per-field bookkeeping: this runs for every key a batch touches, at every node)."""
    tl = object.__new__(KeyTimeline)
    _setattr(tl, "__dict__", {"starts": starts, "values": values, "slopes": slopes})
    _setattr(tl, "__pydantic_fields_set__", {"starts", "values", "slopes"})
    _setattr(tl, "__pydantic_extra__", None)
    _setattr(tl, "__pydantic_private__", None)
    return tl


def _patch(key: str, since: int, starts: list[int], values: list[Any], slopes: list[float] | None) -> "SpanPatch":
    p = object.__new__(SpanPatch)
    _setattr(p, "__dict__", {"key": key, "since": since, "starts": starts, "values": values, "slopes": slopes})
    _setattr(p, "__pydantic_fields_set__", {"key", "since", "starts", "values", "slopes"})
    _setattr(p, "__pydantic_extra__", None)
    _setattr(p, "__pydantic_private__", None)
    return p


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


def _canonical(starts: list[int], values: list[Any], slopes: list[float] | None, done: int = 0) -> KeyTimeline:
    """Merge neighbours that carry the same value (or continue the same line). The first
    `done` spans are canonical already."""
    out_s: list[int] = starts[:done]
    out_v: list[Any] = values[:done]
    out_m: list[float] | None = None if slopes is None else slopes[:done]
    for i in range(done, len(starts)):
        s, v = starts[i], values[i]
        if out_s:
            pv = out_v[-1]
            if slopes is None:
                if _same(pv, v):
                    continue
            else:
                m, pm = slopes[i], out_m[-1]  # type: ignore[index]
                if pv is None and v is None:
                    continue
                if pv is not None and v is not None and m == pm and pv + pm * (s - out_s[-1]) == v:
                    continue
        out_s.append(s)
        out_v.append(v)
        if out_m is not None:
            out_m.append(0.0 if v is None else slopes[i])  # type: ignore[index]
    if not out_s:
        return EMPTY
    return _timeline(out_s, out_v, out_m)


_SCALARS = (str, int, float, bool)


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if a is None or b is None:
        return False
    kind = type(a)
    if kind is type(b) and kind in _SCALARS:  # the common case, without value_identity's tuples
        return a == b
    return same_value(a, b)


# The empty timeline, shared: timelines are never changed in place.
EMPTY = KeyTimeline()


class SpanPatch(BaseModel):
    """A change to one key's timeline: on [since, +inf) it is now these spans."""

    model_config = ConfigDict(frozen=True)

    key: str
    since: int
    starts: list[int]
    values: list[Any]
    slopes: list[float] | None = None


def diff(key: str, old: KeyTimeline, new: KeyTimeline) -> SpanPatch | None:
    """The smallest patch turning `old` into `new` (None when they are equal)."""
    n = min(len(old.starts), len(new.starts))
    first: int | None = None
    for i in range(n):
        if old.starts[i] != new.starts[i]:
            first = min(old.starts[i], new.starts[i])
            break
        same = _same(old.values[i], new.values[i])
        if same and new.slopes is not None:
            same = (old.slopes or [None] * n)[i] == new.slopes[i]
        if not same:
            first = new.starts[i]
            break
    if first is None:
        if len(old.starts) == len(new.starts):
            return None
        first = new.starts[n] if len(new.starts) > n else old.starts[n]
    # From `first` on the timeline is `new`: clip its span that holds `first`.
    part = new.since(first) if new.starts and first >= new.starts[0] else new
    return _patch(key, first, part.starts, part.values, part.slopes)


# --- converting between per-key timelines and span sets -------------------------------


def to_span_set(kind: Kind, timelines: Sequence[KeyTimeline], frame: Frame) -> SpanSet:
    """Span set of keys 0..len-1, each padded with unknown back to its frame origin."""
    keys: list[int] = []
    starts: list[int] = []
    values: list[Any] = []
    slopes: list[float] = []
    for k, tl in enumerate(timelines):
        origin = int(frame.origin[k])
        if not tl.starts or tl.starts[0] > origin:
            keys.append(k)
            starts.append(origin)
            values.append(None)
            slopes.append(0.0)
        keys.extend([k] * len(tl.starts))
        starts.extend(tl.starts)
        values.extend(tl.values)
        slopes.extend(tl.slopes if tl.slopes is not None else [0.0] * len(tl.starts))
    key = np.array(keys, dtype=np.int64)
    start = np.array(starts, dtype=np.int64)
    if kind == Kind.NUMERIC:
        v0 = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        return NumericSpans(key, start, v0, np.array(slopes, dtype=np.float64))
    if kind == Kind.BOOLEAN:
        value = np.array([UNKNOWN if v is None else (TRUE if v else 0) for v in values], dtype=np.int8)
        return BoolSpans(key, start, value)
    encoder = ValueEncoder()
    code = np.array([encoder.code(v) for v in values], dtype=np.int32)
    return StateSpans(key, start, code, tuple(encoder.vocab))


def from_span_set(spans: SpanSet, n_keys: int) -> list[KeyTimeline]:
    """Per-key timelines of a span set. A leading unknown span is kept: it marks
    the key's origin, from which duration_where counts."""
    offsets = key_offsets(spans.key, n_keys)
    starts = spans.start.tolist()
    values = spans.python_values()
    slopes = spans.slope.tolist() if isinstance(spans, NumericSpans) else None
    out = []
    for k in range(n_keys):
        lo, hi = int(offsets[k]), int(offsets[k + 1])
        out.append(_timeline(starts[lo:hi], values[lo:hi], None if slopes is None else slopes[lo:hi]))
    return out


# --- node steps --------------------------------------------------------------------
#
# Bounded state. A key's timeline is final before its *frontier*: the key's
# watermark (latest event time seen) minus the allowed lateness. An event older
# than its key's frontier is late: it is not applied (the caller side-outputs
# it), so nothing before the frontier can change again. Each step therefore
# keeps, per key, only what can still change the part from the frontier on,
# and compares and emits only that part: patches never reach before the
# frontier. What lies before it was emitted already (and, at the root,
# published to the store), so the workflow state of a key stays the same size
# however many events it has. `allowed_lateness_ms=None` keeps everything (the
# batch evaluator's meaning: any order, nothing late).


@dataclass
class KeyEvents:
    """What a leaf keeps of one key: its origin and the events that can still matter.
    A plain dataclass (pydantic validates it inside LeafSnapshot): the leaf updates it
    for every event, and a pydantic model's attribute assignment costs several times more."""

    origin: int
    times: list[int] = field(default_factory=list)      # sorted by (time, arrival)
    seqs: list[int] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)  # field values, in the leaf's column order
    watermark: int | None = None  # the latest event time seen
    frontier: int | None = None   # the timeline is final before it; older events are late


class LateEvent(BaseModel):
    """An event older than its key's frontier: not applied, side-output with the reason "late"."""

    model_config = ConfigDict(frozen=True)

    key: str
    time: int
    frontier: int | None = None       # late: the key's watermark minus the lateness when it came
    fields: dict[str, Any] = {}       # the fields the leaf reads


class LeafSnapshot(BaseModel):
    """A leaf step's whole state, carried across continue-as-new."""

    seq: int = 0
    keys: dict[str, KeyEvents] = {}
    timelines: dict[str, KeyTimeline] = {}   # from each key's frontier on
    late_events: int = 0


class DerivedSnapshot(BaseModel):
    """A derived step's whole state: its children's timelines and its own (from each key's
    frontier on), and what it carries across the frontier."""

    children: list[dict[str, KeyTimeline]] = []
    timelines: dict[str, KeyTimeline] = {}
    frontiers: dict[str, int] = {}
    carried: dict[str, float] = {}   # duration_where: the total before the children's kept part


def _leaf_events_to_keep(expr: A.Node, state: KeyEvents, full: KeyTimeline, frontier: int) -> list[int] | None:
    """Indexes of the events (sorted by time) that can still change the timeline
    on [frontier, +inf); None: keep them all (an operator without a rule)."""
    times = state.times
    n = len(times)
    before = bisect.bisect_left(times, frontier)
    recent = list(range(before, n))
    if isinstance(expr, A.LatestEventToState):
        # Every kept row has the field (see LeafStep._relevant): the last one before
        # the frontier is the value in force there.
        return ([before - 1] if before else []) + recent
    if isinstance(expr, A.HasExisted):
        # Kept events all match (LeafStep._relevant): only the first one matters,
        # and the timeline says when it was. Once it is before the frontier, no
        # later event can change anything.
        if before and full.value_at(frontier - 1) is True:
            first_true = full.starts[bisect.bisect_right(full.starts, frontier - 1) - 1]
            lo, hi = bisect.bisect_left(times, first_true), bisect.bisect_right(times, first_true)
            return list(range(lo, hi))
        return recent
    if isinstance(expr, A.HasExistedWithin):
        # A window [t, t + d) reaches the frontier only if t > frontier - d.
        return list(range(bisect.bisect_right(times, frontier - int(expr.window.ms)), n))  # type: ignore[attr-defined]
    return None


class LeafStep:
    """A leaf node over many keys: event batches in, patches out."""

    def __init__(self, node: PlanNode, allowed_lateness_ms: int | None = None):
        self.node = node
        self.handler = leaf_handler(node.expr)
        self.paths = [c.path for c in _columns(node.expr)]
        self.lateness = allowed_lateness_ms
        self.keys: dict[str, KeyEvents] = {}
        self.timelines: dict[str, KeyTimeline] = {}
        self.seq = 0
        self.late_events = 0                 # over the step's whole life (carried)
        self.late: list[LateEvent] = []      # since the last take_late()

    def _relevant(self, row: list) -> bool:
        # Events without any field the leaf reads only move the origin.
        return any(v is not None for v in row)

    def _matches(self, cols: list[list[Any]], n: int) -> list[bool] | None:
        """For has_existed(_within) and a filtered latest_event_to_state: which events match
        the predicate (and carry the value). The others only move the key's origin, so the
        leaf need not keep them."""
        expr = self.node.expr
        filtered = isinstance(expr, A.LatestEventToState) and expr.where is not None
        if not (filtered or isinstance(expr, (A.HasExisted, A.HasExistedWithin))) or n == 0:
            return None
        columns = {}
        for path, col in zip(self.paths, cols):
            columns[path] = ValueEncoder().encode(col)
        zeros = np.zeros(n, dtype=np.int64)  # one key, one time: the frame keeps arrival order
        frame = EventFrame.build(zeros, zeros, columns, n_keys=1)
        if filtered:
            # latest_event_to_state(f, p): only an event matching p with a value of f carries
            # a value, so every kept row does (what the compaction rule relies on).
            values = cols[self.paths.index(expr.column.path)]
            return [bool(m) and v is not None
                    for m, v in zip((evaluate_predicate(expr.where, frame) == TRUE).tolist(), values)]
        return (evaluate_predicate(expr.predicate, frame) == TRUE).tolist()

    def apply(self, batch: EventBatch) -> list[SpanPatch]:
        cols = [batch.columns.get(".".join(p), [None] * len(batch)) for p in self.paths]
        matches = self._matches(cols, len(batch))
        touched: dict[str, None] = {}
        for i, (key, t) in enumerate(zip(batch.keys, batch.times)):
            state = self.keys.get(key)
            # Late against the key's watermark so far: the same events are late
            # however the stream is cut into batches.
            if (self.lateness is not None and state is not None and state.watermark is not None
                    and t < state.watermark - self.lateness):
                self.late.append(LateEvent(key=key, time=t, frontier=state.watermark - self.lateness,
                                           fields=self._fields(cols, i)))
                self.late_events += 1
                continue
            self.seq += 1
            if state is None:
                state = self.keys[key] = KeyEvents(origin=t)
            state.origin = min(state.origin, t)
            state.watermark = t if state.watermark is None else max(state.watermark, t)
            row = [c[i] for c in cols]
            if matches[i] if matches is not None else self._relevant(row):
                pos = bisect.bisect_right(state.times, t)  # after equal times: arrival order
                state.times.insert(pos, t)
                state.seqs.insert(pos, self.seq)
                state.rows.insert(pos, row)
            touched[key] = None
        keys = list(touched)
        full = self._evaluate(keys)
        patches = _emit(keys, [tl.since(f) if (f := self.keys[k].frontier) is not None else tl
                               for k, tl in zip(keys, full)], self.timelines)
        for name, tl in zip(keys, full):
            self._compact(name, tl)
        return patches

    def _fields(self, cols: list[list[Any]], i: int) -> dict[str, Any]:
        return {".".join(p): c[i] for p, c in zip(self.paths, cols) if c[i] is not None}

    def take_late(self) -> list[LateEvent]:
        """The late events seen since the last call (for the side output)."""
        late, self.late = self.late, []
        return late

    def _evaluate(self, keys: list[str]) -> list[KeyTimeline]:
        if not keys:
            return []
        key_idx, times, rows = [], [], []
        for k, name in enumerate(keys):
            state = self.keys[name]
            key_idx.append(k)
            times.append(state.origin)
            rows.append([None] * len(self.paths))
            key_idx.extend([k] * len(state.times))
            times.extend(state.times)
            rows.extend(state.rows)
        columns = {}
        for j, path in enumerate(self.paths):
            encoder = ValueEncoder()
            columns[path] = encoder.encode(r[j] for r in rows)
        frame = EventFrame.build(np.array(key_idx), np.array(times), columns, n_keys=len(keys))
        spans = self.handler(self.node.expr, frame)
        return from_span_set(spans, len(keys))

    def _compact(self, name: str, full: KeyTimeline) -> None:
        """Move the key's frontier up to its watermark minus the lateness; drop what can no longer matter."""
        state = self.keys[name]
        if self.lateness is None or state.watermark is None:
            return
        frontier = state.watermark - self.lateness
        if state.frontier is not None and frontier <= state.frontier:
            return
        keep = _leaf_events_to_keep(self.node.expr, state, full, frontier)
        state.frontier = frontier
        if keep is not None and len(keep) < len(state.times):
            state.times = [state.times[i] for i in keep]
            state.seqs = [state.seqs[i] for i in keep]
            state.rows = [state.rows[i] for i in keep]
        if name in self.timelines:
            self.timelines[name] = self.timelines[name].since(frontier)

    def timeline(self, key: str) -> KeyTimeline:
        """The key's timeline from its frontier on (what came before is final and emitted)."""
        return self.timelines.get(key, EMPTY)

    def frontier(self, key: str) -> int | None:
        state = self.keys.get(key)
        return None if state is None else state.frontier

    def release(self, keys: Iterable[str]) -> None:
        """Forget closed keys."""
        for key in keys:
            self.keys.pop(key, None)
            self.timelines.pop(key, None)

    def snapshot(self) -> LeafSnapshot:
        return LeafSnapshot(seq=self.seq, keys=self.keys, timelines=self.timelines, late_events=self.late_events)

    def restore(self, snap: LeafSnapshot) -> "LeafStep":
        self.seq, self.keys, self.timelines = snap.seq, dict(snap.keys), dict(snap.timelines)
        self.late_events = snap.late_events
        return self


# Derived operators whose value on [f, +inf) depends only on their children's
# spans that reach f (their values, and where those spans began): a derived node
# of these keeps each child from its span holding the frontier on.
_SPAN_LOCAL = (A.Compare, A.And, A.Or, A.Not, A.DurationInCurState, A.DurationWhere)


class DerivedStep:
    """A derived node over many keys: children's patches in, its own patches out."""

    def __init__(self, node: PlanNode, child_kinds: Sequence[Kind], allowed_lateness_ms: int | None = None):
        self.node = node
        self.handler = derived_handler(node.expr)
        self.child_kinds = list(child_kinds)
        self.lateness = allowed_lateness_ms
        self.children: list[dict[str, KeyTimeline]] = [{} for _ in node.children]
        self.timelines: dict[str, KeyTimeline] = {}
        self.frontiers: dict[str, int] = {}
        self.carried: dict[str, float] = {}

    def apply(self, child_patches: Sequence[Sequence[SpanPatch]],
              watermarks: Mapping[str, int] | None = None) -> list[SpanPatch]:
        """`child_patches[i]` are the patches of child i (in plan order); `watermarks`
        are the keys' watermarks as far as every child has got (they move frontiers)."""
        touched: dict[str, None] = {}
        for i, patches in enumerate(child_patches):
            store = self.children[i]
            for p in patches:
                store[p.key] = store.get(p.key, EMPTY).with_patch(p)
                touched[p.key] = None
        patches = self._recompute(list(touched))
        if self.lateness is not None and watermarks:
            for key, wm in watermarks.items():
                self._compact(key, wm - self.lateness)
        return patches

    def _recompute(self, keys: list[str]) -> list[SpanPatch]:
        if not keys:
            return []
        per_child = [[store.get(k, EMPTY) for k in keys] for store in self.children]
        origin = np.array([
            min((tl[k].starts[0] for tl in per_child if tl[k].starts), default=0) for k in range(len(keys))
        ], dtype=np.int64)
        frame = Frame(origin)
        sets = [to_span_set(kind, tls, frame) for kind, tls in zip(self.child_kinds, per_child)]
        spans = self.handler(self.node.expr, frame, *sets)
        full = from_span_set(spans, len(keys))
        new = []
        for name, tl in zip(keys, full):
            carried = self.carried.get(name)
            if carried:
                values = [None if v is None else _num(v + carried) for v in tl.values]
                tl = _timeline(tl.starts, values, tl.slopes)
            frontier = self.frontiers.get(name)
            new.append(tl if frontier is None else tl.since(frontier))
        return _emit(keys, new, self.timelines)

    def _compact(self, name: str, frontier: int) -> None:
        old = self.frontiers.get(name)
        if (old is not None and frontier <= old) or not isinstance(self.node.expr, _SPAN_LOCAL):
            return
        self.frontiers[name] = frontier
        own = self.timelines.get(name)
        if own is not None:
            self.timelines[name] = own.since(frontier)
        for store in self.children:
            tl = store.get(name)
            if tl is None or not tl.starts or tl.starts[0] >= frontier:
                continue
            i = bisect.bisect_right(tl.starts, frontier) - 1  # the span holding the frontier
            if i == 0:
                continue
            if isinstance(self.node.expr, A.DurationWhere) and own is not None:
                # The total up to where the kept part begins; own covers it: the
                # kept part began after the last frontier, or is unchanged.
                self.carried[name] = float(own.value_at(tl.starts[i]) or 0)
            store[name] = _timeline(tl.starts[i:], tl.values[i:], None if tl.slopes is None else tl.slopes[i:])

    def timeline(self, key: str) -> KeyTimeline:
        """The key's timeline from its frontier on (what came before is final and emitted)."""
        return self.timelines.get(key, EMPTY)

    def release(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.timelines.pop(key, None)
            self.frontiers.pop(key, None)
            self.carried.pop(key, None)
            for store in self.children:
                store.pop(key, None)

    def snapshot(self) -> DerivedSnapshot:
        return DerivedSnapshot(children=self.children, timelines=self.timelines, frontiers=self.frontiers,
                               carried=self.carried)

    def restore(self, snap: DerivedSnapshot) -> "DerivedStep":
        if snap.children:
            self.children = [dict(c) for c in snap.children]
        self.timelines = dict(snap.timelines)
        self.frontiers = dict(snap.frontiers)
        self.carried = dict(snap.carried)
        return self


def _emit(keys: list[str], new: list[KeyTimeline], store: dict[str, KeyTimeline]) -> list[SpanPatch]:
    patches = []
    for name, tl in zip(keys, new):
        patch = diff(name, store.get(name, EMPTY), tl)
        store[name] = tl
        if patch is not None:
            patches.append(patch)
    return patches


def _columns(expr: A.Node):
    seen: dict[A.Column, None] = {}
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, A.Column):
            seen[node] = None
        stack.extend(reversed(node.children()))
    return list(seen)


# --- a whole plan in one process ---------------------------------------------------------


@dataclass
class BatchResult:
    """What one batch changed: patches per node id, and each touched key's watermark."""

    patches: dict[str, list[SpanPatch]]
    watermarks: dict[str, int]


class IncrementalEvaluator:
    """Runs the steps of a plan in one process (tests, the embedded demo).

    With an allowed lateness, each step keeps only each key's part from its
    frontier on; the evaluator plays the results store's part and merges every
    node's patches into whole timelines (`timeline()`), and collects the late
    events (`late`)."""

    def __init__(self, plan: Plan, allowed_lateness_ms: int | None = None):
        self.plan = plan
        self.steps: dict[str, LeafStep | DerivedStep] = {}
        for node in plan.nodes.values():
            if node.is_leaf:
                self.steps[node.id] = LeafStep(node, allowed_lateness_ms)
            else:
                kinds = [plan.nodes[c].kind for c in node.children]
                self.steps[node.id] = DerivedStep(node, kinds, allowed_lateness_ms)
        self.latest: dict[str, int] = {}
        self.published: dict[str, dict[str, KeyTimeline]] = {node_id: {} for node_id in plan.nodes}
        self.late: list[LateEvent] = []

    def apply(self, batch: EventBatch) -> BatchResult:
        patches: dict[str, list[SpanPatch]] = {}
        late_seen = False
        for node in self.plan.nodes.values():
            step = self.steps[node.id]
            if isinstance(step, LeafStep):
                patches[node.id] = step.apply(batch)
                late = step.take_late()  # every leaf sees every event: keep one leaf's list
                if not late_seen:
                    self.late.extend(late)
                    late_seen = True
        watermarks: dict[str, int] = {}
        for key, t in zip(batch.keys, batch.times):
            self.latest[key] = max(self.latest.get(key, t), t)
            watermarks[key] = self.latest[key]
        for node in self.plan.nodes.values():
            step = self.steps[node.id]
            if isinstance(step, DerivedStep):
                patches[node.id] = step.apply([patches[c] for c in node.children], watermarks)
        for node_id, node_patches in patches.items():
            sink = self.published[node_id]
            for p in node_patches:
                sink[p.key] = sink.get(p.key, EMPTY).with_patch(p)
        return BatchResult(patches=patches, watermarks=watermarks)

    def timeline(self, key: str, node_id: str | None = None) -> KeyTimeline:
        """The key's whole timeline at a node: every patch the node emitted, merged."""
        return self.published[node_id or self.plan.root].get(key, EMPTY)

    def keys(self) -> list[str]:
        return list(self.latest)
