"""The documented expression limits (dsl/limits.py) give positioned DSL errors,
quickly, instead of RecursionError or minutes of parsing (issue 9, item 6)."""

from __future__ import annotations

import time

import pytest

from timeline.dsl.compiler import compile_expression
from timeline.dsl.errors import DslSyntaxError
from timeline.dsl.limits import MAX_EXPRESSION_CHARS, MAX_EXPRESSION_DEPTH, MAX_STRING_CONSTANT_CHARS
from timeline.dsl.parser import parse

LEAF = 'has_existed(a == 1)'


def rejected(source: str) -> DslSyntaxError:
    started = time.monotonic()
    with pytest.raises(DslSyntaxError) as info:
        compile_expression(source)
    # Not a speed assertion: a guard against the old minutes-long behaviour.
    assert time.monotonic() - started < 60
    return info.value


def test_500_nested_nots_is_a_dsl_error_not_recursion_error():
    err = rejected("!" * 500 + LEAF)
    assert f"nested more than {MAX_EXPRESSION_DEPTH} levels" in err.message
    assert err.line == 1 and err.column is not None


def test_deep_calls_and_long_chains_are_dsl_errors():
    assert "nested" in rejected("Not(" * 1000 + LEAF + ")" * 1000).message
    assert "nested" in rejected("(a == 1 && " * 500 + LEAF + ")" * 500).message
    assert "nested" in rejected(" || ".join([LEAF] * 1000)).message


def test_nesting_just_under_the_limit_compiles_and_evaluates(timeline_of):
    source = "!" * (MAX_EXPRESSION_DEPTH - 10) + LEAF
    compile_expression(source)
    assert timeline_of(source, [{"k": "a", "t": 1, "a": 1}]) == [(1, True)]


def test_redundant_parentheses_and_wide_fan_in_are_not_depth():
    compile_expression("(" * 1000 + LEAF + ")" * 1000)
    compile_expression(f"Or({', '.join([LEAF] * 2000)})")


def test_expression_too_long():
    err = rejected(LEAF + " " * MAX_EXPRESSION_CHARS)
    assert f"the limit is {MAX_EXPRESSION_CHARS:,}" in err.message
    assert len(str(err)) < 2000  # the message does not repeat the whole text


def test_10_mb_string_constant_is_rejected_fast():
    err = rejected('has_existed(a == "' + "x" * 10_000_000 + '")')
    assert "characters long" in err.message


def test_string_constant_too_long_is_positioned_at_the_string():
    source = 'has_existed(a == "' + "x" * (MAX_STRING_CONSTANT_CHARS + 1) + '")'
    err = rejected(source)
    assert "string constant" in err.message
    assert err.column == source.index('"') + 1


def test_string_constant_at_the_limit_is_fine():
    parse('has_existed(a == "' + "x" * MAX_STRING_CONSTANT_CHARS + '")')


@pytest.mark.parametrize("number", ["99999999999999999999999", "-9223372036854775809", "1e999"])
def test_numbers_past_int64_or_float_are_dsl_errors(number):
    err = rejected(f"has_existed(a == {number})")
    assert err.column == len("has_existed(a == ") + 1


def test_int64_edges_are_accepted():
    parse("has_existed(a == 9223372036854775807) && has_existed(a == -9223372036854775808)")
