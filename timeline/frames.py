"""The Python API: evaluate an expression over a DataFrame, in a notebook, with no server.

    import timeline
    spans = timeline.evaluate('has_existed(playerStateChange == "buffer")', df,
                              key="session_id", time="ts")

`df` is a pandas or polars DataFrame, an Arrow table (or record batch), a list
of dicts, or the path of an events file (JSON lines, optionally .gz/.zst,
Parquet, Arrow IPC). The answer is a DataFrame of the same library as the
input (pass `output=` to choose): one row per span (key, node, start, end,
value, slope), or with `at=T` one row per key (key, node, time, value), or
for an aggregation one row per group. It runs the batch evaluator of
`timeline eval` (timeline.dsl), so both give the same answers.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from timeline.dsl.batch import evaluate_root, run_eval
from timeline.dsl.columnar import read_events_file, read_jsonl, spans_table, table_events, values_table
from timeline.dsl.compiler import plan_for
from timeline.dsl.decode import DecodedEvents
from timeline.dsl.errors import EventError, UsageError
from timeline.dsl.events import parse_time, split_key_paths, split_path
from timeline.dsl.spans import values_at

OUTPUTS = ("pandas", "polars", "arrow")
MAX_BAD_ROWS_SHOWN = 5


def evaluate(expression: str, events: Any, *, key: str, time: str, at: Any = None, start: Any = None,
             end: Any = None, output: str | None = None, bad_rows: str = "raise") -> Any:
    """Evaluate a timeline expression over events; return a DataFrame.

    - `key`: the key column (a dotted path for a nested field; 'a,b' for a composite key).
    - `time`: the time column: epoch ms, ISO-8601 strings, or datetimes.
    - `at`: a time (epoch ms, ISO-8601 string or datetime): each key's value then.
    - `start`, `end`: clip the spans to [start, end).
    - `output`: 'pandas', 'polars' or 'arrow' (default: like the input; Arrow for a list or a file).
    - `bad_rows`: 'raise' (a row without a usable key or time is an EventError) or 'skip'
      (leave such rows out, with a warning).
    """
    if bad_rows not in ("raise", "skip"):
        raise UsageError(f"bad_rows={bad_rows!r}: use 'raise' or 'skip'")
    kind = output or _kind_of(events)
    if kind not in OUTPUTS:
        raise UsageError(f"output={output!r}: use one of {', '.join(OUTPUTS)}")
    plan = plan_for(expression)
    at_ms, start_ms, end_ms = (_time_arg(v, name) for v, name in ((at, "at"), (start, "start"), (end, "end")))
    decoded = _decode(events, plan, key, time)
    if decoded.bad:
        shown = "; ".join(f"row {b.line}: {b.reason}" for b in decoded.bad[:MAX_BAD_ROWS_SHOWN])
        more = f" (and {len(decoded.bad) - MAX_BAD_ROWS_SHOWN} more)" if len(decoded.bad) > MAX_BAD_ROWS_SHOWN else ""
        if bad_rows == "raise":
            raise EventError(f"{len(decoded.bad)} row(s) without a usable key or time: {shown}{more}; "
                             "fix them or pass bad_rows='skip' to leave them out")
        warnings.warn(f"timeline.evaluate left out {len(decoded.bad)} row(s): {shown}{more}", stacklevel=2)
    return _convert(_answer(plan, decoded, at_ms, start_ms, end_ms), kind)


def _answer(plan, decoded: DecodedEvents, at: int | None, start: int | None, end: int | None):
    import pyarrow as pa

    if plan.aggregation is not None:
        groups = run_eval(plan, decoded, at, start, end)
        functions = list(plan.aggregation.functions)
        return pa.table({"group": pa.array(list(groups), pa.string()),
                         **{fn: pa.array([row[fn] for row in groups.values()]) for fn in functions}})
    if at is not None and (start is not None or end is not None):
        raise UsageError("give either at= or start=/end=, not both")
    if start is not None and end is not None and start >= end:
        raise UsageError(f"start ({start}) must be before end ({end})")
    events = decoded.events
    if len(events) == 0:
        root = None
    else:
        root = evaluate_root(plan, events)
    names = decoded.key_names
    if at is not None:
        values = [] if root is None else values_at(
            root, np.arange(len(names), dtype=np.int64), np.full(len(names), at, dtype=np.int64), events.frame)
        return values_table(names, plan.root, at, values)
    if root is None:
        return pa.table({"key": pa.array([], pa.string()), "node": pa.array([], pa.string()),
                         "start": pa.array([], pa.int64()), "end": pa.array([], pa.int64()),
                         "value": pa.array([]), "slope": pa.array([], pa.float64())})
    return spans_table(root, names, plan.root, start, end)


def _decode(events: Any, plan, key: str, time: str) -> DecodedEvents:
    import pyarrow as pa

    key_paths, time_path, paths = split_key_paths(key), split_path(time), plan.columns()
    if isinstance(events, (str, Path)):
        return read_events_file(str(events), key_paths, time_path, paths)
    try:
        table = to_arrow(events)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Columns Arrow cannot type (pandas object columns mixing 1 and "1", lists of dicts
        # that do): as JSON lines, which the exact decoder reads value by value.
        return read_jsonl(_json_lines(events), key_paths, time_path, paths)
    return table_events(table, key_paths, time_path, paths)


def _json_lines(events: Any) -> bytes:
    import msgspec

    records = events if isinstance(events, list) else events.to_dict("records")

    def fallback(value: Any) -> Any:
        if hasattr(value, "isoformat"):  # pandas Timestamp, datetime
            return value.isoformat()
        if hasattr(value, "item"):  # numpy scalars
            return value.item()
        raise TypeError(f"cannot use a {type(value).__name__} as an event value")

    try:
        return msgspec.json.Encoder(enc_hook=fallback).encode_lines(
            [{k: v for k, v in r.items() if not _is_missing(v)} for r in records])
    except TypeError as exc:
        raise UsageError(f"events: {exc}") from None


def _is_missing(value: Any) -> bool:
    """pandas marks a missing value as None, NaN or NA: a missing field."""
    return value is None or (isinstance(value, float) and value != value) or type(value).__name__ in ("NAType", "NaTType")


def to_arrow(events: Any):
    """A pandas/polars DataFrame, an Arrow table or record batch, or a list of dicts, as an Arrow table."""
    import pyarrow as pa

    if isinstance(events, pa.Table):
        return events
    if isinstance(events, pa.RecordBatch):
        return pa.Table.from_batches([events])
    if isinstance(events, list):
        return pa.Table.from_pylist(events)
    module = type(events).__module__.split(".")[0]
    if module == "polars":
        return events.to_arrow()
    if module == "pandas":
        return pa.Table.from_pandas(events, preserve_index=False)
    if hasattr(events, "__arrow_c_stream__"):  # any other Arrow-speaking frame (duckdb, ...)
        return pa.table(events)
    raise UsageError(f"events must be a pandas or polars DataFrame, an Arrow table, a list of dicts or a file "
                     f"path, got {type(events).__name__}")


def _kind_of(events: Any) -> str:
    module = type(events).__module__.split(".")[0]
    return module if module in ("pandas", "polars") else "arrow"


def _convert(table, kind: str) -> Any:
    if kind == "pandas":
        import pandas as pd
        import pyarrow as pa

        # nullable integers: an open span's end is <NA>, not NaN in a float column
        return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}.get)
    if kind == "polars":
        import polars as pl

        return pl.from_arrow(table)
    return table


def _time_arg(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if hasattr(value, "isoformat"):  # datetime, pandas Timestamp
        value = value.isoformat()
    try:
        return parse_time(value, name)
    except EventError:
        raise UsageError(f"{name}={value!r} is not a time: give epoch milliseconds, ISO-8601 "
                         "(2025-02-07T13:29:00Z) or a datetime") from None
