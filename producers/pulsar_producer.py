"""Send JSON events to a Pulsar topic: one message per event, keyed, in order.

`produce_sessions` is the whole sending loop, usable from code and tests with
any `pulsar.Client`: every record becomes one msgspec-encoded JSON message whose
partition key is the record's session id, sent in the order given (a generator's
arrival order, so late events stay late on the topic), with `send_async`,
batching and a final flush. A record can also name its own topic and key
(`TopicRecord`, for a scenario that writes several streams): it goes to that
topic, and the order is kept per topic. A non-zero `rate` paces the sends on a fixed
schedule (`due_time`): event i leaves at `i / rate` seconds after the start, so
sleeping never accumulates drift and a stall is caught up afterwards.

The producer it creates is always flushed and closed, also on Ctrl-C (raised as
`ProduceInterrupted`, which carries what was sent); the caller owns the client
and must close it (see `open_client`): pulsar-client can crash at interpreter
exit when a client is left to the garbage collector.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from timeline.runtime.pulsar import (
    DEFAULT_CONNECT_TIMEOUT_S,
    ProduceError,
    PulsarUnavailable,
    create_producer,
    open_client,
)
from timeline.runtime.pulsar import describe as _describe

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_TOPIC",
    "ProduceError",
    "ProduceInterrupted",
    "ProduceStats",
    "ProgressBar",
    "PulsarUnavailable",
    "TopicRecord",
    "due_time",
    "open_client",
    "produce_sessions",
    "render_progress",
]

DEFAULT_TOPIC = "video-events"
PROGRESS_INTERVAL_S = 0.1
# Sleeping for less than this costs more than it paces: the schedule catches up.
_MIN_SLEEP_S = 0.0005
# Pending messages allowed in flight: enough for several full batches, so the
# client pipelines batches instead of waiting for each one's receipt.
_MAX_PENDING = 20_000
_BATCH_MAX_MESSAGES = 1000
_BATCH_DELAY_MS = 10

ProgressCallback = Callable[[int, int, float], None]



@dataclass(frozen=True, slots=True)
class TopicRecord:
    """A record that carries its own topic and partition key (`value` is the JSON message)."""

    topic: str
    key: str | None
    value: dict[str, Any]



@dataclass(frozen=True)
class ProduceStats:
    events: int  # sent and acknowledged by the broker
    sessions: int  # distinct partition keys among them
    seconds: float
    topic: str
    total: int | None = None  # events that were to be sent (differs when interrupted)
    # events sent per topic, when the records named their own topics (`TopicRecord`); else None
    topics: dict[str, int] | None = None

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        if self.topics is not None:
            where = "topics " + ", ".join(f"{t} ({n:,})" for t, n in self.topics.items())
        else:
            where = f"topic {self.topic}"
        return (f"produced {self.events:,} events from {self.sessions:,} sessions in {self.seconds:.2f} s "
                f"({self.events_per_s:,.0f} events/s) to {where}")


class ProduceInterrupted(KeyboardInterrupt):
    """Ctrl-C during `produce_sessions`; what was sent before it has been flushed."""

    def __init__(self, stats: ProduceStats):
        self.stats = stats
        super().__init__(f"interrupted after {stats.events:,} events")


def due_time(i: int, rate: float) -> float:
    """Seconds after the start at which event `i` (0-based) is due; rate <= 0: no pacing."""
    if rate <= 0:
        return 0.0
    return i / rate



def produce_sessions(
    client,
    topic: str,
    records: Sequence[dict[str, Any] | TopicRecord] | Iterable[dict[str, Any] | TopicRecord],
    rate: float = 0,
    progress: ProgressCallback | None = None,
    *,
    key: str = "session_id",
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ProduceStats:
    """Send every record as one JSON message on `topic`, keyed by `record[key]`, in order.

    A `TopicRecord` goes to its own topic instead, keyed by its own key; the
    producers of every topic are created before the first send (so a refused
    topic fails before anything is sent), `topic` only when a plain record uses it.

    `rate` is in events per second (0: as fast as possible). `progress(sent,
    total, elapsed_s)` is called at most every 0.1 s and once at the end.
    Raises `PulsarUnavailable` if the producer cannot be created, `ProduceError`
    if the broker did not take every message, and `ProduceInterrupted` (a
    KeyboardInterrupt) on Ctrl-C, after flushing what was already sent.
    `clock`/`sleep` pace the sends and time the run; tests can pass a fake pair.
    """
    import pulsar

    records = records if isinstance(records, Sequence) else list(records)
    total = len(records)
    routed = [r.topic for r in records if isinstance(r, TopicRecord)]
    topic_names = list(dict.fromkeys(routed))
    if len(routed) < total or not records:  # plain records (or nothing at all) use `topic`
        topic_names.insert(0, topic)
    producers: dict[str, Any] = {}
    try:
        for name in topic_names:
            producers[name] = _create_producer(client, name)
    except BaseException:
        for p in producers.values():
            _close_quietly(p)
        raise
    default = producers.get(topic)
    per_topic: dict[str, int] | None = {} if routed else None

    lock = threading.Lock()
    acked = 0
    failures: list[str] = []

    def done(result, _message_id) -> None:  # on the client's I/O thread
        nonlocal acked
        with lock:
            if result == pulsar.Result.Ok:
                acked += 1
            else:
                failures.append(str(result))

    encode = msgspec.json.Encoder().encode
    keys: set[str] = set()
    sent = 0
    interrupted = False
    start = clock()
    next_progress = start + PROGRESS_INTERVAL_S
    try:
        try:
            for i, record in enumerate(records):
                if rate > 0:
                    delay = start + due_time(i, rate) - clock()
                    if delay > _MIN_SLEEP_S:
                        sleep(delay)
                if isinstance(record, TopicRecord):
                    k, value, producer = record.key, record.value, producers[record.topic]
                    per_topic[record.topic] = per_topic.get(record.topic, 0) + 1
                else:
                    k, value, producer = record.get(key), record, default
                k = None if k is None else str(k)
                producer.send_async(encode(value), done, partition_key=k)
                sent += 1
                if k is not None:
                    keys.add(k)
                if progress is not None:
                    now = clock()
                    if now >= next_progress:
                        next_progress = now + PROGRESS_INTERVAL_S
                        progress(sent, total, now - start)
        except KeyboardInterrupt:
            interrupted = True
        flushed = True
        for producer in producers.values():
            try:
                producer.flush()
            except KeyboardInterrupt:  # a second Ctrl-C: stop waiting for the broker
                interrupted = True
                flushed = False
                break
            except pulsar.PulsarException as exc:
                flushed = False
                with lock:
                    failures.append(_describe(exc))
        if flushed:
            _wait_for_receipts(lambda: acked + len(failures) >= sent)
    finally:
        for producer in producers.values():
            _close_quietly(producer)
    elapsed = clock() - start
    with lock:
        ok, failed = acked, list(failures)
    if progress is not None:
        progress(sent, total, elapsed)
    stats = ProduceStats(events=ok, sessions=len(keys), seconds=elapsed, topic=topic, total=total, topics=per_topic)
    if interrupted:
        raise ProduceInterrupted(stats)
    if failed or ok < sent:
        first = failed[0] if failed else "no receipt from the broker"
        raise ProduceError(f"Pulsar did not confirm {sent - ok:,} of {sent:,} events on topic {topic} "
                           f"(first error: {first}); {ok:,} were stored")
    return stats


def _create_producer(client, topic: str):
    return create_producer(client, topic, batching_max_messages=_BATCH_MAX_MESSAGES,
                           batching_max_publish_delay_ms=_BATCH_DELAY_MS, max_pending_messages=_MAX_PENDING)


def _close_quietly(producer) -> None:
    try:
        producer.close()
    except Exception:  # noqa: BLE001 - closing is best effort; the client close follows
        pass


def _wait_for_receipts(settled: Callable[[], bool], timeout: float = 5.0) -> None:
    """flush() returns when the last send completes; its callback may run just after.

    Real time on purpose (not the injected clock): this waits for the client's thread.
    """
    deadline = time.monotonic() + timeout
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.001)



# --- progress -----------------------------------------------------------------------------


def render_progress(sent: int, total: int, elapsed_s: float, width: int = 30) -> str:
    """`[#####.....] 42% 4,200/10,000 events 9,870 ev/s`."""
    fraction = sent / total if total else 1.0
    filled = min(width, int(fraction * width))
    rate = sent / elapsed_s if elapsed_s > 0 else 0.0
    return (f"[{'#' * filled}{'.' * (width - filled)}] {int(fraction * 100):3d}% "
            f"{sent:,}/{total:,} events {rate:,.0f} ev/s")


class ProgressBar:
    """A one-line progress bar redrawn in place (`\\r`) on a terminal stream."""

    def __init__(self, stream, width: int = 30):
        self.stream = stream
        self.width = width
        self._drawn = 0

    def __call__(self, sent: int, total: int, elapsed_s: float) -> None:
        line = render_progress(sent, total, elapsed_s, self.width)
        pad = " " * max(0, self._drawn - len(line))  # clear the rest of a longer previous line
        self.stream.write(f"\r{line}{pad}")
        self.stream.flush()
        self._drawn = len(line)

    def close(self) -> None:
        """End the line (if anything was drawn), so that later output starts on a new one."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = 0
