"""The Wikimedia event platform, as a consumer sees it: schemas, streams, keys, times, EventGate.

Pure: no Pulsar, no HTTP. The schemas are a copy kept in `sources/schemas/` (see its
PROVENANCE.md), so nothing outside the package is read at run time.

Schemas
    A schema is named by a URI such as `/mediawiki/page/change/1.2.0`: its *title*
    (`mediawiki/page/change`, a folder of the repository) and a version (a file in it).
    The repository keeps each version materialised (`1.2.0` and `1.2.0.yaml`: every
    `$ref` already inlined, what EventGate validates against) and, for the newest
    version, the unresolved source `current.yaml` (with `$ref`s to `/fragment/...`
    versions). `SchemaRepository(sources=True)` validates with those sources
    instead, resolving every `$ref` through the repository with `referencing`; its
    verdicts equal the materialised ones (tested), which proves the resolution.

Validation (`validate`)
    The event's `$schema` names the schema; it is matched by title, and the version
    named is used if the repository has it, else the newest (production producers are
    ahead of these files). JSON Schema draft-07 with two adjustments for real
    traffic: `additionalProperties: false` is dropped at every level (events carry
    fields newer than these schemas), and of the string formats only `date-time` is
    checked (it is every stream's time). Each problem is one message,
    `<JSON path>: <the validator's message>`, like EventGate's.

Streams (`STREAMS`)
    Each stream the project reads, with its schema title, its Pulsar topic, how its
    page key and its time are read. See `topic_for` for the topic names.
"""

from __future__ import annotations

from timeline.sources.eventgate import EventGate
from timeline.sources.schemas import (
    DEFAULT_ROOT,
    ERROR_SCHEMA_URI,
    ERROR_STREAM,
    SchemaNotFound,
    SchemaRef,
    SchemaRepository,
    default_repository,
    parse_schema_uri,
    validate,
)
from timeline.sources.streams import (
    STREAMS,
    StreamSpec,
    event_time_ms,
    is_canary,
    page_key,
    topic_for,
)

__all__ = [
    "DEFAULT_ROOT",
    "ERROR_SCHEMA_URI",
    "ERROR_STREAM",
    "EventGate",
    "SchemaNotFound",
    "SchemaRef",
    "SchemaRepository",
    "STREAMS",
    "StreamSpec",
    "default_repository",
    "event_time_ms",
    "is_canary",
    "page_key",
    "parse_schema_uri",
    "topic_for",
    "validate",
]
