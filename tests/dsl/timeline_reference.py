"""An independent, deliberately naive reference: SPEC.md read literally, one
millisecond at a time, one key at a time. Slow by design; used only to check
the real evaluators on small random inputs."""

from __future__ import annotations

from typing import Any

from timeline.dsl import ast as A


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "num"
    return "str"


def compare(a: Any, op: str, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    same_kind = _kind(a) == _kind(b)
    if op == "==":
        return same_kind and a == b
    if op == "!=":
        return not (same_kind and a == b)
    if not same_kind or _kind(a) == "bool":
        return None
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def k_and(vals):
    if any(v is False for v in vals):
        return False
    if any(v is None for v in vals):
        return None
    return True


def k_or(vals):
    if any(v is True for v in vals):
        return True
    if any(v is None for v in vals):
        return None
    return False


def k_not(v):
    return None if v is None else not v


def field(event: dict, path: tuple[str, ...]):
    cur: Any = event
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def predicate(p: A.Node, event: dict) -> bool | None:
    if isinstance(p, A.And):
        return k_and([predicate(o, event) for o in p.operands])
    if isinstance(p, A.Or):
        return k_or([predicate(o, event) for o in p.operands])
    if isinstance(p, A.Not):
        return k_not(predicate(p.operand, event))
    assert isinstance(p, A.Compare)
    left = field(event, p.left.path)
    right = field(event, p.right.path) if isinstance(p.right, A.Column) else p.right.value
    return compare(left, p.op, right)


class Reference:
    """Values of every sub-expression of one key at each ms of [lo, hi)."""

    def __init__(self, events: list[tuple[int, int, dict]], lo: int, hi: int):
        # events: (time, arrival seq, fields)
        self.events = sorted(events, key=lambda e: (e[0], e[1]))
        self.origin = min(e[0] for e in events)
        self.lo, self.hi = lo, hi
        self.memo: dict[int, tuple[A.Node, list]] = {}  # id(node) -> (node, series)

    def series(self, node: A.Node) -> list:
        # Memo by object identity: hashing an AST node walks its whole subtree,
        # which made wide And/Or (hundreds of operands) quadratic here.
        key = id(node)
        if key not in self.memo:
            self.memo[key] = (node, [self._at(node, t) if t >= self.origin else None for t in range(self.lo, self.hi)])
            if isinstance(node, A.DurationWhere):
                self.memo[key] = (node, self._duration_where(node))
            if isinstance(node, A.DurationInCurState):
                self.memo[key] = (node, self._duration_in_cur_state(node))
        return self.memo[key][1]

    def at(self, node: A.Node, t: int):
        return self.series(node)[t - self.lo]

    def _at(self, node: A.Node, t: int):
        if isinstance(node, A.LatestEventToState):
            value = None
            for et, _, ev in self.events:
                if node.where is not None and predicate(node.where, ev) is not True:
                    continue
                if et <= t and field(ev, node.column.path) is not None:
                    value = field(ev, node.column.path)
            return value
        if isinstance(node, A.HasExisted):
            return any(et <= t and predicate(node.predicate, ev) is True for et, _, ev in self.events)
        if isinstance(node, A.HasExistedWithin):
            d = int(node.window.ms)
            return any(et <= t < et + d and predicate(node.predicate, ev) is True for et, _, ev in self.events)
        if isinstance(node, A.Compare):
            c = node.right.ms if isinstance(node.right, A.Duration) else node.right.value
            return compare(self.at(node.left, t), node.op, c)
        if isinstance(node, A.CompareTimelines):  # two timelines, pointwise
            return compare(self.at(node.left, t), node.op, self.at(node.right, t))
        if isinstance(node, A.And):
            return k_and([self.at(o, t) for o in node.operands])
        if isinstance(node, A.Or):
            return k_or([self.at(o, t) for o in node.operands])
        if isinstance(node, A.Not):
            return k_not(self.at(node.operand, t))
        if isinstance(node, (A.DurationWhere, A.DurationInCurState)):
            return None  # filled in by the whole-series methods
        raise AssertionError(f"reference has no rule for {type(node).__name__}")

    def _duration_where(self, node: A.DurationWhere) -> list:
        cond = self.series(node.condition)
        out, total = [], 0
        for i, t in enumerate(range(self.lo, self.hi)):
            if t < self.origin:
                out.append(None)
                continue
            out.append(total)  # time in [origin, t) where the condition held
            if cond[i] is True:
                total += 1
        return out

    def _duration_in_cur_state(self, node: A.DurationInCurState) -> list:
        x = self.series(node.timeline)
        out = []
        for i, t in enumerate(range(self.lo, self.hi)):
            if t < self.origin or x[i] is None:
                out.append(None)
                continue
            j = i
            while j - 1 >= 0 and self.lo + j - 1 >= self.origin and _same(x[j - 1], x[i]):
                j -= 1
            out.append(i - j)
        return out


def _same(a, b) -> bool:
    return a is not None and b is not None and _kind(a) == _kind(b) and a == b
