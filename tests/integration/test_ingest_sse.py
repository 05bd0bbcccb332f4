"""`timeline ingest-sse` against a real pulsar-lite broker (no mocks): the recorded
EventStreams fixture lands on one topic per stream (dotted names), keyed by page,
with the event time; the canary is dropped; the invalid event is on the dead-letter
topic with its reason."""

from __future__ import annotations

import argparse
import http.server
import io
import json
import threading
import time
import uuid
from pathlib import Path

import pulsar
import pytest

from timeline.cli.ingest import add_parsers
from timeline.producers.pulsar_producer import PulsarUnavailable, open_client
from timeline.sources.eventplatform import STREAMS, event_time_ms, page_key, topic_for
from timeline.sources.ingest import DEAD_LETTER_TOPIC, ingest_sse
from timeline.sources.sse import parse_sse

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "eventstreams_page_change.sse"
PAGE_CHANGE = topic_for("mediawiki.page_change.v1")

# What the fixture holds, per topic (see tests/sources/build_sse_fixture.py).
EXPECTED = {
    PAGE_CHANGE: 5,
    topic_for("mediawiki.page_revert_risk_prediction_change.v1"): 1,
    topic_for("mediawiki.article_country_prediction_change.v1"): 1,
    topic_for("mediawiki.cirrussearch.page_weighted_tags_change.rc0"): 1,
    topic_for("mediawiki.revision-create"): 1,
    topic_for("mediawiki.revision-score"): 1,
    topic_for("eventgate-main.error.validation"): 1,
}
INVALID_REASON = "$.page.page_id: '70793851' is not of type 'integer'"


def recorded() -> list:
    """(id, event_type, data) of every event of the fixture, and the events decoded."""
    return [(e, json.loads(e.data)) for e in parse_sse([FIXTURE.read_bytes()])]


class Topics:
    """Real consumers on every stream topic (and a dead-letter topic), subscribed *before*
    the ingest at the latest position: other tests of the session write the same topics."""

    def __init__(self, url: str, topics: list[str]):
        self.client = pulsar.Client(url, logger=pulsar.FileLogger(pulsar.LoggerLevel.Error, "/dev/null"))
        name = f"check-{uuid.uuid4().hex[:8]}"
        self.consumers = {t: self.client.subscribe(t, name, initial_position=pulsar.InitialPosition.Latest)
                          for t in topics}

    def take(self, topic: str, n: int, timeout_ms: int = 15_000) -> list[pulsar.Message]:
        out = []
        consumer = self.consumers[topic]
        while len(out) < n:
            msg = consumer.receive(timeout_millis=timeout_ms)  # pulsar.Timeout fails the test
            consumer.acknowledge(msg)
            out.append(msg)
        return out

    def assert_empty(self, settle_s: float = 0.5) -> None:
        """Nothing more on any topic. Everything sent was acknowledged by the broker before
        `ingest_sse` returned, so after a moment it would be in the consumers' queues."""
        time.sleep(settle_s)
        for topic, consumer in self.consumers.items():
            with pytest.raises(pulsar.Timeout):
                msg = consumer.receive(timeout_millis=20)
                pytest.fail(f"unexpected message on {topic}: {msg.data()[:200]!r}")

    def close(self) -> None:
        for consumer in self.consumers.values():
            consumer.close()
        self.client.close()


@pytest.fixture
def topics_for(pulsar_server):
    opened = []

    def make(extra: list[str] = ()) -> Topics:
        opened.append(Topics(pulsar_server.address, [s.topic for s in STREAMS.values()] + list(extra)))
        return opened[-1]

    yield make
    for t in opened:
        t.close()


@pytest.fixture
def client(pulsar_server):
    c = open_client(pulsar_server.address)
    yield c
    c.close()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="timeline")
    add_parsers(p.add_subparsers(dest="command"))
    return p


def test_the_fixture_lands_on_one_topic_per_stream(pulsar_server, topics_for, client):
    dead_topic = f"eventstreams-dead-letter-{uuid.uuid4().hex[:8]}"
    topics = topics_for([topic_for(dead_topic)])
    with FIXTURE.open("rb") as lines:
        stats = ingest_sse(lines, client, dead_letter_topic=dead_topic)

    assert (stats.read, stats.sent, stats.canary, stats.dead_lettered, stats.skipped) == (13, 11, 1, 1, 0)
    assert dict(stats.routed) == EXPECTED
    assert stats.last_event_id == recorded()[-1][0].id

    by_data = {sse.data: (sse, event) for sse, event in recorded()}
    for topic, n in EXPECTED.items():
        for msg in topics.take(topic, n):
            sse, event = by_data[msg.data().decode()]          # the data, byte for byte
            assert topic == topic_for(event["meta"]["stream"])
            assert msg.topic_name() == topic
            assert msg.event_timestamp() == event_time_ms(event)
            assert msg.properties()["sse_id"] == sse.id
            if STREAMS[event["meta"]["stream"]].has_page:
                assert msg.partition_key() == page_key(event)
            else:
                assert msg.partition_key() == ""
    (dead,) = topics.take(topic_for(dead_topic), 1)
    sse, event = by_data[dead.data().decode()]
    assert event["page"]["page_id"] == "70793851"
    assert dead.properties() == {"reason": INVALID_REASON, "stream": "mediawiki.page_change.v1",
                                 "schema": "/mediawiki/page/change/1.3.0", "sse_id": sse.id}
    topics.assert_empty()  # the canary went nowhere, nothing else was sent


def test_page_change_order_and_keys(pulsar_server, topics_for, client):
    topics = topics_for()
    with FIXTURE.open("rb") as lines:
        ingest_sse(lines, client, streams=["mediawiki.page_change.v1"],
                   dead_letter_topic=f"dl-{uuid.uuid4().hex[:8]}")
    messages = topics.take(PAGE_CHANGE, 5)
    assert [m.partition_key() for m in messages] == [
        "wikidatawiki:60683518", "enwiki:70793851", "example:1", "example:1", "example:1"]
    assert [json.loads(m.data())["$schema"].rsplit("/", 1)[1] for m in messages] == [
        "1.6.0", "1.3.0", "1.2.0", "1.1.0", "1.0.0"]
    topics.assert_empty()


def test_cli_stream_selection_and_limit(pulsar_server, topics_for, capsys):
    topics = topics_for([topic_for(DEAD_LETTER_TOPIC)])
    args = _parser().parse_args(["ingest-sse", str(FIXTURE), "--stream", "mediawiki.revision-create",
                                 "--stream", "mediawiki.page_change.v1", "--limit", "10",
                                 "--pulsar", pulsar_server.address])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    # the first 10 events: 4 page changes, a canary, 3 of other streams, the invalid one, a revision-create
    assert out.startswith("read 10 events in ")
    assert "5 sent, 1 canary dropped, 1 dead-lettered, 3 of other streams skipped" in out
    assert f"       4  {PAGE_CHANGE}" in out
    assert f"       1  {topic_for('mediawiki.revision-create')}" in out
    assert INVALID_REASON in out
    assert len(topics.take(PAGE_CHANGE, 4)) == 4
    assert len(topics.take(topic_for("mediawiki.revision-create"), 1)) == 1
    (dead,) = topics.take(topic_for(DEAD_LETTER_TOPIC), 1)
    assert dead.properties()["reason"] == INVALID_REASON
    topics.assert_empty()


def test_cli_no_validate_from_stdin(pulsar_server, topics_for, capsys, monkeypatch):
    """Without validation the invalid event (its page id a digit string) is routed: its key
    and meta.dt are still usable."""
    topics = topics_for([topic_for(DEAD_LETTER_TOPIC)])
    stdin = io.TextIOWrapper(io.BytesIO(FIXTURE.read_bytes()))
    monkeypatch.setattr("sys.stdin", stdin)
    args = _parser().parse_args(["ingest-sse", "-", "--no-validate", "--stream", "mediawiki.page_change.v1",
                                 "--pulsar", pulsar_server.address])
    assert args.handler(args) == 0
    assert "read 13 events" in capsys.readouterr().out
    keys = [m.partition_key() for m in topics.take(PAGE_CHANGE, 6)]
    assert keys.count("enwiki:70793851") == 2
    topics.assert_empty()


def test_cli_reads_an_http_stream(pulsar_server, topics_for, capsys):
    """EventStreams over HTTP, served locally (the tests have no internet)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(FIXTURE.read_bytes())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        topics = topics_for()
        url = f"http://127.0.0.1:{server.server_address[1]}/v2/stream/mediawiki.page_change.v1"
        args = _parser().parse_args(["ingest-sse", url, "--limit", "3", "--pulsar", pulsar_server.address])
        assert args.handler(args) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert "read 3 events" in capsys.readouterr().out
    assert len(topics.take(PAGE_CHANGE, 3)) == 3
    topics.assert_empty()


def test_bad_stream_name_and_unreachable_pulsar(pulsar_server):
    args = _parser().parse_args(["ingest-sse", str(FIXTURE), "--stream", "not a topic",
                                 "--pulsar", pulsar_server.address])
    with pytest.raises(Exception, match="cannot be a Pulsar topic name"):
        args.handler(args)
    dead = open_client("pulsar://127.0.0.1:9", timeout_s=1)  # nothing listens on port 9
    try:
        with pytest.raises(PulsarUnavailable, match="cannot create a producer on topic"):
            with FIXTURE.open("rb") as lines:
                ingest_sse(lines, dead)
    finally:
        dead.close()
