"""Events as sorted, dictionary-encoded columns, and event predicates on them.

An EventFrame holds the events of many keys sorted by (key, time, arrival):
this one sort is all the ordering the operators need. A column is stored as
int32 codes into a vocabulary of distinct values (-1 = field missing or
null), so a predicate or a comparison is computed once per distinct value
and then gathered with one numpy index.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from timeline.dsl import ast as A
from timeline.dsl.errors import EventError
from timeline.dsl.limits import MAX_EVENT_DEPTH, MAX_TIME_MS, MIN_TIME_MS
from timeline.dsl.spans import FALSE, TRUE, UNKNOWN, Frame, sort_order

MISSING = object()


def value_identity(value: Any) -> tuple:
    """Values are equal when they are the same kind and equal: 1 == 1.0, 1 != True, 1 != "1"."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    return ("j", repr(value))  # objects/arrays: comparable only for equality with themselves


def same_value(a: Any, b: Any) -> bool:
    return value_identity(a) == value_identity(b)


def compare_values(a: Any, op: str, b: Any) -> int:
    """Kleene result of `a op b` for scalar event values (None = unknown)."""
    if a is None or b is None:
        return UNKNOWN
    ka, kb = value_identity(a)[0], value_identity(b)[0]
    if op == "==":
        return TRUE if (ka == kb and a == b) else FALSE
    if op == "!=":
        return FALSE if (ka == kb and a == b) else TRUE
    if ka != kb or ka not in ("n", "s"):
        return UNKNOWN  # ordering across kinds (or of booleans) is undefined
    if ka == "n" and (isinstance(a, float) and math.isnan(a) or isinstance(b, float) and math.isnan(b)):
        return UNKNOWN
    result = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    return TRUE if result else FALSE


@dataclass
class CodedColumn:
    """A column as codes into a vocabulary of distinct values (-1 = missing)."""

    codes: np.ndarray                 # int32
    vocab: list[Any]

    def take(self, index: np.ndarray) -> "CodedColumn":
        return CodedColumn(self.codes[index], self.vocab)


class ValueEncoder:
    """Assigns codes to values in first-seen order, kind-aware."""

    def __init__(self) -> None:
        self.index: dict[tuple, int] = {}
        # Per kind for the common scalars (the kind is the table; 1 and 1.0 share one):
        # the same codes as value_identity's, without building a tuple per value.
        self._kinds: dict[type, dict[Any, int]] = {str: {}, bool: {}}
        self._kinds[int] = self._kinds[float] = {}
        self.vocab: list[Any] = []

    def code(self, value: Any) -> int:
        if value is None or value is MISSING:
            return -1
        table = self._kinds.get(type(value))
        if table is None:
            table, value_key = self.index, value_identity(value)
        else:
            value_key = value
        code = table.get(value_key)
        if code is None:
            code = len(self.vocab)
            table[value_key] = code
            self.vocab.append(value)
        return code

    def encode(self, values: Iterable[Any]) -> CodedColumn:
        codes = np.fromiter((self.code(v) for v in values), dtype=np.int32)
        return CodedColumn(codes, list(self.vocab))


def encode_column(values: Sequence[Any]) -> CodedColumn:
    return ValueEncoder().encode(values)


@dataclass
class EventFrame:
    """Events of keys 0..K-1 sorted by (key, time, arrival)."""

    frame: Frame
    key: np.ndarray                                  # int64
    time: np.ndarray                                 # int64
    columns: dict[tuple[str, ...], CodedColumn] = field(default_factory=dict)

    @classmethod
    def build(cls, key: np.ndarray, time: np.ndarray, columns: dict[tuple[str, ...], CodedColumn],
              n_keys: int | None = None) -> "EventFrame":
        """Sort events given in arrival order; equal times keep arrival order."""
        key = np.asarray(key, dtype=np.int64)
        time = np.asarray(time, dtype=np.int64)
        n = int(key.max()) + 1 if len(key) else 0
        n_keys = n if n_keys is None else n_keys
        if len(key) == 0:
            return cls(Frame(np.zeros(n_keys, dtype=np.int64)), key, time, columns)
        base = int(time.min())
        order = sort_order(key, time, base)
        if np.all(order[1:] > order[:-1]):
            order = None  # already sorted: skip the gathers
        if order is not None:
            key, time = key[order], time[order]
            columns = {p: c.take(order) for p, c in columns.items()}
        origin = np.full(n_keys, np.iinfo(np.int64).max, dtype=np.int64)
        first = np.ones(len(key), dtype=bool)
        first[1:] = key[1:] != key[:-1]
        origin[key[first]] = time[first]
        if (origin == np.iinfo(np.int64).max).any():
            raise ValueError("every key in an EventFrame needs at least one event")
        return cls(Frame(origin), key, time, columns)

    def __len__(self) -> int:
        return len(self.key)

    def column(self, path: tuple[str, ...]) -> CodedColumn:
        try:
            return self.columns[path]
        except KeyError:
            # A field no event has: every event misses it.
            return CodedColumn(np.full(len(self.key), -1, dtype=np.int32), [])


# --- event predicates ----------------------------------------------------------

def evaluate_predicate(pred: A.Node, events: EventFrame) -> np.ndarray:
    """Kleene value (int8) of a predicate on every event; a missing field is unknown."""
    if isinstance(pred, A.And):
        out = evaluate_predicate(pred.operands[0], events)
        for o in pred.operands[1:]:
            out = np.minimum(out, evaluate_predicate(o, events))
        return out
    if isinstance(pred, A.Or):
        out = evaluate_predicate(pred.operands[0], events)
        for o in pred.operands[1:]:
            out = np.maximum(out, evaluate_predicate(o, events))
        return out
    if isinstance(pred, A.Not):
        return (2 - evaluate_predicate(pred.operand, events)).astype(np.int8)
    if isinstance(pred, A.Compare):
        left = events.column(pred.left.path)  # type: ignore[attr-defined]
        if isinstance(pred.right, A.Column):
            return _compare_columns(left, pred.op, events.column(pred.right.path))
        table = np.array([compare_values(v, pred.op, pred.right.value) for v in left.vocab] + [UNKNOWN],
                         dtype=np.int8)
        return table[left.codes]
    raise NotImplementedError(f"no predicate rule for {type(pred).__name__}")


def _compare_columns(left: CodedColumn, op: str, right: CodedColumn) -> np.ndarray:
    """Field against field of the same event: evaluated once per distinct pair."""
    width = len(right.vocab) + 1
    pair = (left.codes.astype(np.int64) + 1) * width + (right.codes.astype(np.int64) + 1)
    uniq, inverse = np.unique(pair, return_inverse=True)
    lv = [None] + list(left.vocab)
    rv = [None] + list(right.vocab)
    table = np.array([compare_values(lv[p // width], op, rv[p % width]) for p in uniq.tolist()], dtype=np.int8)
    return table[inverse.reshape(-1)]


# --- reading key, time and fields out of JSON events -------------------------

def get_path(event: Any, path: Sequence[str]) -> Any:
    """Follow a dotted path into nested objects; MISSING when any step is absent."""
    cur = event
    for part in path:
        if isinstance(cur, dict):
            cur = cur.get(part, MISSING)
            if cur is MISSING:
                return MISSING
        else:
            return MISSING
    return cur


def json_depth(value: Any, limit: int = MAX_EVENT_DEPTH) -> int:
    """Nesting depth of decoded JSON (a scalar is 0), walked with an explicit
    stack; stops counting once past `limit`."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth) for child in children)
    return deepest


def field_value(event: Any, path: Sequence[str]) -> Any:
    value = get_path(event, path)
    return None if value is MISSING else value


def parse_time(value: Any, path: str = "time") -> int:
    """An event time in epoch ms: an integer, or an ISO-8601 string, within the
    documented range (MIN_TIME_MS..MAX_TIME_MS, years 1..9999)."""
    t = _parse_time(value, path)
    problem = time_range_problem(t, path, value)
    if problem:
        raise EventError(problem)
    return t


def time_range_problem(t: int, path: str = "time", value: Any = None) -> str | None:
    """The one message for a time outside the documented range (None when inside it)."""
    if MIN_TIME_MS <= t <= MAX_TIME_MS:
        return None
    return (f"time at '{path}' is out of range: {t if value is None else value!r}; times are epoch ms from "
            f"{MIN_TIME_MS} to {MAX_TIME_MS} (years 1 to 9999)")


def _parse_time(value: Any, path: str) -> int:
    if isinstance(value, bool) or value is None or value is MISSING:
        raise EventError(f"no usable time at '{path}'" + ("" if value is MISSING else f": {value!r}"))
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise EventError(f"time at '{path}' must be whole milliseconds, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        try:
            moment = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise EventError(f"time at '{path}' is not epoch ms or ISO-8601: {value!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=_dt.timezone.utc)
        return int(round(moment.timestamp() * 1000))
    raise EventError(f"time at '{path}' is not epoch ms or ISO-8601: {value!r}")


def parse_key(value: Any, path: str = "key") -> str:
    """A key is a non-empty string or an integer; it is reported as a string."""
    if value is MISSING or value is None:
        raise EventError(f"no key at '{path}'")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise EventError(f"key at '{path}' must be a string or an integer, got {type(value).__name__}")
    text = str(value)
    if not text:
        raise EventError(f"key at '{path}' is empty")
    return text


def split_key_paths(text: str) -> tuple[tuple[str, ...], ...]:
    """`session_id`, or several paths joined by commas for a composite key
    (`wiki_id,page.page_id`: a page is its wiki and its page id)."""
    return tuple(split_path(p.strip()) for p in text.split(","))


def event_key(event: Any, key_paths: Sequence[tuple[str, ...]]) -> str:
    """The key of an event: one field, or the parts of a composite key (see `join_key_parts`)."""
    return join_key_parts([parse_key(get_path(event, p), ".".join(p)) for p in key_paths])


KEY_SEPARATOR = ":"


def join_key_parts(parts: Sequence[str]) -> str:
    """The one key encoding, used by `timeline eval`, the feeder, the store and the API.

    A single key is itself, unchanged. A composite key joins its parts with ':'
    after escaping, in each part, '\\' as '\\\\' and ':' as '\\:'. So
    ("enwiki", "123") is `enwiki:123` as before, while ("a:b", "c") is `a\\:b:c`
    and ("a", "b:c") is `a:b\\:c`: different parts never give the same key."""
    if len(parts) == 1:
        return parts[0]
    return KEY_SEPARATOR.join(_escape_key_part(p) for p in parts)


def _escape_key_part(part: str) -> str:
    if "\\" not in part and KEY_SEPARATOR not in part:
        return part
    return part.replace("\\", "\\\\").replace(KEY_SEPARATOR, "\\" + KEY_SEPARATOR)


def split_key(key: str) -> list[str]:
    """The parts of a composite key made by `join_key_parts` (the inverse)."""
    parts, current, chars = [], [], iter(key)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, ""))
        elif ch == KEY_SEPARATOR:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def split_path(path: str) -> tuple[str, ...]:
    parts = tuple(path.split("."))
    if not path or any(not p for p in parts):
        from timeline.dsl.errors import UsageError
        raise UsageError(f"bad field path {path!r}: use names joined by dots, like page.page_id")
    return parts
