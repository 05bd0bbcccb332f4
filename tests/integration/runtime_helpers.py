"""Helpers for runtime integration tests: real processes, real servers."""

from __future__ import annotations

from pathlib import Path

from timeline.dsl.batch import root_timelines
from timeline.dsl.incremental import KeyTimeline
from timeline.runtime.stack import ManagedProcess, launch_component


def spawn(name: str, argv: list[str], logs: Path) -> ManagedProcess:
    """`timeline ARGV` in its own process group, output to logs/NAME.log: the stack's one
    process harness (stop() is SIGTERM then SIGKILL, kill() is kill -9, tail() its log)."""
    return launch_component(name, argv, logs, die_with_parent=True)


def batch_timelines(expression: str, records: list[dict], key: str, time: str) -> dict[str, KeyTimeline]:
    """Root timelines per key from the batch evaluator, on the same events."""
    return root_timelines(expression, records, key, time)


def wait_equal(wait_for, store, timeline: str, expected: dict[str, KeyTimeline], procs=(), timeout: float = 180,
               what: str = "streaming results to equal batch results") -> None:
    """Wait until every key's result in the store equals the expected timeline; on a
    timeout, say how many keys differ and show the processes' logs."""
    def differing() -> list[str]:  # one read of the keys, not a query per key
        got = store.results(timeline, list(expected))
        return [k for k, tl in expected.items() if (r := got.get(k)) is None or r.timeline != tl]

    try:
        wait_for(lambda: not differing(), timeout=timeout, interval=0.5, message=what)
    except AssertionError:
        bad = differing()
        raise AssertionError(f"{len(bad)} keys of {timeline} differ, e.g. {bad[:3]}; logs:\n"
                             + "\n".join(f"--- {p.name}\n{p.tail()}" for p in procs)) from None


def produce(pulsar_url: str, topic: str, payloads: list[bytes]) -> None:
    import pulsar

    client = pulsar.Client(pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        producer = client.create_producer(topic, batching_enabled=True, block_if_queue_full=True)
        for p in payloads:
            producer.send_async(p, None)
        producer.flush()
        producer.close()
    finally:
        client.close()


class TopicReader:
    """A real consumer on one topic, subscribed before anything is produced.

    Delivery is at least once: pulsar-lite now and then delivers a batch again with the
    same message ids, so a message id seen before is a redelivery of the same stored
    message: skipped, not counted (the runtime's leaves skip them the same way).
    `latest=True` starts at the topic's end, so events an earlier test wrote to a shared
    topic are not counted."""

    def __init__(self, client, topic: str, latest: bool = False):
        import uuid

        import pulsar

        self.topic = topic
        self.seen: set[bytes] = set()
        start = pulsar.InitialPosition.Latest if latest else pulsar.InitialPosition.Earliest
        self.consumer = client.subscribe(topic, f"check-{uuid.uuid4().hex[:8]}", initial_position=start)

    def _next(self, timeout_ms: int):
        """The next message not seen before (None: a redelivery); pulsar.Timeout when there is none."""
        msg = self.consumer.receive(timeout_millis=timeout_ms)
        self.consumer.acknowledge(msg)
        mid = msg.message_id().serialize()
        if mid in self.seen:
            return None
        self.seen.add(mid)
        return msg

    def take(self, n: int, timeout_ms: int = 15_000) -> list:
        out = []
        while len(out) < n:
            msg = self._next(timeout_ms)  # pulsar.Timeout fails the test
            if msg is not None:
                out.append(msg)
        return out

    def assert_no_more(self, timeout_ms: int = 1000) -> None:
        import pulsar
        import pytest

        with pytest.raises(pulsar.Timeout):
            while True:
                msg = self._next(timeout_ms)
                if msg is not None:
                    pytest.fail(f"unexpected extra message on {self.topic}: {msg.data()!r}")
