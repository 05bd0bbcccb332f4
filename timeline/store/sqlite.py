"""The embedded default: the SQL store on one SQLite file (WAL mode: the worker, feeder,
API and CLI of one host share it). The implementation is `timeline.store.sql`."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from timeline.store.sql import SqlStore


class SqliteStore(SqlStore):
    def __init__(self, path: str | Path):
        self.path = str(path)
        super().__init__(sa.URL.create("sqlite", database=self.path))
