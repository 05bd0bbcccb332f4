"""Connection-induced rebuffering (CIR) as hand-written DuckDB SQL.

The baseline the timeline engine is benchmarked (and cross-checked) against:

    TL_DurationWhere(
        TL_HasExisted(col("playerStateChange") == "play")
        && !TL_HasExistedWithin(col("playerStateChange") == "seek", 5s)
        && TL_LatestEventToState(col("playerStateChange")) == "buffer")

evaluated per session at the session's last event time T, with the
semantics of SPEC.md.

The query is a sweep line built from window functions only. Every event is a
point where a condition may change; every seek adds a second point, the end
of its window (seek time + window), where the count of open seek windows
drops by one. Running aggregates over the points, ordered by (time, arrival),
give at each point the three conditions:

* played     = some play event so far                      (HasExisted)
* open_seeks = #seeks with s <= t minus #seeks with s + w <= t,
               > 0 exactly on the union of the [s, s + w)  (HasExistedWithin)
* latest     = last non-null state so far; at equal times the
               later arrival comes later in the order      (LatestEventToState)

They are constant from a point to the next one (LEAD), so CIR is the sum of
those segment lengths, clipped to [.., T), where all three hold. Points with
the same time form zero-length segments except the last of them, whose
running aggregates include all of them, so ties need no special handling.
Before the first play / state event the conditions are false or unknown,
and neither counts as true, as Kleene logic and DurationWhere require.
"""

from __future__ import annotations

import re

import duckdb
import numpy as np

from timeline.producers.video_sessions import STATES, VideoEvents

__all__ = ["CIR_SQL", "cir_duckdb", "cir_duckdb_jsonl", "load_events"]

# `{table}` is substituted (a checked identifier); `$seek_window_ms` is bound.
CIR_SQL = """
WITH ev AS (
    SELECT session, ts, seq, state,
           MAX(ts) OVER (PARTITION BY session) AS t_end
    FROM {table}
),
points AS (
    -- every event: may set the latest state or the play flag, opens a seek window
    SELECT session, ts AS t, seq, state, t_end,
           CASE WHEN state = 'seek' THEN 1 ELSE 0 END AS seek_delta
    FROM ev
    UNION ALL
    -- the end of every seek window (no state, no arrival number)
    SELECT session, ts + $seek_window_ms AS t, NULL AS seq, NULL AS state, t_end,
           -1 AS seek_delta
    FROM ev
    WHERE state = 'seek'
),
swept AS (
    SELECT session, t, t_end,
           LEAD(t) OVER (PARTITION BY session ORDER BY t, seq NULLS LAST) AS t_next,
           BOOL_OR(state = 'play') OVER running AS played,
           SUM(seek_delta) OVER running AS open_seeks,
           LAST_VALUE(state IGNORE NULLS) OVER running AS latest
    FROM points
    WINDOW running AS (
        PARTITION BY session ORDER BY t, seq NULLS LAST
        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    )
)
SELECT session,
       COALESCE(
           SUM(GREATEST(LEAST(COALESCE(t_next, t_end), t_end) - t, 0))
               FILTER (WHERE played AND open_seeks = 0 AND latest = 'buffer'),
           0
       )::BIGINT AS cir_ms
FROM swept
GROUP BY session
ORDER BY session
"""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_identifier(table: str) -> str:
    # The table name is spliced into SQL, so accept plain identifiers only.
    if not _IDENTIFIER.fullmatch(table):
        raise ValueError(f"not a plain SQL identifier: {table!r}")
    return table


def load_events(
    con: duckdb.DuckDBPyConnection, events: VideoEvents, table: str = "events"
) -> None:
    """(Re)create ``table(session, ts, seq, state)`` from ``events``.

    DuckDB scans a dict of numeric numpy arrays directly (no pandas/pyarrow,
    no per-row Python objects); the state code becomes a VARCHAR in SQL.
    ``seq`` is the arrival position, which breaks ties between equal times.
    """
    table = _check_identifier(table)
    source = f"_{table}_numpy"
    con.register(
        source,
        {
            "session": np.asarray(events.session, dtype=np.int64),
            "ts": np.asarray(events.ts, dtype=np.int64),
            "seq": np.arange(len(events), dtype=np.int64),
            "state_code": np.asarray(events.state, dtype=np.int8),
        },
    )
    # Codes index STATES; -1 (no state change) maps to NULL.
    cases = " ".join(f"WHEN {i} THEN '{name}'" for i, name in enumerate(STATES))
    try:
        con.execute(
            f"CREATE OR REPLACE TABLE {table} AS "
            f"SELECT session, ts, seq, CASE state_code {cases} END::VARCHAR AS state "
            f"FROM {source}"
        )
    finally:
        con.unregister(source)


def cir_duckdb(
    con: duckdb.DuckDBPyConnection, table: str = "events", seek_window_ms: int = 5000
) -> dict[int, int]:
    """CIR in ms for every session of ``table``, at that session's last event time."""
    sql = CIR_SQL.format(table=_check_identifier(table))
    rows = con.execute(sql, {"seek_window_ms": int(seek_window_ms)}).fetchall()
    return {int(session): int(cir) for session, cir in rows}


def cir_duckdb_jsonl(con: duckdb.DuckDBPyConnection, path: str, seek_window_ms: int = 5000) -> dict[str, int]:
    """CIR in ms per session id, end to end from a JSON-lines file: DuckDB's `read_json`
    (types detected, as a user would write it) feeding the same window SQL; `seq` is the line
    order, which DuckDB keeps (preserve_insertion_order)."""
    literal = "'" + str(path).replace("'", "''") + "'"  # a view cannot take a bound parameter
    con.execute(
        "CREATE OR REPLACE TEMP VIEW events_jsonl AS "
        "SELECT session_id AS session, ts, row_number() OVER () AS seq, playerStateChange AS state "
        f"FROM read_json({literal}, format = 'newline_delimited')"
    )
    sql = CIR_SQL.format(table="events_jsonl")
    rows = con.execute(sql, {"seek_window_ms": int(seek_window_ms)}).fetchall()
    return {str(session): int(cir) for session, cir in rows}
