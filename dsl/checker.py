"""The type checker: assigns every node its Kind and normalises the tree.

Normalisation makes equal meanings equal nodes: `a && (b && c)` becomes one
n-ary And, `"x" == e` becomes `e == "x"`, a window or a constant compared with
a duration timeline becomes a Duration in milliseconds (a bare number is
seconds). Every rejection names the offending text and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from timeline.dsl import ast as A
from timeline.dsl.ast import Kind
from timeline.dsl.errors import DslTypeError, DurationError

ORDERING = ("<", "<=", ">", ">=")

_KIND_WORDS = {
    Kind.COLUMN: "a column",
    Kind.CONSTANT: "a constant",
    Kind.DURATION: "a duration",
    Kind.PREDICATE: "an event predicate",
    Kind.STATE: "a state timeline",
    Kind.BOOLEAN: "a boolean timeline",
    Kind.NUMERIC: "a numeric (duration) timeline",
}


def kind_words(kind: Kind) -> str:
    return _KIND_WORDS[kind]


@dataclass
class Checked:
    """A checked query: the normalised tree and each node's kind."""

    query: A.Query
    kinds: dict[A.Node, Kind] = field(default_factory=dict)

    @property
    def root(self) -> A.Node:
        return self.query.expr

    @property
    def root_kind(self) -> Kind:
        return self.kinds[self.query.expr]


class _Checker:
    def __init__(self, source: str):
        self.source = source
        self.kinds: dict[A.Node, Kind] = {}

    def fail(self, node: A.Node, message: str, expected: str | None = None, cls=DslTypeError):
        raise cls(message, self.source, node.at, expected)

    def check(self, node: A.Node) -> tuple[A.Node, Kind]:
        rule = TYPE_RULES.get(type(node))
        if rule is None:  # a loud default: every node class needs a rule
            raise NotImplementedError(f"no type rule for {type(node).__name__}")
        new, kind = rule(self, node)
        self.kinds[new] = kind
        return new, kind

    # --- leaves of the syntax --------------------------------------------
    def check_Column(self, node: A.Column):
        return node, Kind.COLUMN

    def check_Literal(self, node: A.Literal):
        return node, Kind.CONSTANT

    def check_Duration(self, node: A.Duration):
        return node, Kind.DURATION

    # --- logic -------------------------------------------------------------
    def _logic(self, node, cls, word: str):
        operands: list[A.Node] = []
        kinds: list[Kind] = []
        for raw in node.children():
            sub, kind = self.check(raw)
            if isinstance(sub, cls):  # flatten a && (b && c)
                operands.extend(sub.operands)
                kinds.extend(self.kinds[o] for o in sub.operands)
            else:
                operands.append(sub)
                kinds.append(kind)
        target = Kind.PREDICATE if kinds[0] == Kind.PREDICATE else Kind.BOOLEAN
        for sub, kind in zip(operands, kinds):
            if kind != target:
                self._not_boolean(sub, kind, word, target, mixed=kinds[0] in (Kind.PREDICATE, Kind.BOOLEAN))
        # Duplicates add nothing to And/Or: keep the first of each.
        unique = tuple(dict.fromkeys(operands))
        if len(unique) == 1:
            return unique[0], target
        return cls(operands=unique, at=node.at), target

    def _not_boolean(self, sub, kind, word, target, mixed):
        if kind == Kind.STATE:
            self.fail(sub, f"'{word}' needs {kind_words(target)}, but this is a state timeline",
                      f'a comparison, like {_t(sub)} == "value"')
        if kind == Kind.COLUMN:
            self.fail(sub, f"'{word}' needs a test, but '{_t(sub)}' is a bare column",
                      f'a comparison, like {_t(sub)} == "value"')
        if mixed and kind in (Kind.PREDICATE, Kind.BOOLEAN):
            self.fail(sub, f"'{word}' mixes an event predicate with a boolean timeline",
                      "predicates inside has_existed(...); timelines outside: "
                      "has_existed(a == 1) && has_existed(b == 2)")
        self.fail(sub, f"'{word}' needs {kind_words(target)}, got {kind_words(kind)}",
                  "has_existed(...), a comparison, or another && / || / !")

    def check_And(self, node: A.And):
        return self._logic(node, A.And, "&&")

    def check_Or(self, node: A.Or):
        return self._logic(node, A.Or, "||")

    def check_Not(self, node: A.Not):
        sub, kind = self.check(node.operand)
        if kind not in (Kind.PREDICATE, Kind.BOOLEAN):
            self._not_boolean(sub, kind, "!", Kind.BOOLEAN, mixed=False)
        if isinstance(sub, A.Not):  # !!a == a
            return sub.operand, kind
        return A.Not(operand=sub, at=node.at), kind

    # --- comparisons -----------------------------------------------------
    def check_Compare(self, node: A.Compare):
        left, lk = self.check(node.left)
        right, rk = self.check(node.right)
        op = node.op
        constantish = (Kind.CONSTANT, Kind.DURATION)
        if lk in constantish and rk not in constantish:
            left, right, lk, rk, op = right, left, rk, lk, A.FLIPPED[op]
        if lk in constantish:
            self.fail(node, "this compares two constants",
                      'a column or a timeline on one side, like latest_event_to_state(x) == "a"')
        if lk == Kind.PREDICATE or rk == Kind.PREDICATE:
            bad = left if lk == Kind.PREDICATE else right
            self.fail(bad, "an event predicate cannot be compared", "combine predicates with && / || / !")
        if lk == Kind.COLUMN:
            return self._compare_column(node, op, left, right, rk)
        if lk.is_timeline and rk.is_timeline:
            return self._compare_timelines(node, op, left, lk, right, rk)
        return self._compare_timeline(node, op, left, lk, right, rk)

    def check_CompareTimelines(self, node: A.CompareTimelines):
        return self.check_Compare(A.Compare(op=node.op, left=node.left, right=node.right, at=node.at))

    def _compare_timelines(self, node, op, left, lk, right, rk):
        """Two timelines, pointwise. Durations compare with durations; booleans only for
        (in)equality; a state timeline with a state or boolean one."""
        if (lk == Kind.NUMERIC) != (rk == Kind.NUMERIC):
            state_side = right if lk == Kind.NUMERIC else left
            self.fail(node, f"a numeric (duration) timeline is compared with {kind_words(self.kinds[state_side])} "
                            f"'{_t(state_side)}'",
                      "a duration timeline on both sides (duration_where, duration_in_cur_state), "
                      "or state timelines on both sides")
        if op in ORDERING and Kind.BOOLEAN in (lk, rk):
            self.fail(node, f"'{op}' does not order booleans", "== or != between boolean timelines")
        if left == right:
            self.fail(node, f"'{_t(left)}' is compared with itself",
                      "two different timelines (x == x is true wherever x is known)")
        # One node per meaning: `b > a` is `a < b` (the operand with the smaller text goes left).
        if right.text() < left.text():
            left, right, op = right, left, A.FLIPPED[op]
        return A.CompareTimelines(op=op, left=left, right=right, at=node.at), Kind.BOOLEAN

    def _compare_column(self, node, op, left, right, rk):
        if rk == Kind.DURATION:
            self.fail(right, "a duration cannot be compared with an event field",
                      "a plain number in the field's own unit")
        if rk not in (Kind.CONSTANT, Kind.COLUMN):
            self.fail(right, f"an event field is compared with {kind_words(rk)}",
                      "a constant or another field of the same event")
        if op in ORDERING and isinstance(right, A.Literal) and not _is_number(right.value):
            self.fail(right, f"'{op}' needs a number, got {_t(right)}", "== or != for strings and booleans")
        return A.Compare(op=op, left=left, right=right, at=node.at), Kind.PREDICATE

    def _compare_timeline(self, node, op, left, lk, right, rk):
        if rk == Kind.COLUMN:
            self.fail(right, f"'{_t(right)}' is a column, not a constant",
                      f"a constant; to follow a field over time use latest_event_to_state({_t(right)})")
        if rk not in (Kind.CONSTANT, Kind.DURATION):
            self.fail(node, f"a timeline can only be compared with a constant, got {kind_words(rk)}",
                      'a constant, like == "buffer" or > 5s')
        value = right.value if isinstance(right, A.Literal) else None
        if lk == Kind.NUMERIC:
            if rk == Kind.CONSTANT:
                if not _is_number(value):
                    self.fail(right, f"a duration timeline is compared with {_t(right)}",
                              "a duration like 10m, or a number of seconds")
                right = A.Duration(ms=float(value) * 1000.0, unit="", at=right.at)
        elif lk == Kind.BOOLEAN:
            if rk == Kind.DURATION or not isinstance(value, bool):
                self.fail(right, f"a boolean timeline is compared with {_t(right)}", "true or false")
            if op in ORDERING:
                self.fail(node, f"'{op}' does not order booleans", "== true / == false, or the timeline itself")
        else:  # state
            if rk == Kind.DURATION:
                self.fail(right, "a state timeline is compared with a duration",
                          "a plain constant; durations compare with duration timelines "
                          "(duration_where, duration_in_cur_state)")
            if op in ORDERING and not _is_number(value):
                self.fail(right, f"'{op}' needs a number, got {_t(right)}", "== or != for strings and booleans")
        return A.Compare(op=op, left=left, right=right, at=node.at), Kind.BOOLEAN

    # --- timeline operators ------------------------------------------------
    def check_LatestEventToState(self, node: A.LatestEventToState):
        col, kind = self.check(node.column)
        if kind != Kind.COLUMN:
            hint = (f'col("{col.value}")' if isinstance(col, A.Literal) and isinstance(col.value, str)
                    else 'col("field")')
            self.fail(col, f"latest_event_to_state needs a column, got {kind_words(kind)}", hint)
        where = None if node.where is None else self._predicate(
            node, node.where, "latest_event_to_state", 'latest_event_to_state(f, col("event") == "edit")')
        return A.LatestEventToState(column=col, where=where, at=node.at), Kind.STATE

    def _predicate(self, node, raw, op_name, example: str | None = None):
        pred, kind = self.check(raw)
        example = example or f'{op_name}(col("event") == "play")'
        if kind == Kind.PREDICATE:
            return pred
        if kind == Kind.BOOLEAN:
            self.fail(pred, f"{op_name} takes an event predicate, got a boolean timeline",
                      f"a test of one event, like {example}")
        if kind == Kind.COLUMN:
            self.fail(pred, f"{op_name} needs a test, but '{_t(pred)}' is a bare column",
                      f'a comparison, like {_t(pred)} == "value"')
        self.fail(pred, f"{op_name} takes an event predicate, got {kind_words(kind)}",
                  f"a test of one event, like {example}")

    def check_HasExisted(self, node: A.HasExisted):
        pred = self._predicate(node, node.predicate, "has_existed")
        return A.HasExisted(predicate=pred, at=node.at), Kind.BOOLEAN

    def check_HasExistedWithin(self, node: A.HasExistedWithin):
        pred = self._predicate(node, node.predicate, "has_existed_within")
        window, kind = self.check(node.window)
        if kind == Kind.CONSTANT and _is_number(window.value):
            window = A.Duration(ms=float(window.value) * 1000.0, unit="", at=window.at)
        elif kind != Kind.DURATION:
            self.fail(window, f"the window of has_existed_within must be a duration, got {kind_words(kind)}",
                      "a duration like 500ms, 5s, 10m, 1h, 1d (a bare number is seconds)", cls=DurationError)
        if window.ms <= 0 or not float(window.ms).is_integer():
            self.fail(window, f"the window must be a positive whole number of milliseconds, got {_t(window)}",
                      "a duration like 500ms, 5s, 10m", cls=DurationError)
        self.kinds[window] = Kind.DURATION
        return A.HasExistedWithin(predicate=pred, window=window, at=node.at), Kind.BOOLEAN

    def check_DurationWhere(self, node: A.DurationWhere):
        cond, kind = self.check(node.condition)
        if kind != Kind.BOOLEAN:
            if kind == Kind.PREDICATE:
                self.fail(cond, "duration_where takes a boolean timeline, got an event predicate",
                          f"wrap it: duration_where(has_existed({_t(cond)}))")
            self.fail(cond, f"duration_where takes a boolean timeline, got {kind_words(kind)}",
                      'a boolean timeline, like latest_event_to_state(x) == "buffer"')
        return A.DurationWhere(condition=cond, at=node.at), Kind.NUMERIC

    def check_DurationInCurState(self, node: A.DurationInCurState):
        sub, kind = self.check(node.timeline)
        if kind not in (Kind.STATE, Kind.BOOLEAN):
            hint = (f"latest_event_to_state({_t(sub)})" if kind == Kind.COLUMN
                    else "a state or boolean timeline, like latest_event_to_state(x)")
            self.fail(sub, f"duration_in_cur_state takes a state timeline, got {kind_words(kind)}", hint)
        return A.DurationInCurState(timeline=sub, at=node.at), Kind.NUMERIC

    def check_Query(self, node: A.Query):
        expr, kind = self.check(node.expr)
        if not kind.is_timeline:
            if kind == Kind.PREDICATE:
                hint = f"a timeline, e.g. has_existed({_t(expr)})"
            elif kind == Kind.COLUMN:
                hint = f"a timeline, e.g. latest_event_to_state({_t(expr)})"
            else:
                hint = "a timeline operator, like has_existed(...) or duration_where(...)"
            self.fail(expr, f"the expression is {kind_words(kind)}, not a timeline", hint)
        return A.Query(expr=expr, aggregation=node.aggregation, at=node.at), kind


def _type_rules() -> dict[type[A.Node], object]:
    """Each node class's type rule is the checker method `check_<Class>`."""
    classes = [A.Column, A.Literal, A.Duration, A.Query, *A.OPERATOR_CLASSES]
    found = {cls: getattr(_Checker, f"check_{cls.__name__}", None) for cls in classes}
    return {cls: rule for cls, rule in found.items() if rule is not None}  # a missing one fails loudly


TYPE_RULES = _type_rules()


def _t(node: A.Node) -> str:
    """A node's text for messages, without redundant outer parentheses."""
    return A.strip_parens(node.text())


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def typecheck(query: A.Query, source: str) -> Checked:
    checker = _Checker(source)
    new, _ = checker.check(query)
    return Checked(query=new, kinds=checker.kinds)  # type: ignore[arg-type]
