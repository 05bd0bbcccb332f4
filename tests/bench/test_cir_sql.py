"""cir_duckdb (window-function SQL) against a per-millisecond reference."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import duckdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.cir_sql import cir_duckdb, load_events
from timeline.producers.video_sessions import STATES, VideoEvents, generate_sessions


def cir_reference(events: VideoEvents, seek_window_ms: int = 5000) -> dict[int, int]:
    """CIR straight from SPEC.md, one millisecond at a time (slow: tests only).

    For every ms t in [first event, last event) of a session it looks at the
    events with e.t <= t and evaluates the three conditions by definition.
    """
    by_session: dict[int, list[tuple[int, int, str | None]]] = defaultdict(list)
    for seq, (s, t, code) in enumerate(
        zip(events.session.tolist(), events.ts.tolist(), events.state.tolist())
    ):
        by_session[s].append((t, seq, STATES[code] if code >= 0 else None))
    result: dict[int, int] = {}
    for s, evs in by_session.items():
        evs.sort()  # by time, then arrival: the later arrival wins at equal t
        t_first, t_end = evs[0][0], max(t for t, _, _ in evs)
        seen = 0  # events evs[:seen] have e.t <= t
        played = False
        seeks: list[int] = []
        latest: str | None = None
        total = 0
        for t in range(t_first, t_end):
            while seen < len(evs) and evs[seen][0] <= t:
                _, _, state = evs[seen]
                played = played or state == "play"
                if state == "seek":
                    seeks.append(evs[seen][0])
                if state is not None:
                    latest = state
                seen += 1
            within = any(e <= t < e + seek_window_ms for e in seeks)
            if played and not within and latest == "buffer":
                total += 1
        result[s] = total
    return result


def _events(rows: Sequence[tuple[int, int, str | None]]) -> VideoEvents:
    """VideoEvents from (session, ts, state) rows given in arrival order."""
    n = len(rows)
    return VideoEvents(
        session=np.array([r[0] for r in rows], dtype=np.int64),
        ts=np.array([r[1] for r in rows], dtype=np.int64),
        state=np.array([STATES.index(r[2]) if r[2] else -1 for r in rows], dtype=np.int8),
        cdn=np.full(n, -1, dtype=np.int8),
        bitrate=np.full(n, -1, dtype=np.int32),
    )


def _compress(ev: VideoEvents, factor: int) -> VideoEvents:
    """Shrink time by ``factor`` so the per-ms reference stays fast.

    Flooring keeps time order and adds equal timestamps (more ties to test).
    """
    t0 = int(ev.ts.min())
    return VideoEvents(ev.session, t0 + (ev.ts - t0) // factor, ev.state, ev.cdn, ev.bitrate)


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect()
    yield c
    c.close()


def _cir(con: duckdb.DuckDBPyConnection, ev: VideoEvents, window: int = 5000) -> dict[int, int]:
    load_events(con, ev)
    return cir_duckdb(con, seek_window_ms=window)


WORKED_EXAMPLE = [(0, 1000, "play"), (0, 2000, "seek"), (0, 5000, "buffer"), (0, 9000, "play")]


def test_worked_example(con: duckdb.DuckDBPyConnection) -> None:
    ev = _events(WORKED_EXAMPLE)
    assert _cir(con, ev) == {0: 2000} == cir_reference(ev)


def test_worked_example_later_t(con: duckdb.DuckDBPyConnection) -> None:
    # a later event that is no state change (e.g. a cdn switch) moves T to 12 s
    ev = _events([*WORKED_EXAMPLE, (0, 12_000, None)])
    assert _cir(con, ev) == {0: 2000} == cir_reference(ev)


def test_worked_example_still_buffering(con: duckdb.DuckDBPyConnection) -> None:
    # without the play at 9 s the rebuffering lasts from 7 s to T = 12 s
    ev = _events([*WORKED_EXAMPLE[:3], (0, 12_000, None)])
    assert _cir(con, ev) == {0: 5000} == cir_reference(ev)


def test_edge_cases(con: duckdb.DuckDBPyConnection) -> None:
    rows = [
        (0, 100, None),  # no state events at all
        (1, 100, "play"),  # one event only
        (2, 100, "buffer"), (2, 200, "play"), (2, 300, "buffer"), (2, 400, "pause"),
        # equal timestamps: the later arrival wins
        (3, 100, "play"), (3, 200, "play"), (3, 200, "buffer"), (3, 900, None),
        (4, 100, "play"), (4, 200, "buffer"), (4, 200, "play"), (4, 900, None),
        # a later seek inside an open window extends it; the window ends after T
        (5, 0, "play"), (5, 100, "seek"), (5, 150, "buffer"), (5, 5000, "seek"),
        (5, 5050, "buffer"), (5, 9000, None),
        # buffering before the first play does not count
        (6, 0, "buffer"), (6, 700, "play"), (6, 800, "buffer"), (6, 1000, "play"),
    ]
    ev = _events(rows)
    expected = {0: 0, 1: 0, 2: 100, 3: 700, 4: 0, 5: 0, 6: 200}
    assert cir_reference(ev) == expected
    assert _cir(con, ev) == expected


def test_arrival_order_breaks_ties(con: duckdb.DuckDBPyConnection) -> None:
    # the same events of session 3 above, arriving with the tie the other way
    ev = _events([(0, 200, "buffer"), (0, 100, "play"), (0, 200, "play"), (0, 900, None)])
    assert _cir(con, ev) == {0: 0} == cir_reference(ev)


@pytest.mark.parametrize("out_of_order", [0.0, 0.3])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_generated_sessions_match_reference(
    con: duckdb.DuckDBPyConnection, seed: int, out_of_order: float
) -> None:
    n_sessions = (50, 120, 200, 80)[seed]
    factor = 50  # time / 50, so the 5 s window becomes 100 ms
    ev = _compress(generate_sessions(n_sessions, seed=seed, out_of_order=out_of_order), factor)
    expected = cir_reference(ev, seek_window_ms=5000 // factor)
    assert len(expected) == n_sessions
    got = _cir(con, ev, window=5000 // factor)
    assert got == expected
    assert sum(v > 0 for v in got.values()) > n_sessions // 4  # not vacuous


def test_generated_sessions_real_time_scale(con: duckdb.DuckDBPyConnection) -> None:
    # a few uncompressed sessions, with the real 5 s window
    ev = generate_sessions(6, seed=11, out_of_order=0.3)
    expected = cir_reference(ev)
    assert _cir(con, ev) == expected
    assert any(v > 0 for v in expected.values())


_state = st.sampled_from([None, *STATES])


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 40), _state), min_size=1, max_size=30
    ),
    window=st.integers(1, 15),
)
def test_random_small_sessions_match_reference(
    rows: list[tuple[int, int, str | None]], window: int
) -> None:
    ev = _events(rows)
    with duckdb.connect() as con:
        assert _cir(con, ev, window) == cir_reference(ev, window)
