"""Side effects of the runtime: publishing a root's results.

`publish_results` writes a root batch to the results store (idempotent per
(timeline, shard, seq)) and to the timeline's Pulsar results topic, one
message per key change, keyed by the key.
"""

from __future__ import annotations

import threading

import msgspec
from temporalio import activity

from store.base import ResultsStore
from workflows.models import ResultsBatch


class ResultMessage(msgspec.Struct, omit_defaults=True):
    """A result event on the results topic."""

    timeline: str
    key: str
    shard: int
    seq: int
    since: int | None = None
    starts: list[int] | None = None
    values: list | None = None
    slopes: list[float] | None = None
    watermark: int | None = None
    closed: bool = False


class ResultActivities:
    """Activities bound to a store and a Pulsar client (one per worker)."""

    def __init__(self, store: ResultsStore, pulsar_client=None):
        self.store = store
        self.pulsar = pulsar_client
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

    @activity.defn(name="publish_results")
    def publish_results(self, batch: ResultsBatch) -> None:
        self.store.apply_results(batch)
        if self.pulsar is None:
            return
        producer = self._producer(batch.results_topic)
        props = {"timeline": batch.timeline, "shard": str(batch.shard), "seq": str(batch.seq)}
        for patch in batch.patches:
            msg = ResultMessage(timeline=batch.timeline, key=patch.key, shard=batch.shard, seq=batch.seq,
                                since=patch.since, starts=patch.starts, values=patch.values, slopes=patch.slopes,
                                watermark=batch.watermarks.get(patch.key))
            producer.send_async(self._encoder.encode(msg), None, partition_key=patch.key, properties=props)
        for key, final in batch.closed.items():
            msg = ResultMessage(timeline=batch.timeline, key=key, shard=batch.shard, seq=batch.seq,
                                starts=final.starts, values=final.values, slopes=final.slopes, closed=True)
            producer.send_async(self._encoder.encode(msg), None, partition_key=key, properties=props)
        producer.flush()

    def close(self) -> None:
        for producer in self._producers.values():
            try:
                producer.close()
            except Exception:
                pass
        self._producers.clear()
