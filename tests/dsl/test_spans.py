"""Sorting and merging span arrays (dsl/spans.py): the paths chosen for speed give the one stable order."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from timeline.dsl.spans import TIME_LIMIT, BoolSpans, Frame, align, sort_order


def reference_order(key: np.ndarray, start: np.ndarray) -> np.ndarray:
    """By (key, start), equal pairs in input order."""
    return np.lexsort((np.arange(len(key)), start, key))


@st.composite
def keyed_times(draw):
    n = draw(st.integers(0, 300))
    n_keys = draw(st.sampled_from([1, 3, 50, 70_000]))  # 70,000: past the 16-bit radix sort
    shape = draw(st.sampled_from(["random", "runs", "sorted", "wide"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    key = rng.integers(0, n_keys, n)
    start = rng.integers(0, 50, n) * draw(st.sampled_from([1, 1000]))
    if shape in ("runs", "sorted"):
        pieces = 1 if shape == "sorted" else draw(st.integers(1, 4))
        cuts = sorted(rng.integers(0, n + 1, pieces - 1).tolist())
        parts = np.split(np.arange(n), cuts)
        order = np.concatenate([p[reference_order(key[p], start[p])] for p in parts]) if n else np.arange(0)
        key, start = key[order], start[order]
    if shape == "wide" and n:
        start[rng.integers(0, n)] += TIME_LIMIT + 5  # past what packs into one int64 with the key
    return key.astype(np.int64), start.astype(np.int64)


@settings(max_examples=300, deadline=None)
@given(data=keyed_times())
def test_sort_order_is_the_stable_order_by_key_and_start(data):
    key, start = data
    base = int(start.min()) if len(start) else 0
    assert sort_order(key, start, base).tolist() == reference_order(key, start).tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 30)), min_size=0, max_size=25),
                min_size=1, max_size=5))
def test_align_finds_the_span_of_every_set_at_every_breakpoint(sets_spec):
    n_keys = 4
    origin = np.zeros(n_keys, dtype=np.int64)
    sets = []
    for spec in sets_spec:
        pairs = sorted(set(spec) | {(k, 0) for k in range(n_keys)})  # every key from its origin
        key = np.array([k for k, _ in pairs], dtype=np.int64)
        start = np.array([s for _, s in pairs], dtype=np.int64)
        sets.append(BoolSpans(key, start, np.zeros(len(key), dtype=np.int8)))
    key, start, idx = align(sets, Frame(origin))
    expected = sorted({(int(k), int(s)) for st_ in sets for k, s in zip(st_.key, st_.start)})
    assert list(zip(key.tolist(), start.tolist())) == expected
    for st_, found in zip(sets, idx):
        for (k, s), i in zip(expected, found.tolist()):
            mine = [j for j in range(len(st_)) if st_.key[j] == k and st_.start[j] <= s]
            assert i == mine[-1]
