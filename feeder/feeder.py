"""The feeder: a source topic -> the leaf workflows of every timeline on it.

A receiver thread keeps taking messages from Pulsar (prefetched) into batches:
a batch leaves at once when the feeder is idle, and fills up (batch size,
linger) while it is busy, so latency is low when idle and signals are large
under load. For each batch the feeder checks and decodes every message once,
and for each timeline registered on the topic routes the event to its shard.
A message that cannot be applied goes to the dead-letter topic with its
reason (see `Feeder.process`), and the stream goes on. Then one signal per
leaf per shard carries the shard's events (signal-with-start), split so that
no signal passes MAX_SIGNAL_BYTES. With `pipeline` 2, two batches are in
flight at once (the next is routed while the one before is signalled; each
shard's signals keep their order). Only after Temporal has accepted every signal of a batch are its
messages acknowledged. Leaves apply each message
position once (per topic partition), so whatever Pulsar redelivers changes
nothing; the feeder also skips messages it has already handled in this
process, to save the work.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from temporalio.service import RPCError, RPCStatusCode

from timeline.dsl.compiler import Plan
from timeline.dsl.errors import EventError
from timeline.dsl.eventcheck import size_problem, time_problem, value_problem
from timeline.dsl.events import (
    MISSING,
    event_key,
    get_path,
    parse_time,
    split_key_paths,
    split_path,
)
from timeline.dsl.incremental import EventBatch
from timeline.dsl.limits import MAX_DELIVERIES, MAX_SIGNAL_BYTES
from timeline.feeder.metrics import FeederMetrics
from timeline.models import EventBatchSignal, TimelineSpec, shard_of, signal_budget
from timeline.runtime.control import send_batch
from timeline.runtime.pulsar import SubscriptionBusy, subscribe_once
from timeline.store.base import ResultsStore

log = logging.getLogger("timeline.feeder")

# What one event adds to a signal besides its values: position, partition, time, JSON punctuation.
EVENT_OVERHEAD_BYTES = 64
# Room in a signal-with-start request for the rest (the registration travels with it); a
# registration with a smaller max_state_bytes gets less (models.signal_budget: the server's
# blob limit may be smaller than Temporal's default).
SIGNAL_BUDGET_BYTES = MAX_SIGNAL_BYTES
# Message ids remembered as handled in this process (redeliveries of them are skipped).
HANDLED_MEMORY = 200_000


class Stopping(Exception):
    """The feeder was asked to stop while a batch was still being sent: it is left
    unacknowledged, and Pulsar delivers it again to the next feeder."""


@dataclass
class FeederSettings:
    topic: str
    subscription: str = "timeline-feeder"
    batch_size: int = 2000
    linger_ms: int = 200
    dead_letter_topic: str | None = None
    refresh_s: float = 1.0          # how often registrations are re-read (removals noticed within it)
    # Prefetch: the receiver thread keeps receiving while batches are signalled, and
    # acknowledges each batch as soon as Temporal accepted it.
    receiver_queue: int = 1000
    # Batches in flight at once (`--pipeline`): with 2, the next is routed while the one before
    # is signalled. 1 by default: end to end it gained nothing measurable here, and a leaf then
    # takes up to two batches per workflow task, which on an overloaded machine passed the
    # worker's 2 s deadlock detection.
    pipeline: int = 1
    # Several feeders on one topic: "exclusive" (one feeds, the others stand by) or "failover"
    # (the broker picks one per partition); see Feeder._subscribe.
    # Failover by default: with pulsar-lite, a feeder restarted after kill -9 of an Exclusive
    # holder kept timing out on the subscription (bench/exactly_once_stress.py); failover took over.
    subscription_type: str = "failover"
    consumer_name: str | None = None  # the name on the subscription (None: the client picks)
    standby_retry_s: float = 2.0
    continue_as_new_after: int | None = None
    max_deliveries: int = MAX_DELIVERIES

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
    redelivered_skipped: int = 0
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
    """Columns of one (timeline, shard) signal being built."""

    def __init__(self, columns: list[tuple[str, ...]]):
        self.keys: list[str] = []
        self.times: list[int] = []
        self.positions: list[tuple[int, int, int]] = []
        self.partitions: list[int] = []
        self.messages: list = []
        self.sizes: list[int] = []  # each event's share of a signal, estimated from above
        self.columns = {".".join(c): [] for c in columns}
        self.paths = list(zip(self.columns, columns))

    def add(self, key: str, t: int, partition: int, position: tuple[int, int, int], values: list, msg,
            size: int) -> None:
        self.keys.append(key)
        self.times.append(t)
        self.partitions.append(partition)
        self.positions.append(position)
        self.messages.append(msg)
        self.sizes.append(size)
        for (name, _), value in zip(self.paths, values):
            self.columns[name].append(value)

    def __len__(self) -> int:
        return len(self.keys)

    def signal(self, topic: str, generation: str, lo: int = 0, hi: int | None = None) -> EventBatchSignal:
        sl = slice(lo, hi)
        return EventBatchSignal(
            topic=topic, positions=self.positions[sl], partitions=self.partitions[sl], generation=generation,
            events=EventBatch(keys=self.keys[sl], times=self.times[sl],
                              columns={n: c[sl] for n, c in self.columns.items()}))


def _message_id(msg) -> tuple[int, int, int, int]:
    mid = msg.message_id()
    return (mid.partition(), mid.ledger_id(), mid.entry_id(), mid.batch_index())


def _rejected_by_temporal(exc: BaseException) -> bool:
    """A request Temporal refuses as such (too large, malformed): sending it again cannot help."""
    if isinstance(exc, RPCError) and exc.status == RPCStatusCode.INVALID_ARGUMENT:
        return True
    text = str(exc).lower()
    return "size" in text and "limit" in text


@dataclass
class _Routed:
    """A batch routed: its message ids, and the signals to send per (timeline, shard)."""

    ids: list
    sends: list[tuple[_Route, int, _ShardBuffer]]
    started: float = 0.0      # when routing began (monotonic), for the batch-time metric
    published_ms: int = 0     # the latest publish time among its messages, for the lag metric


class Feeder:
    def __init__(self, temporal_client, pulsar_client, store: ResultsStore, settings: FeederSettings,
                 reconnect=None):
        self.temporal = temporal_client
        self.pulsar = pulsar_client
        # A new Pulsar client after a failed subscribe: a subscribe that timed out on our side
        # may still have registered a consumer on the broker, which then holds the failover
        # subscription with nobody reading; closing the client's connection removes it.
        self.reconnect = reconnect
        self.store = store
        self.settings = settings
        self.stats = FeederStats()
        self.routes: list[_Route] = []
        self._routes_at = 0.0
        self._decoder = msgspec.json.Decoder()
        self._dlq = None
        self._waiting = False
        self._stop: asyncio.Event | None = None
        # message id -> None, for the messages handled (signalled or dead-lettered) in this process
        self._handled: collections.OrderedDict = collections.OrderedDict()
        self._failures: collections.Counter = collections.Counter()  # message id -> failed attempts here
        self.metrics = FeederMetrics(settings.topic, log)
        self._tails: dict[tuple, asyncio.Future] = {}  # (timeline, generation, shard) -> its last send

    # --- registrations -------------------------------------------------------------
    def refresh_routes(self, force: bool = False) -> list[_Route]:
        now = time.monotonic()
        if not force and now - self._routes_at < self.settings.refresh_s:
            return self.routes
        routes = []
        for spec in self.store.list():
            if not self.feeds(spec):
                continue
            mine = [s for s in spec.sources if s.topic == self.settings.topic]
            plan = spec.plan if mine else None
            for source in mine:
                routes.append(_Route(spec, plan, split_key_paths(source.key_path), split_path(source.time_path),
                                     source.time_path, plan.columns(), source.schema_title))
        described = [(r.spec.name, r.spec.generation) for r in routes]
        if described != [(r.spec.name, r.spec.generation) for r in self.routes]:
            log.info("feeding %s -> %s", self.settings.topic,
                     [f"{n} (generation {g or '-'})" for n, g in described] or "no timelines yet")
        self.routes, self._routes_at = routes, now
        return routes

    def feeds(self, spec: TimelineSpec) -> bool:
        """Whether this feeder feeds the timeline: the shared one feeds every timeline that starts live;
        one that starts earlier has a subscription of its own (feeder/backfill.py)."""
        return spec.start_from is None

    # --- one batch of messages -------------------------------------------------------
    async def process(self, messages: list) -> bool:
        """Route and signal a batch; False when no timeline reads this topic yet (nothing
        was done: the caller keeps the messages, unacknowledged, and tries again)."""
        routed = self.route(messages)
        if routed is None:
            return False
        await self._schedule(routed)
        self._done(routed)
        return True

    def route(self, messages: list) -> "_Routed | None":
        """Check, decode and route a batch to shard buffers (dead-lettering what cannot be
        applied); None when no timeline reads this topic yet.

        Dead-lettered, with the reason, instead of routed: a message over MAX_EVENT_BYTES;
        not JSON, or nested past MAX_EVENT_DEPTH, or with an integer outside int64 or a
        number out of range; not an object; without a usable key or time for a timeline;
        a time outside MIN_TIME_MS..MAX_TIME_MS; failing its source's schema; one whose
        fields alone would not fit a signal; one Temporal refuses on its own; one that
        failed MAX_DELIVERIES times. Redeliveries of messages already handled by this
        process are skipped (and acknowledged again)."""
        routes = self.refresh_routes()
        if not routes:  # a timeline registered since the last look must not be missed
            routes = self.refresh_routes(force=True)
        if not routes:
            return None
        started = self.metrics.batch_started(messages)
        buffers: dict[tuple[str, int], _ShardBuffer] = {}
        dead: list[tuple[Any, str, str | None]] = []
        handled = self._handled
        in_batch: set = set()
        for msg in messages:
            mid = _message_id(msg)
            if mid in handled or mid in in_batch:
                self.stats.redelivered_skipped += 1
                continue
            in_batch.add(mid)
            self.stats.messages += 1
            try:
                problem = self._route(msg, mid, routes, buffers, dead)
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the topic: this message goes
                log.exception("routing a message from %s failed", msg.topic_name())
                problem = f"internal error routing the message: {type(exc).__name__}: {exc}"
            if problem:
                dead.append((msg, problem, None))
        if dead:
            self._dead_letter(dead)
        by_name = {r.spec.name: r for r in routes}
        return _Routed(ids=list(in_batch), sends=[(by_name[name], shard, buf) for (name, shard), buf in buffers.items()],
                       started=started, published_ms=max((m.publish_timestamp() for m in messages), default=0))

    def _done(self, routed: "_Routed") -> None:
        handled = self._handled
        for mid in routed.ids:
            handled[mid] = None
        while len(handled) > HANDLED_MEMORY:
            handled.popitem(last=False)
        self.metrics.batch_signalled(routed.started, routed.published_ms, routed.sends)
        self.stats.batches += 1

    def _schedule(self, routed: "_Routed") -> asyncio.Future:
        """Start sending a routed batch; each (timeline, shard)'s signals go after those of the
        batch before (a leaf sees its events in arrival order), the shards independently."""
        tasks = []
        for route, shard, buf in routed.sends:
            key = (route.spec.name, route.spec.generation, shard)
            task = asyncio.ensure_future(self._send_after(self._tails.get(key), route, shard, buf))
            self._tails[key] = task
            tasks.append(task)
        return asyncio.gather(*tasks)

    async def _send_after(self, before: asyncio.Future | None, route: _Route, shard: int, buf: _ShardBuffer) -> None:
        if before is not None:
            await before  # a stop (Stopping) there stops this one too: nothing acknowledged
        await self._send_all(route, shard, buf)

    def _route(self, msg, mid, routes: list[_Route], buffers: dict, dead: list) -> str | None:
        """Route one message to the shard buffers; the reason it cannot be, if so."""
        attempts = max(msg.redelivery_count() + 1, self._failures[mid] + 1)
        if attempts > self.settings.max_deliveries:
            return f"delivered {attempts - 1} times without success (limit {self.settings.max_deliveries})"
        data = msg.data()
        problem = size_problem(len(data))
        if problem:
            return problem
        try:
            event = self._decoder.decode(data)
        except RecursionError:
            return "not valid JSON: nested too deeply"
        except (msgspec.DecodeError, ValueError) as exc:
            return f"not valid JSON: {exc}"
        if not isinstance(event, dict):
            return f"not a JSON object: {type(event).__name__}"
        problem = value_problem(event)
        if problem:
            return problem
        partition, position = mid[0], mid[1:]
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
            problem = time_problem(t, route.time_label)
            if problem:
                dead.append((msg, problem, route.spec.name))
                continue
            values = [get_path(event, path) for path in route.columns]
            values = [None if v is MISSING else v for v in values]
            size = len(data) + len(key) + EVENT_OVERHEAD_BYTES
            budget = min(SIGNAL_BUDGET_BYTES, signal_budget(route.spec))
            if size > budget // 8:  # large: count what is actually sent
                size = len(msgspec.json.encode([key, values])) + EVENT_OVERHEAD_BYTES
                if size > budget:
                    dead.append((msg, f"the fields timeline {route.spec.name!r} reads take {size} bytes, over the "
                                      f"{budget} bytes of a signal", route.spec.name))
                    continue
            shard = shard_of(key, route.spec.shards)
            buf = buffers.get((route.spec.name, shard))
            if buf is None:
                buf = buffers[(route.spec.name, shard)] = _ShardBuffer(route.columns)
            buf.add(key, t, partition, position, values, msg, size)
            self.stats.events_routed += 1
        return None

    async def _send_all(self, route: _Route, shard: int, buf: _ShardBuffer) -> None:
        """The shard's events in signals within the timeline's signal budget, in order."""
        for lo, hi in self._chunks(buf, min(SIGNAL_BUDGET_BYTES, signal_budget(route.spec))):
            await self._send_with_retry(route, shard, buf, lo, hi)

    @staticmethod
    def _chunks(buf: _ShardBuffer, budget: int = SIGNAL_BUDGET_BYTES) -> list[tuple[int, int]]:
        """Consecutive slices of the buffer, each within `budget` bytes (every event fits alone)."""
        chunks, lo, total = [], 0, 0
        for i, size in enumerate(buf.sizes):
            if total + size > budget and i > lo:
                chunks.append((lo, i))
                lo, total = i, 0
            total += size
        chunks.append((lo, len(buf.sizes)))
        return chunks

    async def _send_with_retry(self, route: _Route, shard: int, buf: _ShardBuffer, lo: int, hi: int) -> None:
        delay = 0.5
        while True:
            if self._stop is not None and self._stop.is_set():
                raise Stopping()
            try:
                await send_batch(self.temporal, route.spec, route.plan, shard,
                                 buf.signal(self.settings.topic, route.spec.generation, lo, hi),
                                 continue_as_new_after=self.settings.continue_as_new_after)
                self.stats.signals += len(route.plan.leaves)
                return
            except Exception as exc:
                if _rejected_by_temporal(exc):
                    if hi - lo > 1:  # too large after all, or one bad event in it: halve and find it
                        mid = (lo + hi) // 2
                        await self._send_with_retry(route, shard, buf, lo, mid)
                        await self._send_with_retry(route, shard, buf, mid, hi)
                        return
                    self._dead_letter([(buf.messages[lo], f"Temporal refused the event's signal: {exc}",
                                        route.spec.name)])
                    return
                # Temporal unavailable: keep the batch, unacknowledged, and retry (a stop ends it)
                log.warning("signalling %s shard %d failed (%s); retrying in %.1fs", route.spec.name, shard,
                            exc, delay)
                await self._sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _sleep(self, seconds: float) -> None:
        if self._stop is None:
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass

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
            self._dlq = self.pulsar.create_producer(self.settings.dead_letter, batching_enabled=True,
                                                    block_if_queue_full=True)
        for msg, reason, timeline in dead:
            props = {"reason": reason[:2000], "source_topic": msg.topic_name(),
                     "message_id": str(msg.message_id())}
            if timeline:
                props["timeline"] = timeline
            self._dlq.send_async(msg.data(), None, properties=props)
            self.stats.dead_lettered += 1
        self.metrics.dead_lettered(dead)  # one log line per message, repeats rate-limited
        self._dlq.flush()

    # --- the loop ---------------------------------------------------------------------
    async def _subscribe(self, stop: asyncio.Event):
        """The consumer, once this feeder holds the subscription (None if stopped before).

        Several feeders may run on one topic; each partition's messages must be fed in order by
        one of them at a time. Exclusive (default): one feeder holds the subscription and the
        others stand by, trying again every `standby_retry_s`; when the holder dies its
        connection closes and a standby takes over from the first unacknowledged message. A
        restarted feeder never takes over from a live one. Failover: the broker picks the active
        consumer per partition (Apache Pulsar spreads partitions over feeders). Any other
        failure (the broker away or slow: a timeout, a refused connection) is retried with
        backoff, on a new client; a stop ends the wait.
        """
        import pulsar

        kind = {"exclusive": pulsar.ConsumerType.Exclusive, "failover": pulsar.ConsumerType.Failover}
        options = dict(consumer_type=kind[self.settings.subscription_type],
                       initial_position=pulsar.InitialPosition.Earliest,
                       receiver_queue_size=self.settings.receiver_queue)
        if self.settings.consumer_name:
            options["consumer_name"] = self.settings.consumer_name
        waited = False
        delay = 0.5
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
            except Exception as exc:  # _pulsar.Timeout, ConnectError, ...: the broker is away or busy
                log.warning("subscribing to %s failed (%s: %s); retrying in %.1fs", self.settings.topic,
                            type(exc).__name__, exc, delay)
                if self.reconnect is not None:
                    old, self._dlq = self.pulsar, None
                    await loop.run_in_executor(None, old.close)
                    self.pulsar = self.reconnect()
                await self._sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            log.info("feeding from topic %s as the %s consumer of subscription %s", self.settings.topic,
                     self.settings.subscription_type, self.settings.subscription)
            return consumer
        return None

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        consumer = await self._subscribe(stop)
        if consumer is None:
            return
        self.refresh_routes(force=True)
        batches: queue.Queue = queue.Queue(maxsize=2)  # back-pressure on the receiver
        idle = threading.Event()  # set while nothing is in flight and the loop waits: send at once
        receiver = threading.Thread(target=self._receive, args=(consumer, batches, stop, idle), daemon=True)
        receiver.start()
        loop = asyncio.get_running_loop()
        in_flight: collections.deque = collections.deque()  # (sending, messages, routed), oldest first
        try:
            while not stop.is_set():
                try:
                    messages = batches.get_nowait()
                except queue.Empty:
                    if not in_flight:
                        idle.set()
                    try:
                        messages = await loop.run_in_executor(None, batches.get, True, 0.05 if in_flight else 0.2)
                    except queue.Empty:
                        await self._acknowledge(in_flight, consumer, keep=len(in_flight), only_done=True)
                        continue
                    finally:
                        idle.clear()
                if messages is None:
                    break
                await self._acknowledge(in_flight, consumer, keep=max(0, self.settings.pipeline - 1))
                try:
                    routed = self.route(messages)
                except Exception:  # noqa: BLE001 - the careful path below finds out why
                    log.exception("routing a batch of %d messages failed", len(messages))
                    routed = None
                if routed is None:  # no timeline yet, or a failure: alone, step by step
                    await self._acknowledge(in_flight, consumer, keep=0)
                    if not await self._process_or_wait(messages, stop):
                        return
                    self._ack(consumer, messages)
                    continue
                in_flight.append((self._schedule(routed), messages, routed))
            await self._acknowledge(in_flight, consumer, keep=0)
        except Stopping:
            pass  # what was in flight stays unacknowledged: the next feeder sends it again
        finally:
            stop.set()
            for sending, _, _ in in_flight:
                sending.cancel()
            receiver.join(timeout=5)
            consumer.close()
            if self._dlq is not None:
                self._dlq.close()

    async def _acknowledge(self, in_flight: collections.deque, consumer, keep: int, only_done: bool = False) -> None:
        """Wait for the oldest batches in flight until `keep` are left (or, `only_done`, take
        those already sent), and acknowledge their messages."""
        while in_flight and (len(in_flight) > keep or (only_done and in_flight[0][0].done())):
            sending, messages, routed = in_flight[0]
            await sending  # Stopping: the run ends, this batch unacknowledged
            in_flight.popleft()
            self._done(routed)
            self._ack(consumer, messages)

    @staticmethod
    def _ack(consumer, messages: list) -> None:
        # Individual acks: pulsar-lite ignores cumulative ones (dispatch then
        # stalls at its unacked limit); the client sends them in bulk anyway.
        for msg in messages:
            consumer.acknowledge(msg)

    async def _process_or_wait(self, messages: list, stop: asyncio.Event) -> bool:
        """Process a batch, holding it while no timeline reads the topic; False on stop."""
        while True:
            try:
                done = await self.process(messages)
            except Stopping:
                raise
            except Exception:  # noqa: BLE001 - found out below: one message's fault, or the servers'
                log.exception("a batch of %d messages failed; trying them one by one", len(messages))
                messages = await self._one_by_one(messages)
                if not messages:
                    return True
                await self._sleep(1.0)
                if stop.is_set():
                    return False
                continue
            if done:
                self._waiting = False
                return True
            # No timeline reads this topic: keep the messages in Pulsar (unacknowledged)
            # until one is registered, rather than acknowledging them unread.
            if not self._waiting:
                log.warning("no timeline is registered on topic %s: holding its messages until one is "
                            "(register-workflow ... --topic %s)", self.settings.topic, self.settings.topic)
                self._waiting = True
            if stop.is_set():
                return False
            await self._sleep(self.settings.refresh_s)

    async def _one_by_one(self, messages: list) -> list:
        """Process each message alone; the ones that still fail. A failure counts against a
        message (MAX_DELIVERIES, then dead-lettered) only when others went through: when
        all fail, a server is away, and waiting is the answer, not dead-lettering."""
        failed = []
        for msg in messages:
            try:
                if not await self.process([msg]):
                    failed.append(msg)
            except Stopping:
                raise
            except Exception:  # noqa: BLE001 - counted below
                failed.append(msg)
        if len(failed) < len(messages):
            for msg in failed:
                self._failures[_message_id(msg)] += 1
        return failed

    def _receive(self, consumer, batches: queue.Queue, stop: asyncio.Event, idle: threading.Event) -> None:
        """Keep receiving (prefetched) into batches: a batch leaves when it is full, when it has
        waited `linger`, or at once when the feeder is idle and nothing more is at hand, if
        the batch before left at least `linger / 4` ago (the feeder being idle does not mean
        the workers are: a trickle of one-event batches would cost them a workflow task each)."""
        import pulsar

        pending: list = []
        deadline = None
        linger = self.settings.linger_ms / 1000
        min_gap = linger / 4
        last_left = 0.0
        while not stop.is_set():
            wait_ms = 100 if not pending else 2
            try:
                pending.append(consumer.receive(timeout_millis=wait_ms))
                if deadline is None:
                    deadline = time.monotonic() + linger
                got = True
            except pulsar.Timeout:
                got = False
            except Exception as exc:  # the client is closing, or the broker away: it reconnects
                if stop.is_set():
                    break
                log.warning("receiving from %s failed (%s); retrying", self.settings.topic, exc)
                time.sleep(1.0)
                got = False
            now = time.monotonic()
            if pending and (len(pending) >= self.settings.batch_size or now >= deadline
                            or (not got and idle.is_set() and now - last_left >= min_gap)):
                while not stop.is_set():
                    try:
                        batches.put(pending, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                pending, deadline, last_left = [], None, time.monotonic()
        try:
            batches.put_nowait(None)
        except queue.Full:
            pass
