"""Side effects of the runtime: publishing a root's results.

`publish_results` writes a root batch to the results store (idempotent per
(timeline, shard, seq)) and to the timeline's Pulsar results topic as
`timeline/result_change` events (a JSON schema of the project's own, in the
Wikimedia event platform's style), validated before they are sent, one per
changed key, keyed by the key.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
import uuid
from typing import Any

import msgspec
from temporalio import activity

from timeline.dsl.results import key_timeline_spans
from timeline.models import LateBatch, RegistrationCheck, ResultsBatch
from timeline.store.base import ResultsStore

log = logging.getLogger("timeline.activities")


RESULT_SCHEMA = "/timeline/result_change/1.0.0"
RESULT_STREAM = "timeline.result_change"


def _iso(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def result_events(batch: ResultsBatch, now_ms: int) -> list[dict[str, Any]]:
    """A root batch as `timeline/result_change` events (the event platform's style:
    `$schema`, `meta`), one per changed or closed key."""
    events = []
    changes = [(p.key, p.since, p, False) for p in batch.patches]  # a patch has a timeline's fields
    changes += [(k, tl.starts[0] if tl.starts else 0, tl, True) for k, tl in batch.closed.items()]
    for key, since, timeline, closed in changes:
        spans = msgspec.to_builtins(key_timeline_spans(timeline))
        events.append({
            "$schema": RESULT_SCHEMA,
            "meta": {"stream": RESULT_STREAM, "id": str(uuid.uuid4()), "dt": _iso(now_ms), "domain": batch.timeline,
                     "request_id": f"{batch.timeline}/{batch.shard}/{batch.seq}"},
            "dt": _iso(since),
            "timeline": batch.timeline, "key": key, "shard": batch.shard, "seq": batch.seq, "since": since,
            "spans": spans, "watermark": batch.watermarks.get(key), "closed": closed,
        })
    return events


class ResultActivities:
    """Activities bound to a store and a Pulsar client (one per worker)."""

    def __init__(self, store: ResultsStore, pulsar_client=None, schemas=None):
        self.store = store
        self.pulsar = pulsar_client
        self.schemas = schemas  # a sources.eventplatform.SchemaRepository (loaded lazily)
        self._producers: dict[str, object] = {}
        self._lock = threading.Lock()
        self._encoder = msgspec.json.Encoder()

    def _producer(self, topic: str):
        with self._lock:
            producer = self._producers.get(topic)
            if producer is None:
                producer = self.pulsar.create_producer(topic, block_if_queue_full=True, batching_enabled=True)
                self._producers[topic] = producer
            return producer

    @activity.defn(name="registration_is_current")
    def registration_is_current(self, check: RegistrationCheck) -> bool:
        return self.store.is_current(check.name, check.generation)

    @activity.defn(name="publish_results")
    def publish_results(self, batch: ResultsBatch) -> None:
        refused = self.store.apply_results(batch)
        if refused is None:
            return  # another generation's batch (a removed registration): neither stored nor published
        if refused:
            # A key came back after closing, with an event older than its final result's
            # watermark: its final result stands; the partial change goes to the side output.
            log.warning("%s: %d changes to closed keys refused as late (e.g. %s since %d)", batch.timeline,
                        len(refused), refused[0].key, refused[0].since)
            batch = batch.model_copy(update={"patches": [p for p in batch.patches if p not in refused]})
        if self.pulsar is None:
            return
        if refused:
            producer = self._producer(f"{batch.results_topic}-late")
            for p in refused:
                body = {"timeline": batch.timeline, "key": p.key, "time": p.since, "reason": "late",
                        "detail": "the key had closed; its final result is kept"}
                producer.send_async(self._encoder.encode(body), None, partition_key=p.key,
                                    properties={"timeline": batch.timeline, "reason": "late"})
        producer = self._producer(batch.results_topic)
        props = {"timeline": batch.timeline, "shard": str(batch.shard), "seq": str(batch.seq)}
        schemas = self._schemas()
        for event in result_events(batch, int(time.time() * 1000)):
            errors = schemas.validate_against(event, RESULT_SCHEMA)
            if errors:  # our own bug: keep the event, with why, instead of sending an invalid one
                log.error("result event for %s/%s does not validate: %s", batch.timeline, event["key"], errors)
                self._producer(f"{batch.results_topic}-dead-letter").send_async(
                    self._encoder.encode(event), None, properties={**props, "reason": "; ".join(errors)})
                continue
            producer.send_async(self._encoder.encode(event), None, partition_key=event["key"], properties=props)
        producer.flush()

    @activity.defn(name="publish_side_output")
    def publish_side_output(self, batch: LateBatch) -> None:
        """Events a leaf did not apply, to the timeline's side-output topic, each with its reason."""
        log.info("%d %s events of %s shard %d to %s", len(batch.events), batch.reason, batch.timeline, batch.shard,
                 batch.topic)
        if self.pulsar is None:
            return
        producer = self._producer(batch.topic)
        for event in batch.events:
            body = {"timeline": batch.timeline, "key": event.key, "time": event.time, "reason": batch.reason,
                    "frontier": event.frontier, "fields": event.fields}
            producer.send_async(self._encoder.encode(body), None, partition_key=event.key,
                                properties={"timeline": batch.timeline, "reason": batch.reason})
        producer.flush()

    def _schemas(self):
        if self.schemas is None:
            from timeline.sources.eventplatform import SchemaRepository

            self.schemas = SchemaRepository()
        return self.schemas

    def close(self) -> None:
        for producer in self._producers.values():
            try:
                producer.close()
            except Exception:
                pass
        self._producers.clear()
