"""JSON lines -> EventFrame, fast, with every bad line accounted for.

The fast path decodes large chunks with msgspec into a struct type built from
the plan's field paths (unknown fields are skipped in C). A chunk with any
problem is redone line by line so each bad line gets its number and reason.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Iterable, Sequence, Union

import msgspec
import numpy as np

from timeline.dsl.errors import EventError
from timeline.dsl.events import (
    CodedColumn,
    EventFrame,
    ValueEncoder,
    get_path,
    join_key_parts,
    json_depth,
    parse_key,
    parse_time,
)
from timeline.dsl.limits import MAX_EVENT_BYTES, MAX_EVENT_DEPTH, MAX_TIME_MS, MIN_TIME_MS

CHUNK_BYTES = 4 << 20


@dataclass(frozen=True)
class BadLine:
    """An input line that is not a usable event, with why."""

    line: int
    reason: str
    raw: bytes


@dataclass
class DecodedEvents:
    key_names: list[str]
    events: EventFrame
    bad: list[BadLine] = field(default_factory=list)
    lines: int = 0


class _PathTree:
    """The nested struct type that reads only the fields a plan needs."""

    def __init__(self, paths: Sequence[tuple[str, ...]], key_paths: Sequence[tuple[str, ...]],
                 time_path: tuple[str, ...]):
        tree: dict = {}
        leaves: dict[tuple[str, ...], Any] = {p: Any for p in paths}
        for key_path in key_paths:
            leaves[key_path] = Union[str, int, None]
        leaves[time_path] = Union[int, str, None]
        for path, typ in leaves.items():
            node = tree
            for part in path[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    break
            else:
                if path[-1] in node and isinstance(node[path[-1]], dict):
                    node[path[-1]] = Any  # both a leaf and a parent: read it whole
                else:
                    node[path[-1]] = typ if path[-1] not in node else Any
        self.counter = 0
        self.type = self._build(tree)

    def _build(self, tree: dict):
        fields, rename = [], {}
        for i, (name, sub) in enumerate(tree.items()):
            attr = f"f{i}"
            rename[attr] = name
            typ = self._build(sub) if isinstance(sub, dict) else sub
            fields.append((attr, Union[typ, None] if isinstance(sub, dict) else typ, None))
        self.counter += 1
        return msgspec.defstruct(f"Event{self.counter}", fields, rename=rename, forbid_unknown_fields=False,
                                 gc=False)  # a million small structs: keep them out of the cycle collector


def _extract(rows: list, path: tuple[str, ...]) -> list:
    """Values at `path` of decoded rows (structs on the fast path, dicts otherwise)."""
    cur = rows
    for name in path:
        nxt = []
        append = nxt.append
        for o in cur:
            if o is None:
                append(None)
            elif isinstance(o, msgspec.Struct):
                append(_struct_get(o, name))
            elif isinstance(o, dict):
                append(o.get(name))
            else:
                append(None)
        cur = nxt
    return cur


def _struct_get(obj: msgspec.Struct, name: str) -> Any:
    for attr, json_name in zip(obj.__struct_fields__, obj.__struct_encode_fields__):
        if json_name == name:
            return getattr(obj, attr)
    return None


def _fast_extract(rows: list, path: tuple[str, ...], struct_type) -> list:
    """Attribute walk for the common case of all-struct rows."""
    attrs = []
    typ = struct_type
    for name in path:
        if typ is None or not hasattr(typ, "__struct_encode_fields__"):
            return _extract(rows, path)
        idx = typ.__struct_encode_fields__.index(name)
        attr = typ.__struct_fields__[idx]
        attrs.append(attr)
        sub = typ.__annotations__.get(attr) if hasattr(typ, "__annotations__") else None
        typ = _struct_in(sub)
    if len(attrs) == 1:
        return list(map(attrgetter(attrs[0]), rows))
    out = rows
    for a in attrs:
        get = attrgetter(a)
        out = [None if o is None else get(o) for o in out]
    return out


def _struct_in(typ):
    args = getattr(typ, "__args__", None) or (typ,)
    for a in args:
        if isinstance(a, type) and issubclass(a, msgspec.Struct):
            return a
    return None


def decode_jsonl(
    data: bytes,
    key_path: tuple[str, ...] | tuple[tuple[str, ...], ...],
    time_path: tuple[str, ...],
    paths: Sequence[tuple[str, ...]],
) -> DecodedEvents:
    """Decode newline-delimited JSON events into an EventFrame.

    `key_path` is one dotted path as a tuple, or a tuple of them for a composite
    key (its parts joined by `events.join_key_parts`). Lines past the event
    limits (size, nesting, time range) are bad lines, like unparsable ones."""
    was_enabled = gc.isenabled()
    gc.disable()  # millions of new objects, no cycles: skip the collector's passes
    try:
        return _decode_jsonl(data, key_path, time_path, paths)
    finally:
        if was_enabled:
            gc.enable()


def _decode_jsonl(data, key_path, time_path, paths) -> DecodedEvents:
    key_paths = (key_path,) if key_path and isinstance(key_path[0], str) else tuple(key_path)
    tree = _PathTree(paths, key_paths, time_path)
    chunk_decoder = msgspec.json.Decoder(tree.type)
    any_decoder = msgspec.json.Decoder()
    keys: list = []
    times: list[np.ndarray] = []
    values: dict[tuple[str, ...], list] = {p: [] for p in paths}
    bad: list[BadLine] = []
    time_s = ".".join(time_path)
    for chunk_start, chunk in _chunks(data):
        fast = _decode_chunk_fast(chunk, chunk_decoder, tree.type, key_paths, time_path)
        if fast is not None:
            rows, c_keys, c_times = fast
            for path in paths:
                values[path].extend(_fast_extract(rows, path, tree.type))
            keys.extend(c_keys)
            times.append(c_times)
            continue
        # The careful path: line by line, so each bad line gets its number.
        first_line = data.count(b"\n", 0, chunk_start) + 1
        rows, c_times = [], []
        for offset, raw in enumerate(chunk.split(b"\n")):
            if not raw.strip():
                continue
            try:
                row, key, t = _decode_line(raw, chunk_decoder, any_decoder, key_paths, time_path, time_s)
            except EventError as exc:
                bad.append(BadLine(first_line + offset, exc.reason, raw))
                continue
            rows.append(row)
            keys.append(key)
            c_times.append(t)
        for path in paths:
            values[path].extend(_extract(rows, path))
        times.append(np.array(c_times, dtype=np.int64))
    time = np.concatenate(times) if times else np.zeros(0, dtype=np.int64)
    key_names, key_codes = _factorize_keys(keys)
    columns = {path: encode_values(values[path]) for path in paths}
    events = EventFrame.build(key_codes, time, columns, n_keys=len(key_names))
    lines = data.count(b"\n") + (0 if not data or data.endswith(b"\n") else 1)
    return DecodedEvents(key_names=key_names, events=events, bad=bad, lines=lines)


def _chunks(data: bytes) -> Iterable[tuple[int, bytes]]:
    start = 0
    n = len(data)
    while start < n:
        end = min(n, start + CHUNK_BYTES)
        if end < n:
            nl = data.find(b"\n", end)
            end = n if nl < 0 else nl + 1
        yield start, data[start:end]
        start = end


def _may_break_limits(chunk: bytes) -> bool:
    """A cheap vectorised look for lines past the size or nesting limit. Brackets
    are counted without telling strings apart, so it may send a harmless chunk
    to the careful path (which checks each line exactly), never the reverse for
    size; nesting the decoder can read is harmless either way."""
    data = np.frombuffer(chunk, dtype=np.uint8)
    newlines = np.flatnonzero(data == 10)
    bounds = np.concatenate(([-1], newlines, [len(data)]))
    if len(bounds) and int(np.diff(bounds).max()) - 1 > MAX_EVENT_BYTES:
        return True
    step = (data == 123).astype(np.int8) + (data == 91) - (data == 125) - (data == 93)
    return bool(len(step)) and int(np.cumsum(step, dtype=np.int64).max()) > MAX_EVENT_DEPTH


def _decode_chunk_fast(chunk: bytes, decoder, struct_type, key_paths, time_path):
    """All-or-nothing decode of a chunk; None sends the chunk to the careful path."""
    if _may_break_limits(chunk):
        return None
    try:
        rows = decoder.decode_lines(chunk)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    parts = [_fast_extract(rows, p, struct_type) for p in key_paths]
    raw_times = _fast_extract(rows, time_path, struct_type)
    if any(None in part or "" in part for part in parts) or None in raw_times:
        return None
    keys = parts[0] if len(parts) == 1 else [join_key_parts([str(k) for k in ks]) for ks in zip(*parts)]
    try:
        times = np.array(raw_times, dtype=np.int64)
    except (ValueError, TypeError, OverflowError):
        try:
            times = np.array([parse_time(t) for t in raw_times], dtype=np.int64)
        except EventError:
            return None
    if len(times) and (int(times.min()) < MIN_TIME_MS or int(times.max()) > MAX_TIME_MS):
        return None
    return rows, keys, times


_TOO_DEEP = f"nested more than {MAX_EVENT_DEPTH} levels deep (the limit)"


def _decode_line(raw: bytes, decoder, any_decoder, key_paths, time_path, time_s):
    if len(raw) > MAX_EVENT_BYTES:
        raise EventError(f"the event is {len(raw):,} bytes; the limit is {MAX_EVENT_BYTES:,}")
    try:
        whole = any_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise EventError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise EventError(_TOO_DEEP) from None
    if not isinstance(whole, dict):
        raise EventError(f"not a JSON object: {type(whole).__name__}")
    if json_depth(whole) > MAX_EVENT_DEPTH:
        raise EventError(_TOO_DEEP)
    try:
        row = decoder.decode(raw)
        parts = [_fast_extract([row], p, type(row))[0] for p in key_paths]
        t = _fast_extract([row], time_path, type(row))[0]
    except msgspec.ValidationError:
        row = whole
        parts = [get_path(row, p) for p in key_paths]
        t = get_path(row, time_path)
    keys = [parse_key(part, ".".join(p)) for part, p in zip(parts, key_paths)]
    return row, join_key_parts(keys), parse_time(t, time_s)


def _factorize_keys(keys: list) -> tuple[list[str], np.ndarray]:
    """Codes in first-seen order; 7 and "7" are one key (keys are reported as strings)."""
    index = _first_seen_index(keys)
    codes = np.fromiter(map(index.__getitem__, keys), dtype=np.int64, count=len(keys))
    names = [k if isinstance(k, str) else str(k) for k in index]
    if len(set(names)) == len(names):
        return names, codes
    # Some int key and str key print the same: merge them.
    by_name: dict[str, int] = {}
    remap = np.array([by_name.setdefault(nm, len(by_name)) for nm in names], dtype=np.int64)
    return list(by_name), remap[codes]


def _first_seen_index(values: list) -> dict:
    """{value: code} in first-seen order, built in C by dict.fromkeys."""
    index = dict.fromkeys(values)
    for code, value in enumerate(index):
        index[value] = code
    return index


def encode_values(values: list) -> CodedColumn:
    """Dictionary-encode a column; kind-aware so 1 == 1.0 but True, 1 and "1" differ."""
    try:
        index = _first_seen_index(values)
        codes = np.fromiter(map(index.__getitem__, values), dtype=np.int32, count=len(values))
    except TypeError:  # unhashable values (objects, arrays)
        return _encode_values_by_kind(values)
    vocab = list(index)
    kinds = {type(v) for v in vocab}
    # dict.fromkeys folds True into 1 and False into 0: look for booleans among
    # the values themselves whenever such a key is there.
    maybe_bool = (True in index or False in index) and any(v.__class__ is bool for v in values)
    if maybe_bool or not kinds <= {str, int, float, type(None)}:
        # A dict confuses True with 1 (and 1.0): tell kinds apart the slow way.
        return _encode_values_by_kind(values)
    if None in index:
        none_code = index[None]
        vocab.pop(none_code)
        shift = np.arange(len(vocab) + 1, dtype=np.int32)
        shift[none_code + 1:] -= 1
        shift[none_code] = -1
        codes = shift[codes]
    return CodedColumn(codes, vocab)


def _encode_values_by_kind(values: list) -> CodedColumn:
    return ValueEncoder().encode(values)
