"""Span sets -> the JSON shapes users see (timelines, values at t, groups).

A span is {"start": ms, "end": ms or null, "value": v}; numeric spans also
carry "slope" (value change per ms). Unknown stretches have "value": null.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from dsl.ast import Aggregation
from dsl.spans import Frame, NumericSpans, SpanSet, key_offsets, values_at


def timelines_json(spans: SpanSet, key_names: list[str], frm: int | None = None, to: int | None = None
                   ) -> dict[str, list[dict[str, Any]]]:
    """Every key's spans, clipped to [frm, to) when given."""
    offsets = key_offsets(spans.key, len(key_names)).tolist()
    starts = spans.start.tolist()
    values = spans.python_values()
    numeric = isinstance(spans, NumericSpans)
    slopes = spans.slope.tolist() if numeric else None
    out: dict[str, list[dict[str, Any]]] = {}
    for k, name in enumerate(key_names):
        rows = []
        lo, hi = offsets[k], offsets[k + 1]
        for i in range(lo, hi):
            start, end = starts[i], (starts[i + 1] if i + 1 < hi else None)
            value = values[i]
            if frm is not None:
                if end is not None and end <= frm:
                    continue
                if start < frm:
                    if numeric and value is not None:
                        value = _num(value + slopes[i] * (frm - start))
                    start = frm
            if to is not None:
                if start >= to:
                    break
                if end is None or end > to:
                    end = to
            row: dict[str, Any] = {"start": start, "end": end, "value": value}
            if numeric:
                row["slope"] = None if value is None else _num(slopes[i])
            rows.append(row)
        out[name] = rows
    return out


def values_at_json(spans: SpanSet, frame: Frame, key_names: list[str], t: int) -> dict[str, Any]:
    keys = np.arange(len(key_names), dtype=np.int64)
    vals = values_at(spans, keys, np.full(len(keys), t, dtype=np.int64), frame)
    return dict(zip(key_names, vals))


def aggregate_json(values: list[Any], groups: list[Any], aggregation: Aggregation) -> dict[str, dict[str, Any]]:
    """Per group (a key's latest value of the group-by column): count of keys and
    sum/avg/min/max of the timeline's numeric values (booleans count as 0/1;
    unknown and non-numeric values are left out of everything but count)."""
    buckets: dict[str, list[Any]] = {}
    for value, group in zip(values, groups):
        buckets.setdefault(group_label(group), []).append(value)
    out: dict[str, dict[str, Any]] = {}
    for label in sorted(buckets):
        members = buckets[label]
        nums = [float(v) for v in members if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))]
        row: dict[str, Any] = {}
        for fn in aggregation.functions:
            if fn == "count":
                row["count"] = len(members)
            elif fn == "sum":
                row["sum"] = _num(sum(nums)) if nums else None
            elif fn == "avg":
                row["avg"] = _num(sum(nums) / len(nums)) if nums else None
            elif fn == "min":
                row["min"] = _num(min(nums)) if nums else None
            elif fn == "max":
                row["max"] = _num(max(nums)) if nums else None
        out[label] = row
    return out


def group_label(value: Any) -> str:
    """A group's name in JSON output: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v
