"""The results store interface.

Registrations (TimelineSpec) and per-key root timelines (patched batch by
batch, marked closed when a key goes idle) live here. SQLite is the embedded
default; PostgreSQL serves several hosts. Both are one implementation on
SQLAlchemy Core (`timeline.store.sql`), chosen by URL (`open_store`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from timeline.dsl.errors import TimelineError
from timeline.dsl.incremental import KeyTimeline
from timeline.models import ResultsBatch, TimelineSpec


class UnknownTimeline(TimelineError):
    def __init__(self, name: str):
        super().__init__(f"no timeline named {name!r} is registered (see `register-workflow --list`)")
        self.name = name


class TimelineExists(TimelineError):
    def __init__(self, name: str):
        super().__init__(f"a timeline named {name!r} is already registered with a different definition; "
                         "remove it first (`register-workflow --remove NAME`) or choose another name")
        self.name = name


@dataclass(frozen=True)
class StoredResult:
    timeline: KeyTimeline
    watermark: int | None
    closed: bool


class ResultsStore(ABC):
    @abstractmethod
    def register(self, spec: TimelineSpec) -> bool:
        """Save a registration; False if the same one exists; TimelineExists if a different one does."""

    @abstractmethod
    def get(self, name: str) -> TimelineSpec:
        """The registration, or UnknownTimeline."""

    @abstractmethod
    def list(self) -> list[TimelineSpec]: ...

    @abstractmethod
    def remove(self, name: str) -> None:
        """Forget a registration and its results (UnknownTimeline if absent)."""

    @abstractmethod
    def apply_results(self, batch: ResultsBatch) -> None:
        """Apply a root batch: patch each key's timeline, record watermarks and closed keys.
        Idempotent: applying the same batch again changes nothing; a batch older than the
        last one applied (per timeline and shard) is skipped."""

    @abstractmethod
    def result(self, timeline: str, key: str) -> StoredResult | None: ...

    @abstractmethod
    def keys(self, timeline: str, closed: bool | None = None) -> list[str]: ...

    def close(self) -> None:
        pass


def open_store(url: str) -> ResultsStore:
    """`sqlite:///path/to/file.db` (or a plain path), or `postgresql://USER:PASSWORD@HOST:PORT/DATABASE`
    (also `postgresql+psycopg://...`; a Unix socket folder goes in `?host=/path`)."""
    from timeline.store.sql import SqlStore
    from timeline.store.sqlite import SqliteStore

    if url.startswith("sqlite:///"):
        return SqliteStore(url[len("sqlite:///"):])
    if url.startswith(("postgresql", "postgres://")):
        return SqlStore(url)
    if "://" in url:
        raise TimelineError(f"unsupported results store {url!r}: use sqlite:///PATH or "
                            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
    return SqliteStore(url)
