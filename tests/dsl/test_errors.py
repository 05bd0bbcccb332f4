"""Every kind of user error: a TimelineError naming line, column, the text with a
caret, and what was expected; never a Python traceback."""

import pytest

from timeline.dsl.compiler import compile_expression
from timeline.dsl.errors import (
    ArityError,
    DslSyntaxError,
    DslTypeError,
    DurationError,
    TimelineError,
    UnknownOperatorError,
)


def error_of(source):
    with pytest.raises(TimelineError) as info:
        compile_expression(source)
    return info.value


def caret_under(err, text):
    """The rendered caret line underlines `text` in the rendered source line."""
    lines = str(err).splitlines()
    src, carets = lines[1], lines[2]
    col = carets.index("^")
    return src[col:col + carets.count("^")] == text


CASES = [
    # (source, error class, line, column, underlined text, words in message, words in expected)
    ('has_existed(x = 1)', DslSyntaxError, 1, 15, "=", "unexpected character", "'=='"),
    ('has_existed(x == 1', DslSyntaxError, 1, 19, None, "ends too early", "')'"),
    ('has_existed(x == 1))', DslSyntaxError, 1, 20, ")", "unexpected ')'", "end of the expression"),
    ('a & b', DslSyntaxError, 1, 3, "&", "unexpected character", "'&&'"),
    ('TL_HasExisted(col("x") == "a" &&\n    col("y") === 2)', DslSyntaxError, 2, 16, "=", "unexpected", None),
    ('TL_HasExistd(col("x") == 1)', UnknownOperatorError, 1, 1, "TL_HasExistd", "did you mean TL_HasExisted", None),
    ('has_existed(x == 1) | aggregate(group_by(c), median)', UnknownOperatorError, 1, 46, "median",
     "not an aggregate function", "count"),
    ('has_existed(x == 1, 2)', ArityError, 1, 1, "has_existed(x == 1, 2)", "takes 1 argument, got 2",
     'has_existed(field == "value")'),
    ('TL_HasExistedWithin(col("x") == 1)', ArityError, 1, 1, None, "takes 2 arguments, got 1", "5s"),
    ('col("a", "b")', ArityError, 1, 1, None, "col takes 1 argument", 'col("field")'),
    ('duration_where(x == 1)', DslTypeError, 1, 16, "x == 1", "got an event predicate", "has_existed(x == 1)"),
    ('latest_event_to_state(x) > "a"', DslTypeError, 1, 28, '"a"', "'>' needs a number", "=="),
    ('has_existed(latest_event_to_state(x) == 1)', DslTypeError, 1, 13, None, "got a boolean timeline", "has_existed"),
    ('latest_event_to_state(x) && has_existed(y == 1)', DslTypeError, 1, 1, "latest_event_to_state(x)",
     "needs a boolean timeline", "comparison"),
    ('duration_in_cur_state(x)', DslTypeError, 1, 23, "x", "got a column", "latest_event_to_state(x)"),
    ('duration_where(has_existed(x == 1)) == "a"', DslTypeError, 1, 40, '"a"', "compared with", "duration"),
    ('latest_event_to_state(x) == 5s', DslTypeError, 1, 29, "5s", "compared with a duration", None),
    ('has_existed(x == 1) > true', DslTypeError, 1, 1, None, "does not order booleans", None),
    ('x == 1', DslTypeError, 1, 1, "x == 1", "not a timeline", "has_existed(x == 1)"),
    ('duration_where(has_existed(x == 1)) == latest_event_to_state(y)', DslTypeError, 1, 1, None,
     "compared with a state timeline", "duration timeline on both sides"),
    ('has_existed(x == 1) && (x == 2)', DslTypeError, 1, 25, "x == 2", "mixes an event predicate", None),
    ('has_existed_within(x == 1, "5s")', DurationError, 1, 28, '"5s"', "must be a duration", "500ms"),
    ('has_existed_within(x == 1, 0ms)', DurationError, 1, 28, "0ms", "positive", None),
    ('has_existed_within(x == 1, -3)', DurationError, 1, 28, "-3", "positive", None),
    ('has_existed_within(x == 1, 5parsecs)', DslSyntaxError, 1, 29, None, "unexpected", None),
    ('', DslSyntaxError, None, None, None, "empty", None),
]


@pytest.mark.parametrize("source,cls,line,column,underlined,message,expected", CASES)
def test_user_errors_point_at_the_text(source, cls, line, column, underlined, message, expected):
    err = error_of(source)
    assert type(err) is cls, str(err)
    text = str(err)
    assert message in text
    if line is not None:
        assert (err.line, err.column) == (line, column), text
        assert text.startswith(f"<expression>:{line}:{column}: ")
        assert "^" in text
    if underlined is not None:
        assert caret_under(err, underlined), text
    if expected is not None:
        assert "expected:" in text and expected in text.split("expected:")[1], text
    assert "Traceback" not in text


def test_errors_are_one_family():
    for cls in (DslSyntaxError, UnknownOperatorError, ArityError, DslTypeError, DurationError):
        assert issubclass(cls, TimelineError)
