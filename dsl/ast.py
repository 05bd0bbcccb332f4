"""The typed AST: tiny immutable pydantic models, one class per operator.

A node's source position (`at`) is metadata: it is excluded from equality,
hashing and the canonical text, so equal sub-expressions written in different
places (or spellings) are one node and compile to one plan node.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Literal as TypingLiteral, Union

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


@dataclass(frozen=True)
class Spelling:
    """One way to call an operator in the DSL: its names (the TL_ form first), how many
    arguments it takes, and the fields the name itself fixes (`EqualTo` fixes op "==")."""

    names: tuple[str, ...]
    signature: str                      # shown when the arguments are wrong; {name} is the name used
    min_args: int = 1
    max_args: int | None = 1            # None: any number from min_args on
    fixed: tuple[tuple[str, Any], ...] = ()


Evaluation = TypingLiteral["leaf", "derived"]


class Node(BaseModel):
    """One class per operator, and the class is the operator's one declaration: its fields are
    its children; `rule` names its plan nodes; `spellings` are its call names (the parser's
    table, the "did you mean" list and the arity messages are derived from them); `evaluation`
    says whether it reads events ("leaf") or other timelines ("derived"), from which the
    compiler's tables are derived; its type rule is `check_<Class>` in the checker and its
    meaning the function `<Class>` in dsl/operators.py (both looked up by class name)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    at: SourceSpan | None = Field(default=None, repr=False, exclude=True)

    # Lower-case rule name: one name chain per operator (TL_HasExisted ->
    # has_existed -> HasExisted -> its handlers).
    rule: ClassVar[str] = ""
    spellings: ClassVar[tuple[Spelling, ...]] = ()
    evaluation: ClassVar[Evaluation | None] = None   # None: syntax only (columns, constants, queries)
    arguments: ClassVar[tuple[str, ...]] = ()        # fields a call's arguments fill, in order
    variadic: ClassVar[bool] = False                 # the one argument field takes all arguments

    @classmethod
    def from_call(cls, at: SourceSpan | None, args: list["Node"], spelling: Spelling) -> "Node":
        """The node a call of `spelling` with these (already counted) arguments builds."""
        values: dict[str, Any] = (
            {cls.arguments[0]: tuple(args)} if cls.variadic else dict(zip(cls.arguments, args))
        )
        return cls(**values, **dict(spelling.fixed), at=at)

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


def _comparison_spellings() -> tuple[Spelling, ...]:
    names = (("EqualTo", "equal_to", "=="), ("NotEqualTo", "not_equal_to", "!="),
             ("GreaterThan", "greater_than", ">"), ("GreaterThanOrEqualTo", "greater_than_or_equal_to", ">="),
             ("LessThan", "less_than", "<"), ("LessThanOrEqualTo", "less_than_or_equal_to", "<="))
    return tuple(
        Spelling((camel, f"TL_{camel}", snake), "{name}(timeline, constant or timeline)", 2, 2, (("op", op),))
        for camel, snake, op in names
    )


class Compare(Node):
    """`a op b`: an event field against a constant or field (a predicate), or a timeline
    against a constant. Two timelines compared become a CompareTimelines (in the checker)."""

    op: str
    left: Node
    right: Node
    rule: ClassVar[str] = "compare"
    spellings: ClassVar[tuple[Spelling, ...]] = _comparison_spellings()
    evaluation: ClassVar[Evaluation | None] = "derived"
    arguments: ClassVar[tuple[str, ...]] = ("left", "right")

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)

    def text(self) -> str:
        return f"({self.left.text()} {self.op} {self.right.text()})"


class CompareTimelines(Node):
    """`x op y` between two timelines (state, boolean or numeric), pointwise: unknown where
    either side is; exact crossing times on numeric timelines. Written like any comparison
    (`x < y`, `LessThan(x, y)`): the checker turns a Compare of two timelines into this."""

    op: str
    left: Node
    right: Node
    rule: ClassVar[str] = "compare_timelines"
    evaluation: ClassVar[Evaluation | None] = "derived"

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)

    def text(self) -> str:
        return f"({self.left.text()} {self.op} {self.right.text()})"


class And(Node):
    operands: tuple[Node, ...]
    rule: ClassVar[str] = "and"
    spellings: ClassVar[tuple[Spelling, ...]] = (Spelling(("And", "TL_And", "and"), "And(a, b, ...)", 2, None),)
    evaluation: ClassVar[Evaluation | None] = "derived"
    arguments: ClassVar[tuple[str, ...]] = ("operands",)
    variadic: ClassVar[bool] = True

    def children(self) -> tuple[Node, ...]:
        return self.operands

    def text(self) -> str:
        return "(" + " && ".join(o.text() for o in self.operands) + ")"


class Or(Node):
    operands: tuple[Node, ...]
    rule: ClassVar[str] = "or"
    spellings: ClassVar[tuple[Spelling, ...]] = (Spelling(("Or", "TL_Or", "or"), "Or(a, b, ...)", 2, None),)
    evaluation: ClassVar[Evaluation | None] = "derived"
    arguments: ClassVar[tuple[str, ...]] = ("operands",)
    variadic: ClassVar[bool] = True

    def children(self) -> tuple[Node, ...]:
        return self.operands

    def text(self) -> str:
        return "(" + " || ".join(o.text() for o in self.operands) + ")"


class Not(Node):
    operand: Node
    rule: ClassVar[str] = "not"
    spellings: ClassVar[tuple[Spelling, ...]] = (Spelling(("Not", "TL_Not", "not"), "Not(a)"),)
    evaluation: ClassVar[Evaluation | None] = "derived"
    arguments: ClassVar[tuple[str, ...]] = ("operand",)

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)

    def text(self) -> str:
        return f"!{self.operand.text()}"


class LatestEventToState(Node):
    """The latest non-null value of a column; with `where`, among the events that match it
    (`latest_event_to_state(revision.rev_id, meta.stream == "mediawiki.page_change.v1")`)."""

    column: Column
    where: Node | None = None   # an event predicate
    rule: ClassVar[str] = "latest_event_to_state"
    spellings: ClassVar[tuple[Spelling, ...]] = (
        Spelling(("TL_LatestEventToState",), '{name}(col("field")) or {name}(col("field"), col("f") == "v")', 1, 2),
        Spelling(("latest_event_to_state",), '{name}(field) or {name}(field, f == "v")', 1, 2),
    )
    evaluation: ClassVar[Evaluation | None] = "leaf"
    arguments: ClassVar[tuple[str, ...]] = ("column", "where")

    def children(self) -> tuple[Node, ...]:
        return (self.column,) if self.where is None else (self.column, self.where)

    def text(self) -> str:
        if self.where is None:
            return f"latest_event_to_state({self.column.text()})"
        return f"latest_event_to_state({self.column.text()}, {strip_parens(self.where.text())})"


class HasExisted(Node):
    predicate: Node
    rule: ClassVar[str] = "has_existed"
    spellings: ClassVar[tuple[Spelling, ...]] = (
        Spelling(("TL_HasExisted",), '{name}(col("field") == "value")'),
        Spelling(("has_existed",), '{name}(field == "value")'),
    )
    evaluation: ClassVar[Evaluation | None] = "leaf"
    arguments: ClassVar[tuple[str, ...]] = ("predicate",)

    def children(self) -> tuple[Node, ...]:
        return (self.predicate,)

    def text(self) -> str:
        return f"has_existed({strip_parens(self.predicate.text())})"


class HasExistedWithin(Node):
    predicate: Node
    window: Node  # a Duration after checking; a bare number is seconds
    rule: ClassVar[str] = "has_existed_within"
    spellings: ClassVar[tuple[Spelling, ...]] = (
        Spelling(("TL_HasExistedWithin",), '{name}(col("field") == "value", 5s)', 2, 2),
        Spelling(("has_existed_within",), '{name}(field == "value", 5s)', 2, 2),
    )
    evaluation: ClassVar[Evaluation | None] = "leaf"
    arguments: ClassVar[tuple[str, ...]] = ("predicate", "window")

    def children(self) -> tuple[Node, ...]:
        return (self.predicate, self.window)

    def text(self) -> str:
        return f"has_existed_within({strip_parens(self.predicate.text())}, {self.window.text()})"


class DurationWhere(Node):
    condition: Node
    rule: ClassVar[str] = "duration_where"
    spellings: ClassVar[tuple[Spelling, ...]] = (
        Spelling(("TL_DurationWhere", "duration_where"), "{name}(boolean timeline)"),
    )
    evaluation: ClassVar[Evaluation | None] = "derived"
    arguments: ClassVar[tuple[str, ...]] = ("condition",)

    def children(self) -> tuple[Node, ...]:
        return (self.condition,)

    def text(self) -> str:
        return f"duration_where({strip_parens(self.condition.text())})"


class DurationInCurState(Node):
    timeline: Node
    rule: ClassVar[str] = "duration_in_cur_state"
    spellings: ClassVar[tuple[Spelling, ...]] = (
        Spelling(("TL_DurationInCurState", "duration_in_cur_state"), "{name}(state timeline)"),
    )
    evaluation: ClassVar[Evaluation | None] = "derived"
    arguments: ClassVar[tuple[str, ...]] = ("timeline",)

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


def _operator_classes() -> tuple[type[Node], ...]:
    found: list[type[Node]] = []
    stack = list(Node.__subclasses__())
    while stack:
        cls = stack.pop(0)
        if cls.evaluation is not None:
            found.append(cls)
        stack.extend(cls.__subclasses__())
    return tuple(found)


# Every operator, in declaration order: the tables of the parser, the checker, the compiler and
# the evaluators are derived from these classes (tests/dsl/test_handlers.py checks each has all).
OPERATOR_CLASSES: tuple[type[Node], ...] = _operator_classes()

Value = Any  # an event field value: str, int, float, bool (None = unknown)
