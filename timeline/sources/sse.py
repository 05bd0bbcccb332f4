"""The server-sent events wire format (WHATWG HTML, "Parsing an event stream"), pure.

    :ok                                   <- a comment (EventStreams starts with one)
    event: message
    id: [{"topic":"eqiad.mediawiki.page_change.v1","partition":0,"timestamp":1750585691082}]
    data: {"$schema": "/mediawiki/page/change/1.6.0", ...}
                                          <- a blank line dispatches the event

Lines end with CRLF, LF or CR; `field: value` (one space after the colon is
dropped; a line without a colon is a field with an empty value); several `data`
lines are joined with newlines; `id` persists to later events until changed (it is
the "last event ID" a client resumes from); `retry` sets the reconnection time;
unknown fields are ignored. An event with no data is not dispatched, and an event
not ended by a blank line when the stream ends is discarded (it may be cut off).

`SSEParser.feed(chunk)` takes text or bytes in chunks of any size (a CR at the end
of one chunk and an LF at the start of the next are one line end); `parse_sse`
wraps it for an iterable of lines or chunks (a file, a socket, a list).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple

__all__ = ["SSEEvent", "SSEParser", "parse_sse"]

_EOL = re.compile(r"\r\n|\r|\n")


class SSEEvent(NamedTuple):
    """One dispatched event: unpacks as `(id, event_type, data)`."""

    id: str | None          # the last event ID at dispatch ("" after an empty `id:`; None if never set)
    event_type: str         # `event:` field, "message" by default
    data: str


class SSEParser:
    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""               # text not yet ended by a line break
        self._pending_cr = False        # the previous chunk ended with CR: a following LF belongs to it
        self._started = False           # the BOM is stripped only at the very start
        self._data: list[str] = []
        self._event_type = ""
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, chunk: str | bytes) -> list[SSEEvent]:
        """Events completed by this chunk, in order."""
        text = self._decoder.decode(chunk) if isinstance(chunk, (bytes, bytearray)) else chunk
        if not text:
            return []
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]
        self._pending_cr = False
        out: list[SSEEvent] = []
        data = self._buffer + text
        start = 0
        for end in _EOL.finditer(data):
            event = self._line(data[start:end.start()])
            if event is not None:
                out.append(event)
            start = end.end()
            if end.group() == "\r" and start == len(data):
                self._pending_cr = True  # its LF, if any, starts the next chunk
        self._buffer = data[start:]
        return out

    def close(self) -> list[SSEEvent]:
        """End of the stream: an unterminated last line is processed, an undispatched event dropped."""
        tail = self._decoder.decode(b"", final=True)
        out = self.feed(tail) if tail else []
        if self._buffer:
            line, self._buffer = self._buffer, ""
            self._line(line)  # may set id/retry; the event it belongs to is never dispatched
        self._data, self._event_type = [], ""
        return out

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (EventStreams' `:ok`, keep-alives)
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event_type = value
        elif field == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif field == "retry":
            if value.isascii() and value.isdigit():
                self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        data, event_type = self._data, self._event_type
        self._data, self._event_type = [], ""
        if not data:
            return None
        return SSEEvent(self.last_event_id, event_type or "message", "\n".join(data))


def parse_sse(chunks: Iterable[str | bytes], parser: SSEParser | None = None) -> Iterator[SSEEvent]:
    """Every event of a stream given as lines or chunks (text or bytes, any line ends)."""
    parser = parser or SSEParser()
    for chunk in chunks:
        yield from parser.feed(chunk)
    yield from parser.close()
