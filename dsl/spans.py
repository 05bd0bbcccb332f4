"""Canonical span timelines for many keys at once (the algebra's data).

A span set holds the timelines of keys 0..K-1 in flat numpy arrays sorted by
(key, start). Span i covers [start[i], start[i+1]) when span i+1 has the same
key, else [start[i], +inf). Every key's first span starts at its origin (the
key's first event): before it the timeline is unknown. Adjacent spans never
have equal values (canonical form), so two timelines are equal iff their
arrays are.

Kinds:
- StateSpans: `code` into `vocab` (-1 = unknown).
- BoolSpans: Kleene values FALSE=0, UNKNOWN=1, TRUE=2, so And = min,
  Or = max and Not = 2 - x.
- NumericSpans: value `v0` at `start` (NaN = unknown) and `slope` per ms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

FALSE, UNKNOWN, TRUE = 0, 1, 2
KLEENE_TO_PY = (False, None, True)

# Composite sort keys pack (key, start - base) into one int64: times may run
# TIME_BITS of milliseconds past the earliest origin (~69 years); a breakpoint
# beyond that (a crossing decades away) is treated as never reached.
TIME_BITS = 41
TIME_LIMIT = (1 << TIME_BITS) - 1
MAX_COMPOSITE_KEYS = 1 << (62 - TIME_BITS)


@dataclass(frozen=True)
class Frame:
    """The keys evaluated together and the time each key's timelines begin."""

    origin: np.ndarray  # int64[K]: the key's first event time
    # Where times are measured from: the earliest origin, unless given (a range of the keys of
    # a larger frame, evaluated on its own, keeps that frame's base and so its horizon).
    first: int | None = None

    @property
    def n_keys(self) -> int:
        return len(self.origin)

    @property
    def base(self) -> int:
        if self.first is not None:
            return self.first
        return int(self.origin.min()) if len(self.origin) else 0

    def horizon(self) -> int:
        """Breakpoints at or beyond this time are 'never'."""
        return self.base + TIME_LIMIT


def sort_order(key: np.ndarray, start: np.ndarray, base: int) -> np.ndarray:
    """Stable permutation sorting by (key, start); equal pairs keep input order.

    Input made of a few sorted runs (span sets concatenated to be merged) is
    timsorted at once. Otherwise key codes are small integers, so a stable radix
    sort by key (numpy radix-sorts 16-bit integers) does most of the work; events
    mostly arrive in time order, so what is left is nearly sorted and timsort
    finishes it in one pass.
    """
    n = len(key)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    top = int(key.max())
    if top >= MAX_COMPOSITE_KEYS or not 0 <= int(start.min()) - base <= int(start.max()) - base <= TIME_LIMIT:
        return np.lexsort((start, key))  # (key, start) does not pack into one int64 (stable too)
    if int(np.count_nonzero(key[1:] < key[:-1])) <= n >> 6:
        comp = composite(key, start, base)
        descents = int(np.count_nonzero(comp[1:] < comp[:-1]))
        if descents == 0:
            return np.arange(n, dtype=np.int64)
        if descents <= n >> 6:
            # A few sorted runs (span sets concatenated to be merged, nearly sorted events):
            # timsort merges them in about one pass.
            return np.argsort(comp, kind="stable")
    if top < 1 << 16:
        order = np.argsort(key.astype(np.uint16), kind="stable")
    elif top < 1 << 32:
        order = np.argsort((key & 0xFFFF).astype(np.uint16), kind="stable")
        order = order[np.argsort((key[order] >> 16).astype(np.uint16), kind="stable")]
    else:
        return np.argsort(composite(key, start, base), kind="stable")
    comp = composite(key[order], start[order], base)
    if n > 1 and not bool(np.all(comp[1:] >= comp[:-1])):
        order = order[np.argsort(comp, kind="stable")]
    return order


def composite(key: np.ndarray, start: np.ndarray, base: int) -> np.ndarray:
    return (key.astype(np.int64) << TIME_BITS) + (start - base)


def _same_run(key: np.ndarray, start: np.ndarray) -> np.ndarray:
    """same[i] is True when element i+1 has the same (key, start) as element i."""
    return (key[1:] == key[:-1]) & (start[1:] == start[:-1])


def _keep_last_of_equal(key: np.ndarray, start: np.ndarray) -> np.ndarray:
    keep = np.ones(len(key), dtype=bool)
    if len(key) > 1:
        keep[:-1] = ~_same_run(key, start)
    return keep


def next_start(key: np.ndarray, start: np.ndarray) -> np.ndarray:
    """End of each span: the next start of the same key, or int64 max (open)."""
    end = np.full(len(start), np.iinfo(np.int64).max, dtype=np.int64)
    if len(start) > 1:
        same = key[1:] == key[:-1]
        end[:-1] = np.where(same, start[1:], end[:-1])
    return end


def first_of_key(key: np.ndarray) -> np.ndarray:
    first = np.ones(len(key), dtype=bool)
    if len(key) > 1:
        first[1:] = key[1:] != key[:-1]
    return first


def key_offsets(key: np.ndarray, n_keys: int) -> np.ndarray:
    """offsets[k]:offsets[k+1] are key k's spans."""
    return np.searchsorted(key, np.arange(n_keys + 1), side="left")


@dataclass(frozen=True)
class SpanSet:
    key: np.ndarray    # int64
    start: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.key)

    def value_columns(self) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def take(self, index: np.ndarray) -> "SpanSet":
        raise NotImplementedError

    def python_values(self) -> list:
        """Span values as Python objects (None = unknown)."""
        raise NotImplementedError

    def value_at(self, key: np.ndarray, t: np.ndarray, frame: Frame) -> list:
        """The value of each key's timeline at time t (None before its origin)."""
        raise NotImplementedError


@dataclass(frozen=True)
class StateSpans(SpanSet):
    code: np.ndarray            # int32, -1 = unknown
    vocab: tuple[Any, ...]

    def value_columns(self):
        return (self.code,)

    def take(self, index):
        return StateSpans(self.key[index], self.start[index], self.code[index], self.vocab)

    def python_values(self) -> list:
        table = list(self.vocab) + [None]
        return [table[c] for c in self.code.tolist()]


@dataclass(frozen=True)
class BoolSpans(SpanSet):
    value: np.ndarray           # int8 Kleene

    def value_columns(self):
        return (self.value,)

    def take(self, index):
        return BoolSpans(self.key[index], self.start[index], self.value[index])

    def python_values(self) -> list:
        return [KLEENE_TO_PY[v] for v in self.value.tolist()]


@dataclass(frozen=True)
class NumericSpans(SpanSet):
    v0: np.ndarray              # float64, NaN = unknown
    slope: np.ndarray           # float64

    def value_columns(self):
        return (self.v0, self.slope)

    def take(self, index):
        return NumericSpans(self.key[index], self.start[index], self.v0[index], self.slope[index])

    def python_values(self) -> list:
        return numbers_to_python(self.v0)


def numbers_to_python(values: np.ndarray) -> list:
    """Floats as Python numbers: whole ones as int, NaN as None (vectorised)."""
    values = np.asarray(values, dtype=np.float64)
    nan = np.isnan(values)
    whole = ~nan & (values == np.floor(values)) & (np.abs(values) < 2**62)
    if whole.all():
        return values.astype(np.int64).tolist()
    ints = np.where(whole, values, 0).astype(np.int64).tolist()
    floats = values.tolist()
    return [None if n else (i if w else f) for i, f, w, n in zip(ints, floats, whole.tolist(), nan.tolist())]


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


def locate(spans: SpanSet, key: np.ndarray, t: np.ndarray, frame: Frame) -> np.ndarray:
    """Index of the span of `key` that contains time t, or -1 before the origin."""
    base = frame.base
    key = np.asarray(key, dtype=np.int64)
    t = np.asarray(t, dtype=np.int64)
    if len(spans) == 0:
        return np.full(len(key), -1, dtype=np.int64)
    clipped = np.clip(t, base, base + TIME_LIMIT)
    if len(spans) and int(spans.key.max()) < MAX_COMPOSITE_KEYS:
        idx = np.searchsorted(composite(spans.key, spans.start, base), composite(key, clipped, base),
                              side="right") - 1
    else:  # row-by-row fallback for very many keys
        idx = np.array([_locate_one(spans, k, tt) for k, tt in zip(key.tolist(), clipped.tolist())], dtype=np.int64)
    ok = (idx >= 0) & (t >= frame.origin[key])
    ok[ok] &= spans.key[idx[ok]] == key[ok]
    return np.where(ok, idx, -1)


def _locate_one(spans: SpanSet, k: int, t: int) -> int:
    lo = int(np.searchsorted(spans.key, k, side="left"))
    hi = int(np.searchsorted(spans.key, k, side="right"))
    i = lo + int(np.searchsorted(spans.start[lo:hi], t, side="right")) - 1
    return i if i >= lo else -1


def values_at(spans: SpanSet, key: np.ndarray, t: np.ndarray, frame: Frame) -> list:
    """Python values of each (key, t) (None where unknown)."""
    idx = locate(spans, key, t, frame)
    found = idx >= 0
    at = np.where(found, idx, 0)
    if len(spans) == 0:
        return [None] * len(idx)
    if isinstance(spans, NumericSpans):
        t = np.asarray(t, dtype=np.int64)
        value = spans.v0[at] + spans.slope[at] * (t - spans.start[at])
        return numbers_to_python(np.where(found, value, np.nan))
    values = spans.take(at).python_values()
    return [v if ok else None for v, ok in zip(values, found.tolist())]


# --- construction ------------------------------------------------------------

def assemble(parts: Sequence[tuple[np.ndarray, ...]], base: int, horizon: int) -> tuple[np.ndarray, ...]:
    """Concatenate span parts (key, start, *values), sort by (key, start), let a
    later part win at an equal (key, start), drop breakpoints past the horizon.
    Does not merge equal neighbours: see `canonical_*`."""
    width = len(parts[0])
    cols = [np.concatenate([p[j] for p in parts]) for j in range(width)]
    key, start = cols[0], cols[1]
    inside = start < horizon
    if not inside.all():
        cols = [c[inside] for c in cols]
        key, start = cols[0], cols[1]
    order = sort_order(key, start, base)
    cols = [c[order] for c in cols]
    keep = _keep_last_of_equal(cols[0], cols[1])
    if not keep.all():
        cols = [c[keep] for c in cols]
    return tuple(cols)


def _change_points(key: np.ndarray, *values: np.ndarray) -> np.ndarray:
    keep = np.ones(len(key), dtype=bool)
    if len(key) > 1:
        differs = key[1:] != key[:-1]
        for v in values:
            differs |= v[1:] != v[:-1]
        keep[1:] = differs
    return keep


def canonical_state(key, start, code, vocab) -> StateSpans:
    keep = _change_points(key, code)
    return StateSpans(key[keep], start[keep], code[keep].astype(np.int32, copy=False), tuple(vocab))


def canonical_bool(key, start, value) -> BoolSpans:
    keep = _change_points(key, value)
    return BoolSpans(key[keep], start[keep], value[keep].astype(np.int8, copy=False))


def canonical_numeric(key, start, v0, slope) -> NumericSpans:
    """Merge a span into its predecessor when the line simply continues."""
    keep = np.ones(len(key), dtype=bool)
    if len(key) > 1:
        same_key = key[1:] == key[:-1]
        prev_v0, prev_slope = v0[:-1], slope[:-1]
        expected = prev_v0 + prev_slope * (start[1:] - start[:-1])
        both_unknown = np.isnan(prev_v0) & np.isnan(v0[1:])
        continues = (slope[1:] == prev_slope) & (v0[1:] == expected)
        keep[1:] = ~(same_key & (both_unknown | continues))
    slope = np.where(np.isnan(v0), 0.0, slope)
    return NumericSpans(key[keep], start[keep], v0[keep], slope[keep])


def origin_part(frame: Frame, *fill) -> tuple[np.ndarray, ...]:
    """One span per key at its origin, with the given fill values."""
    k = np.arange(frame.n_keys, dtype=np.int64)
    return (k, frame.origin.astype(np.int64)) + tuple(np.full(frame.n_keys, f) for f in fill)


def align(sets: Sequence[SpanSet], frame: Frame) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Merge the breakpoints of several span sets over the same keys.

    Returns (key, start, idx) where idx[i][j] is the span of set i that holds at
    breakpoint j. Each set starts every key at its origin, so every set has a
    span at every breakpoint.
    """
    base = frame.base
    lengths = [len(s) for s in sets]
    key = np.concatenate([s.key for s in sets])
    start = np.concatenate([s.start for s in sets])
    order = sort_order(key, start, base)
    key, start = key[order], start[order]
    keep = _keep_last_of_equal(key, start)
    # The span of set i holding at merged position j is the count of set i's spans
    # at positions <= j, minus one (the sort is stable and each set is sorted). A
    # merged position holds a span of set i when order[j] falls in set i's range:
    # ranges, not a per-element set number, so any number of sets fits (an int8 set
    # number wrapped past 127 sets).
    kept_at = np.flatnonzero(keep)
    bounds = np.concatenate(([0], np.cumsum(lengths))).tolist()
    counter = np.int32 if len(order) < 2**31 else np.int64
    idx = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        count = np.cumsum((order >= lo) & (order < hi), dtype=counter)
        idx.append(count[kept_at].astype(np.int64) - 1)
    return key[keep], start[keep], idx
