"""Server-sent events (WHATWG HTML, "Parsing an event stream"), read with httpx-sse.

    :ok                                   <- a comment (EventStreams starts with one)
    event: message
    id: [{"topic":"eqiad.mediawiki.page_change.v1","partition":0,"timestamp":1750585691082}]
    data: {"$schema": "/mediawiki/page/change/1.6.0", ...}
                                          <- a blank line dispatches the event

The wire format is httpx-sse's to parse (its `EventSource` over an httpx response):
a live HTTP stream is read straight from the connection, and a recorded stream (a
file, stdin, a list of chunks) is wrapped in an in-memory httpx response, so every
source goes through the same well-kept parser. What this module adds is what a
resuming consumer needs on top:

* `SSEEvent(id, event_type, data)`: `id` is the last event id at dispatch (None when
  the stream never set one, or reset it with an empty `id:`), the position to resume
  from with `Last-Event-ID`;
* an event without data (`event: ping` alone, a lone `id:`) is not dispatched;
* a byte-order mark at the very start is dropped, invalid UTF-8 is replaced;
* `SSEReader` remembers the last dispatched id and the server's `retry` (ms).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # httpx is imported when a stream is read: the pure layers stay free of HTTP clients
    from httpx_sse import EventSource

__all__ = ["SSEEvent", "SSEReader", "event_source", "parse_sse"]

_BOM = "\ufeff".encode()


class SSEEvent(NamedTuple):
    """One dispatched event: unpacks as `(id, event_type, data)`."""

    id: str | None          # the last event ID at dispatch (None if never set, or reset by an empty `id:`)
    event_type: str         # `event:` field, "message" by default
    data: str


def _bom_stripped(chunks: Iterable[str | bytes]) -> Iterator[bytes]:
    """The stream as bytes, without a leading byte-order mark (even one split across chunks)."""
    head = b""
    it = iter(chunks)
    for chunk in it:
        raw = chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
        head += raw
        if len(head) >= len(_BOM) or not _BOM.startswith(head):
            break
    head = head.removeprefix(_BOM)
    if head:
        yield head
    for chunk in it:
        raw = chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
        if raw:
            yield raw


def event_source(chunks: Iterable[str | bytes]) -> EventSource:
    """httpx-sse's EventSource over a recorded stream (chunks of text or bytes of any size)."""
    import httpx
    from httpx_sse import EventSource

    response = httpx.Response(200, headers={"content-type": "text/event-stream; charset=utf-8"},
                              content=_bom_stripped(chunks))
    return EventSource(response)


class SSEReader:
    """The events of one EventSource, with what a resuming client keeps: the last id and `retry`."""

    def __init__(self, source: EventSource, last_event_id: str | None = None):
        self.source = source
        self.last_event_id = last_event_id
        self.retry_ms: int | None = None

    def __iter__(self) -> Iterator[SSEEvent]:
        for sse in self.source.iter_sse():
            if sse.retry is not None:
                self.retry_ms = sse.retry
            if not sse.data:
                continue  # no data: nothing to dispatch (httpx-sse yields id/retry-only blocks too)
            self.last_event_id = sse.id or None
            yield SSEEvent(self.last_event_id, sse.event or "message", sse.data)


def parse_sse(chunks: Iterable[str | bytes]) -> Iterator[SSEEvent]:
    """Every event of a recorded stream given as lines or chunks (text or bytes, any line ends)."""
    yield from SSEReader(event_source(chunks))
