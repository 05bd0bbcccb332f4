"""Checks that keep an event inside the documented limits (dsl/limits.py).

Pure and shared: the feeder checks every message before routing it (what fails
goes to the dead-letter topic with the reason returned here), and a leaf
workflow checks the same again before applying, so no value can fail a
workflow task, whoever sent the signal. None means "fine"; otherwise a short
reason saying what is wrong and where.
"""

from __future__ import annotations

import math
from typing import Any

from timeline.dsl.events import time_range_problem
from timeline.dsl.limits import (
    MAX_EVENT_BYTES,
    MAX_EVENT_DEPTH,
    MAX_INT,
    MIN_INT,
)


def size_problem(n_bytes: int) -> str | None:
    if n_bytes > MAX_EVENT_BYTES:
        return f"event of {n_bytes} bytes is over the limit of {MAX_EVENT_BYTES} bytes"
    return None


def time_problem(t: int, path: str = "time") -> str | None:
    return time_range_problem(t, path)


def value_problem(value: Any, where: str = "event") -> str | None:
    """Nesting deeper than MAX_EVENT_DEPTH, an integer outside int64, a non-finite float:
    walked without recursion, so no depth can overflow the stack."""
    if type(value) is dict and _flat_and_fine(value):
        return None  # the common case, cheaply: every value a scalar within range
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, bool) or v is None or isinstance(v, str):
            continue
        if isinstance(v, int):
            if not MIN_INT <= v <= MAX_INT:
                return f"integer in {where} is outside int64: {str(v)[:40]}"
        elif isinstance(v, float):
            if not math.isfinite(v):
                return f"number in {where} is not finite: {v}"
        elif isinstance(v, (dict, list, tuple)):
            if depth >= MAX_EVENT_DEPTH:
                return f"{where} is nested deeper than {MAX_EVENT_DEPTH} levels"
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return None


def _flat_and_fine(event: dict) -> bool:
    for v in event.values():
        t = type(v)
        if t is str or v is None or t is bool:
            continue
        if t is int:
            if MIN_INT <= v <= MAX_INT:
                continue
            return False
        if t is float:
            if math.isfinite(v):
                continue
            return False
        return False
    return True
