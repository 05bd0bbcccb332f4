"""Ingest paths into Pulsar on a real pulsar-lite: EventGate-compatible `POST /v1/events` and
`timeline ingest-sse` following a live stream that drops its connection.

    .venv/bin/python -m bench.intake --events 20000

In one run, on the same valid events (copies of the shared revision-create example):
  * baseline: the same events sent straight to Pulsar by one batching producer (no HTTP,
    no validation): the ceiling for both paths;
  * intake: POST /v1/events in requests of --batch events (real uvicorn server, httpx client);
  * SSE: a local server streams the events and cuts the connection every --drop events;
    `follow_stream` + `route_events` reconnect and resume, validate and send.
Each prints events/s and its ratio to the baseline; every run checks that all events landed.
"""

from __future__ import annotations

import argparse
import copy
import http.server
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from timeline.runtime import stack
from timeline.runtime.pulsar import create_producer, open_client
from timeline.sources.eventplatform import topic_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "tests" / "sources" / "wikimedia" / "examples" / "mediawiki__revision__create__2.0.0__example0.json"
STREAM = "mediawiki.revision-create"


def make_events(n: int) -> list[dict]:
    base = json.loads(EXAMPLE.read_text())
    out = []
    for i in range(n):
        e = copy.deepcopy(base)
        e["meta"]["id"] = str(uuid.uuid4())
        e["rev_id"] = 1_000_000 + i
        out.append(e)
    return out


def count_on(pulsar_url: str, topic: str, start, expected: int, timeout_s: float = 120) -> int:
    import pulsar

    client = open_client(pulsar_url)
    try:
        reader = client.create_reader(topic, start)
        n = 0
        deadline = time.monotonic() + timeout_s
        while n < expected and time.monotonic() < deadline:
            try:
                reader.read_next(timeout_millis=2000)
                n += 1
            except pulsar.Timeout:
                pass
        return n
    finally:
        client.close()


def latest(pulsar_url: str, topic: str):
    """A position after everything on the topic now (a reader from here sees only what comes next)."""
    import pulsar

    client = open_client(pulsar_url)
    try:
        p = create_producer(client, topic)
        mid = p.send(b"{}")
        p.close()
        return pulsar.MessageId.deserialize(mid.serialize())
    finally:
        client.close()


def bench_baseline(pulsar_url: str, events: list[dict]) -> float:
    client = open_client(pulsar_url)
    try:
        p = create_producer(client, topic_for(STREAM), batching_max_publish_delay_ms=5)
        t0 = time.perf_counter()
        for e in events:
            p.send_async(json.dumps(e).encode(), None)
        p.flush()
        took = time.perf_counter() - t0
        p.close()
        return took
    finally:
        client.close()


def bench_intake(pulsar_url: str, events: list[dict], batch: int, state: Path) -> float:
    import os

    import uvicorn

    from timeline.runtime.settings import Endpoints

    port = stack.free_port()
    # The app by name, as `timeline api` serves it (one face does not import another).
    os.environ.update(Endpoints(temporal="127.0.0.1:1", pulsar=pulsar_url,
                                store=f"sqlite:///{state / 'r.db'}").environment())
    server = uvicorn.Server(uvicorn.Config("timeline.api.app:app_from_environment", factory=True, host="127.0.0.1",
                                           port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=60) as http:
        while True:
            try:
                http.get(f"{base}/health")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        http.post(f"{base}/v1/events", json=events[:1])  # warm: schemas loaded, producer created
        t0 = time.perf_counter()
        for lo in range(0, len(events), batch):
            r = http.post(f"{base}/v1/events", json=events[lo:lo + batch])
            assert r.status_code == 201, r.text
        took = time.perf_counter() - t0
    server.should_exit = True
    thread.join(timeout=10)
    return took


def bench_sse(pulsar_url: str, events: list[dict], drop_every: int) -> tuple[float, int]:
    from timeline.sources.ingest import IngestStats, follow_stream, route_events

    lines = [f"event: message\nid: {i + 1}\ndata: {json.dumps(e)}\n\n".encode() for i, e in enumerate(events)]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            start = int(self.headers.get("Last-Event-ID") or 0)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(b"retry: 10\n\n")
            self.wfile.write(b"".join(lines[start:start + drop_every]))

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = open_client(pulsar_url)
    stats = IngestStats()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/stream"
        t0 = time.perf_counter()
        stream = follow_stream(url, stats=stats)
        route_events(stream, client, streams=[STREAM], limit=len(events), stats=stats)
        stream.close()
        took = time.perf_counter() - t0
    finally:
        client.close()
        server.shutdown()
    assert stats.sent == len(events), stats.summary()
    return took, stats.reconnects


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=100, help="events per POST (default 100)")
    p.add_argument("--drop", type=int, default=2_000, help="SSE: events per connection (default 2000)")
    args = p.parse_args()
    events = make_events(args.events)
    with tempfile.TemporaryDirectory() as tmp:
        pulsar = stack.start_pulsar(Path(tmp) / "pulsar")
        try:
            url = pulsar.address
            topic = topic_for(STREAM)
            n = len(events)
            start = latest(url, topic)
            base = bench_baseline(url, events)
            intake = bench_intake(url, events, args.batch, Path(tmp))
            sse, reconnects = bench_sse(url, events, args.drop)
            landed = count_on(url, topic, start, 3 * n)
            print(f"{n:,} revision-create events per path; pulsar-lite on this machine")
            print(f"baseline: one producer, no HTTP/validation   {base:7.2f} s  {n / base:10,.0f} events/s")
            print(f"POST /v1/events ({args.batch}/request, validated)    {intake:7.2f} s  {n / intake:10,.0f} events/s"
                  f"  ratio to baseline {base / intake:.2f}x")
            print(f"ingest-sse live, cut every {args.drop:,} ({reconnects} reconnects) {sse:7.2f} s  "
                  f"{n / sse:10,.0f} events/s  ratio to baseline {base / sse:.2f}x")
            print(f"on the topic afterwards: {landed:,} of {3 * n:,} expected")
        finally:
            pulsar.stop()


if __name__ == "__main__":
    main()
