"""Seeded generator of realistic video-player sessions.

The events are produced column-wise as numpy arrays so that a million events
take a fraction of a second; ``to_records`` / ``write_jsonl`` turn them into the
JSON events the rest of the project consumes (key ``session_id``, time ``ts``).

Model, per session:

* the first event is ``play`` or, for some sessions, an initial ``buffer``
  immediately followed by ``play``; it also carries the session's ``cdn`` and
  ``bitrate``;
* then a Markov random walk over play/seek/buffer/pause (a seek is usually
  followed by a short buffer), with occasional CDN switches and bitrate
  (ABR ladder) changes in between;
* the time to the next event is a log-normal dwell that depends on the state
  the player is in (hundreds of ms for a seek, seconds to tens of seconds for
  play and pause); ~2% of events repeat the previous event's timestamp.

Sessions start as a Poisson process (about one per second), so they overlap
and the stream interleaves them. Arrival order is time order, except for the
``out_of_order`` share of events that arrive late (see ``_arrival_order``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "BITRATES",
    "CDNS",
    "STATES",
    "VideoEvents",
    "generate_events",
    "generate_sessions",
    "session_id",
]

STATES: tuple[str, ...] = ("play", "seek", "buffer", "pause")
PLAY, SEEK, BUFFER, PAUSE = range(len(STATES))
CDNS: tuple[str, ...] = ("akamai", "cloudfront", "fastly", "edgio")
# ABR ladder in kbps; a bitrate change moves one rung up or down.
BITRATES: tuple[int, ...] = (400, 800, 1500, 3000, 6000)

# Markov transitions between player states (rows: from, columns: to).
# The diagonal is zero: every state event is an actual change.
_TRANSITIONS = np.array(
    [
        # play  seek  buffer pause
        [0.00, 0.40, 0.20, 0.40],  # play: seek, rebuffer or pause
        [0.15, 0.00, 0.85, 0.00],  # seek: usually a short buffer
        [0.90, 0.05, 0.00, 0.05],  # buffer: mostly back to play
        [0.75, 0.25, 0.00, 0.00],  # pause: resume or seek
    ]
)
# Thresholds for inverse-CDF sampling: next = #{thresholds <= u}. Zero-prob
# targets produce repeated thresholds and so are skipped automatically.
_THRESHOLDS = np.cumsum(_TRANSITIONS, axis=1)[:, :-1]

# Dwell (time until the session's next event) while in a state: log-normal
# with these medians (ms) and sigmas. A buffer entered right after a seek is
# short; a rebuffer during playback lasts longer.
_DWELL_MEDIAN_MS = np.array([8000.0, 300.0, 2000.0, 6000.0])
_DWELL_SIGMA = np.array([1.0, 0.6, 1.0, 1.1])
_SEEK_BUFFER_MEDIAN_MS = 700.0
_MIN_GAP_MS = 20
_MAX_GAP_MS = 120_000

_P_INITIAL_BUFFER = 0.3
_P_CDN_CHANGE = 0.01
_P_BITRATE_CHANGE = 0.05
_P_DUPLICATE_TS = 0.02
_MEAN_EVENTS_PER_SESSION = 50.0
_LENGTH_SIGMA = 0.6
_MIN_SESSION_EVENTS = 4
_MAX_SESSION_EVENTS = 400
_MEAN_SESSION_INTERARRIVAL_MS = 1000.0
# Lateness of a delayed event: log-normal median 2 s, capped so that an
# allowed lateness of 30 s admits every event.
_LAG_MEDIAN_MS = 2000.0
_LAG_SIGMA = 1.0
MAX_LAG_MS = 30_000

_KIND_STATE, _KIND_CDN, _KIND_BITRATE = 0, 1, 2


def session_id(i: int) -> str:
    """The JSON key of session ``i``: ``s000042``."""
    return f"s{i:06d}"


@dataclass(frozen=True, eq=False)  # eq=False: array == array is not a bool
class VideoEvents:
    """Events as equal-length columns, in arrival order.

    ``state``/``cdn`` are codes into ``STATES``/``CDNS`` and, like ``bitrate``,
    are -1 where the event does not carry that field.
    """

    session: npt.NDArray[np.int64]
    ts: npt.NDArray[np.int64]
    state: npt.NDArray[np.int8]
    cdn: npt.NDArray[np.int8]
    bitrate: npt.NDArray[np.int32]

    session_id = staticmethod(session_id)

    def __post_init__(self) -> None:
        n = len(self.session)
        if any(len(a) != n for a in (self.ts, self.state, self.cdn, self.bitrate)):
            raise ValueError("VideoEvents columns must have equal lengths")

    def __len__(self) -> int:
        return len(self.session)

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-able dict per event, with only the fields it carries."""
        # tolist() once per column: iterating numpy scalars is ~10x slower.
        sessions = self.session.tolist()
        ids = [session_id(i) for i in range(max(sessions, default=-1) + 1)]
        records: list[dict[str, Any]] = []
        append = records.append
        for s, t, st, c, b in zip(
            sessions,
            self.ts.tolist(),
            self.state.tolist(),
            self.cdn.tolist(),
            self.bitrate.tolist(),
        ):
            rec: dict[str, Any] = {"session_id": ids[s], "ts": t}
            if st >= 0:
                rec["playerStateChange"] = STATES[st]
            if c >= 0:
                rec["cdn"] = CDNS[c]
            if b >= 0:
                rec["bitrate"] = b
            append(rec)
        return records

    def write_jsonl(self, path: str | Path) -> None:
        """Write one JSON object per line, in arrival order."""
        records = self.to_records()
        try:
            import msgspec
        except ImportError:  # msgspec is a project dependency; json is a fallback
            data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
            Path(path).write_text(data, encoding="utf-8")
        else:
            Path(path).write_bytes(msgspec.json.Encoder().encode_lines(records))


def generate_sessions(
    n_sessions: int,
    seed: int = 0,
    out_of_order: float = 0.0,
    start_ms: int = 1_700_000_000_000,
) -> VideoEvents:
    """``n_sessions`` sessions (about 50 events each), deterministic in ``seed``.

    ``out_of_order`` is the share of events that arrive late. The events
    themselves do not depend on it (only their order does), so two calls that
    differ only in ``out_of_order`` give the same multiset of events.
    """
    if n_sessions < 0:
        raise ValueError("n_sessions must be >= 0")
    rng = np.random.default_rng(seed)
    return _build(rng, _draw_lengths(rng, n_sessions), out_of_order, start_ms)


def generate_events(
    n_events: int,
    seed: int = 0,
    out_of_order: float = 0.0,
    start_ms: int = 1_700_000_000_000,
) -> VideoEvents:
    """Exactly ``n_events`` events: as many sessions as needed, the last one cut short."""
    if n_events < 0:
        raise ValueError("n_events must be >= 0")
    rng = np.random.default_rng(seed)
    chunks: list[npt.NDArray[np.int64]] = []
    total = 0
    while total < n_events:
        chunk = _draw_lengths(rng, int((n_events - total) / _MEAN_EVENTS_PER_SESSION) + 16)
        chunks.append(chunk)
        total += int(chunk.sum())
    lengths = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    cum = np.cumsum(lengths)
    n_sess = int(np.searchsorted(cum, n_events)) + 1 if n_events else 0
    lengths = lengths[:n_sess].copy()
    if n_sess:
        lengths[-1] -= int(cum[n_sess - 1]) - n_events  # cut the last session short
    return _build(rng, lengths, out_of_order, start_ms)


def _draw_lengths(rng: np.random.Generator, n_sessions: int) -> npt.NDArray[np.int64]:
    # Log-normal with the requested mean: mean = exp(mu + sigma^2 / 2).
    mu = np.log(_MEAN_EVENTS_PER_SESSION) - _LENGTH_SIGMA**2 / 2
    raw = rng.lognormal(mu, _LENGTH_SIGMA, n_sessions)
    return np.clip(np.rint(raw), _MIN_SESSION_EVENTS, _MAX_SESSION_EVENTS).astype(np.int64)


def _build(
    rng: np.random.Generator,
    lengths: npt.NDArray[np.int64],
    out_of_order: float,
    start_ms: int,
) -> VideoEvents:
    if not 0.0 <= out_of_order <= 1.0:
        raise ValueError("out_of_order must be in [0, 1]")
    n_sess = len(lengths)
    n = int(lengths.sum())
    # Events are laid out session-major, in time order within a session.
    first = np.cumsum(lengths) - lengths
    session = np.repeat(np.arange(n_sess, dtype=np.int64), lengths)

    # All random draws are made up front, independent of out_of_order.
    u_kind = rng.random(n)
    u_next = rng.random(n)
    z_dwell = rng.standard_normal(n)
    u_dup = rng.random(n)
    u_late = rng.random(n)
    lag = rng.lognormal(np.log(_LAG_MEDIAN_MS), _LAG_SIGMA, n)
    cdn_step = rng.integers(1, len(CDNS), n)  # a switch goes to another CDN
    rung_step = np.where(rng.random(n) < 0.5, -1, 1)
    interarrival = rng.exponential(_MEAN_SESSION_INTERARRIVAL_MS, n_sess)
    initial_buffer = rng.random(n_sess) < _P_INITIAL_BUFFER
    initial_cdn = rng.integers(0, len(CDNS), n_sess)
    initial_rung = rng.integers(1, 4, n_sess)

    kind = np.full(n, _KIND_STATE, dtype=np.int8)
    kind[u_kind < _P_CDN_CHANGE + _P_BITRATE_CHANGE] = _KIND_BITRATE
    kind[u_kind < _P_CDN_CHANGE] = _KIND_CDN
    kind[first] = _KIND_STATE
    # After an initial buffer the next event is the start of playback.
    kind[first[initial_buffer & (lengths > 1)] + 1] = _KIND_STATE

    state = np.full(n, -1, dtype=np.int8)
    cur = np.empty(n, dtype=np.int8)  # player state in effect after each event
    cdn_cur = np.empty(n, dtype=np.int8)
    rung_cur = np.empty(n, dtype=np.int8)
    cur[first] = np.where(initial_buffer, BUFFER, PLAY)
    state[first] = cur[first]
    cdn_cur[first] = initial_cdn
    rung_cur[first] = initial_rung

    # The walk is sequential within a session, so step all sessions together:
    # iteration k handles the k-th event of every session that long. Sorting
    # sessions by length (descending) makes the active ones a prefix.
    by_len = np.argsort(-lengths, kind="stable")
    first_by_len = first[by_len]
    n_active = np.searchsorted(-lengths[by_len], -np.arange(lengths.max(initial=0)), side="left")
    n_cdn = len(CDNS)
    top_rung = len(BITRATES) - 1
    for k in range(1, len(n_active)):
        idx = first_by_len[: n_active[k]] + k
        prev = idx - 1
        before = cur[prev]
        is_state = kind[idx] == _KIND_STATE
        nxt = (u_next[idx, None] >= _THRESHOLDS[before]).sum(axis=1).astype(np.int8)
        if k == 1:
            nxt[before == BUFFER] = PLAY  # the initial buffer ends in play
        cur[idx] = np.where(is_state, nxt, before)
        state[idx] = np.where(is_state, nxt, -1)
        cdn_cur[idx] = np.where(
            kind[idx] == _KIND_CDN, (cdn_cur[prev] + cdn_step[idx]) % n_cdn, cdn_cur[prev]
        )
        rung = np.clip(rung_cur[prev] + rung_step[idx], 0, top_rung)
        # At the top/bottom rung a change goes the only way it can.
        rung = np.where(rung == rung_cur[prev], rung_cur[prev] - rung_step[idx], rung)
        rung_cur[idx] = np.where(kind[idx] == _KIND_BITRATE, rung, rung_cur[prev])

    # Time to each event = dwell in the state the player was in before it.
    before_all = np.empty(n, dtype=np.int8)
    before_all[1:] = cur[:-1]
    before_all[first] = PLAY  # unused: a session's first gap is 0
    median = _DWELL_MEDIAN_MS[before_all]
    after_seek_buffer = np.zeros(n, dtype=bool)
    after_seek_buffer[1:] = (cur[1:] == BUFFER) & (cur[:-1] == SEEK) & (state[1:] == BUFFER)
    # The dwell *in* a post-seek buffer is the gap of the event after it.
    short_buffer = np.zeros(n, dtype=bool)
    short_buffer[1:] = after_seek_buffer[:-1]
    median[short_buffer] = _SEEK_BUFFER_MEDIAN_MS
    gap = np.exp(np.log(median) + _DWELL_SIGMA[before_all] * z_dwell)
    gap = np.clip(np.rint(gap), _MIN_GAP_MS, _MAX_GAP_MS).astype(np.int64)
    gap[u_dup < _P_DUPLICATE_TS] = 0
    gap[first] = 0
    starts = start_ms + np.rint(np.cumsum(interarrival)).astype(np.int64)
    cum = np.cumsum(gap)
    ts = starts[session] + cum - cum[first][session]

    cdn = np.where(kind == _KIND_CDN, cdn_cur, -1).astype(np.int8)
    cdn[first] = cdn_cur[first]
    bitrate = np.where(kind == _KIND_BITRATE, np.asarray(BITRATES, np.int32)[rung_cur], -1)
    bitrate = bitrate.astype(np.int32)
    bitrate[first] = np.asarray(BITRATES, np.int32)[rung_cur[first]]

    order = _arrival_order(ts, u_late < out_of_order, lag)
    return VideoEvents(
        session=session[order],
        ts=ts[order],
        state=state[order],
        cdn=cdn[order],
        bitrate=bitrate[order],
    )


def _arrival_order(
    ts: npt.NDArray[np.int64], late: npt.NDArray[np.bool_], lag: npt.NDArray[np.float64]
) -> npt.NDArray[np.intp]:
    """Permutation into arrival order.

    An on-time event arrives at its ``ts``; a late one at ``ts + lag`` (capped
    at ``MAX_LAG_MS``), i.e. after the events of the next ``lag`` ms of the
    stream. Expressing the delay in time rather than in stream positions
    keeps the lateness (what watermarks care about) independent of how many
    sessions are interleaved, and still moves events past later events of
    their own session. The stable sort keeps generation order for ties, so
    equal-ts events of a session arrive in the order they were generated.
    """
    delay = np.clip(np.rint(lag), 1, MAX_LAG_MS).astype(np.int64)
    arrival = ts + np.where(late, delay, 0)
    return np.argsort(arrival, kind="stable")
