"""One exception family for every user-facing mistake.

DSL errors carry a position and render the offending line with a caret, so a
user sees *where* and *what was expected* instead of a Python traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class TimelineError(Exception):
    """Base of every error a user can cause (bad expression, event, option)."""


@dataclass(frozen=True)
class SourceSpan:
    """Where a piece of an expression sits in its source text (1-based)."""

    line: int
    column: int
    end_line: int
    end_column: int
    start_pos: int
    end_pos: int


_SHOWN_LINE_CHARS = 120


class DslError(TimelineError):
    """A mistake in an expression, reported with line, column and a caret."""

    kind = "error"

    def __init__(self, message: str, source: str, span: SourceSpan | None, expected: str | None = None):
        self.message = message
        self.source = source
        self.span = span
        self.expected = expected
        super().__init__(self.render())

    @property
    def line(self) -> int | None:
        return self.span.line if self.span else None

    @property
    def column(self) -> int | None:
        return self.span.column if self.span else None

    def render(self) -> str:
        where = f"<expression>:{self.span.line}:{self.span.column}" if self.span else "<expression>"
        text = f"{where}: {self.kind}: {self.message}"
        if self.span is not None:
            lines = self.source.splitlines() or [""]
            src_line = lines[self.span.line - 1] if self.span.line - 1 < len(lines) else ""
            column = self.span.column
            width = 1
            if self.span.end_line == self.span.line:
                width = max(1, self.span.end_column - self.span.column)
            if len(src_line) > _SHOWN_LINE_CHARS:  # show a window around the caret, not a huge line
                lo = max(0, column - 1 - _SHOWN_LINE_CHARS // 2)
                src_line = ("..." if lo else "") + src_line[lo:lo + _SHOWN_LINE_CHARS] + "..."
                column = column - lo + (3 if lo else 0)
                width = max(1, min(width, len(src_line) - 3 - (column - 1)))
            text += f"\n  {src_line}\n  {' ' * (column - 1)}{'^' * width}"
        if self.expected:
            text += f"\n  expected: {self.expected}"
        return text


class DslSyntaxError(DslError):
    kind = "syntax error"


class UnknownOperatorError(DslError):
    kind = "unknown operator"


class ArityError(DslError):
    kind = "wrong number of arguments"


class DslTypeError(DslError):
    kind = "type error"


class DurationError(DslError):
    kind = "bad duration"


class EventError(TimelineError):
    """An event that cannot be used (not JSON, no usable key or time)."""

    def __init__(self, reason: str, line_number: int | None = None):
        self.reason = reason
        self.line_number = line_number
        where = f"line {line_number}: " if line_number is not None else ""
        super().__init__(f"{where}{reason}")


class UsageError(TimelineError):
    """A bad command-line option or API argument."""
