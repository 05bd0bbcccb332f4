"""`POST /v1/events`: EventGate-compatible intake, so that a producer such as a LiftWing model
server can post its events straight to Timeline.

The body is one event or an array of events. Each is checked as EventGate checks it
(`timeline.sources.eventgate.EventGate`: its `meta.stream` must be a configured stream, its
`$schema` title the stream's, and it must validate against the schema). Valid events go to
their stream's Pulsar topic (`topic_for(meta.stream)`, keyed `<wiki>:<page id>` when the stream
is about pages, event time `meta.dt`), as `timeline ingest-sse` sends them; each invalid one
becomes an `error` event (`/error/2.1.0`) on `eventgate-main.error.validation`.

The answer is EventGate's:

* 201 when every event was accepted (202 at once with `?hasty=true`: sent, not awaited);
* 207 when some were not: `{"invalid": [...], "error": [...]}`, one entry per event not
  accepted (`invalid`: it failed validation; `error`: Pulsar did not take it), each with its
  `index` in the body, the `event` and a `context.message` saying why;
* 400 when none was valid (the same body); a body that is not JSON is a 400 too;
* 503 when Pulsar cannot be reached at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import Counter
from pydantic import BaseModel, Field

from timeline.api.errors import ApiError, _responses
from timeline.dsl.errors import EventError
from timeline.dsl.limits import MAX_REQUEST_BYTES
from timeline.runtime.control import ServiceUnavailable
from timeline.runtime.pulsar import PulsarUnavailable, create_producer, open_client
from timeline.sources.eventplatform import STREAMS, EventGate, event_time_ms, page_key, topic_for
from timeline.sources.schemas import ERROR_STREAM

log = logging.getLogger("timeline.api.intake")

SEND_TIMEOUT_S = 30.0  # waiting for Pulsar's receipts of one request's events

INTAKE_EVENTS = Counter("timeline_intake_events", "Events posted to /v1/events, by stream and outcome",
                        ["stream", "outcome"])

# AUTH HOOK: intake changes data; when D's bearer-token dependency (timeline/api/auth.py) is merged,
# put it here: INTAKE_DEPENDENCIES = [Depends(require_token)].
INTAKE_DEPENDENCIES: list = []


class EventOutcome(BaseModel):
    """One event that was not accepted."""

    status: str = Field(description="invalid: failed validation; error: could not be stored")
    index: int = Field(description="its position in the posted array (0 for a single event)")
    event: Any
    context: dict[str, Any] = Field(description="`message`: why; for invalid events also `errors`")


class IntakeOut(BaseModel):
    """EventGate's answer when not every event was accepted (207, 400)."""

    invalid: list[EventOutcome]
    error: list[EventOutcome]


CONNECT_TIMEOUT_S = 5.0  # creating a producer; an unreachable broker answers 503 after this
RETRY_AFTER_S = 5.0       # after an unreachable broker, requests answer 503 at once for this long


class PulsarSink:
    """Producers per topic on one Pulsar client, opened on first use (the API starts without Pulsar)."""

    def __init__(self, url: str):
        self.url = url
        self.client = None
        self.producers: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.down: tuple[float, PulsarUnavailable] | None = None  # (until, why): answer 503 at once till then

    def _producer(self, topic: str):
        with self.lock:
            if self.down is not None and time.monotonic() < self.down[0]:
                raise self.down[1]  # a broker that just refused is not asked again for every request
            if self.client is None:
                self.client = open_client(self.url, timeout_s=CONNECT_TIMEOUT_S)
            producer = self.producers.get(topic)
            if producer is None:
                try:
                    producer = create_producer(self.client, topic, batching_max_publish_delay_ms=5)
                except PulsarUnavailable as exc:
                    if exc.unreachable:
                        self.down = (time.monotonic() + RETRY_AFTER_S, exc)
                    raise
                self.producers[topic] = producer
                self.down = None
            return producer

    def send(self, items: list[tuple[str, bytes, str | None, int | None]], wait: bool = True) -> list[str | None]:
        """Send (topic, data, key, event time) each; per item None when Pulsar confirmed it, else why not."""
        import pulsar

        results: list[str | None] = ["no receipt from Pulsar"] * len(items)
        done = threading.Event()
        pending = [len(items)]
        guard = threading.Lock()

        def callback(i: int):
            def receipt(result, _mid) -> None:
                results[i] = None if result == pulsar.Result.Ok else f"Pulsar refused it: {result}"
                with guard:
                    pending[0] -= 1
                    if pending[0] == 0:
                        done.set()
            return receipt

        if not items:
            return []
        for i, (topic, data, key, t) in enumerate(items):
            try:
                producer = self._producer(topic)
                options: dict[str, Any] = {}
                if key:
                    options["partition_key"] = key
                if t is not None and t > 0:
                    options["event_timestamp"] = t
                producer.send_async(data, callback(i) if wait else None, **options)
            except PulsarUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - this event is reported as not stored
                results[i] = f"Pulsar refused it: {exc}"
                with guard:
                    pending[0] -= 1
                    if pending[0] == 0:
                        done.set()
        if not wait:
            return [None] * len(items)
        for producer in list(self.producers.values()):
            with contextlib.suppress(Exception):
                producer.flush()
        done.wait(SEND_TIMEOUT_S)
        return results

    def close(self) -> None:
        for producer in self.producers.values():
            with contextlib.suppress(Exception):
                producer.close()
        self.producers.clear()
        client, self.client = self.client, None
        if client is not None:
            client.close()


def _sink(request: Request) -> PulsarSink:
    state = request.app.state
    sink = getattr(state, "intake_sink", None)
    if sink is None:
        sink = state.intake_sink = PulsarSink(state.services.endpoints.pulsar)
    return sink


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    try:
        yield
    finally:
        sink = getattr(app.state, "intake_sink", None)
        if sink is not None:
            app.state.intake_sink = None  # a later start of the same app opens a new one
            await asyncio.to_thread(sink.close)


router = APIRouter(tags=["intake"], dependencies=INTAKE_DEPENDENCIES, lifespan=_lifespan)
_gate: EventGate | None = None


def gate() -> EventGate:
    global _gate
    if _gate is None:
        _gate = EventGate()  # loads the schema repository once
    return _gate


def _stream_of(event: Any) -> str:
    meta = event.get("meta") if isinstance(event, dict) else None
    stream = meta.get("stream") if isinstance(meta, dict) else None
    return stream if isinstance(stream, str) and stream in STREAMS else "unknown"


def _routing(event: dict) -> tuple[str, str | None, int | None]:
    """(topic, partition key, event time) of a valid event."""
    stream = event["meta"]["stream"]
    spec = STREAMS[stream]
    key = t = None
    with contextlib.suppress(EventError):
        t = event_time_ms(event)
    if spec.has_page:
        with contextlib.suppress(EventError):
            key = page_key(event, spec)
    return topic_for(stream), key, t


def _check_all(events: list) -> tuple[list[tuple[int, dict]], list[EventOutcome], list[tuple]]:
    """(valid events with their index, invalid outcomes, what to send: valid events to their topics,
    then one `error` event per invalid one to eventgate-main.error.validation)."""
    checker = gate()
    valid: list[tuple[int, dict]] = []
    invalid: list[EventOutcome] = []
    error_events: list[dict] = []
    for i, event in enumerate(events):
        problems = checker.check(event)
        if problems:
            message = "; ".join(problems)
            invalid.append(EventOutcome(status="invalid", index=i, event=event,
                                        context={"message": message, "errors": problems}))
            error_events.append(checker.error_event(event, message))
            INTAKE_EVENTS.labels(_stream_of(event), "invalid").inc()
        else:
            valid.append((i, event))
    sends: list[tuple] = []
    for _, event in valid:
        topic, key, t = _routing(event)
        sends.append((topic, msgspec.json.encode(event), key, t))
    error_topic = topic_for(ERROR_STREAM)
    sends += [(error_topic, msgspec.json.encode(e), None, None) for e in error_events]
    return valid, invalid, sends


@router.post(
    "/v1/events", status_code=201, summary="Post events, as to EventGate (one event or an array)",
    response_class=Response,
    responses={201: {"description": "every event was accepted"},
               202: {"description": "hasty: sent without waiting for Pulsar"},
               207: {"model": IntakeOut, "description": "some events were not accepted"},
               400: {"model": IntakeOut, "description": "no event was valid (or the body is not JSON)"},
               **_responses(413, 503)},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]}}}}})
async def post_events(request: Request, hasty: bool = Query(
        False, description="answer 202 once the events are sent, without waiting for Pulsar")) -> Response:
    raw = await request.body()
    if len(raw) > MAX_REQUEST_BYTES:
        raise ApiError(413, f"the body is {len(raw):,} bytes, over the limit of {MAX_REQUEST_BYTES:,}: "
                            "post fewer events per request")
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"the body is not JSON ({exc}): post one event (an object) or an array of "
                            "events") from None
    events = body if isinstance(body, list) else [body]
    # Schema validation is CPU work (jsonschema, ~1-3 ms an event): off the event loop, so that the
    # other routes keep answering while a large batch is checked.
    valid, invalid, sends = await asyncio.to_thread(_check_all, events)
    error_topic = topic_for(ERROR_STREAM)
    sink = _sink(request)
    try:
        results = await asyncio.to_thread(sink.send, sends, not hasty)
    except PulsarUnavailable as exc:
        raise ServiceUnavailable(f"Pulsar is unreachable at {sink.url} ({exc.reason}); no event was stored. "
                                 "Start it (`timeline up`) or restart the API with --pulsar URL, then post "
                                 "again") from None
    failed: list[EventOutcome] = []
    for (i, event), why in zip(valid, results):
        stream = event["meta"]["stream"]
        if why is None:
            INTAKE_EVENTS.labels(stream, "accepted").inc()
        else:
            INTAKE_EVENTS.labels(stream, "error").inc()
            failed.append(EventOutcome(status="error", index=i, event=event, context={"message": why}))
    for why in results[len(valid):]:
        if why is not None:
            log.warning("an error event for %s could not be stored: %s", error_topic, why)
    if not invalid and not failed:
        return Response(status_code=202 if hasty else 201)
    status = 400 if len(invalid) == len(events) else 207
    return JSONResponse(status_code=status,
                        content=IntakeOut(invalid=invalid, error=failed).model_dump(mode="json"))
