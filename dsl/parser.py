"""Text -> typed AST. Lark does the syntax; this module names the operators.

Every Lark exception is turned into a `DslError` subclass that points at the
text with a caret and says what was expected, in words rather than terminal
names.
"""

from __future__ import annotations

import difflib
import json
import math
import re

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from timeline.dsl import ast as A
from timeline.dsl.errors import (
    ArityError,
    DslError,
    DslSyntaxError,
    SourceSpan,
    UnknownOperatorError,
)
from timeline.dsl.limits import (
    MAX_EXPRESSION_CHARS,
    MAX_EXPRESSION_DEPTH,
    MAX_INT,
    MAX_STRING_CONSTANT_CHARS,
    MIN_INT,
)

DURATION_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION_TEXT = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)?$")


def parse_duration_ms(text: str) -> tuple[float, str]:
    """`500ms`, `5s`, `10m`, `1h`, `1d`, or a bare number of seconds: (milliseconds, unit).

    The one duration reader: the grammar's DURATION tokens and the command-line
    options (`--idle-timeout 30m`) both come here. ValueError for anything else."""
    m = _DURATION_TEXT.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a duration: use 500ms, 90s, 30m, 1h, 1d or a number of seconds")
    amount, unit = m.group(1), m.group(2) or "s"
    return float(amount) * DURATION_UNITS_MS[unit], unit

# Friendly names for Lark terminals, used in "expected ..." lists.
TERMINAL_NAMES = {
    "LPAR": "'('", "RPAR": "')'", "COMMA": "','", "DOT": "'.'", "VBAR": "'|'",
    "NAME": "a name", "STRING": "a string", "SIGNED_NUMBER": "a number", "DURATION": "a duration (like 5s)",
    "TRUE": "true", "FALSE": "false", "OR_OP": "'||'", "AND_OP": "'&&'", "NOT_OP": "'!'",
    "CMP_OP": "a comparison (== != < <= > >=)", "AGGREGATE": "aggregate", "$END": "the end of the expression",
}


# Loaded at import: the workflow sandbox imports dsl as pass-through and then
# forbids file access, so the grammar must not be read lazily inside a workflow.
_LARK = Lark.open("grammar.lark", rel_to=__file__, parser="lalr", propagate_positions=True, maybe_placeholders=False)


def _lark() -> Lark:
    return _LARK


def _span_of(meta_or_token) -> SourceSpan | None:
    try:
        return SourceSpan(
            line=meta_or_token.line, column=meta_or_token.column,
            end_line=meta_or_token.end_line, end_column=meta_or_token.end_column,
            start_pos=meta_or_token.start_pos, end_pos=meta_or_token.end_pos,
        )
    except AttributeError:
        return None


def _expected_words(names: set[str] | frozenset[str]) -> str:
    words = sorted({TERMINAL_NAMES.get(n, f"'{n}'" if not n.isupper() else n.lower()) for n in names})
    if len(words) > 8:
        words = words[:8] + ["..."]
    return ", ".join(words)


# --- operator table: derived from the AST classes' spellings ----------------------

CALLS: dict[str, tuple[type[A.Node], A.Spelling]] = {
    name: (cls, spelling) for cls in A.OPERATOR_CLASSES for spelling in cls.spellings for name in spelling.names
}
KNOWN_CALLS = sorted(set(CALLS) | {"col"})
OPERATOR_LIST = (
    ", ".join(s.names[0] for cls in A.OPERATOR_CLASSES for s in cls.spellings if s.names[0].startswith("TL_")
              or s.names[0][0].isupper())
    + ", col (or the lower-case forms: latest_event_to_state, has_existed, ...)"
)


class _ToAst(Transformer):
    """Lark tree -> AST nodes, with positions; raises DslError on bad calls."""

    def __init__(self, source: str):
        super().__init__()
        self.source = source

    def _err(self, cls: type[DslError], message: str, at, expected: str | None = None) -> DslError:
        return cls(message, self.source, _span_of(at) if not isinstance(at, SourceSpan) else at, expected)

    @v_args(meta=True)
    def start(self, meta, children):
        expr = children[0]
        agg = children[1] if len(children) > 1 else None
        return A.Query(expr=expr, aggregation=agg, at=_span_of(meta))

    @v_args(meta=True)
    def or_op(self, meta, children):
        return A.Or(operands=(children[0], children[2]), at=_span_of(meta))

    @v_args(meta=True)
    def and_op(self, meta, children):
        return A.And(operands=(children[0], children[2]), at=_span_of(meta))

    @v_args(meta=True)
    def not_op(self, meta, children):
        return A.Not(operand=children[1], at=_span_of(meta))

    @v_args(meta=True)
    def compare(self, meta, children):
        left, op, right = children
        return A.Compare(op=str(op), left=left, right=right, at=_span_of(meta))

    def string(self, children):
        tok: Token = children[0]
        raw = str(tok)
        if raw.startswith("'"):
            raw = '"' + raw[1:-1].replace('\\"', '"').replace('"', '\\"') + '"'
        if len(raw) - 2 > MAX_STRING_CONSTANT_CHARS:
            raise self._err(DslSyntaxError, f"this string constant is {len(raw) - 2:,} characters long; "
                            f"the limit is {MAX_STRING_CONSTANT_CHARS:,}", tok, "a shorter string")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise self._err(DslSyntaxError, f"bad string literal {tok!s}", tok, "a string like \"play\"")
        return A.Literal(value=value, at=_span_of(tok))

    def number(self, children):
        tok: Token = children[0]
        text = str(tok)
        value: int | float = float(text) if any(c in text for c in ".eE") else int(text)
        if isinstance(value, int) and not MIN_INT <= value <= MAX_INT:
            raise self._err(DslSyntaxError, f"the number {text} does not fit a 64-bit integer", tok,
                            f"an integer from {MIN_INT} to {MAX_INT}, or a decimal like 1.5e30")
        if isinstance(value, float) and not math.isfinite(value):
            raise self._err(DslSyntaxError, f"the number {text} is too large for a float", tok,
                            "a finite number (at most about 1.8e308)")
        return A.Literal(value=value, at=_span_of(tok))

    def duration(self, children):
        tok: Token = children[0]
        ms, unit = parse_duration_ms(str(tok))
        return A.Duration(ms=ms, unit=unit, at=_span_of(tok))

    def true(self, children):
        return A.Literal(value=True, at=_span_of(children[0]))

    def false(self, children):
        return A.Literal(value=False, at=_span_of(children[0]))

    @v_args(meta=True)
    def column_path(self, meta, children):
        return A.Column(path=tuple(str(c) for c in children), at=_span_of(meta))

    @v_args(meta=True)
    def call(self, meta, children):
        name_tok: Token = children[0]
        args = [c for c in children[1:] if c is not None]
        name = str(name_tok)
        at = _span_of(meta)
        if name == "col":
            return self._col(name_tok, args, at)
        if name not in CALLS:
            close = difflib.get_close_matches(name, KNOWN_CALLS, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}?" if close else None
            raise self._err(
                UnknownOperatorError,
                f"'{name}' is not an operator" + (f"; {hint}" if hint else ""),
                name_tok,
                OPERATOR_LIST,
            )
        cls, spelling = CALLS[name]
        lo, hi = spelling.min_args, spelling.max_args
        if len(args) < lo or (hi is not None and len(args) > hi):
            want = f"{lo}" if lo == hi else f"at least {lo}"
            raise self._err(
                ArityError, f"{name} takes {want} argument{'s' if lo != 1 or hi != 1 else ''}, got {len(args)}",
                at, spelling.signature.format(name=name),
            )
        return cls.from_call(at, args, spelling)

    def _col(self, name_tok, args, at):
        if len(args) != 1:
            raise self._err(ArityError, f"col takes 1 argument, got {len(args)}", at, 'col("field") or col("a.b")')
        arg = args[0]
        if isinstance(arg, A.Literal) and isinstance(arg.value, str) and arg.value:
            return A.Column(path=tuple(arg.value.split(".")), at=at)
        if isinstance(arg, A.Column):
            return A.Column(path=arg.path, at=at)
        raise self._err(DslSyntaxError, "col needs the field name as a string", arg.at or at, 'col("field")')

    @v_args(meta=True)
    def aggregation(self, meta, children):
        args = children[1:]
        group_by: A.Column | None = None
        functions: list[str] = []
        for arg in args:
            if isinstance(arg, tuple) and arg[0] == "name":
                fname, tok = arg[1], arg[2]
                if fname not in A.AGGREGATE_FUNCTIONS:
                    raise self._err(
                        UnknownOperatorError, f"'{fname}' is not an aggregate function", tok,
                        ", ".join(A.AGGREGATE_FUNCTIONS),
                    )
                if fname in functions:
                    raise self._err(DslSyntaxError, f"'{fname}' is listed twice", tok, "each function once")
                functions.append(fname)
            elif isinstance(arg, tuple) and arg[0] == "group_by":
                if group_by is not None:
                    raise self._err(DslSyntaxError, "group_by is given twice", arg[2], "one group_by(column)")
                group_by = arg[1]
            else:
                raise self._err(
                    DslSyntaxError, "aggregate takes group_by(column) and function names", getattr(arg, "at", None) or meta,
                    "group_by(col), count, sum, avg, min, max",
                )
        if group_by is None:
            raise self._err(DslSyntaxError, "aggregate needs group_by(column)", meta, "aggregate(group_by(cdn), count)")
        if not functions:
            raise self._err(DslSyntaxError, "aggregate needs at least one function", meta,
                            ", ".join(A.AGGREGATE_FUNCTIONS))
        return A.Aggregation(group_by=group_by, functions=tuple(functions), at=_span_of(meta))

    def agg_name(self, children):
        tok = children[0]
        return ("name", str(tok), tok)

    # `group_by(x)` inside aggregate parses as a call; intercept it.
    def __default__(self, data, children, meta):
        return Tree(data, children, meta)


class _AggregationCalls(_ToAst):
    """Inside `aggregate(...)`, `group_by(col)` is a clause, not an operator."""

    @v_args(meta=True)
    def call(self, meta, children):
        name_tok = children[0]
        if str(name_tok) == "group_by":
            args = [c for c in children[1:] if c is not None]
            if len(args) != 1 or not isinstance(args[0], A.Column):
                raise self._err(ArityError, "group_by takes one column", meta, "group_by(cdn) or group_by(col(\"cdn\"))")
            return ("group_by", args[0], meta)
        return super().call(meta, children)


def parse(source: str) -> A.Query:
    """Parse an expression (with optional aggregation suffix) into the AST."""
    if not isinstance(source, str) or not source.strip():
        raise DslSyntaxError("the expression is empty", source or "", None,
                             'a timeline, like has_existed(col("event") == "play")')
    if len(source) > MAX_EXPRESSION_CHARS:
        at = SourceSpan(1, 1, 1, 2, MAX_EXPRESSION_CHARS, MAX_EXPRESSION_CHARS + 1)
        raise DslSyntaxError(f"the expression is {len(source):,} characters long; the limit is "
                             f"{MAX_EXPRESSION_CHARS:,}", source[:200], at, "a shorter expression")
    try:
        tree = _lark().parse(source)
    except UnexpectedInput as exc:
        raise _syntax_error(source, exc) from None
    _check_depth(tree, source)
    try:
        return _AggregationCalls(source).transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, DslError):
            raise exc.orig_exc from None
        raise


def _syntax_error(source: str, exc: UnexpectedInput) -> DslSyntaxError:
    line, column = getattr(exc, "line", 1) or 1, getattr(exc, "column", 1) or 1
    pos = getattr(exc, "pos_in_stream", None)
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        lines = source.splitlines() or [""]
        line, column = len(lines), len(lines[-1]) + 1
        span = SourceSpan(line, column, line, column + 1, len(source), len(source))
        expected = _expected_words(exc.expected) if getattr(exc, "expected", None) else None
        return DslSyntaxError("the expression ends too early", source, span, expected)
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        span = _span_of(tok) or SourceSpan(line, column, line, column + 1, pos or 0, (pos or 0) + 1)
        return DslSyntaxError(f"unexpected {str(tok)!r}", source, span, _expected_words(exc.expected))
    if isinstance(exc, UnexpectedCharacters):
        ch = source[exc.pos_in_stream] if exc.pos_in_stream < len(source) else ""
        span = SourceSpan(line, column, line, column + 1, exc.pos_in_stream, exc.pos_in_stream + 1)
        hint = None
        if ch == "&" or ch == "|":
            hint = "'&&' or '||' (doubled)"
        elif ch == "=":
            hint = "'==' to compare"
        elif exc.allowed:
            hint = _expected_words(exc.allowed)
        return DslSyntaxError(f"unexpected character {ch!r}", source, span, hint)
    return DslSyntaxError(str(exc).splitlines()[0], source, None)


def _check_depth(tree: Tree, source: str) -> None:
    """Reject expressions nested deeper than MAX_EXPRESSION_DEPTH before anything
    walks them recursively (the transformer, checker, compiler and evaluators
    would otherwise fail with RecursionError). Lark's LALR parser itself keeps
    an explicit stack, so the parse tree is walked here with one too."""
    stack: list[tuple[Tree, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_EXPRESSION_DEPTH:
            raise DslSyntaxError(
                f"the expression is nested more than {MAX_EXPRESSION_DEPTH} levels deep", source, _span_of(node.meta),
                "less nesting: Or(a, b, c, ...) and And(a, b, c, ...) take any number of operands, "
                "and a chain like a || b || c nests one level per operator")
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))
