"""The server-sent-events parser on tricky input, and the sources `ingest-sse` reads
(files, and http:// from a local server: no internet, no Pulsar)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timeline.dsl.errors import TimelineError, UsageError
from timeline.sources.ingest import USER_AGENT, open_source
from timeline.sources.sse import SSEEvent, SSEReader, event_source, parse_sse

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "eventstreams_page_change.sse"


def events(text: str | bytes) -> list[tuple]:
    return [tuple(e) for e in parse_sse([text])]


def test_eventstreams_shape():
    text = (':ok\n\n'
            'event: message\n'
            'id: [{"topic":"eqiad.mediawiki.page_change.v1","partition":0,"timestamp":1}]\n'
            'data: {"a": 1}\n\n')
    (event,) = parse_sse([text])
    sse_id, event_type, data = event  # unpacks as a tuple
    assert event == SSEEvent(sse_id, "message", '{"a": 1}')
    assert json.loads(sse_id)[0]["topic"] == "eqiad.mediawiki.page_change.v1"


def test_multi_line_data_is_joined_with_newlines():
    assert events("data: first\ndata: second\ndata:\ndata\n\n") == [(None, "message", "first\nsecond\n\n")]


def test_comments_and_blank_lines_dispatch_nothing():
    assert events(":ok\n\n: keep-alive\n\n\n\n:comment with data: in it\n\n") == []
    assert events("data: a\n: a comment between data lines\ndata: b\n\n") == [(None, "message", "a\nb")]


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_every_line_ending(eol):
    text = eol.join([":ok", "", "event: message", "id: 7", "data: x", "data: y", "", "data: z", "", ""])
    assert events(text) == [("7", "message", "x\ny"), ("7", "message", "z")]


def test_mixed_line_endings():
    assert events("data: a\r\ndata: b\rdata: c\n\r\n") == [(None, "message", "a\nb\nc")]


def test_one_space_after_the_colon_is_dropped_and_no_more():
    assert events("data:x\n\ndata: x\n\ndata:  x\n\ndata : x\n\n") == [
        (None, "message", "x"), (None, "message", "x"), (None, "message", " x")]  # `data ` is another field


def test_event_type_resets_but_the_id_persists():
    text = "event: update\nid: 1\ndata: a\n\ndata: b\n\nid:\ndata: c\n\nid: bad\0id\ndata: d\n\n"
    # An empty `id:` resets the last event id (nothing to resume from: None); an id with NUL is ignored.
    assert events(text) == [("1", "update", "a"), ("1", "message", "b"), (None, "message", "c"),
                            (None, "message", "d")]


def test_an_event_without_data_is_not_dispatched():
    assert events("event: ping\nid: 5\n\ndata: x\n\n") == [("5", "message", "x")]  # the id was kept


def test_retry_and_unknown_fields():
    reader = SSEReader(event_source(["retry: 1500\nfoo: bar\nretry: soon\ndata: x\n\n"]))
    assert list(reader) == [SSEEvent(None, "message", "x")]
    assert reader.retry_ms == 1500


def test_an_unterminated_last_event_is_discarded():
    reader = SSEReader(event_source(["id: 8\ndata: complete\n\n", "id: 9\ndata: cut off"]))
    assert list(reader) == [("8", "message", "complete")]
    # The id to resume from is the last *dispatched* event's: resuming from 9 would skip the cut-off event.
    assert reader.last_event_id == "8"


def test_bom_and_utf8_split_across_chunks():
    raw = "\ufeffdata: café ☕\n\n".encode()
    assert list(parse_sse([raw[i:i + 1] for i in range(len(raw))])) == [(None, "message", "café ☕")]
    assert events(b"data: \xff\n\n") == [(None, "message", "\ufffd")]  # invalid UTF-8 is replaced


def test_cr_at_the_end_of_a_chunk_and_lf_at_the_start_of_the_next_are_one_line_end():
    assert list(parse_sse(["data: a\r", "\ndata: b\r", "\r", "\n"])) == [(None, "message", "a\nb")]


def test_the_recorded_fixture():
    parsed = list(parse_sse(FIXTURE.open("rb")))
    assert len(parsed) == 13
    assert {e.event_type for e in parsed} == {"message"}
    for event in parsed:
        assert json.loads(event.data)["meta"]["stream"]
        assert all({"topic", "partition"} <= set(p) for p in json.loads(event.id))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=4000), max_size=40), st.sampled_from(["\n", "\r\n", "\r"]))
def test_any_chunking_gives_the_same_events(cuts, eol):
    raw = FIXTURE.read_text(encoding="utf-8").replace("\n", eol).encode()
    raw = raw[:4000] + "data: é\n\n".replace("\n", eol).encode() + raw[4000:]
    whole = list(parse_sse([raw]))
    bounds = sorted({0, len(raw), *[c % (len(raw) + 1) for c in cuts]})
    chunks = [raw[a:b] for a, b in zip(bounds, bounds[1:])]
    assert list(parse_sse(chunks)) == whole
    assert list(parse_sse([c.decode("utf-8", "ignore") for c in [raw]])) == whole


# --- sources ---------------------------------------------------------------------------------------


def test_a_file_source(tmp_path):
    with open_source(str(FIXTURE)) as lines:
        assert len(list(parse_sse(lines))) == 13
    with pytest.raises(UsageError, match="no such file"):
        with open_source(str(tmp_path / "missing.sse")):
            pass
    with pytest.raises(UsageError, match="a file, - \\(stdin\\) or an http"):
        with open_source("ftp://example.org/stream"):
            pass


class _Handler(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def do_GET(self):  # noqa: N802 - the http.server API
        type(self).seen.append(self.headers)  # case-insensitive names
        if self.path != "/v2/stream/mediawiki.page_change.v1":
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.end_headers()
        body = FIXTURE.read_bytes()
        for i in range(0, len(body), 777):  # as it streams, in odd pieces
            self.wfile.write(body[i:i + 777])
            self.wfile.flush()

    def log_message(self, *args):
        pass


@pytest.fixture
def local_eventstreams():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_http_source_streams_with_our_headers(local_eventstreams):
    url = f"{local_eventstreams}/v2/stream/mediawiki.page_change.v1"
    with open_source(url, last_event_id='[{"topic":"t","partition":0,"offset":5}]') as lines:
        parsed = list(parse_sse(lines))
    assert parsed == list(parse_sse([FIXTURE.read_bytes()]))
    (headers,) = _Handler.seen
    assert headers["User-Agent"] == USER_AGENT
    assert headers["Accept"] == "text/event-stream"
    assert headers["Last-Event-ID"] == '[{"topic":"t","partition":0,"offset":5}]'


def test_http_errors_name_the_url(local_eventstreams):
    with pytest.raises(TimelineError, match="answered HTTP 404"):
        with open_source(f"{local_eventstreams}/v2/stream/nope"):
            pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(TimelineError, match=f"cannot reach http://127.0.0.1:{port}/"):
        with open_source(f"http://127.0.0.1:{port}/v2/stream/x", timeout=5):
            pass
