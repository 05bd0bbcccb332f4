"""Span sets -> the JSON shapes users see (timelines, values at t, groups).

A span is {"start": ms, "end": ms or null, "value": v}; numeric spans also
carry "slope" (value change per ms). Unknown stretches have "value": null.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from timeline.dsl.ast import Aggregation
from timeline.dsl.spans import (
    Frame,
    NumericSpans,
    SpanSet,
    key_offsets,
    next_start,
    numbers_to_python,
    values_at,
)

if TYPE_CHECKING:
    from timeline.dsl.incremental import KeyTimeline


class Span(msgspec.Struct, array_like=False, gc=False):
    """One span of a state or boolean timeline, as printed."""

    start: int
    end: int | None
    value: Any


class NumericSpan(msgspec.Struct, array_like=False, gc=False):
    """One span of a numeric timeline: the value at `start` and its change per ms."""

    start: int
    end: int | None
    value: int | float | None
    slope: int | float | None


def timelines_json(spans: SpanSet, key_names: list[str], frm: int | None = None, to: int | None = None
                   ) -> dict[str, list]:
    """Every key's spans (as Span / NumericSpan), clipped to [frm, to) when given."""
    offsets = key_offsets(spans.key, len(key_names)).tolist()
    end_arr = next_start(spans.key, spans.start)
    open_end = end_arr == np.iinfo(np.int64).max
    starts = spans.start.tolist()
    ends = [None if o else e for e, o in zip(end_arr.tolist(), open_end.tolist())]
    values = spans.python_values()
    if isinstance(spans, NumericSpans):
        slopes = numbers_to_python(np.where(np.isnan(spans.v0), np.nan, spans.slope))
        rows = list(map(NumericSpan, starts, ends, values, slopes))
    else:
        rows = list(map(Span, starts, ends, values))
    out: dict[str, list] = {}
    for k, name in enumerate(key_names):
        mine = rows[offsets[k]:offsets[k + 1]]
        if frm is not None or to is not None:
            mine = [r for r in (_clip(r, frm, to) for r in mine) if r is not None]
        out[name] = mine
    return out


def _clip(row, frm: int | None, to: int | None):
    """The part of a span inside [frm, to), or None."""
    start, end, value = row.start, row.end, row.value
    if frm is not None:
        if end is not None and end <= frm:
            return None
        if start < frm:
            if isinstance(row, NumericSpan) and value is not None:
                value = _num(value + row.slope * (frm - start))
            start = frm
    if to is not None:
        if start >= to:
            return None
        if end is None or end > to:
            end = to
    if isinstance(row, NumericSpan):
        return NumericSpan(start, end, value, row.slope)
    return Span(start, end, value)


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


def key_timeline_spans(timeline: KeyTimeline, frm: int | None = None, to: int | None = None
                       ) -> list[Span | NumericSpan]:
    """One key's timeline (a `dsl.incremental.KeyTimeline`) as the spans `timeline eval` prints,
    clipped to [frm, to) when given: Span rows, or NumericSpan rows for a numeric timeline
    (whole numbers as int, an unknown stretch with value and slope null)."""
    starts = list(timeline.starts)
    ends: list[int | None] = [*starts[1:], None]
    rows: list[Span | NumericSpan]
    if timeline.slopes is not None:
        rows = [NumericSpan(s, e, None, None) if v is None else NumericSpan(s, e, _num(v), _num(m))
                for s, e, v, m in zip(starts, ends, timeline.values, timeline.slopes)]
    else:
        rows = [Span(s, e, v) for s, e, v in zip(starts, ends, timeline.values)]
    if frm is not None or to is not None:
        rows = [r for r in (_clip(r, frm, to) for r in rows) if r is not None]
    return rows
