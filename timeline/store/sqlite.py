"""SQLite results store (WAL mode: the worker, feeder and API share one file)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from timeline.dsl.incremental import KeyTimeline, SpanPatch
from timeline.models import ResultsBatch, TimelineSpec
from timeline.store.base import (
    ResultsStore,
    StoredResult,
    TimelineExists,
    UnknownTimeline,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS timelines (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    timeline TEXT NOT NULL,
    key TEXT NOT NULL,
    shard INTEGER NOT NULL,
    spans TEXT NOT NULL,
    watermark INTEGER,
    closed INTEGER NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    PRIMARY KEY (timeline, key)
);
CREATE TABLE IF NOT EXISTS applied (
    timeline TEXT NOT NULL,
    shard INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (timeline, shard)
);
"""


class SqliteStore(ResultsStore):
    def __init__(self, path: str | Path):
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        # Several processes (worker, feeder, API, CLI) may open a new file at once:
        # switching it to WAL and creating the tables can meet a lock that the busy
        # timeout does not cover, so retry for a while.
        for attempt in range(50):
            try:
                self._conn().executescript(SCHEMA)
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                self.close()
                time.sleep(0.05 * (attempt + 1))

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                conn.execute("PRAGMA busy_timeout=30000")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.OperationalError:
                conn.close()
                raise
            self._local.conn = conn
        return conn

    def register(self, spec: TimelineSpec) -> bool:
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            row = c.execute("SELECT spec FROM timelines WHERE name = ?", (spec.name,)).fetchone()
            if row is not None:
                c.execute("COMMIT")
                if TimelineSpec.model_validate_json(row[0]).same_definition(spec):
                    return False
                raise TimelineExists(spec.name)
            c.execute("INSERT INTO timelines VALUES (?, ?, ?)", (spec.name, spec.model_dump_json(), time.time()))
            c.execute("COMMIT")
            return True
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise

    def get(self, name: str) -> TimelineSpec:
        row = self._conn().execute("SELECT spec FROM timelines WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UnknownTimeline(name)
        return TimelineSpec.model_validate_json(row[0])

    def list(self) -> list[TimelineSpec]:
        rows = self._conn().execute("SELECT spec FROM timelines ORDER BY name").fetchall()
        return [TimelineSpec.model_validate_json(r[0]) for r in rows]

    def remove(self, name: str) -> None:
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        cur = c.execute("DELETE FROM timelines WHERE name = ?", (name,))
        c.execute("DELETE FROM results WHERE timeline = ?", (name,))
        c.execute("DELETE FROM applied WHERE timeline = ?", (name,))
        c.execute("COMMIT")
        if cur.rowcount == 0:
            raise UnknownTimeline(name)

    def apply_results(self, batch: ResultsBatch) -> list[SpanPatch] | None:
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            registered = c.execute("SELECT coalesce(json_extract(spec, '$.generation'), '') FROM timelines "
                                   "WHERE name = ?", (batch.timeline,)).fetchone()
            if registered is None or registered[0] != batch.generation:
                c.execute("COMMIT")
                return None
            row = c.execute("SELECT seq FROM applied WHERE timeline = ? AND shard = ?",
                            (batch.timeline, batch.shard)).fetchone()
            # Skip only a batch older than the last one applied. The same seq comes again
            # when the root's workflow task re-ran after a worker crash, then with what
            # arrived meanwhile merged in: its patches (replace-from-since, in order) must
            # be applied again, or those changes are lost.
            if row is not None and row[0] > batch.seq:
                c.execute("COMMIT")
                return []
            now = time.time()
            refused: list[SpanPatch] = []
            for patch in batch.patches:
                cur = c.execute("SELECT spans, closed, watermark FROM results WHERE timeline = ? AND key = ?",
                                (batch.timeline, patch.key)).fetchone()
                if cur and cur[1] and cur[2] is not None and patch.since < cur[2]:
                    # The key closed, and this change reaches into its final result: the workflows
                    # no longer hold its history, so it is a partial one. Refused as late.
                    refused.append(patch)
                    continue
                old = KeyTimeline.model_validate_json(cur[0]) if cur else KeyTimeline()
                new = old.with_patch(patch)
                c.execute(
                    "INSERT INTO results (timeline, key, shard, spans, watermark, closed, seq, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, 0, ?, ?) ON CONFLICT (timeline, key) DO UPDATE SET "
                    "spans = excluded.spans, watermark = COALESCE(excluded.watermark, results.watermark), "
                    "closed = 0, seq = excluded.seq, updated_at = excluded.updated_at",
                    (batch.timeline, patch.key, batch.shard, new.model_dump_json(),
                     batch.watermarks.get(patch.key), batch.seq, now),
                )
            refused_keys = {p.key for p in refused}
            for key, wm in batch.watermarks.items():
                if key not in refused_keys:
                    c.execute("UPDATE results SET watermark = MAX(COALESCE(watermark, ?), ?) WHERE timeline = ? "
                              "AND key = ?", (wm, wm, batch.timeline, key))
            for key, final in batch.closed.items():
                # The root holds a key's timeline from its frontier on only (before it, it was
                # published already): merge it, never replace the history with it.
                cur = c.execute("SELECT spans, closed, watermark FROM results WHERE timeline = ? AND key = ?",
                                (batch.timeline, key)).fetchone()
                if key in refused_keys or (cur and cur[1] and cur[2] is not None and final.starts
                                           and final.starts[0] < cur[2]):
                    continue  # a key that came back late and closed again: its first result stands
                old = KeyTimeline.model_validate_json(cur[0]) if cur else KeyTimeline()
                final = old.then(final)
                c.execute(
                    "INSERT INTO results (timeline, key, shard, spans, watermark, closed, seq, updated_at) "
                    "VALUES (?, ?, ?, ?, NULL, 1, ?, ?) ON CONFLICT (timeline, key) DO UPDATE SET "
                    "spans = excluded.spans, closed = 1, seq = excluded.seq, updated_at = excluded.updated_at",
                    (batch.timeline, key, batch.shard, final.model_dump_json(), batch.seq, now),
                )
            c.execute("INSERT INTO applied VALUES (?, ?, ?) ON CONFLICT (timeline, shard) DO UPDATE SET seq = "
                      "excluded.seq", (batch.timeline, batch.shard, batch.seq))
            c.execute("COMMIT")
            return refused
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise

    def result(self, timeline: str, key: str) -> StoredResult | None:
        row = self._conn().execute("SELECT spans, watermark, closed FROM results WHERE timeline = ? AND key = ?",
                                   (timeline, key)).fetchone()
        if row is None:
            return None
        return StoredResult(KeyTimeline.model_validate_json(row[0]), row[1], bool(row[2]))

    def keys(self, timeline: str, closed: bool | None = None) -> list[str]:
        if closed is None:
            rows = self._conn().execute("SELECT key FROM results WHERE timeline = ? ORDER BY key", (timeline,))
        else:
            rows = self._conn().execute("SELECT key FROM results WHERE timeline = ? AND closed = ? ORDER BY key",
                                        (timeline, int(closed)))
        return [r[0] for r in rows.fetchall()]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
