"""The results store on SQLAlchemy Core: one implementation for SQLite and PostgreSQL.

The same statements run on both dialects; what differs is only how a write
transaction takes its lock:

* SQLite (the embedded default, one file in WAL mode shared by the worker,
  feeder, API and CLI): a write transaction is `BEGIN IMMEDIATE`, so it holds
  the file's one write lock from its first statement (no upgrade deadlocks);
  reads are plain deferred transactions that see a snapshot.
* PostgreSQL (several hosts, several workers publishing at once): a batch
  locks its `(timeline, shard)` row of `applied` (`SELECT ... FOR UPDATE`),
  so batches of one shard apply one after another while other shards go on
  in parallel. A key lives in exactly one shard, so its results row is only
  ever written under its shard's lock.

Apply semantics (both): a batch whose seq is older than the last one applied
for its (timeline, shard) is skipped; the same seq again is applied again (a
root whose workflow task re-ran after a worker crash sends its seq again with
what arrived meanwhile merged in); patches replace from `since`, so applying
one twice changes nothing. Only batches of the registered generation are kept
(another generation's: None). A closed key's result is final: the root's last
part is merged into it, and a change reaching into it is refused and returned
(the side output's "late").
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from timeline.dsl.errors import TimelineError
from timeline.dsl.incremental import KeyTimeline, SpanPatch
from timeline.models import ResultsBatch, TimelineSpec
from timeline.store.base import ResultsStore, StoredResult, TimelineExists, UnknownTimeline

metadata = sa.MetaData()

timelines = sa.Table(
    "timelines", metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

results = sa.Table(
    "results", metadata,
    sa.Column("timeline", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("shard", sa.Integer, nullable=False),
    sa.Column("spans", sa.Text, nullable=False),
    sa.Column("watermark", sa.BigInteger),
    # An integer, not a boolean: the embedded SQLite files written before this module had 0/1 here.
    sa.Column("closed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.Float, nullable=False),
)

applied = sa.Table(
    "applied", metadata,
    sa.Column("timeline", sa.Text, primary_key=True),
    sa.Column("shard", sa.Integer, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
)

# Keys per `IN (...)` of a bulk read: under SQLite's default limit of bound parameters.
KEYS_PER_STATEMENT = 900
_INSERT = {"sqlite": sqlite_dialect.insert, "postgresql": pg_dialect.insert}


def engine_url(url: str) -> sa.URL:
    """`postgresql://...` (or `postgres://`) as a psycopg 3 URL; `sqlite:///PATH` as it is."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise TimelineError(f"{url!r} is not a results store URL: use sqlite:///PATH or "
                            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


class SqlStore(ResultsStore):
    """Registrations and results in a SQL database named by a SQLAlchemy URL."""

    def __init__(self, url: str | sa.URL):
        self.url = engine_url(url) if isinstance(url, str) else url
        self.dialect = self.url.get_backend_name()
        if self.dialect not in _INSERT:
            raise TimelineError(f"unsupported results store {self.url.render_as_string()!r}: use sqlite:///PATH "
                                "or postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
        self.engine = self._make_engine()
        self._insert = _INSERT[self.dialect]
        self._statements = _Statements(self._insert)
        self._create_schema()

    # --- connections ------------------------------------------------------------------
    def _make_engine(self) -> Engine:
        if self.dialect == "postgresql":
            # pool_pre_ping: a PostgreSQL restart must not leave the API with dead connections.
            return sa.create_engine(self.url, pool_pre_ping=True, pool_size=5, max_overflow=5)
        from pathlib import Path

        if self.url.database:
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(self.url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            # A writer takes the file's write lock at once: a deferred transaction that
            # reads then writes can fail with "database is locked" instead of waiting.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

        return engine

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def _create_schema(self) -> None:
        # Several processes (workers, feeders, API, CLI) may create the tables at once; on
        # PostgreSQL one CREATE TABLE then fails on the catalog's unique index, on SQLite
        # switching to WAL can meet a lock the busy timeout does not cover: try again.
        for attempt in range(50):
            try:
                with self._write() as conn:
                    metadata.create_all(conn, checkfirst=True)
                return
            except (OperationalError, DBAPIError) as exc:
                if attempt == 49 or not _transient(exc):
                    raise
                self.engine.dispose()
                time.sleep(0.05 * (attempt + 1))

    # --- registrations ----------------------------------------------------------------
    def register(self, spec: TimelineSpec) -> bool:
        with self._write() as conn:
            # RETURNING, not rowcount: psycopg reports -1 for a conflict that inserted nothing.
            inserted = conn.execute(
                self._insert(timelines).values(name=spec.name, spec=spec.model_dump_json(), created_at=time.time())
                .on_conflict_do_nothing(index_elements=["name"]).returning(timelines.c.name)
            ).first()
            if inserted is not None:
                return True
            stored = conn.execute(sa.select(timelines.c.spec).where(timelines.c.name == spec.name)).scalar_one()
        if TimelineSpec.model_validate_json(stored).same_definition(spec):
            return False  # the same registration again: it keeps its generation
        raise TimelineExists(spec.name)

    def get(self, name: str) -> TimelineSpec:
        with self._read() as conn:
            stored = conn.execute(sa.select(timelines.c.spec).where(timelines.c.name == name)).scalar_one_or_none()
        if stored is None:
            raise UnknownTimeline(name)
        return TimelineSpec.model_validate_json(stored)

    def list(self) -> list[TimelineSpec]:
        with self._read() as conn:
            rows = conn.execute(sa.select(timelines.c.name, timelines.c.spec)).all()
        # Sorted here, by code point: the databases' collations differ.
        return [TimelineSpec.model_validate_json(spec) for _, spec in sorted(rows)]

    def remove(self, name: str) -> None:
        with self._write() as conn:
            gone = conn.execute(sa.delete(timelines).where(timelines.c.name == name)).rowcount
            conn.execute(sa.delete(results).where(results.c.timeline == name))
            conn.execute(sa.delete(applied).where(applied.c.timeline == name))
        if not gone:
            raise UnknownTimeline(name)

    # --- results ----------------------------------------------------------------------
    def apply_results(self, batch: ResultsBatch) -> list[SpanPatch] | None:
        # A few statements per batch, each for all its keys (built once, in _statements): the
        # per-statement cost of SQLAlchemy is paid per batch, not per key.
        st = self._statements
        with self._write() as conn:
            # Only the registered generation's batches are kept: a removed registration's
            # workflows may still publish, and must not write into a new one (same transaction).
            registered = conn.execute(sa.select(timelines.c.spec)
                                      .where(timelines.c.name == batch.timeline)).scalar_one_or_none()
            if registered is None or (json.loads(registered).get("generation") or "") != batch.generation:
                return None
            if not self._claim(conn, batch):
                return []
            now = time.time()
            keys = list(dict.fromkeys([*(p.key for p in batch.patches), *batch.closed]))
            stored: dict[str, tuple[KeyTimeline, bool, int | None]] = {}
            if keys:
                rows = conn.execute(st.rows_of, {"timeline": batch.timeline, "keys": keys})
                stored = {key: (KeyTimeline.model_validate_json(spans), bool(closed), wm)
                          for key, spans, closed, wm in rows}
            live: dict[str, KeyTimeline] = {}
            refused: list[SpanPatch] = []
            for patch in batch.patches:  # in order: a key may be patched twice in one batch
                old = stored.get(patch.key)
                if patch.key not in live and old is not None and old[1] and old[2] is not None \
                        and patch.since < old[2]:
                    # The key closed, and this change reaches into its final result: the workflows
                    # no longer hold its history, so it is a partial one. Refused as late.
                    refused.append(patch)
                    continue
                base = live.get(patch.key) or (old[0] if old is not None else KeyTimeline())
                live[patch.key] = base.with_patch(patch)
            if live:
                conn.execute(st.upsert_live, [
                    dict(timeline=batch.timeline, key=key, shard=batch.shard, spans=timeline.model_dump_json(),
                         watermark=batch.watermarks.get(key), closed=0, seq=batch.seq, updated_at=now)
                    for key, timeline in live.items()])
            refused_keys = {p.key for p in refused}
            marks = [dict(t=batch.timeline, k=key, wm=wm) for key, wm in batch.watermarks.items()
                     if key not in refused_keys]
            if marks:
                conn.execute(st.raise_watermark, marks)
            closing = []
            for key, final in batch.closed.items():
                # The root holds a key's timeline from its frontier on only (before it, it was
                # published already): merge it, never replace the history with it.
                old = (live[key], False, None) if key in live else stored.get(key)
                if key in refused_keys or (old is not None and old[1] and old[2] is not None and final.starts
                                           and final.starts[0] < old[2]):
                    continue  # a key that came back late and closed again: its first result stands
                merged = (old[0] if old is not None else KeyTimeline()).then(final)
                closing.append(dict(timeline=batch.timeline, key=key, shard=batch.shard,
                                    spans=merged.model_dump_json(), watermark=None, closed=1, seq=batch.seq,
                                    updated_at=now))
            if closing:
                conn.execute(st.upsert_closed, closing)
            conn.execute(sa.update(applied).where(applied.c.timeline == batch.timeline,
                                                  applied.c.shard == batch.shard).values(seq=batch.seq))
            return refused

    def _claim(self, conn: Connection, batch: ResultsBatch) -> bool:
        """Lock the batch's (timeline, shard) until commit; False when a newer batch was applied.

        The row is created first (seq -1: nothing applied) so that there is always a row to
        lock; on SQLite the transaction already holds the write lock."""
        conn.execute(self._insert(applied).values(timeline=batch.timeline, shard=batch.shard, seq=-1)
                     .on_conflict_do_nothing(index_elements=["timeline", "shard"]))
        last = sa.select(applied.c.seq).where(applied.c.timeline == batch.timeline, applied.c.shard == batch.shard)
        if self.dialect == "postgresql":
            last = last.with_for_update()
        # Skip only a batch older than the last one applied; the same seq again is a re-run.
        return conn.execute(last).scalar_one() <= batch.seq

    def result(self, timeline: str, key: str) -> StoredResult | None:
        return self.results(timeline, [key]).get(key)

    def results(self, timeline: str, keys: Sequence[str] | None = None,
                updated_since: float | None = None) -> dict[str, StoredResult]:
        """One query per chunk of keys (one for the whole timeline), not one per key."""
        query = sa.select(results.c.key, results.c.spans, results.c.watermark, results.c.closed).where(
            results.c.timeline == timeline)
        if updated_since is not None:
            query = query.where(results.c.updated_at >= updated_since)
        out: dict[str, StoredResult] = {}
        with self._read() as conn:
            chunks = [None] if keys is None else [list(keys[i:i + KEYS_PER_STATEMENT])
                                                 for i in range(0, len(keys), KEYS_PER_STATEMENT)]
            for chunk in chunks:
                q = query if chunk is None else query.where(results.c.key.in_(chunk))
                for row in conn.execute(q):
                    out[row.key] = StoredResult(KeyTimeline.model_validate_json(row.spans), row.watermark,
                                                bool(row.closed))
        return out

    def keys(self, timeline: str, closed: bool | None = None) -> list[str]:
        query = sa.select(results.c.key).where(results.c.timeline == timeline)
        if closed is not None:
            query = query.where(results.c.closed == int(closed))
        with self._read() as conn:
            return sorted(conn.execute(query).scalars())  # by code point, like the spans' keys elsewhere

    def close(self) -> None:
        self.engine.dispose()


class _Statements:
    """The statements of apply_results, built once per store (executed with many rows each)."""

    def __init__(self, insert):
        self.rows_of = (sa.select(results.c.key, results.c.spans, results.c.closed, results.c.watermark)
                        .where(results.c.timeline == sa.bindparam("timeline"),
                               results.c.key.in_(sa.bindparam("keys", expanding=True))))
        live = insert(results)
        self.upsert_live = live.on_conflict_do_update(index_elements=["timeline", "key"], set_=dict(
            spans=live.excluded.spans, closed=0, seq=live.excluded.seq, updated_at=live.excluded.updated_at,
            watermark=sa.func.coalesce(live.excluded.watermark, results.c.watermark)))
        wm = sa.bindparam("wm", type_=sa.BigInteger)
        self.raise_watermark = (sa.update(results)  # a watermark only moves forward
                                .where(results.c.timeline == sa.bindparam("t"), results.c.key == sa.bindparam("k"))
                                .values(watermark=sa.case((results.c.watermark.is_(None), wm),
                                                          (results.c.watermark < wm, wm),
                                                          else_=results.c.watermark)))
        closed = insert(results)
        self.upsert_closed = closed.on_conflict_do_update(index_elements=["timeline", "key"], set_=dict(
            spans=closed.excluded.spans, closed=1, seq=closed.excluded.seq, updated_at=closed.excluded.updated_at))


def _transient(exc: DBAPIError) -> bool:
    text = str(exc.orig if exc.orig is not None else exc).lower()
    return any(word in text for word in ("locked", "already exists", "duplicate key", "unique constraint",
                                          "deadlock"))
