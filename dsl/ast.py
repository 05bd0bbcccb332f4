"""The typed AST: tiny immutable pydantic models, one class per operator.

A node's source position (`at`) is metadata: it is excluded from equality,
hashing and the canonical text, so equal sub-expressions written in different
places (or spellings) are one node and compile to one plan node.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any, ClassVar, Union

from pydantic import BaseModel, ConfigDict, Field

from timeline.dsl.errors import SourceSpan


class Kind(str, Enum):
    """What a node denotes, assigned by the type checker."""

    COLUMN = "column"          # a field of an event: only inside predicates / latest_event_to_state
    CONSTANT = "constant"      # string, number or boolean literal
    DURATION = "duration"      # a literal with a time unit (500ms, 5s, ...)
    PREDICATE = "predicate"    # a test of one event
    STATE = "state"            # piecewise-constant timeline of any value
    BOOLEAN = "boolean"        # state timeline of true / false / unknown
    NUMERIC = "numeric"        # piecewise-linear timeline (durations, in ms)

    @property
    def is_timeline(self) -> bool:
        return self in (Kind.STATE, Kind.BOOLEAN, Kind.NUMERIC)


class Node(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    at: SourceSpan | None = Field(default=None, repr=False, exclude=True)

    # Lower-case rule name: one name chain per operator (TL_HasExisted ->
    # has_existed -> HasExisted -> its handlers).
    rule: ClassVar[str] = ""

    def _identity(self) -> tuple:
        return (type(self).__name__,) + tuple(
            getattr(self, f) for f in type(self).model_fields if f != "at"
        )

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._identity() == other._identity()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._identity())

    def children(self) -> tuple["Node", ...]:
        return ()

    def text(self) -> str:
        """Canonical source text (lower-case spelling); stable across spellings."""
        raise NotImplementedError


class Column(Node):
    path: tuple[str, ...]
    rule: ClassVar[str] = "col"

    def text(self) -> str:
        name = ".".join(self.path)
        if all(p.isidentifier() for p in self.path):
            return name
        return f"col({json.dumps(name)})"


class Literal(Node):
    value: Union[bool, int, float, str]
    rule: ClassVar[str] = "literal"

    def _identity(self) -> tuple:
        # 1 and True must not be one node.
        return ("Literal", type(self.value).__name__, self.value)

    def text(self) -> str:
        if isinstance(self.value, bool):
            return "true" if self.value else "false"
        if isinstance(self.value, float) and self.value.is_integer():
            return str(int(self.value))
        return json.dumps(self.value)


class Duration(Node):
    """A span of time in milliseconds; `unit` is what the user wrote ('' = bare seconds)."""

    ms: float
    unit: str = ""
    rule: ClassVar[str] = "duration"

    def _identity(self) -> tuple:
        return ("Duration", self.ms)

    def text(self) -> str:
        return _format_ms(self.ms)


def _format_ms(ms: float) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{int(ms // size)}{unit}"
    return f"{int(ms)}ms" if float(ms).is_integer() else f"{ms}ms"


COMPARISON_OPS = ("==", "!=", "<", "<=", ">", ">=")
FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


class Compare(Node):
    op: str
    left: Node
    right: Node
    rule: ClassVar[str] = "compare"

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)

    def text(self) -> str:
        return f"({self.left.text()} {self.op} {self.right.text()})"


class And(Node):
    operands: tuple[Node, ...]
    rule: ClassVar[str] = "and"

    def children(self) -> tuple[Node, ...]:
        return self.operands

    def text(self) -> str:
        return "(" + " && ".join(o.text() for o in self.operands) + ")"


class Or(Node):
    operands: tuple[Node, ...]
    rule: ClassVar[str] = "or"

    def children(self) -> tuple[Node, ...]:
        return self.operands

    def text(self) -> str:
        return "(" + " || ".join(o.text() for o in self.operands) + ")"


class Not(Node):
    operand: Node
    rule: ClassVar[str] = "not"

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)

    def text(self) -> str:
        return f"!{self.operand.text()}"


class LatestEventToState(Node):
    column: Column
    rule: ClassVar[str] = "latest_event_to_state"

    def children(self) -> tuple[Node, ...]:
        return (self.column,)

    def text(self) -> str:
        return f"latest_event_to_state({self.column.text()})"


class HasExisted(Node):
    predicate: Node
    rule: ClassVar[str] = "has_existed"

    def children(self) -> tuple[Node, ...]:
        return (self.predicate,)

    def text(self) -> str:
        return f"has_existed({strip_parens(self.predicate.text())})"


class HasExistedWithin(Node):
    predicate: Node
    window: Node  # a Duration after checking; a bare number is seconds
    rule: ClassVar[str] = "has_existed_within"

    def children(self) -> tuple[Node, ...]:
        return (self.predicate, self.window)

    def text(self) -> str:
        return f"has_existed_within({strip_parens(self.predicate.text())}, {self.window.text()})"


class DurationWhere(Node):
    condition: Node
    rule: ClassVar[str] = "duration_where"

    def children(self) -> tuple[Node, ...]:
        return (self.condition,)

    def text(self) -> str:
        return f"duration_where({strip_parens(self.condition.text())})"


class DurationInCurState(Node):
    timeline: Node
    rule: ClassVar[str] = "duration_in_cur_state"

    def children(self) -> tuple[Node, ...]:
        return (self.timeline,)

    def text(self) -> str:
        return f"duration_in_cur_state({strip_parens(self.timeline.text())})"


def strip_parens(text: str) -> str:
    """Drop one pair of redundant outer parentheses, for readable labels."""
    if text.startswith("(") and text.endswith(")"):
        depth = 0
        for i, ch in enumerate(text):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(text) - 1:
                return text
        return text[1:-1]
    return text


AGGREGATE_FUNCTIONS = ("count", "sum", "avg", "min", "max")


class Aggregation(Node):
    """`| aggregate(group_by(col), count, sum, ...)`: per group, over keys, at one time."""

    group_by: Column
    functions: tuple[str, ...]
    rule: ClassVar[str] = "aggregate"

    def text(self) -> str:
        return f"aggregate(group_by({self.group_by.text()}), {', '.join(self.functions)})"


class Query(Node):
    """A whole expression with its optional aggregation suffix."""

    expr: Node
    aggregation: Aggregation | None = None

    def children(self) -> tuple[Node, ...]:
        return (self.expr,)

    def text(self) -> str:
        body = strip_parens(self.expr.text())
        return body if self.aggregation is None else f"{body} | {self.aggregation.text()}"


TIMELINE_OPERATORS: tuple[type[Node], ...] = (
    LatestEventToState,
    HasExisted,
    HasExistedWithin,
    DurationWhere,
    DurationInCurState,
)

Value = Any  # an event field value: str, int, float, bool (None = unknown)
