"""`timeline ingest-sse URL` follows a live stream: a local SSE server that drops the
connection every few events (mid-event, as a network failure does), real pulsar-lite.

Every event must land exactly once and in order; each reconnect must carry the last
event id received; a second run of the same command must continue after the last id
the first one had confirmed (the resume state file).
"""

from __future__ import annotations

import argparse
import copy
import http.server
import json
import threading
import uuid
from pathlib import Path

import pulsar
import pytest

from timeline.cli.ingest import add_parsers
from timeline.dsl.errors import TimelineError
from timeline.sources.eventplatform import topic_for
from timeline.sources.sse import parse_sse

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "eventstreams_page_change.sse"
DROP_EVERY = 7      # the server cuts each connection after this many events
TOTAL = 60


def page_change_events(stream: str, n: int) -> list[dict]:
    """n valid page_change events of `stream`, page ids 1000.. in order."""
    base = next(json.loads(e.data) for e in parse_sse([FIXTURE.read_bytes()])
                if json.loads(e.data)["meta"]["stream"] == "mediawiki.page_change.v1")
    out = []
    for i in range(n):
        event = copy.deepcopy(base)
        event["meta"]["stream"] = stream
        event["meta"]["id"] = str(uuid.uuid4())
        event["page"]["page_id"] = 1000 + i
        out.append(event)
    return out


class DroppingStream:
    """An SSE server: ids 1..N, resumes after `Last-Event-ID`, drops every connection after a few events."""

    def __init__(self, events: list[dict]):
        self.events = events
        self.requests: list[str | None] = []  # the Last-Event-ID of each connection
        self.paths: list[str] = []
        stream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - the http.server API
                last = self.headers.get("Last-Event-ID")
                stream.requests.append(last)
                stream.paths.append(self.path)
                start = int(last) if last else 0
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

                def chunk(text: str) -> None:
                    raw = text.encode()
                    self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
                    self.wfile.flush()

                chunk(":ok\n\nretry: 50\n\n")
                for i in range(start, min(start + DROP_EVERY, len(stream.events))):
                    chunk(f"event: message\nid: {i + 1}\ndata: {json.dumps(stream.events[i])}\n\n")
                if start + DROP_EVERY < len(stream.events):
                    chunk("event: message\nid: 999999\ndata: {\"cut")  # half an event, then the line drops
                self.close_connection = True  # no terminating chunk: the connection just ends

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v2/stream/test"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="timeline")
    add_parsers(p.add_subparsers(dest="command"))
    return p


def read_topic(url: str, topic: str, expected: int) -> list[pulsar.Message]:
    client = pulsar.Client(url, logger=pulsar.FileLogger(pulsar.LoggerLevel.Error, "/dev/null"))
    try:
        reader = client.create_reader(topic, pulsar.MessageId.earliest)
        out = []
        while True:
            try:
                out.append(reader.read_next(timeout_millis=3000 if len(out) >= expected else 30_000))
            except pulsar.Timeout:
                return out
    finally:
        client.close()


def test_follows_drops_and_resumes_after_a_restart(pulsar_server, tmp_path, capsys):
    stream = f"test.resume.{uuid.uuid4().hex[:8]}"
    server = DroppingStream(page_change_events(stream, TOTAL))
    state = tmp_path / "state.json"
    base = ["ingest-sse", server.url, "--stream", stream, "--pulsar", pulsar_server.address, "--state", str(state)]
    try:
        first = _parser().parse_args([*base, "--limit", "25"])
        assert first.handler(first) == 0
        out = capsys.readouterr()
        assert "read 25 events" in out.out
        assert "reconnected 3 times" in out.out, out.out
        # Each reconnect resumed after the last *complete* event (never the cut-off one).
        assert server.requests == [None, "7", "14", "21"]
        assert json.loads(state.read_text())["last_event_id"] == "25"

        second = _parser().parse_args([*base, "--limit", "20"])  # a restart: the same command again
        assert second.handler(second) == 0
        out = capsys.readouterr()
        assert "resuming" in out.err and "after event id 25" in out.err
        assert server.requests[4] == "25", server.requests
        assert json.loads(state.read_text())["last_event_id"] == "45"
    finally:
        server.close()

    messages = read_topic(pulsar_server.address, topic_for(stream), 45)
    page_ids = [json.loads(m.data())["page"]["page_id"] for m in messages]
    assert page_ids == list(range(1000, 1045)), f"not exactly once and in order: {page_ids}"
    assert [m.properties()["sse_id"] for m in messages] == [str(i) for i in range(1, 46)]
    assert {m.partition_key() for m in messages} == {f"{messages[0].partition_key().split(':')[0]}:{p}"
                                                      for p in page_ids}


def test_gives_up_after_max_reconnects_naming_the_url(pulsar_server, tmp_path):
    args = _parser().parse_args(["ingest-sse", "http://127.0.0.1:9/v2/stream/none", "--pulsar",
                                 pulsar_server.address, "--state", str(tmp_path / "s.json"), "--max-reconnects", "2"])
    with pytest.raises(TimelineError, match=r"cannot reach http://127.0.0.1:9/v2/stream/none: .*2 reconnects"):
        args.handler(args)


def test_since_starts_a_first_run_and_a_saved_position_wins_over_it(pulsar_server, tmp_path):
    stream = f"test.since.{uuid.uuid4().hex[:8]}"
    server = DroppingStream(page_change_events(stream, 10))
    state = tmp_path / "state.json"
    base = ["ingest-sse", server.url, "--stream", stream, "--pulsar", pulsar_server.address, "--state", str(state),
            "--since", "2026-01-01T00:00:00Z", "--limit", "3"]
    try:
        args = _parser().parse_args(base)
        assert args.handler(args) == 0
        assert server.requests == [None] and server.paths[0].endswith("?since=2026-01-01T00%3A00%3A00Z")
        args = _parser().parse_args(base)  # saved position: resume after it, `since` no longer applies
        assert args.handler(args) == 0
        assert server.requests[1] == "3" and "since" not in server.paths[1]
        args = _parser().parse_args([*base, "--no-resume"])
        assert args.handler(args) == 0
        assert server.requests[2] is None and "since=" in server.paths[2]
    finally:
        server.close()
