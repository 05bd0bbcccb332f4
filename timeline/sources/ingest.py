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

A live stream (`follow_stream`) is read with httpx and httpx-sse; when the connection
drops (or the server ends the response, as EventStreams does every few minutes) it
reconnects with `Last-Event-ID`, the id of the last event received. `ResumeState`
keeps that id in a file, written only after Pulsar has confirmed every event up to
it (`ingest_sse`'s `checkpoint`), so a restarted `timeline ingest-sse` continues where
the previous one stopped, without a gap (and at most re-sends what was unconfirmed).

The Pulsar client is given (and closed) by the caller; pulsar is not imported at
import time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
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
from timeline.sources.sse import SSEEvent, SSEReader, parse_sse

__all__ = ["DEAD_LETTER_TOPIC", "IngestStats", "ResumeState", "USER_AGENT", "follow_stream", "ingest_sse",
           "open_source", "route_events"]

log = logging.getLogger("timeline.ingest")

DEAD_LETTER_TOPIC = "eventstreams-dead-letter"
USER_AGENT = "timeline-analytics/0.1 (timeline ingest-sse; httpx)"
HTTP_TIMEOUT_S = 120.0  # no byte (not even a keep-alive comment) for this long: the connection is dead
PROGRESS_INTERVAL_S = 5.0
CHECKPOINT_EVERY = 1000         # events: flush to Pulsar and save the resume position ...
CHECKPOINT_INTERVAL_S = 5.0     # ... or after this long, whichever comes first
RECONNECT_MIN_S = 0.5           # first wait before reconnecting (the server's `retry:` overrides it)
RECONNECT_MAX_S = 30.0          # waits double up to this


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
    reconnects: int = 0                             # live streams: connections re-opened after a drop
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
        if self.reconnects:
            lines.append(f"reconnected {self.reconnects:,} times (resumed with Last-Event-ID each time)")
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

    def flush(self) -> None:
        """Wait until the broker has confirmed everything sent; ProduceError if it did not take everything."""
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
        self._raise_unconfirmed(errors)

    def close(self) -> None:
        """Flush and close every producer; raise ProduceError if the broker did not take everything."""
        try:
            self.flush()
        finally:
            for producer in self.producers.values():
                with contextlib.suppress(Exception):
                    producer.close()

    def _raise_unconfirmed(self, errors: list[str]) -> None:
        with self.lock:
            acked, failures = self.acked, self.failures + errors
        if failures or acked < self.sent:
            first = failures[0] if failures else "no receipt from the broker"
            raise ProduceError(f"Pulsar did not confirm {self.sent - acked:,} of {self.sent:,} messages "
                               f"(first error: {first})")


def ingest_sse(lines: Iterable[str | bytes], pulsar_client, streams: Iterable[str] | None = None,
               validate: bool = True, dead_letter_topic: str = DEAD_LETTER_TOPIC, **options: Any) -> IngestStats:
    """Route the events of a recorded SSE stream (lines or chunks, text or bytes) to Pulsar topics.

    The same as `route_events(parse_sse(lines), ...)`; see there for the options.
    """
    return route_events(parse_sse(lines), pulsar_client, streams, validate, dead_letter_topic, **options)


def route_events(
    events: Iterable[SSEEvent],
    pulsar_client,
    streams: Iterable[str] | None = None,
    validate: bool = True,
    dead_letter_topic: str = DEAD_LETTER_TOPIC,
    *,
    limit: int | None = None,
    repository: SchemaRepository | None = None,
    stats: IngestStats | None = None,
    progress: Callable[[IngestStats], None] | None = None,
    checkpoint: Callable[[str], None] | None = None,
) -> IngestStats:
    """Route SSE events (`parse_sse`, `follow_stream`) to Pulsar topics.

    `streams`: the stream names to keep (default: every stream of `STREAMS`; a name
    not in `STREAMS` is routed by the same topic rule, validated against its schema
    only, and keyed when a page key can be read). `limit`: stop after that many
    events. `stats`: pass one to see the counts even if the run is interrupted.
    `checkpoint(last_event_id)` is called every `CHECKPOINT_EVERY` events or
    `CHECKPOINT_INTERVAL_S`, and at the end, each time after Pulsar has confirmed
    every event sent so far: a position saved there is safe to resume from.
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
    next_progress = time.monotonic() + PROGRESS_INTERVAL_S
    next_checkpoint = time.monotonic() + CHECKPOINT_INTERVAL_S
    since_checkpoint = 0
    saved: str | None = None

    def save() -> None:
        nonlocal saved, since_checkpoint, next_checkpoint
        producers.flush()
        since_checkpoint, next_checkpoint = 0, time.monotonic() + CHECKPOINT_INTERVAL_S
        if checkpoint is not None and stats.last_event_id and stats.last_event_id != saved:
            checkpoint(stats.last_event_id)
            saved = stats.last_event_id

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

    try:
        if limit is None or limit > 0:
            for sse_id, event_type, data in events:
                if event_type != "message":
                    stats.other_event_types += 1
                    continue
                stats.read += 1
                stats.last_event_id = sse_id
                handle(sse_id, data)
                since_checkpoint += 1
                if limit is not None and stats.read >= limit:
                    break
                now = time.monotonic()
                if since_checkpoint >= CHECKPOINT_EVERY or now >= next_checkpoint:
                    save()
                if progress is not None and now >= next_progress:
                    next_progress = now + PROGRESS_INTERVAL_S
                    stats.seconds = now - stats.started
                    progress(stats)
        save()
    except BaseException:
        stats.seconds = time.monotonic() - stats.started
        with contextlib.suppress(Exception):  # the first error is the one to report
            save()  # Ctrl-C: what was read is flushed, and its position kept
        with contextlib.suppress(Exception):
            producers.close()
        raise
    stats.seconds = time.monotonic() - stats.started
    producers.close()
    return stats


# --- resuming a live stream -----------------------------------------------------------------------

class ResumeState:
    """The last event id of a live stream, kept in a JSON file so that a restart resumes from it.

    Written atomically (a temporary file renamed over it), and only with positions
    Pulsar has confirmed (`route_events`' checkpoint).
    """

    def __init__(self, path: Path | None, url: str):
        self.path, self.url = path, url
        self.last_event_id: str | None = None
        if path is not None and path.exists():
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise UsageError(f"cannot read the resume state {path}: {exc}; delete it to start from now") \
                    from None
            if saved.get("url") == url:
                self.last_event_id = saved.get("last_event_id") or None

    def save(self, last_event_id: str) -> None:
        self.last_event_id = last_event_id
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"url": self.url, "last_event_id": last_event_id,
                                   "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
        os.replace(tmp, self.path)


def default_state_path(state_dir: Path, url: str) -> Path:
    """One resume file per stream URL (its path, made a file name, plus a short hash of the URL)."""
    import hashlib
    import re

    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", url.split("://", 1)[-1].split("?", 1)[0]).strip("_")[-80:]
    return state_dir / f"{slug}-{hashlib.sha1(url.encode()).hexdigest()[:8]}.json"


class _Retryable(Exception):
    """The connection failed or was refused in a way worth retrying."""


def follow_stream(url: str, *, last_event_id: str | None = None, since: str | None = None,
                  user_agent: str = USER_AGENT, timeout: float = HTTP_TIMEOUT_S,
                  max_reconnects: int | None = None, stats: IngestStats | None = None,
                  sleep: Callable[[float], None] = time.sleep) -> Iterator[SSEEvent]:
    """The events of a live SSE stream, across reconnects, for as long as it is iterated.

    Starts after `last_event_id` if given (`Last-Event-ID`), else at `since` (EventStreams'
    `since` query parameter: an ISO-8601 time or epoch ms), else now. When the connection
    drops or the server ends the response, it reconnects with the last event id received,
    waiting `retry:` (the server's) or a doubling backoff; `max_reconnects` failed attempts
    in a row (None: no limit) end it with a TimelineError. An HTTP 4xx other than 408/429 is
    not retried (a wrong URL stays wrong).
    """
    import httpx
    from httpx_sse import SSEError, connect_sse

    attempts = 0
    retry_ms: int | None = None
    first = True
    limits = httpx.Timeout(connect=10.0, read=timeout, write=10.0, pool=10.0)
    with httpx.Client(timeout=limits, follow_redirects=True, headers={"User-Agent": user_agent}) as client:
        while True:
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            reader: SSEReader | None = None
            params = {"since": since} if since and not last_event_id else None
            try:
                with connect_sse(client, "GET", url, headers=headers, params=params) as source:
                    status = source.response.status_code
                    if status >= 400:
                        message = f"{url} answered HTTP {status} {source.response.reason_phrase}"
                        if status in (408, 429) or status >= 500:
                            raise _Retryable(message)
                        raise TimelineError(message)
                    if not first:
                        log.info("reconnected to %s, resuming after event id %s", url, last_event_id)
                    reader = SSEReader(source, last_event_id)
                    for event in reader:
                        attempts = 0
                        last_event_id = reader.last_event_id
                        yield event
                raise _Retryable("the server ended the stream")
            except SSEError as exc:  # not an event stream: a wrong URL
                raise TimelineError(f"{url} is not a server-sent event stream: {exc}") from None
            except (_Retryable, httpx.TransportError) as exc:
                reason = str(exc) or type(exc).__name__
                retry_ms = (reader.retry_ms if reader is not None else None) or retry_ms
                attempts += 1
                if max_reconnects is not None and attempts > max_reconnects:
                    raise TimelineError(f"cannot reach {url}: {reason} ({attempts - 1} reconnects in a row "
                                        "failed)") from None
                delay = retry_ms / 1000 if retry_ms else min(RECONNECT_MIN_S * 2 ** (attempts - 1), RECONNECT_MAX_S)
                log.warning("%s: %s; reconnecting in %.1fs after event id %s", url, reason, delay, last_event_id)
                if stats is not None:
                    stats.reconnects += 1
                first = False
                sleep(delay)


# --- sources ------------------------------------------------------------------------------------

@contextlib.contextmanager
def open_source(source: str, *, user_agent: str = USER_AGENT, last_event_id: str | None = None,
                timeout: float = HTTP_TIMEOUT_S) -> Iterator[Iterable[bytes]]:
    """The bytes of a recorded source: a file path, `-` (stdin), or an http(s):// URL read once.

    (`follow_stream` follows a live stream across reconnects.) A URL is read as it streams (httpx), with `Accept: text/event-stream`, our
    User-Agent (Wikimedia asks every client for one) and, to resume, `Last-Event-ID`.
    Raises UsageError / TimelineError naming the source when it cannot be opened.
    """
    if source == "-":
        yield sys.stdin.buffer
        return
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    if scheme in ("http", "https"):
        import httpx

        headers = {"User-Agent": user_agent, "Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        limits = httpx.Timeout(connect=timeout, read=timeout, write=timeout, pool=timeout)
        with httpx.Client(timeout=limits, follow_redirects=True) as client:
            try:
                with client.stream("GET", source, headers=headers) as response:
                    if response.status_code >= 400:
                        raise TimelineError(f"{source} answered HTTP {response.status_code} "
                                            f"{response.reason_phrase}")
                    yield response.iter_bytes()
            except httpx.TransportError as exc:
                raise TimelineError(f"cannot reach {source}: {exc or type(exc).__name__}") from None
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
