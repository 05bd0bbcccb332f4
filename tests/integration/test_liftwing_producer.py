"""`sample-event-producer --scenario liftwing` against a real pulsar-lite broker (no mocks): every
simulated event lands on the topic of its stream (the error stream included), once, in arrival
order per topic, keyed by page, and the counts per topic are the simulation's summary."""

from __future__ import annotations

import re

import msgspec
import pulsar
import pytest
from runtime_helpers import TopicReader

from timeline.cli.producer import main
from timeline.producers.liftwing import (
    ERROR_STREAM,
    PAGE_CHANGE_STREAM,
    PREDICTION_STREAM,
    WEIGHTED_TAGS_STREAM,
    simulate_lifecycle,
)
from timeline.sources.eventplatform import STREAMS

START = 1_795_564_800_000
STREAM_NAMES = (PAGE_CHANGE_STREAM, PREDICTION_STREAM, WEIGHTED_TAGS_STREAM, ERROR_STREAM)
SUMMARY = re.compile(r"produced ([\d,]+) events from ([\d,]+) sessions in [\d.]+ s \([\d,]+ events/s\) to topics (.+)")


@pytest.fixture
def readers(pulsar_server):
    client = pulsar.Client(pulsar_server.address, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        yield {stream: TopicReader(client, STREAMS[stream].topic, latest=True) for stream in STREAM_NAMES}
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
