"""Tests of the seeded video-session generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from timeline.producers.video_sessions import (
    BITRATES,
    CDNS,
    MAX_LAG_MS,
    STATES,
    VideoEvents,
    generate_events,
    generate_sessions,
    session_id,
)

PLAY, SEEK, BUFFER, PAUSE = (STATES.index(s) for s in ("play", "seek", "buffer", "pause"))


def _columns(ev: VideoEvents) -> tuple[np.ndarray, ...]:
    return (ev.session, ev.ts, ev.state, ev.cdn, ev.bitrate)


def _time_order(ev: VideoEvents) -> np.ndarray:
    # by session, then time; stable, so equal times keep arrival order
    return np.lexsort((np.arange(len(ev)), ev.ts, ev.session))


def _canonical(ev: VideoEvents) -> np.ndarray:
    # an order that depends on the events' contents only, not on arrival
    return np.lexsort((ev.bitrate, ev.cdn, ev.state, ev.ts, ev.session))


def _first_per_session(ev: VideoEvents) -> np.ndarray:
    """Arrival index of each session's first event (first arrival when in order)."""
    _, idx = np.unique(ev.session, return_index=True)
    return idx


def test_deterministic_by_seed() -> None:
    a = generate_sessions(200, seed=7, out_of_order=0.2)
    b = generate_sessions(200, seed=7, out_of_order=0.2)
    c = generate_sessions(200, seed=8, out_of_order=0.2)
    for x, y in zip(_columns(a), _columns(b)):
        np.testing.assert_array_equal(x, y)
    assert len(a) != len(c) or not np.array_equal(a.ts, c.ts)


def test_shapes_dtypes_and_codes() -> None:
    ev = generate_sessions(300, seed=1)
    n = len(ev)
    assert all(len(col) == n for col in _columns(ev))
    assert ev.session.dtype == np.int64 and ev.ts.dtype == np.int64
    assert ev.state.dtype == np.int8 and ev.cdn.dtype == np.int8
    assert ev.bitrate.dtype == np.int32
    assert set(np.unique(ev.session)) == set(range(300))
    assert ev.state.min() >= -1 and ev.state.max() < len(STATES)
    assert ev.cdn.min() >= -1 and ev.cdn.max() < len(CDNS)
    assert set(np.unique(ev.bitrate)) <= {-1, *BITRATES}
    # every event carries something
    assert np.all((ev.state >= 0) | (ev.cdn >= 0) | (ev.bitrate >= 0))
    assert ev.ts.min() >= 1_700_000_000_000
    # all four states occur, and most events are state changes
    assert set(np.unique(ev.state[ev.state >= 0])) == set(range(len(STATES)))
    assert (ev.state >= 0).mean() > 0.8


def test_session_shape_is_realistic() -> None:
    ev = generate_sessions(2000, seed=3)
    counts = np.bincount(ev.session)
    assert 40 < counts.mean() < 60 and counts.std() > 5
    first = _first_per_session(ev)
    # a session starts with play, or an initial buffer then play
    assert set(np.unique(ev.state[first])) <= {PLAY, BUFFER}
    assert np.all(ev.cdn[first] >= 0) and np.all(ev.bitrate[first] >= 0)
    o = _time_order(ev)
    s, st, ts = ev.session[o], ev.state[o], ev.ts[o]
    same = s[1:] == s[:-1]
    initial_buffer = np.flatnonzero(~np.r_[True, same] & (st == BUFFER))
    initial_buffer = initial_buffer[initial_buffer + 1 < len(s)]
    initial_buffer = initial_buffer[s[initial_buffer + 1] == s[initial_buffer]]
    assert np.all(st[initial_buffer + 1] == PLAY)
    # no state "changes" to the state it is already in
    states_only = st >= 0
    ss, sst = s[states_only], st[states_only]
    assert not np.any((ss[1:] == ss[:-1]) & (sst[1:] == sst[:-1]))
    # seeks are usually followed by a buffer
    after_seek = sst[1:][(sst[:-1] == SEEK) & (ss[1:] == ss[:-1])]
    assert (after_seek == BUFFER).mean() > 0.7
    # dwell times from hundreds of ms to tens of seconds; ~2% equal timestamps
    gaps = np.diff(ts)[same]
    assert gaps.min() >= 0
    dup = (gaps == 0).sum() / len(ev)
    assert 0.01 < dup < 0.03
    nonzero = gaps[gaps > 0]
    assert np.percentile(nonzero, 10) < 1000 and np.percentile(nonzero, 90) > 10_000
    # cdn switches and bitrate changes happen, and sessions overlap in time
    assert (ev.state < 0).sum() > 0.03 * len(ev)
    starts = ev.ts[first]
    ends = np.zeros(2000, dtype=np.int64)
    np.maximum.at(ends, ev.session, ev.ts)
    assert np.sum(starts[1:] < ends[:-1]) > 1000


def test_in_order_stream_is_time_ordered() -> None:
    ev = generate_sessions(300, seed=2, out_of_order=0.0)
    assert np.all(np.diff(ev.ts) >= 0)
    # sessions interleave in arrival order
    assert np.count_nonzero(np.diff(ev.session)) > 300 * 5


def test_out_of_order_reorders_same_events() -> None:
    base = generate_sessions(300, seed=4, out_of_order=0.0)
    late = generate_sessions(300, seed=4, out_of_order=0.3)
    assert len(base) == len(late)
    # the same events (as a multiset: equal-ts events may swap), only arriving
    # in another order
    for x, y in zip(_columns(base), _columns(late)):
        np.testing.assert_array_equal(x[_canonical(base)], y[_canonical(late)])
    assert np.mean(np.diff(late.ts) < 0) > 0.05
    # also within a session: some event arrives after a later one of its session
    o = np.argsort(late.session, kind="stable")  # per session, arrival order
    s, ts = late.session[o], late.ts[o]
    assert np.sum((np.diff(ts) < 0) & (s[1:] == s[:-1])) > 0.02 * len(late)
    # lateness is bounded: nothing arrives after events more than MAX_LAG_MS newer
    assert np.all(np.maximum.accumulate(late.ts) - late.ts <= MAX_LAG_MS)


def test_to_records_fields() -> None:
    ev = generate_sessions(50, seed=5)
    records = ev.to_records()
    assert len(records) == len(ev)
    first = set(_first_per_session(ev).tolist())
    for i, rec in enumerate(records):
        assert rec["session_id"] == session_id(int(ev.session[i]))
        assert rec["ts"] == int(ev.ts[i]) and type(rec["ts"]) is int
        assert set(rec) <= {"session_id", "ts", "playerStateChange", "cdn", "bitrate"}
        assert ("playerStateChange" in rec) == (ev.state[i] >= 0)
        assert ("cdn" in rec) == (ev.cdn[i] >= 0)
        assert ("bitrate" in rec) == (ev.bitrate[i] >= 0)
        if "playerStateChange" in rec:
            assert rec["playerStateChange"] == STATES[ev.state[i]]
        if "cdn" in rec:
            assert rec["cdn"] == CDNS[ev.cdn[i]]
        if i in first:
            assert {"playerStateChange", "cdn", "bitrate"} <= set(rec)
        json.dumps(rec)  # JSON-able
    assert session_id(42) == "s000042" == VideoEvents.session_id(42)


def test_write_jsonl_roundtrip(tmp_path: Path) -> None:
    ev = generate_sessions(40, seed=6, out_of_order=0.1)
    path = tmp_path / "events.jsonl"
    ev.write_jsonl(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == ev.to_records()


@pytest.mark.parametrize("n", [0, 1, 7, 1234])
def test_generate_events_exact_count(n: int) -> None:
    ev = generate_events(n, seed=9)
    assert len(ev) == n
    if n:
        assert ev.session.max() + 1 == len(np.unique(ev.session))


def test_generate_one_million_events() -> None:
    ev = generate_events(1_000_000, seed=0, out_of_order=0.05)
    assert len(ev) == 1_000_000
    assert 15_000 < ev.session.max() + 1 < 25_000
