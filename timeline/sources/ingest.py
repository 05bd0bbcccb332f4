"""EventStreams (server-sent events) -> Pulsar: `ingest_sse` and the sources it reads.

For every SSE `message` event (`data` is one event as JSON):

1. not JSON, or not an object            -> the dead-letter topic, with the reason
2. a canary (`meta.domain == "canary"`)   -> dropped, counted
3. its `meta.stream` not selected         -> skipped, counted (default selection: `STREAMS`)
4. invalid (EventGate's checks: the stream's schema title, then the schema; unless
   `validate=False`), or no usable page key / `meta.dt` -> the dead-letter topic
5. otherwise                              -> the stream's topic (`topic_for`), the data
   unchanged, partition key `"<wiki>:<page id>"`, event time `meta.dt`, and the SSE id
   (the position to resume from) in the `sse_id` property.

Dead-lettered messages carry the raw data and the properties `reason`, and when known
`stream`, `schema` and `sse_id`, like the feeder's dead-letter topic: nothing is
dropped silently. Events of one page keep their order (one producer per topic).

The Pulsar client is given (and closed) by the caller; this module imports neither
pulsar nor an HTTP library at import time.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from timeline.dsl.errors import EventError, TimelineError, UsageError
from timeline.runtime.pulsar import ProduceError, create_producer
from timeline.sources.eventplatform import (
    STREAMS,
    EventGate,
    SchemaRepository,
    default_repository,
    event_time_ms,
    is_canary,
    page_key,
    topic_for,
)
from timeline.sources.sse import SSEParser

__all__ = ["DEAD_LETTER_TOPIC", "IngestStats", "USER_AGENT", "ingest_sse", "open_source"]

DEAD_LETTER_TOPIC = "eventstreams-dead-letter"
USER_AGENT = "timeline-analytics/0.1 (timeline ingest-sse; Python urllib)"
HTTP_TIMEOUT_S = 120.0  # no byte (not even a keep-alive comment) for this long: the connection is dead
PROGRESS_INTERVAL_S = 5.0


@dataclass
class IngestStats:
    read: int = 0                                   # SSE `message` events read
    routed: Counter = field(default_factory=Counter)  # topic -> events sent
    canary: int = 0
    dead_lettered: int = 0
    skipped: int = 0                                # events of streams not selected
    other_event_types: int = 0                      # SSE events that are not `message`
    reasons: Counter = field(default_factory=Counter)  # dead-letter reason (first line) -> count
    last_event_id: str | None = None                # resume from here (`Last-Event-ID`)
    dead_letter_topic: str = ""
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        return sum(self.routed.values())

    def summary(self) -> str:
        lines = [f"read {self.read:,} events in {self.seconds:.2f} s: {self.sent:,} sent, "
                 f"{self.canary:,} canary dropped, {self.dead_lettered:,} dead-lettered, "
                 f"{self.skipped:,} of other streams skipped"]
        for topic, n in sorted(self.routed.items()):
            lines.append(f"  {n:>8,}  {topic}")
        if self.dead_lettered:
            lines.append(f"  {self.dead_lettered:>8,}  {self.dead_letter_topic} (reason in the `reason` property)")
            for reason, n in self.reasons.most_common(5):
                lines.append(f"            {n:,} x {reason}")
        if self.last_event_id:
            lines.append(f"last event id (resume with Last-Event-ID): {self.last_event_id}")
        return "\n".join(lines)


class _Producers:
    """One producer per topic, created on first use; counts what the broker confirms."""

    def __init__(self, client):
        self.client = client
        self.producers: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.sent = 0
        self.acked = 0
        self.failures: list[str] = []

    def send(self, topic: str, data: bytes, *, key: str | None = None, event_time: int | None = None,
             properties: dict[str, str] | None = None) -> None:
        producer = self.producers.get(topic)
        if producer is None:
            producer = self.producers[topic] = self._create(topic)
        kwargs: dict[str, Any] = {}
        if key is not None:
            kwargs["partition_key"] = key
        if event_time is not None and event_time > 0:
            kwargs["event_timestamp"] = event_time
        if properties:
            kwargs["properties"] = properties
        producer.send_async(data, self._done, **kwargs)
        self.sent += 1

    def _create(self, topic: str):
        return create_producer(self.client, topic, batching_max_publish_delay_ms=10)

    def _done(self, result, _message_id) -> None:  # on the client's I/O thread
        import pulsar

        with self.lock:
            if result == pulsar.Result.Ok:
                self.acked += 1
            else:
                self.failures.append(str(result))

    def close(self) -> None:
        """Flush and close every producer; raise ProduceError if the broker did not take everything."""

        errors = []
        for topic, producer in self.producers.items():
            try:
                producer.flush()
            except Exception as exc:  # noqa: BLE001 - reported below with the counts
                errors.append(f"{topic}: {exc}")
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:  # flush() returns before the last callback may have run
            with self.lock:
                if self.acked + len(self.failures) >= self.sent:
                    break
            time.sleep(0.001)
        for producer in self.producers.values():
            with contextlib.suppress(Exception):
                producer.close()
        with self.lock:
            acked, failures = self.acked, self.failures + errors
        if failures or acked < self.sent:
            first = failures[0] if failures else "no receipt from the broker"
            raise ProduceError(f"Pulsar did not confirm {self.sent - acked:,} of {self.sent:,} messages "
                               f"(first error: {first})")


def ingest_sse(
    lines: Iterable[str | bytes],
    pulsar_client,
    streams: Iterable[str] | None = None,
    validate: bool = True,
    dead_letter_topic: str = DEAD_LETTER_TOPIC,
    *,
    limit: int | None = None,
    repository: SchemaRepository | None = None,
    stats: IngestStats | None = None,
    progress: Callable[[IngestStats], None] | None = None,
) -> IngestStats:
    """Route the events of an SSE stream (lines or chunks, text or bytes) to Pulsar topics.

    `streams`: the stream names to keep (default: every stream of `STREAMS`; a name
    not in `STREAMS` is routed by the same topic rule, validated against its schema
    only, and keyed when a page key can be read). `limit`: stop after that many
    events. `stats`: pass one to see the counts even if the run is interrupted.
    Raises PulsarUnavailable / ProduceError (TimelineErrors) when Pulsar fails.
    """
    selected = set(STREAMS) if streams is None else set(streams)
    topics = {name: topic_for(name) for name in selected}  # a bad --stream name fails before reading
    dead_topic = topic_for(dead_letter_topic) if "://" not in dead_letter_topic else dead_letter_topic
    repository = repository or default_repository()
    gate = EventGate(repository)
    decode = msgspec.json.Decoder().decode
    stats = stats if stats is not None else IngestStats()
    stats.dead_letter_topic = dead_topic
    producers = _Producers(pulsar_client)
    parser = SSEParser()
    next_progress = time.monotonic() + PROGRESS_INTERVAL_S

    def dead(data: str, reason: str, sse_id: str | None, stream: str | None = None, schema: Any = None) -> None:
        props = {"reason": reason}
        if stream:
            props["stream"] = stream
        if isinstance(schema, str) and schema:
            props["schema"] = schema
        if sse_id:
            props["sse_id"] = sse_id
        producers.send(dead_topic, data.encode("utf-8"), properties=props)
        stats.dead_lettered += 1
        stats.reasons[reason.split("; ")[0][:200]] += 1

    def handle(sse_id: str | None, data: str) -> None:
        try:
            event = decode(data)
        except msgspec.DecodeError as exc:
            return dead(data, f"not valid JSON: {exc}", sse_id)
        if not isinstance(event, dict):
            return dead(data, f"not a JSON object: {type(event).__name__}", sse_id)
        if is_canary(event):
            stats.canary += 1
            return None
        meta = event.get("meta")
        stream = meta.get("stream") if isinstance(meta, dict) else None
        schema = event.get("$schema")
        if not isinstance(stream, str) or not stream:
            return dead(data, "no usable stream: no 'meta.stream'", sse_id, schema=schema)
        if stream not in selected:
            stats.skipped += 1
            return None
        spec = STREAMS.get(stream)
        if validate:
            problems = gate.check(event) if spec is not None else repository.validate(event)
            if problems:
                return dead(data, "; ".join(problems), sse_id, stream, schema)
        key = None
        try:
            t = event_time_ms(event)
            if spec is None:
                with contextlib.suppress(EventError):
                    key = page_key(event)
            elif spec.has_page:
                key = page_key(event, spec)
        except EventError as exc:
            return dead(data, exc.reason, sse_id, stream, schema)
        producers.send(topics[stream], data.encode("utf-8"), key=key, event_time=t,
                       properties={"sse_id": sse_id} if sse_id else None)
        stats.routed[topics[stream]] += 1
        return None

    def events() -> Iterator:
        for chunk in lines:
            yield from parser.feed(chunk)
        yield from parser.close()

    try:
        if limit is None or limit > 0:
            for sse_id, event_type, data in events():
                if event_type != "message":
                    stats.other_event_types += 1
                    continue
                stats.read += 1
                stats.last_event_id = sse_id
                handle(sse_id, data)
                if limit is not None and stats.read >= limit:
                    break
                if progress is not None and time.monotonic() >= next_progress:
                    next_progress = time.monotonic() + PROGRESS_INTERVAL_S
                    stats.seconds = time.monotonic() - stats.started
                    progress(stats)
    except BaseException:
        stats.seconds = time.monotonic() - stats.started
        with contextlib.suppress(Exception):  # the first error is the one to report
            producers.close()
        raise
    stats.seconds = time.monotonic() - stats.started
    producers.close()
    return stats


# --- sources ------------------------------------------------------------------------------------

@contextlib.contextmanager
def open_source(source: str, *, user_agent: str = USER_AGENT, last_event_id: str | None = None,
                timeout: float = HTTP_TIMEOUT_S) -> Iterator[Iterable[bytes]]:
    """The bytes of a source, as lines: a file path, `-` (stdin), or an http(s):// URL.

    A URL is read as it streams (urllib), with `Accept: text/event-stream`, our
    User-Agent (Wikimedia asks every client for one) and, to resume, `Last-Event-ID`.
    Raises UsageError / TimelineError naming the source when it cannot be opened.
    """
    if source == "-":
        yield sys.stdin.buffer
        return
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    if scheme in ("http", "https"):
        import urllib.error
        import urllib.request

        headers = {"User-Agent": user_agent, "Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        request = urllib.request.Request(source, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) only
        except urllib.error.HTTPError as exc:
            raise TimelineError(f"{source} answered HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TimelineError(f"cannot reach {source}: {reason}") from None
        with response:
            yield response
        return
    if scheme:
        raise UsageError(f"{source!r}: a source is a file, - (stdin) or an http(s):// URL")
    path = Path(source)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise UsageError(f"no such file: {source}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from None
    with handle:
        yield handle
