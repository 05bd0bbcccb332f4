"""EventGate, emulated: validate posted events, answer as EventGate does, turn rejects into error events."""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from timeline.sources.schemas import (
    ERROR_SCHEMA_URI,
    ERROR_STREAM,
    SchemaRepository,
    default_repository,
    kind_of,
    short_repr,
)
from timeline.sources.streams import STREAMS, StreamSpec, schema_title_of

# --- EventGate ------------------------------------------------------------------------------------

def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventGate:
    """What EventGate does to events on the way in, without the HTTP and Kafka around it.

    For each event: the stream is its `meta.stream` (or the `stream` the events were
    posted for); the stream must be configured, the event's schema title must be the
    stream's, and the event must validate. Each invalid event becomes an `error` event
    (`/error/2.1.0`) for `eventgate-main.error.validation`.
    """

    def __init__(self, repository: SchemaRepository | None = None, streams: Mapping[str, StreamSpec] = STREAMS,
                 *, error_stream: str = ERROR_STREAM, emitter_id: str = "eventgate-main",
                 clock: Callable[[], str] = _now_iso):
        self.repository = repository or default_repository()
        self.streams = streams
        self.error_stream = error_stream
        self.emitter_id = emitter_id
        self.clock = clock

    def check(self, event: Any, stream: str | None = None) -> list[str]:
        """Why `event` would be rejected (empty: accepted)."""
        if not isinstance(event, dict):
            return [f"$: an event is a JSON object, got {kind_of(event)}"]
        meta = event.get("meta")
        own = meta.get("stream") if isinstance(meta, dict) else None
        if own is not None and not isinstance(own, str):
            return [f"$.meta.stream: {short_repr(own)} is not of type 'string'"]
        if own and stream and own != stream:
            return [f"$.meta.stream: the event is for stream {own!r}, posted for {stream!r}"]
        name = own or stream
        if not name:
            return ["$.meta: 'stream' is a required property (an event names its stream)"]
        spec = self.streams.get(name)
        if spec is None:
            return [f"$.meta.stream: stream {name!r} is not configured here (configured: "
                    f"{', '.join(sorted(self.streams))})"]
        title = schema_title_of(event)
        if title is not None and title != spec.schema_title:
            return [f"$.$schema: schema title {title!r} is not the one configured for stream {name!r} "
                    f"({spec.schema_title!r})"]
        return self.repository.validate(event)

    def accept(self, events: Any, stream: str | None = None) -> tuple[list[Any], list[dict]]:
        """(the valid events, one `error` event per invalid one); `events` is one event or a list."""
        batch = events if isinstance(events, list) else [events]
        valid: list[Any] = []
        errors: list[dict] = []
        for event in batch:
            problems = self.check(event, stream)
            if problems:
                errors.append(self.error_event(event, "; ".join(problems), stream))
            else:
                valid.append(event)
        return valid, errors

    def error_event(self, event: Any, message: str, stream: str | None = None) -> dict:
        """The `/error/2.1.0` event EventGate writes for a rejected event."""
        now = self.clock()
        meta: dict[str, Any] = {"stream": self.error_stream, "dt": now, "id": str(uuid.uuid4())}
        own = event.get("meta") if isinstance(event, dict) else None
        own = own if isinstance(own, dict) else {}
        for field in ("domain", "request_id", "uri"):
            if isinstance(own.get(field), str) and own[field]:
                meta[field] = own[field]
        error: dict[str, Any] = {
            "$schema": ERROR_SCHEMA_URI,
            "meta": meta,
            "dt": now,
            "emitter_id": self.emitter_id,
            "raw_event": json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str),
            "message": message,
            "error_type": "ValidationError",
        }
        schema_uri = event.get("$schema") if isinstance(event, dict) else None
        if isinstance(schema_uri, str):
            error["errored_schema_uri"] = schema_uri
        stream_name = own.get("stream") if isinstance(own.get("stream"), str) else stream
        if stream_name:
            error["errored_stream_name"] = stream_name
        return error
