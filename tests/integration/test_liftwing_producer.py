"""`sample-event-producer --scenario liftwing` against a real pulsar-lite broker (no mocks): every
simulated event lands on the topic of its stream (the error stream included), once, in arrival
order per topic, keyed by page, and the counts per topic are the simulation's summary."""

from __future__ import annotations

import re
import uuid

import msgspec
import pulsar
import pytest

from producers.cli import main
from producers.liftwing import (
    ERROR_STREAM,
    PAGE_CHANGE_STREAM,
    PREDICTION_STREAM,
    WEIGHTED_TAGS_STREAM,
    simulate_lifecycle,
)
from sources.eventplatform import STREAMS

START = 1_795_564_800_000
STREAM_NAMES = (PAGE_CHANGE_STREAM, PREDICTION_STREAM, WEIGHTED_TAGS_STREAM, ERROR_STREAM)
SUMMARY = re.compile(r"produced ([\d,]+) events from ([\d,]+) sessions in [\d.]+ s \([\d,]+ events/s\) to topics (.+)")


class Reader:
    """A real consumer on one topic, subscribed before anything is produced.

    The subscription starts at the topic's end (Latest), so events an earlier test of the
    session may have written to the same stream topic are not counted. A message delivered
    again with the same message id (pulsar-lite sometimes redelivers a batch to a consumer,
    original producer code included) is the same stored message: it is skipped, not counted."""

    def __init__(self, client: pulsar.Client, topic: str):
        self.topic = topic
        self.seen: set[str] = set()
        self.consumer = client.subscribe(topic, f"check-{uuid.uuid4().hex[:8]}",
                                         initial_position=pulsar.InitialPosition.Latest)

    def _next(self, timeout_ms: int) -> pulsar.Message | None:
        """The next message not seen before (None: a redelivery)."""
        msg = self.consumer.receive(timeout_millis=timeout_ms)  # pulsar.Timeout when there is none
        self.consumer.acknowledge(msg)
        mid = str(msg.message_id())
        if mid in self.seen:
            return None
        self.seen.add(mid)
        return msg

    def take(self, n: int, timeout_ms: int = 15_000) -> list[pulsar.Message]:
        out = []
        while len(out) < n:
            msg = self._next(timeout_ms)  # pulsar.Timeout fails the test
            if msg is not None:
                out.append(msg)
        return out

    def assert_no_more(self, timeout_ms: int = 1000) -> None:
        with pytest.raises(pulsar.Timeout):
            while True:
                msg = self._next(timeout_ms)
                if msg is not None:
                    pytest.fail(f"unexpected extra message on {self.topic}: {msg.data()!r}")


@pytest.fixture
def readers(pulsar_server):
    client = pulsar.Client(pulsar_server.address, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        yield {stream: Reader(client, STREAMS[stream].topic) for stream in STREAM_NAMES}
    finally:
        client.close()


def test_liftwing_scenario_writes_every_stream_to_its_topic(pulsar_server, readers, capsys):
    # Seed 2: with the scenario's default invalid share (1%), 20 pages give invalid events of
    # every stream, so the error topic is exercised too.
    pages, seed = 20, 2
    expected = simulate_lifecycle(pages, seed=seed, start_ms=START)
    assert len(expected.summary.invalid_by_stream) == 3, "seed 2 no longer breaks events of every stream: pick one"

    code = main(["--scenario", "liftwing", "--sessions", str(pages), "--seed", str(seed), "--start-ms", str(START),
                 "--pulsar", pulsar_server.address, "--no-progress"])
    assert code == 0

    summary = expected.summary
    for stream, reader in readers.items():
        want = [e for e in expected if e.stream == stream]
        assert len(want) == summary.by_stream[stream] == summary.by_topic.get(reader.topic, 0)
        got = reader.take(len(want))
        reader.assert_no_more()
        assert [msgspec.json.decode(m.data()) for m in got] == [e.event for e in want]  # arrival order
        assert [m.partition_key() for m in got] == [e.key for e in want]
    assert summary.by_stream[ERROR_STREAM] == summary.invalid > 0
    assert summary.by_stream[PREDICTION_STREAM] > 0 and summary.by_stream[WEIGHTED_TAGS_STREAM] > 0

    out = capsys.readouterr().out
    line = SUMMARY.search(out)
    assert line, out
    assert line.group(1) == f"{len(expected):,}"
    assert line.group(2) == str(len({e.key for e in expected}))
    for stream in STREAM_NAMES:
        assert f"{STREAMS[stream].topic} ({summary.by_stream[stream]:,})" in line.group(3)
