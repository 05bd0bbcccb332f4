"""Arrow in and out: tables and files -> the EventFrame the evaluator uses; spans -> tables.

`timeline eval` reads JSON lines with Arrow's multi-threaded JSON reader (both
cores, columns built in C) and turns the columns into the same `DecodedEvents`
the exact decoder (`dsl/decode.py`) makes. Arrow gives one type per column,
which is not always enough to give the exact decoder's answer: a line Arrow
rejects (bad JSON, a field that changes kind, a missing key or time), a
number column mixing 1 and 1.5 (Arrow makes both floats, so 1 would print as
1.0), an object used as a value. In those cases the whole input goes to the
exact decoder, which reports every bad line with its number and reason. So
the fast path is an optimisation only: it never changes an answer.

The exact decoder also refuses events past the size and nesting limits
(dsl/limits.py), which Arrow would read. Before Arrow's table is used, the
input is checked for lines that may be past them (`_check_event_limits`:
a few microseconds for the size, one pass over the bytes for the nesting);
a line that is or may be past a limit sends the input to the exact decoder,
so bad lines are reported the same whichever path reads them.

Parquet and Arrow IPC files, and DataFrames (the Python API), are typed
already: their values are taken as they are, and a row without a usable key
or time is a bad row (numbered from 1), like a bad line.

pyarrow is imported on first use, so `import timeline` stays light.
"""

from __future__ import annotations

import gc
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import msgspec
import numpy as np

from timeline.dsl.decode import BadLine, DecodedEvents, decode_jsonl
from timeline.dsl.errors import EventError, UsageError
from timeline.dsl.events import (
    CodedColumn,
    EventFrame,
    ValueEncoder,
    json_depth,
    parse_key,
    parse_time,
    time_range_problem,
)
from timeline.dsl.limits import MAX_EVENT_BYTES, MAX_EVENT_DEPTH, MAX_TIME_MS, MIN_TIME_MS
from timeline.dsl.spans import NumericSpans, SpanSet, StateSpans, key_offsets, next_start, numbers_to_python

if TYPE_CHECKING:
    import pyarrow as pa

Path_ = tuple[str, ...]

# Arrow's JSON reader parses blocks of this size in parallel; the first block
# also tells the column types (see _projected_schema).
JSON_BLOCK_BYTES = 4 << 20
# pyarrow 26's JSON reader crashed (SIGSEGV) on blocks of 64 bytes, about a line each:
# whatever JSON_BLOCK_BYTES is set to (tests make it small), blocks are never below this.
MIN_JSON_BLOCK_BYTES = 4096
# When Arrow cannot read the whole input exactly, it is read again in slices of this size.
SLICE_BYTES = 32 << 20
# Lines that may be nested past MAX_EVENT_DEPTH (they have that many '{' and '[') are checked
# one by one; more of them than this and the exact decoder reads the input.
MAX_DEPTH_CANDIDATES = 1000

EVENT_SUFFIXES = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
    ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow",
}
COMPRESSION_SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
SPAN_OUTPUT_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".arrow": "arrow", ".feather": "arrow",
                        ".ipc": "arrow", ".json": "json", ".jsonl": "json"}


class NotExact(Exception):
    """The Arrow columns cannot give the exact decoder's answer (the reason says why)."""


def key_paths_of(key_path: Path_ | tuple[Path_, ...]) -> tuple[Path_, ...]:
    """One dotted path as a tuple, or a tuple of them (a composite key)."""
    return (key_path,) if key_path and isinstance(key_path[0], str) else tuple(key_path)  # type: ignore[return-value]


# --- JSON lines ----------------------------------------------------------------

def read_jsonl(data: bytes, key_path, time_path: Path_, paths: Sequence[Path_]) -> DecodedEvents:
    """JSON lines -> DecodedEvents: Arrow's parallel reader when it can give the exact answer,
    else the exact line-by-line decoder (which also numbers and explains every bad line)."""
    return _read_jsonl(lambda: data, data[:JSON_BLOCK_BYTES], key_path, time_path, paths)


def read_jsonl_file(path: Path, key_path, time_path: Path_, paths: Sequence[Path_]) -> DecodedEvents:
    """`read_jsonl` of a file: Arrow reads it memory-mapped (no copy); the bytes are read
    only if the exact decoder is needed."""
    try:
        with open(path, "rb") as f:
            head = f.read(JSON_BLOCK_BYTES)
    except FileNotFoundError:
        raise UsageError(f"events file not found: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read events file {path}: {exc.strerror}") from None
    return _read_jsonl(lambda: _read_bytes(str(path)), head, key_path, time_path, paths, source=path)


def _read_jsonl(data_of, head: bytes, key_path, time_path, paths, source: Path | None = None) -> DecodedEvents:
    key_paths = key_paths_of(key_path)
    decoded = _arrow_events(data_of, head, source, key_paths, time_path, paths)
    if decoded is not None:
        return decoded
    data = data_of()
    if len(data) <= SLICE_BYTES:
        return decode_jsonl(data, key_paths, time_path, paths)
    # Slice by slice: a slice Arrow reads exactly stays fast, the others go to the exact
    # decoder, so a few bad lines cost the time of their slices, not of the whole file.
    parts = []
    first_line = 1
    for slice_ in _slices(data, SLICE_BYTES):
        part = _arrow_events(lambda: slice_, slice_[:JSON_BLOCK_BYTES], None, key_paths, time_path, paths)
        if part is None:
            part = decode_jsonl(slice_, key_paths, time_path, paths)
            part.bad = [BadLine(b.line + first_line - 1, b.reason, b.raw) for b in part.bad]
        parts.append(part)
        first_line += slice_.count(b"\n")
    return merge_decoded(parts, paths)


def _arrow_events(data_of, head: bytes, source: Path | None, key_paths, time_path, paths) -> DecodedEvents | None:
    """The events as Arrow reads them, or None when only the exact decoder gives the answer."""
    try:
        # Arrow reads (releasing the GIL) while this thread looks for lines past the limits.
        with ThreadPoolExecutor(1, thread_name_prefix="timeline-read") as pool:
            reading = pool.submit(_arrow_read_json, data_of, head, source, key_paths, time_path, paths)
            _check_event_limits(data_of, source, lambda: reading.result().num_rows)
            table = reading.result()
        return table_events(table, key_paths, time_path, paths, from_json=True)
    except NotExact:
        return None
    except Exception as exc:  # pyarrow.ArrowInvalid and kin: a line Arrow rejects
        if not type(exc).__module__.startswith("pyarrow"):
            raise
        return None


def _check_event_limits(data_of, source: Path | None, rows_of) -> None:
    """NotExact when some line is past the size or nesting limit the exact decoder applies
    (or may be: then the exact decoder decides). `rows_of()`: how many rows Arrow read."""
    if source is None:
        _check_limits_of(data_of(), rows_of)
        return
    import mmap

    with open(source, "rb") as f:
        if f.seek(0, 2) == 0:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            _check_limits_of(mapped, rows_of)


def _check_limits_of(buf, rows_of) -> None:
    """`buf` (bytes or a memory map) holds `rows_of()` JSON objects, one a line, as Arrow read them."""
    n = len(buf)
    if n > MAX_EVENT_BYTES:
        # Size: a line longer than MAX_EVENT_BYTES covers a whole aligned block of half that
        # size, which then has no newline. Each look stops at the block's first newline.
        half = MAX_EVENT_BYTES // 2
        for lo in range(0, n, half):
            hi = min(n, lo + half)
            if hi - lo == half and buf.find(b"\n", lo, hi) < 0:
                start = buf.rfind(b"\n", 0, lo) + 1
                end = buf.find(b"\n", hi)
                if (n if end < 0 else end) - start > MAX_EVENT_BYTES:
                    raise NotExact("a line past the size limit")
    # Nesting: a line nested deeper than MAX_EVENT_DEPTH opens that many '{' or '[' (each row
    # opens at least one). Few opens beyond one a row: no line can be that deep. (No numpy view
    # of `buf` outlives the helpers: a memory map cannot close while one is alive.)
    if _count_opens(buf) - rows_of() <= MAX_EVENT_DEPTH - 1:
        return
    problem = _nesting_problem(buf)
    if problem:
        raise NotExact(problem)


def _nesting_problem(buf) -> str | None:
    """Whether some line is nested past MAX_EVENT_DEPTH: the lines with that many '{' or '[' are
    decoded and measured (brackets in strings count too, so this only picks the candidates)."""
    data = np.frombuffer(buf, dtype=np.uint8)
    newlines = np.flatnonzero(data == 10)
    opens = np.flatnonzero((data | 0x20) == 0x7B)  # '[' is 0x5B, '{' is 0x7B
    del data
    per_line = np.bincount(np.searchsorted(newlines, opens), minlength=len(newlines) + 1)
    candidates = np.flatnonzero(per_line > MAX_EVENT_DEPTH)
    if len(candidates) > MAX_DEPTH_CANDIDATES:
        return "many lines may be past the nesting limit"
    bounds = np.concatenate(([-1], newlines, [len(buf)]))
    for line in candidates.tolist():
        raw = bytes(buf[int(bounds[line]) + 1:int(bounds[line + 1])])
        try:
            deep = json_depth(msgspec.json.decode(raw)) > MAX_EVENT_DEPTH
        except (msgspec.DecodeError, RecursionError):
            deep = True
        if deep:
            return "a line past the nesting limit"
    return None


def _count_opens(buf, block: int = 1 << 18) -> int:
    """How many bytes are '{' or '[', a block at a time (stays in cache, no big temporaries)."""
    data = np.frombuffer(buf, dtype=np.uint8)
    total = 0
    folded = np.empty(min(block, len(data)), dtype=np.uint8)
    hits = np.empty(len(folded), dtype=bool)
    for lo in range(0, len(data), block):
        part = data[lo:lo + block]
        m = len(part)
        np.bitwise_or(part, 0x20, out=folded[:m])
        np.equal(folded[:m], 0x7B, out=hits[:m])
        total += int(np.count_nonzero(hits[:m]))
    return total


def _slices(data: bytes, size: int):
    """Pieces of about `size` bytes, each ending at a line end."""
    start, n = 0, len(data)
    while start < n:
        end = data.find(b"\n", min(n, start + size))
        end = n if end < 0 else end + 1
        yield data[start:end]
        start = end


def merge_decoded(parts: Sequence[DecodedEvents], paths: Sequence[Path_]) -> DecodedEvents:
    """Decoded pieces of one input, in input order, as one: keys and values coded again in
    first-seen order (kind-aware, as the exact decoder codes them). Each piece's frame is sorted
    by (key, time, arrival); the stable sort of the pieces in input order keeps arrival order."""
    names: dict[str, int] = {}
    keys, times = [], []
    for part in parts:
        remap = np.array([names.setdefault(nm, len(names)) for nm in part.key_names], dtype=np.int64)
        keys.append(remap[part.events.key] if len(remap) else part.events.key)
        times.append(part.events.time)
    columns = {}
    for path in paths:
        encoder = ValueEncoder()
        codes = []
        for part in parts:
            col = part.events.column(path)
            remap = np.array([encoder.code(v) for v in col.vocab] + [-1], dtype=np.int32)
            codes.append(remap[col.codes])  # code -1 takes the last entry: still -1
        columns[path] = CodedColumn(np.concatenate(codes) if codes else np.zeros(0, np.int32), list(encoder.vocab))
    key = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    time = np.concatenate(times) if times else np.zeros(0, np.int64)
    events = EventFrame.build(key, time, columns, n_keys=len(names))
    return DecodedEvents(key_names=list(names), events=events, bad=[b for p in parts for b in p.bad],
                         lines=sum(p.lines for p in parts))


def _arrow_read_json(data_of, head: bytes, source: Path | None, key_paths, time_path, paths) -> "pa.Table":
    import pyarrow as pa
    import pyarrow.json as pj

    schema, complete = _projected_schema(head, [*key_paths, time_path, *paths])
    parse = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore" if complete else "infer")
    read = pj.ReadOptions(block_size=max(JSON_BLOCK_BYTES, MIN_JSON_BLOCK_BYTES), use_threads=True)
    if source is not None:
        with pa.memory_map(str(source)) as mapped:
            return pj.read_json(mapped, read_options=read, parse_options=parse)
    return pj.read_json(pa.BufferReader(data_of()), read_options=read, parse_options=parse)


def _projected_schema(data: bytes, wanted: Sequence[Path_]) -> tuple["pa.Schema", bool]:
    """Types of the wanted fields, inferred from the first block; timestamps stay strings
    (times are parsed by `parse_time`, state values are the strings themselves).
    `complete` is False when some wanted field is not typed there (then the reader infers it)."""
    import pyarrow as pa
    import pyarrow.json as pj

    end = data.rfind(b"\n", 0, JSON_BLOCK_BYTES // 4 + 1)
    sample = data if end < 0 else data[:end + 1]
    inferred = pj.read_json(pa.BufferReader(sample)).schema
    tree: dict = {}
    for path in wanted:
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise NotExact(f"{'.'.join(path)} is both a value and an object")
        node.setdefault(path[-1], None)
    complete = True

    def project(typ: "pa.DataType", want) -> "pa.DataType | None":
        nonlocal complete
        if want is None:  # a leaf: its type as inferred
            if pa.types.is_timestamp(typ):
                return pa.string()
            if pa.types.is_null(typ):
                complete = False
                return None
            return typ
        if not pa.types.is_struct(typ):
            raise NotExact("a nested path goes through a field that is not an object")
        fields = []
        for name, sub in want.items():
            idx = typ.get_field_index(name)
            if idx < 0:
                complete = False
                continue
            child = project(typ.field(idx).type, sub)
            if child is not None:
                fields.append(pa.field(name, child))
        return pa.struct(fields) if fields else None

    top = project(pa.struct(list(inferred)), tree)  # a line is an object: the top level is a struct
    return pa.schema(list(top) if top is not None else []), complete


# --- Arrow tables --------------------------------------------------------------

def table_events(table: "pa.Table", key_path, time_path: Path_, paths: Sequence[Path_],
                 from_json: bool = False) -> DecodedEvents:
    """An Arrow table -> DecodedEvents. `from_json`: the table was read from JSON lines, so
    anything the exact decoder would answer differently raises NotExact; otherwise rows
    without a usable key or time are bad rows (numbered from 1) and values are taken as typed."""
    import pyarrow as pa
    import pyarrow.compute as pc

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        key_paths = key_paths_of(key_path)
        n = table.num_rows
        bad_rows: dict[int, str] = {}
        key_parts = []
        for kp in key_paths:
            col = _column(table, kp, from_json)
            key_parts.append(_key_strings(col, kp, n, from_json, bad_rows, table.column_names))
        time_col = _column(table, time_path, from_json)
        times, time_bad = _times(time_col, time_path, n, from_json, table.column_names)
        for row in time_bad:
            bad_rows.setdefault(row, time_bad[row])
        keep = None
        if bad_rows:
            keep = np.ones(n, dtype=bool)
            keep[list(bad_rows)] = False
            mask = pa.array(keep)
            key_parts = [p.filter(mask) for p in key_parts]
            times = times[keep]
        if len(key_parts) == 1:
            keys = key_parts[0]
        else:  # a composite key: its parts escaped and joined by ':', as events.join_key_parts does
            text = pa.large_string()
            escaped = [pc.replace_substring(pc.replace_substring(pc.cast(p, text), "\\", "\\\\"), ":", "\\:")
                       for p in key_parts]
            keys = pc.binary_join_element_wise(*escaped, pa.scalar(":", text))
        n_kept = len(times)

        def coded(path: Path_) -> CodedColumn:
            col = _column(table, path, from_json)
            if keep is not None and col is not None:
                col = col.filter(pa.array(keep))
            return _coded(col, path, n_kept, from_json)

        threads = _thread_count(None, n_kept)
        with ThreadPoolExecutor(threads) if threads > 1 else _NoPool() as pool:
            # the value columns are encoded while this thread encodes the keys (Arrow's
            # kernels release the GIL)
            pending = {path: pool.submit(coded, path) for path in paths}
            encoded = pc.dictionary_encode(keys)
            key_codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
            key_names = encoded.dictionary.to_pylist()
            columns = {path: job.result() for path, job in pending.items()}
            events = sorted_events(key_codes, times, columns, len(key_names), pool, threads)
        bad = [BadLine(row + 1, reason, _row_json(table, row, key_paths, time_path))
               for row, reason in sorted(bad_rows.items())]
        return DecodedEvents(key_names=key_names, events=events, bad=bad, lines=n)
    finally:
        if was_enabled:
            gc.enable()


class _NoPool:
    """A stand-in for a thread pool that runs each job at once, in this thread."""

    def __enter__(self) -> "_NoPool":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def submit(self, fn, *args) -> Future:
        job: Future = Future()
        try:
            job.set_result(fn(*args))
        except BaseException as exc:  # re-raised by result(), as a pool's job would
            job.set_exception(exc)
        return job

    def map(self, fn, items):
        return map(fn, items)


def sorted_events(key: np.ndarray, time: np.ndarray, columns: dict[Path_, CodedColumn], n_keys: int,
                  pool, parts: int) -> EventFrame:
    """`EventFrame.build(key, time, columns, n_keys)` (events in arrival order, every key 0..n_keys-1
    present), the keys cut into `parts` ranges of about equal events, each range sorted by `pool`.
    The ranges are consecutive keys, so the sorted ranges side by side are the sorted whole; each
    keeps arrival order within, so ties stay in arrival order as EventFrame.build keeps them."""
    from timeline.dsl.spans import Frame, sort_order

    n = len(key)
    if parts <= 1 or n == 0:
        return EventFrame.build(key, time, columns, n_keys=n_keys)
    ends = np.cumsum(np.bincount(key, minlength=n_keys))
    cuts = sorted({0, n_keys, *(int(np.searchsorted(ends, i * n // parts, side="right")) for i in range(1, parts))})
    base = int(time.min())
    out_key = np.empty(n, dtype=np.int64)
    out_time = np.empty(n, dtype=np.int64)
    out_codes = {p: np.empty(n, dtype=np.int32) for p in columns}

    def one(bounds: tuple[int, int]) -> None:
        k0, k1 = bounds
        e0, e1 = (int(ends[k0 - 1]) if k0 else 0), int(ends[k1 - 1])
        if k0 == 0:
            rows = np.flatnonzero(key < k1)
        elif k1 == n_keys:
            rows = np.flatnonzero(key >= k0)
        else:
            rows = np.flatnonzero((key >= k0) & (key < k1))
        order = rows[sort_order(key[rows], time[rows], base)]
        np.take(key, order, out=out_key[e0:e1])
        np.take(time, order, out=out_time[e0:e1])
        for p, c in columns.items():
            np.take(c.codes, order, out=out_codes[p][e0:e1])

    list(pool.map(one, [(k0, k1) for k0, k1 in zip(cuts[:-1], cuts[1:]) if k1 > k0]))
    origin = np.empty(n_keys, dtype=np.int64)
    first = np.ones(n, dtype=bool)
    first[1:] = out_key[1:] != out_key[:-1]
    origin[out_key[first]] = out_time[first]
    return EventFrame(Frame(origin), out_key, out_time,
                      {p: CodedColumn(out_codes[p], c.vocab) for p, c in columns.items()})


def _column(table: "pa.Table", path: Path_, from_json: bool):
    """The array at a dotted path (nested struct fields; for a typed table also a flat column
    named 'a.b'), or None when no row has it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not from_json and len(path) > 1 and ".".join(path) in table.column_names:
        return table.column(".".join(path)).combine_chunks()
    if path[0] not in table.column_names:
        return None
    arr = table.column(path[0]).combine_chunks()
    for part in path[1:]:
        if not pa.types.is_struct(arr.type):
            if from_json:
                raise NotExact(f"{'.'.join(path)}: a nested path through a value that is not an object")
            return None
        if arr.type.get_field_index(part) < 0:
            return None
        arr = pc.struct_field(arr, [part])
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


def _columns_hint(names: list[str]) -> str:
    shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
    return f" (its columns: {shown}; a dotted path reaches into struct columns)" if names else " (it has no columns)"


def _key_strings(col, path: Path_, n: int, from_json: bool, bad_rows: dict[int, str], col_names: list[str]):
    """A key column as strings; rows without a usable key go to bad_rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    name = ".".join(path)
    if col is None:
        if from_json:
            raise NotExact("no key")
        raise UsageError(f"no key column '{name}' in the events{_columns_hint(col_names)}")
    if pa.types.is_integer(col.type):
        strings = pc.cast(col, pa.string())
    elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        strings = col
    else:
        if from_json:
            raise NotExact(f"key of type {col.type}")
        values = col.to_pylist()
        for i, v in enumerate(values):
            try:
                parse_key(v, name)
            except EventError as exc:
                bad_rows.setdefault(i, exc.reason)
        return pa.array([None if i in bad_rows else str(v) for i, v in enumerate(values)], pa.string())
    if strings.null_count == 0 and (len(strings) == 0 or pc.min(pc.binary_length(strings)).as_py() > 0):
        return strings  # the common case, checked cheaply: every key there and not empty
    unusable = pc.or_kleene(pc.is_null(strings), pc.equal(pc.utf8_length(strings), 0)).fill_null(True)
    if pc.any(unusable).as_py():
        if from_json:
            raise NotExact("a line without a usable key")
        for i in np.flatnonzero(unusable.to_numpy(zero_copy_only=False)).tolist():
            try:
                parse_key(strings[i].as_py(), name)
            except EventError as exc:
                bad_rows.setdefault(i, exc.reason)
    return strings


def _times(col, path: Path_, n: int, from_json: bool, col_names: list[str]) -> tuple[np.ndarray, dict[int, str]]:
    """Event times in epoch ms, and {row: reason} for rows without a usable time."""
    import pyarrow as pa
    import pyarrow.compute as pc

    name = ".".join(path)
    if col is None:
        if from_json:
            raise NotExact("no time")
        raise UsageError(f"no time column '{name}' in the events{_columns_hint(col_names)}")
    typ = col.type
    if col.null_count and from_json:
        raise NotExact("a line without a time")
    if pa.types.is_integer(typ):
        times = np.asarray((col.fill_null(0) if col.null_count else col).to_numpy(zero_copy_only=False),
                           dtype=np.int64)
    elif pa.types.is_timestamp(typ):
        times = _timestamps_ms(col)
    elif pa.types.is_date(typ):
        times = pc.cast(pc.cast(col, pa.timestamp("ms")), pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    elif pa.types.is_string(typ) or pa.types.is_large_string(typ):
        times, unparsed = _string_times(col, name, from_json)
        if unparsed:
            return times, unparsed | _null_rows(col, name)
    elif pa.types.is_floating(typ):
        values = col.fill_null(0).to_numpy(zero_copy_only=False)
        whole = np.isfinite(values) & (values == np.floor(values))
        if not whole.all():
            if from_json:
                raise NotExact("a time that is not whole milliseconds")
        times = np.where(whole, values, 0).astype(np.int64)
    else:
        if from_json:
            raise NotExact(f"time of type {typ}")
        return _python_times(col.to_pylist(), name)
    bad = _null_rows(col, name)
    if pa.types.is_floating(typ):
        values = col.to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(~np.isnan(values) & (values != np.floor(values))).tolist():
            bad.setdefault(i, f"time at '{name}' must be whole milliseconds, got {values[i]!r}")
    if len(times) == 0 or MIN_TIME_MS <= int(times.min()) and int(times.max()) <= MAX_TIME_MS:
        return times, bad
    out_of_range = (times < MIN_TIME_MS) | (times > MAX_TIME_MS)
    if out_of_range.any():
        if from_json:
            raise NotExact("a time out of range")  # the exact decoder decides what such a line is
        for i in np.flatnonzero(out_of_range).tolist():
            bad.setdefault(i, time_range_problem(int(times[i]), name))
    return times, bad


def _null_rows(col, name: str) -> dict[int, str]:
    if not col.null_count:
        return {}
    return {i: f"no usable time at '{name}'" for i in np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False)).tolist()}


def _timestamps_ms(col) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    unit = col.type.unit
    raw = pc.cast(col, pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    if unit == "s":
        return raw * 1000
    if unit == "ms":
        return raw
    per_ms = 1000 if unit == "us" else 1_000_000
    return np.floor_divide(raw + per_ms // 2, per_ms)  # to the nearest ms, like parse_time


def _string_times(col, name: str, from_json: bool) -> tuple[np.ndarray, dict[int, str]]:
    """Digit strings are epoch ms; anything else is parsed (once per distinct string) as ISO-8601.
    Also {row: reason} for strings that are not times."""
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(col)
    vocab = encoded.dictionary.to_pylist()
    parsed = np.zeros(len(vocab) + 1, dtype=np.int64)  # the last slot: null rows
    reasons: dict[int, str] = {}
    for i, text in enumerate(vocab):
        try:
            parsed[i] = parse_time(text, name)
        except EventError as exc:
            if from_json:
                raise NotExact("a time that does not parse") from None
            reasons[i] = exc.reason
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    bad = {}
    if reasons:
        for row in np.flatnonzero(np.isin(codes, list(reasons))).tolist():
            bad[row] = reasons[int(codes[row])]
    return parsed[codes], bad


def _python_times(values: list, name: str) -> tuple[np.ndarray, dict[int, str]]:
    times = np.zeros(len(values), dtype=np.int64)
    bad: dict[int, str] = {}
    for i, v in enumerate(values):
        try:
            times[i] = parse_time(v.isoformat() if hasattr(v, "isoformat") else v, name)
        except EventError as exc:
            bad[i] = exc.reason
    return times, bad


def _coded(col, path: Path_, n: int, from_json: bool) -> CodedColumn:
    """A value column -> codes into a vocabulary (first-seen order, -1 = missing or null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if col is None or pa.types.is_null(col.type):
        return CodedColumn(np.full(n, -1, dtype=np.int32), [])
    typ = col.type
    scalar = (pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_integer(typ)
              or pa.types.is_boolean(typ) or pa.types.is_floating(typ))
    if pa.types.is_floating(typ) and from_json:
        values = col.to_numpy(zero_copy_only=False)
        if (values == np.floor(values)).any():
            # JSON's 1 and 1.0 are both floats here; the exact decoder keeps them apart.
            raise NotExact(f"{'.'.join(path)}: whole numbers in a column of floats")
    if not scalar:
        if from_json:
            raise NotExact(f"{'.'.join(path)}: values of type {typ}")
        return ValueEncoder().encode(col.to_pylist())
    encoded = pc.dictionary_encode(col)
    indices = encoded.indices.fill_null(-1) if encoded.indices.null_count else encoded.indices
    codes = np.asarray(indices.to_numpy(zero_copy_only=False), dtype=np.int32)
    vocab = encoded.dictionary.to_pylist()
    if pa.types.is_floating(typ) and len(set(vocab)) < len(vocab):
        # 0.0 and -0.0 (or NaNs) are one value to Python's equality: merge them.
        merged = ValueEncoder()
        remap = np.array([merged.code(v) for v in vocab] + [-1], dtype=np.int32)
        return CodedColumn(remap[codes], merged.vocab)
    return CodedColumn(codes, vocab)


def _row_json(table: "pa.Table", row: int, key_paths, time_path) -> bytes:
    """A bad row as JSON, for the dead-letter file: its key and time fields."""
    record = table.slice(row, 1).to_pylist()[0]
    wanted = {p[0] for p in (*key_paths, time_path)}
    return msgspec.json.encode({k: v for k, v in record.items() if k in wanted}, enc_hook=str)


# --- files ---------------------------------------------------------------------

@dataclass(frozen=True)
class EventsFormat:
    """What an events file is: jsonl, parquet or arrow, and how a JSON-lines file is compressed."""

    kind: str
    compression: str | None = None

    @classmethod
    def of(cls, name: str) -> "EventsFormat":
        suffixes = [s.lower() for s in Path(name).suffixes]
        compression = COMPRESSION_SUFFIXES.get(suffixes[-1]) if suffixes else None
        if compression is not None:
            suffixes = suffixes[:-1]
        kind = EVENT_SUFFIXES.get(suffixes[-1], "jsonl") if suffixes else "jsonl"
        if compression is not None and kind != "jsonl":
            raise UsageError(f"{name}: only JSON lines can be read compressed (.jsonl.gz, .jsonl.zst); "
                             f"{kind} files carry their own compression")
        return cls(kind, compression)


def read_events_file(name: str, key_path, time_path: Path_, paths: Sequence[Path_],
                     data: bytes | None = None) -> DecodedEvents:
    """Events from a file by its suffix: JSON lines (optionally .gz / .zst), Parquet, Arrow IPC.
    `data` is the file's bytes when already read (stdin)."""
    fmt = EventsFormat.of(name)
    if fmt.kind == "jsonl":
        if data is None and fmt.compression is None:
            return read_jsonl_file(Path(name), key_path, time_path, paths)
        raw = data if data is not None else _read_bytes(name)
        if fmt.compression is not None:
            raw = _decompress(raw, fmt.compression, name)
        return read_jsonl(raw, key_path, time_path, paths)
    required = [p[0] for p in (*key_paths_of(key_path), time_path)]
    table = read_table_file(name, fmt.kind, [*required, *(p[0] for p in paths)], required=required)
    return table_events(table, key_path, time_path, paths)


def read_table_file(name: str, kind: str, columns: Sequence[str] | None = None,
                    required: Sequence[str] = ()) -> "pa.Table":
    """A Parquet or Arrow IPC (file or stream) file as a table, reading only the named
    top-level columns that are there; a `required` column that is not there is a UsageError."""
    import pyarrow as pa

    path = Path(name)
    if not path.exists():
        raise UsageError(f"events file not found: {path}")
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
            _check_required(required, schema.names, path)
            return pq.read_table(path, columns=_present(columns, schema.names))
        try:
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_file(source).read_all()
        except pa.ArrowInvalid:
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_stream(source).read_all()
        _check_required(required, table.column_names, path)
        return table.select(_present(columns, table.column_names))
    except OSError as exc:
        if type(exc).__module__.startswith("pyarrow") or isinstance(exc, pa.ArrowException):
            raise UsageError(f"cannot read {path} as {kind}: {exc}") from None
        raise UsageError(f"cannot read events file {path}: {exc.strerror or exc}") from None
    except pa.ArrowException as exc:
        raise UsageError(f"cannot read {path} as {kind}: {exc}") from None


def _check_required(required: Sequence[str], names: list[str], path: Path) -> None:
    for name in required:
        if name not in names and not any(n.split(".")[0] == name for n in names):
            raise UsageError(f"{path}: no column '{name}'{_columns_hint(names)}")


def _present(columns: Sequence[str] | None, names: list[str]) -> list[str]:
    if columns is None:
        return list(names)
    wanted = set(columns)
    # flat columns named like a dotted path ('page.page_id') are wanted too
    return [n for n in names if n in wanted or n.split(".")[0] in wanted]


def _read_bytes(name: str) -> bytes:
    path = Path(name)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"events file not found: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read events file {path}: {exc.strerror}") from None


def _decompress(data: bytes, codec: str, name: str) -> bytes:
    import pyarrow as pa

    try:
        with pa.CompressedInputStream(pa.BufferReader(data), codec) as stream:
            return stream.read()
    except (OSError, pa.ArrowException) as exc:
        raise UsageError(f"{name}: not a valid {codec} stream: {exc}") from None


# --- spans out -----------------------------------------------------------------

def spans_table(spans: SpanSet, key_names: list[str], node: str, frm: int | None = None,
                to: int | None = None) -> "pa.Table":
    """A root span set as a table: key, node, start, end (null = open), value, slope (null
    unless numeric), clipped to [frm, to) like `timeline eval --from/--to`. State values of
    mixed kinds are written as JSON text."""
    import pyarrow as pa

    never = np.iinfo(np.int64).max
    start = spans.start
    end = next_start(spans.key, start)
    keep = np.ones(len(start), dtype=bool)
    if frm is not None:
        keep &= end > frm
    if to is not None:
        keep &= start < to
    key, start, end = spans.key[keep], start[keep], end[keep]
    if frm is not None:
        late_start = np.maximum(start, frm)
    else:
        late_start = start
    if to is not None:
        end = np.minimum(end, to)
    open_end = end == never
    if isinstance(spans, NumericSpans):
        v0, slope = spans.v0[keep], spans.slope[keep]
        v0 = v0 + slope * (late_start - start)  # the value where a clipped span now starts
        unknown = np.isnan(v0)
        value = _numbers_array(v0)
        slope_arr = pa.array(np.where(unknown, 0.0, slope), pa.float64(), mask=unknown)
    else:
        values = spans.python_values()
        value = python_values_array([v for v, k in zip(values, keep.tolist()) if k])
        slope_arr = pa.nulls(len(key), pa.float64())
    names = pa.array(key_names, pa.string())
    return pa.table({
        "key": pa.DictionaryArray.from_arrays(pa.array(key.astype(np.int32)), names).dictionary_decode(),
        "node": pa.array(np.full(len(key), node, dtype=object), pa.string()),
        "start": pa.array(late_start, pa.int64()),
        "end": pa.array(end, pa.int64(), mask=open_end),
        "value": value,
        "slope": slope_arr,
    })


def _numbers_array(values: np.ndarray) -> "pa.Array":
    """Numeric span values: int64 when all are whole, float64 otherwise; NaN = null (unknown)."""
    import pyarrow as pa

    nan = np.isnan(values)
    finite = values[~nan]
    if len(finite) == 0 or ((finite == np.floor(finite)) & (np.abs(finite) < 2**62)).all():
        return pa.array(np.where(nan, 0, values).astype(np.int64), pa.int64(), mask=nan)
    return pa.array(values, pa.float64(), mask=nan)


def python_values_array(values: list[Any]) -> "pa.Array":
    """Values of one kind as that Arrow type; mixed kinds (or objects) as JSON text."""
    import pyarrow as pa

    kinds = {type(v) for v in values if v is not None}
    if kinds <= {bool}:
        return pa.array(values, pa.bool_())
    if kinds <= {str}:
        return pa.array(values, pa.string())
    if kinds <= {int}:
        try:
            return pa.array(values, pa.int64())
        except (OverflowError, pa.ArrowException):
            pass
    if kinds <= {int, float}:
        return pa.array(numbers_to_python(np.array([np.nan if v is None else v for v in values], dtype=float)),
                        pa.float64())
    return pa.array([None if v is None else msgspec.json.encode(v).decode() for v in values], pa.string())


def values_table(key_names: list[str], node: str, at: int, values: list[Any]) -> "pa.Table":
    """Each key's value at time `at`: key, node, time, value."""
    import pyarrow as pa

    n = len(key_names)
    return pa.table({"key": pa.array(key_names, pa.string()), "node": pa.array([node] * n, pa.string()),
                     "time": pa.array([at] * n, pa.int64()), "value": python_values_array(values)})


def write_table(table: "pa.Table", name: str) -> None:
    """Write a table as Parquet or Arrow IPC, by the file's suffix."""
    import pyarrow as pa

    kind = SPAN_OUTPUT_SUFFIXES.get(Path(name).suffix.lower())
    if kind not in ("parquet", "arrow"):
        raise UsageError(f"{name}: write spans to a .parquet or .arrow (.feather) file, or leave out --output "
                         "for JSON on stdout")
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, name)
        else:
            import pyarrow.feather as feather

            feather.write_feather(table, name, compression="uncompressed")
    except (OSError, pa.ArrowException) as exc:
        raise UsageError(f"cannot write {name}: {exc}") from None


def output_kind(name: str) -> str:
    kind = SPAN_OUTPUT_SUFFIXES.get(Path(name).suffix.lower())
    if kind is None:
        raise UsageError(f"--output {name}: give a .parquet, .arrow (.feather) or .json file")
    return kind


# --- the JSON answer, rendered by Arrow's string kernels ----------------------

def answer_json(plan, decoded: DecodedEvents, at: int | None, frm: int | None, to: int | None,
                threads: int | None = None) -> bytes:
    """`timeline eval`'s JSON answer as bytes: exactly msgspec.json.encode(run_eval(...)), with
    whole timelines rendered by Arrow's string kernels instead of one Python object per span.
    Whole timelines of many events are evaluated and rendered in `threads` key ranges at once
    (default: one per core), see `timelines_json_threaded`."""
    from timeline.dsl.batch import run_eval

    if plan.aggregation is None and at is None and frm is None and to is None and len(decoded.events):
        rendered = timelines_json_threaded(plan, decoded, threads)
        if rendered is not None:
            return rendered
    return msgspec.json.encode(run_eval(plan, decoded, at, frm, to))


def timelines_json_threaded(plan, decoded: DecodedEvents, threads: int | None = None) -> bytes | None:
    """Every key's whole root timeline as `timelines_json_bytes` renders it, the keys cut into
    ranges of about equal events, each range evaluated and rendered in a thread of its own. Keys
    are independent and each range keeps the whole frame's base, so the pieces, in key order, are
    the whole answer byte for byte; numpy's and Arrow's kernels release the GIL, so the ranges run
    on as many cores. None as for `timelines_json_bytes`."""
    from timeline.dsl.batch import evaluate_root

    events, names = decoded.events, decoded.key_names
    ranges = key_ranges(events.key, len(names), _thread_count(threads, len(events)))
    if len(ranges) == 1:
        return timelines_json_bytes(evaluate_root(plan, events), names)

    def one(bounds: tuple[int, int, int, int]) -> bytes | None:
        k0, k1, e0, e1 = bounds
        part = key_range_frame(events, k0, k1, e0, e1)
        return timelines_json_bytes(evaluate_root(plan, part), names[k0:k1], braces=False)

    with ThreadPoolExecutor(len(ranges), thread_name_prefix="timeline-eval") as pool:
        pieces = list(pool.map(one, ranges))
    if any(p is None for p in pieces):
        return None
    return b"{" + b",".join(pieces) + b"}"  # type: ignore[arg-type]


# Key ranges evaluated at once: one a core (at most this many), each of at least this many events.
MAX_EVAL_THREADS = 8
MIN_EVENTS_PER_THREAD = 100_000


def _thread_count(threads: int | None, n_events: int) -> int:
    if threads is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = min(cores or 1, MAX_EVAL_THREADS)
    return max(1, min(threads, n_events // max(1, MIN_EVENTS_PER_THREAD)))


def key_ranges(key: np.ndarray, n_keys: int, parts: int) -> list[tuple[int, int, int, int]]:
    """(first key, end key, first event, end event) of up to `parts` ranges of consecutive keys
    with about equal numbers of events (`key`: sorted codes, every key 0..n_keys-1 present)."""
    n = len(key)
    cuts = {0, n_keys}
    for i in range(1, parts):
        cuts.add(int(key[min(n - 1, i * n // parts)]))
    keys = sorted(cuts)
    starts = np.searchsorted(key, keys, side="left").tolist()
    return [(k0, k1, e0, e1) for k0, k1, e0, e1 in zip(keys[:-1], keys[1:], starts[:-1], starts[1:]) if k1 > k0]


def key_range_frame(events: EventFrame, k0: int, k1: int, e0: int, e1: int) -> EventFrame:
    """Keys k0..k1-1 (events e0..e1-1) of a sorted frame as a frame of their own (keys from 0),
    with the whole frame's base; the columns are views, not copies."""
    from timeline.dsl.spans import Frame

    frame = Frame(events.frame.origin[k0:k1], first=events.frame.base)
    key = events.key[e0:e1] - k0 if k0 else events.key[e0:e1]
    columns = {p: CodedColumn(c.codes[e0:e1], c.vocab) for p, c in events.columns.items()}
    return EventFrame(frame, key, events.time[e0:e1], columns)


def timelines_json_bytes(spans: SpanSet, key_names: list[str], braces: bool = True) -> bytes | None:
    """msgspec.json.encode(results.timelines_json(spans, key_names)), built column-wise; None when a
    numeric value is not whole (floats are left to msgspec's formatting). Without `braces`, the
    object's members only."""
    import pyarrow as pa
    import pyarrow.compute as pc

    never = np.iinfo(np.int64).max
    end = next_start(spans.key, spans.start)
    text = pa.large_string()  # 64-bit offsets: an answer may pass 2 GB
    start_text = pc.cast(pa.array(spans.start, pa.int64()), text)
    end_text = pc.cast(pa.array(end, pa.int64(), mask=end == never), text).fill_null("null")
    if isinstance(spans, NumericSpans):
        unknown = np.isnan(spans.v0)
        value_text = _whole_numbers_text(spans.v0)
        slope_text = _whole_numbers_text(np.where(unknown, np.nan, spans.slope))
        if value_text is None or slope_text is None:
            return None
        rows = _concat(text, '{"start":', start_text, ',"end":', end_text, ',"value":', value_text,
                       ',"slope":', slope_text, "}")
    else:
        if isinstance(spans, StateSpans):
            table = [msgspec.json.encode(v).decode() for v in spans.vocab] + ["null"]
            index = np.where(spans.code < 0, len(spans.vocab), spans.code)
        else:  # BoolSpans: Kleene FALSE, UNKNOWN, TRUE
            table, index = ["false", "null", "true"], spans.value
        value_text = pa.array(table, text).take(pa.array(index.astype(np.int64)))
        rows = _concat(text, '{"start":', start_text, ',"end":', end_text, ',"value":', value_text, "}")
    offsets = key_offsets(spans.key, len(key_names)).astype(np.int64)
    per_key = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(offsets), rows), pa.scalar(",", text))
    entries = _concat(text, _json_strings(key_names, text), ":[", per_key, "]")
    whole = pc.binary_join(pa.LargeListArray.from_arrays(pa.array([0, len(entries)], pa.int64()), entries),
                           pa.scalar(",", text))
    members = whole[0].as_buffer().to_pybytes()
    return b"{" + members + b"}" if braces else members


def _json_strings(strings: list[str], text) -> "pa.Array":
    """Strings as msgspec writes them in JSON: quoted; '"', '\\' and control characters escaped
    (msgspec escapes nothing else), so strings without those are only quoted."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(strings, text)
    if pc.any(pc.match_substring_regex(arr, r'[\x00-\x1f"\\]')).as_py():
        return pa.array([msgspec.json.encode(k).decode() for k in strings], text)
    return _concat(text, '"', arr, '"')


def _concat(text, *parts):
    """Element-wise concatenation of string arrays and constant strings."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(*(pa.scalar(p, text) if isinstance(p, str) else p for p in parts),
                                       pa.scalar("", text))


def _whole_numbers_text(values: np.ndarray):
    """Whole numbers as JSON text ('null' for NaN); None if any is not whole (as numbers_to_python)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    nan = np.isnan(values)
    whole = ~nan & (values == np.floor(values)) & (np.abs(values) < 2**62)
    if not (whole | nan).all():
        return None
    ints = pa.array(np.where(nan, 0, values).astype(np.int64), pa.int64(), mask=nan)
    return pc.cast(ints, pa.large_string()).fill_null("null")
