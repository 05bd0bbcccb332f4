"""Every operator is declared once (its AST class) and has, derived from that
declaration, a spelling in the parser, a type rule, a place in the compiler's
tables and a handler in the algebra."""

from timeline.dsl import ast as A
from timeline.dsl.checker import TYPE_RULES
from timeline.dsl.compiler import DERIVED_OPERATORS, LEAF_OPERATORS
from timeline.dsl.operators import DERIVED_HANDLERS, LEAF_HANDLERS
from timeline.dsl.parser import CALLS, parse


def test_every_plan_operator_has_a_handler():
    assert set(LEAF_OPERATORS) == set(LEAF_HANDLERS)
    assert set(DERIVED_OPERATORS) == set(DERIVED_HANDLERS)
    assert set(LEAF_OPERATORS) | set(DERIVED_OPERATORS) == set(A.OPERATOR_CLASSES)


def test_handlers_are_named_after_their_class():
    for cls, handler in {**LEAF_HANDLERS, **DERIVED_HANDLERS}.items():
        assert handler.__name__ == cls.__name__


def test_every_operator_has_a_type_rule():
    for cls in A.OPERATOR_CLASSES:
        assert cls in TYPE_RULES, f"no check_{cls.__name__} in the checker"


def test_every_spelling_reaches_its_class():
    for cls in A.OPERATOR_CLASSES:
        for spelling in cls.spellings:
            for name in spelling.names:
                assert CALLS[name] == (cls, spelling)


def test_call_spellings_build_the_same_node_as_the_infix_forms():
    same = [
        ('EqualTo(latest_event_to_state(x), "a")', 'latest_event_to_state(x) == "a"'),
        ("TL_GreaterThanOrEqualTo(duration_where(has_existed(y == 1)), 5s)", "duration_where(has_existed(y == 1)) >= 5s"),
        ("And(has_existed(a == 1), has_existed(b == 2), has_existed(c == 3))",
         "has_existed(a == 1) && has_existed(b == 2) && has_existed(c == 3)"),
        ("Not(has_existed(a == 1))", "!has_existed(a == 1)"),
    ]
    from timeline.dsl.compiler import compile_expression

    for call, infix in same:
        assert compile_expression(call).root_node.expr == compile_expression(infix).root_node.expr
    assert isinstance(parse("TL_HasExistedWithin(col(\"x\") == 1, 5s)").expr, A.HasExistedWithin)
