"""Where registrations and results live: a small interface, SQLite by default."""

from timeline.store.base import (
    ResultsStore,
    StoredResult,
    TimelineExists,
    UnknownTimeline,
    open_store,
)

__all__ = ["ResultsStore", "StoredResult", "TimelineExists", "UnknownTimeline", "open_store"]
