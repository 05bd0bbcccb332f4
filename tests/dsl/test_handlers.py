"""Every operator class the compiler can emit has a handler in the algebra."""

from timeline.dsl.compiler import DERIVED_OPERATORS, LEAF_OPERATORS
from timeline.dsl.operators import DERIVED_HANDLERS, LEAF_HANDLERS


def test_every_plan_operator_has_a_handler():
    assert set(LEAF_OPERATORS) == set(LEAF_HANDLERS)
    assert set(DERIVED_OPERATORS) == set(DERIVED_HANDLERS)


def test_handlers_are_named_after_their_class():
    for cls, handler in {**LEAF_HANDLERS, **DERIVED_HANDLERS}.items():
        assert handler.__name__ == cls.__name__
