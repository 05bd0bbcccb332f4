"""The feeder: a source topic -> the leaf workflows of every timeline on it.

A receiver thread takes messages from Pulsar into batches (size / linger). For
each batch the feeder decodes every message once, and for each timeline
registered on the topic routes the event to its shard. A message that is not
a JSON object, or has no usable key or time for a timeline, goes to the
dead-letter topic with its reason. Then one signal per leaf per shard carries
the shard's events (signal-with-start). Only after Temporal has accepted every
signal of the batch are its messages acknowledged; a redelivered batch changes
nothing, since leaves skip positions they have applied.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from timeline.dsl.compiler import Plan
from timeline.dsl.errors import EventError
from timeline.dsl.events import (
    MISSING,
    event_key,
    get_path,
    parse_time,
    split_key_paths,
    split_path,
)
from timeline.dsl.incremental import EventBatch
from timeline.models import EventBatchSignal, TimelineSpec, shard_of
from timeline.runtime.control import send_batch
from timeline.runtime.pulsar import SubscriptionBusy, subscribe_once
from timeline.store.base import ResultsStore

log = logging.getLogger("timeline.feeder")


@dataclass
class FeederSettings:
    topic: str
    subscription: str = "timeline-feeder"
    batch_size: int = 500
    linger_ms: int = 200
    dead_letter_topic: str | None = None
    refresh_s: float = 2.0          # how often registrations are re-read
    # No prefetch by default: pulsar-lite stops dispatching (and, on resubscribe,
    # loses its place) when prefetched messages are acknowledged late, which the
    # feeder does on purpose (only after Temporal accepted their signals). With
    # Apache Pulsar a larger queue is safe and saves round trips.
    receiver_queue: int = 1
    # Several feeders on one topic: "exclusive" (one feeds, the others stand by) or "failover"
    # (the broker picks one per partition); see Feeder._subscribe.
    subscription_type: str = "exclusive"
    consumer_name: str | None = None  # the name on the subscription (None: the client picks)
    standby_retry_s: float = 2.0
    continue_as_new_after: int | None = None

    @property
    def dead_letter(self) -> str:
        return self.dead_letter_topic or f"{self.topic}-dead-letter"


@dataclass
class FeederStats:
    messages: int = 0
    events_routed: int = 0
    dead_lettered: int = 0
    canaries: int = 0
    signals: int = 0
    batches: int = 0
    started: float = field(default_factory=time.time)


@dataclass
class _Route:
    """A timeline fed by this feeder's topic, with where that source keeps key and time."""

    spec: TimelineSpec
    plan: Plan
    key_paths: tuple[tuple[str, ...], ...]
    time_path: tuple[str, ...]
    time_label: str
    columns: list[tuple[str, ...]]
    schema_title: str | None = None


class _ShardBuffer:
    """Columns of one (timeline, shard) batch being built."""

    def __init__(self, columns: list[tuple[str, ...]]):
        self.keys: list[str] = []
        self.times: list[int] = []
        self.positions: list[tuple[int, int, int]] = []
        self.columns = {".".join(c): [] for c in columns}
        self.paths = list(zip(self.columns, columns))

    def add(self, key: str, t: int, position: tuple[int, int, int], event: dict) -> None:
        self.keys.append(key)
        self.times.append(t)
        self.positions.append(position)
        for name, path in self.paths:
            value = get_path(event, path)
            self.columns[name].append(None if value is MISSING else value)


class Feeder:
    def __init__(self, temporal_client, pulsar_client, store: ResultsStore, settings: FeederSettings):
        self.temporal = temporal_client
        self.pulsar = pulsar_client
        self.store = store
        self.settings = settings
        self.stats = FeederStats()
        self.routes: list[_Route] = []
        self._routes_at = 0.0
        self._decoder = msgspec.json.Decoder()
        self._dlq = None
        self._waiting = False

    # --- registrations -------------------------------------------------------------
    def refresh_routes(self, force: bool = False) -> list[_Route]:
        now = time.monotonic()
        if not force and now - self._routes_at < self.settings.refresh_s:
            return self.routes
        routes = []
        for spec in self.store.list():
            mine = [s for s in spec.sources if s.topic == self.settings.topic]
            plan = spec.plan if mine else None
            for source in mine:
                routes.append(_Route(spec, plan, split_key_paths(source.key_path), split_path(source.time_path),
                                     source.time_path, plan.columns(), source.schema_title))
        if [r.spec.name for r in routes] != [r.spec.name for r in self.routes]:
            log.info("feeding %s -> %s", self.settings.topic, [r.spec.name for r in routes] or "no timelines yet")
        self.routes, self._routes_at = routes, now
        return routes

    # --- one batch of messages -------------------------------------------------------
    async def process(self, messages: list) -> bool:
        """Route and signal a batch; False when no timeline reads this topic yet (nothing
        was done: the caller keeps the messages, unacknowledged, and tries again)."""
        routes = self.refresh_routes()
        if not routes:  # a timeline registered since the last look must not be missed
            routes = self.refresh_routes(force=True)
        if not routes:
            return False
        buffers: dict[tuple[str, int, str], _ShardBuffer] = {}
        dead: list[tuple[Any, str, str | None]] = []
        for msg in messages:
            self.stats.messages += 1
            mid = msg.message_id()
            position = (mid.ledger_id(), mid.entry_id(), mid.batch_index())
            try:
                event = self._decoder.decode(msg.data())
            except msgspec.DecodeError as exc:
                dead.append((msg, f"not valid JSON: {exc}", None))
                continue
            if not isinstance(event, dict):
                dead.append((msg, f"not a JSON object: {type(event).__name__}", None))
                continue
            for route in routes:
                if route.schema_title is not None:
                    problem = self._schema_problem(event, route.schema_title)
                    if problem == "canary":
                        self.stats.canaries += 1  # synthetic monitoring events: not data
                        continue
                    if problem:
                        dead.append((msg, problem, route.spec.name))
                        continue
                try:
                    key = event_key(event, route.key_paths)
                    t = parse_time(get_path(event, route.time_path), route.time_label)
                except EventError as exc:
                    dead.append((msg, exc.reason, route.spec.name))
                    continue
                shard = shard_of(key, route.spec.shards)
                # Positions are per partition (each partition of a partitioned topic is its own
                # topic with its own ledgers): one signal per partition, named by its topic.
                where = (route.spec.name, shard, msg.topic_name())
                buf = buffers.get(where)
                if buf is None:
                    buf = buffers[where] = _ShardBuffer(route.columns)
                buf.add(key, t, position, event)
                self.stats.events_routed += 1
        routed_before = sum(len(b.keys) for b in buffers.values())
        log.debug("batch of %d messages: %d events routed to %d shard batches, %d dead-lettered, routes %s",
                  len(messages), routed_before, len(buffers), len(dead), [r.spec.name for r in routes])
        if dead:
            self._dead_letter(dead)
        by_name = {r.spec.name: r for r in routes}
        sends = []
        for (name, shard, partition_topic), buf in buffers.items():
            route = by_name[name]
            signal = EventBatchSignal(
                topic=partition_topic, positions=buf.positions,
                events=EventBatch(keys=buf.keys, times=buf.times, columns=buf.columns),
            )
            sends.append(self._send_with_retry(route, shard, signal))
            self.stats.signals += len(route.plan.leaves)
        await asyncio.gather(*sends)
        self.stats.batches += 1
        return True

    async def _send_with_retry(self, route: _Route, shard: int, signal: EventBatchSignal) -> None:
        delay = 0.5
        while True:
            try:
                await send_batch(self.temporal, route.spec, route.plan, shard, signal,
                                 continue_as_new_after=self.settings.continue_as_new_after)
                return
            except Exception as exc:  # Temporal unavailable: keep the batch, unacknowledged, and retry
                log.warning("signalling %s shard %d failed (%s); retrying in %.1fs", route.spec.name, shard,
                            exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _schema_problem(self, event: dict, title: str) -> str | None:
        """None for a valid event of the schema; "canary"; or why it is rejected (EventGate's words)."""
        from timeline.sources.eventplatform import is_canary, parse_schema_uri, validate

        if is_canary(event):
            return "canary"
        uri = event.get("$schema")
        try:
            named = parse_schema_uri(uri)[0] if isinstance(uri, str) else None
        except ValueError as exc:
            return f"schema: {exc}"
        if named is not None and named != title:
            return f"schema: $schema {uri!r} is not a version of {title!r}, the schema of this source"
        errors = validate(event)
        return f"schema: {'; '.join(errors)}" if errors else None

    def _dead_letter(self, dead: list) -> None:
        if self._dlq is None:
            self._dlq = self.pulsar.create_producer(self.settings.dead_letter, batching_enabled=True)
        for msg, reason, timeline in dead:
            props = {"reason": reason, "source_topic": msg.topic_name(),
                     "message_id": str(msg.message_id())}
            if timeline:
                props["timeline"] = timeline
            self._dlq.send_async(msg.data(), None, properties=props)
            self.stats.dead_lettered += 1
            log.warning("dead-lettered a message from %s: %s", msg.topic_name(), reason)
        self._dlq.flush()

    # --- the loop ---------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        consumer = await self._subscribe(stop)
        if consumer is None:
            return
        self.refresh_routes(force=True)
        batches: queue.Queue = queue.Queue(maxsize=4)  # back-pressure on the receiver
        receiver = threading.Thread(target=self._receive, args=(consumer, batches, stop), daemon=True)
        receiver.start()
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set() or not batches.empty():
                try:
                    messages = await loop.run_in_executor(None, batches.get, True, 0.2)
                except queue.Empty:
                    continue
                if messages is None:
                    break
                while not await self.process(messages):
                    # No timeline reads this topic: keep the messages in Pulsar (unacknowledged)
                    # until one is registered, rather than acknowledging them unread.
                    if not self._waiting:
                        log.warning("no timeline is registered on topic %s: holding its messages until one is "
                                    "(register-workflow ... --topic %s)", self.settings.topic, self.settings.topic)
                        self._waiting = True
                    if stop.is_set():
                        return
                    await asyncio.sleep(self.settings.refresh_s)
                self._waiting = False
                # Individual acks: pulsar-lite ignores cumulative ones (dispatch then
                # stalls at its unacked limit); the client sends them in bulk anyway.
                for msg in messages:
                    consumer.acknowledge(msg)
        finally:
            stop.set()
            receiver.join(timeout=5)
            consumer.close()
            if self._dlq is not None:
                self._dlq.close()

    async def _subscribe(self, stop: asyncio.Event):
        """The consumer, once this feeder holds the subscription (None if stopped before).

        Several feeders may run on one topic; each partition's messages must be fed in order by
        one of them at a time (leaves skip positions at or before the last one applied, per
        partition). Exclusive (default): one feeder holds the subscription and the others stand
        by, trying again every `standby_retry_s`; when the holder dies its connection closes and
        a standby takes over from the first unacknowledged message. A restarted feeder never
        takes over from a live one. Failover: the broker picks the active consumer per
        partition (Apache Pulsar spreads partitions over feeders) and may move a partition to
        a feeder that joins while another still has messages in flight.
        """
        import pulsar

        kind = {"exclusive": pulsar.ConsumerType.Exclusive, "failover": pulsar.ConsumerType.Failover}
        options = dict(consumer_type=kind[self.settings.subscription_type],
                       initial_position=pulsar.InitialPosition.Earliest,
                       receiver_queue_size=self.settings.receiver_queue)
        if self.settings.consumer_name:
            options["consumer_name"] = self.settings.consumer_name
        waited = False
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                consumer = await loop.run_in_executor(None, lambda: subscribe_once(
                    self.pulsar, self.settings.topic, self.settings.subscription, **options))
            except SubscriptionBusy as exc:
                if not waited:
                    log.info("standing by: %s; trying again every %.0fs", exc, self.settings.standby_retry_s)
                    waited = True
                try:
                    await asyncio.wait_for(stop.wait(), self.settings.standby_retry_s)
                except asyncio.TimeoutError:
                    pass
                continue
            log.info("feeding from topic %s as the %s consumer of subscription %s", self.settings.topic,
                     self.settings.subscription_type, self.settings.subscription)
            return consumer
        return None

    def _receive(self, consumer, batches: queue.Queue, stop: asyncio.Event) -> None:
        import pulsar

        pending: list = []
        deadline = None
        linger = self.settings.linger_ms / 1000
        while not stop.is_set():
            wait_ms = 100 if deadline is None else max(1, int((deadline - time.monotonic()) * 1000))
            try:
                pending.append(consumer.receive(timeout_millis=wait_ms))
                if deadline is None:
                    deadline = time.monotonic() + linger
            except pulsar.Timeout:
                pass
            except Exception:  # the client is closing
                if stop.is_set():
                    break
                raise
            if pending and (len(pending) >= self.settings.batch_size or time.monotonic() >= deadline):
                while not stop.is_set():
                    try:
                        batches.put(pending, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                pending, deadline = [], None
        batches.put(None)
