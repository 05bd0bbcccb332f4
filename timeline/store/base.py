"""The results store interface.

Registrations (TimelineSpec) and per-key root timelines (patched batch by
batch, marked closed when a key goes idle) live here. SQLite is the embedded
default; PostgreSQL serves several hosts. Both are one implementation on
SQLAlchemy Core (`timeline.store.sql`), chosen by URL (`open_store`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from timeline.dsl.errors import TimelineError
from timeline.dsl.incremental import KeyTimeline, SpanPatch
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
        """Save a registration; False if the same one exists (equal but for the generation:
        `TimelineSpec.same_definition`; the stored one, with its generation, stays);
        TimelineExists if a different one does."""

    @abstractmethod
    def get(self, name: str) -> TimelineSpec:
        """The registration, or UnknownTimeline."""

    @abstractmethod
    def list(self) -> list[TimelineSpec]: ...

    @abstractmethod
    def remove(self, name: str) -> None:
        """Forget a registration and its results (UnknownTimeline if absent)."""

    @abstractmethod
    def apply_results(self, batch: ResultsBatch) -> list[SpanPatch] | None:
        """Apply a root batch: patch each key's timeline, record watermarks and closed keys.
        Idempotent: applying the same batch again changes nothing; a batch older than the
        last one applied (per timeline and shard) is skipped. A closed key's timeline is
        merged (the root holds only its part from the frontier on). A patch reaching before
        a closed key's watermark is not applied (the closed result is final; the key came
        back with a late event and without its history): returned, for the side output.
        A batch whose `generation` is not the registered one's (a removed registration's
        workflows still publishing), or of a timeline no longer registered, is skipped and
        None returned (checked in the same transaction as the write).

        Returns None (skipped: not this registration) or the refused late patches."""

    def is_current(self, name: str, generation: str) -> bool:
        """Is `name` registered, with this generation?"""
        try:
            return self.get(name).generation == generation
        except UnknownTimeline:
            return False

    @abstractmethod
    def result(self, timeline: str, key: str) -> StoredResult | None: ...

    @abstractmethod
    def keys(self, timeline: str, closed: bool | None = None) -> list[str]: ...

    @abstractmethod
    def results(self, timeline: str, keys: Sequence[str] | None = None,
                updated_since: float | None = None) -> dict[str, StoredResult]:
        """Many keys' results at once (all of the timeline's when `keys` is None), optionally
        only those written at or after `updated_since` (seconds since the epoch, the
        writer's clock); a key without a result is left out. A row's time is when its batch
        began to be written, and the batch commits later: a reader that polls with it should
        overlap its windows by the longest write (seconds on a busy machine)."""

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
