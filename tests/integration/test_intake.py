"""`POST /v1/events` answers as EventGate does, with the shared example events, through a real
pulsar-lite: valid events land on their stream's topic, invalid ones become `error` events on
`eventgate-main.error.validation`."""

from __future__ import annotations

import copy
import json
import time
import uuid
import warnings
from pathlib import Path

import pulsar
import pytest

from timeline.api.app import create_app
from timeline.runtime.settings import Endpoints
from timeline.sources.eventplatform import page_key, topic_for, validate
from timeline.sources.schemas import ERROR_STREAM

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

EXAMPLES = Path(__file__).resolve().parents[1] / "sources" / "wikimedia" / "examples"
ERROR_TOPIC = topic_for(ERROR_STREAM)


def example(prefix: str, stream: str | None = None) -> list[dict]:
    """The shared examples of a schema, each with a fresh meta.id (to find them on shared topics)."""
    out = []
    for path in sorted(EXAMPLES.glob(f"{prefix}__*.json")):
        event = json.loads(path.read_text())
        event["meta"]["id"] = str(uuid.uuid4())
        if stream:
            event["meta"]["stream"] = stream
        out.append(event)
    return out


class Topics:
    """Consumers subscribed before the posts, at the latest position (other tests write these topics too)."""

    def __init__(self, url: str, topics: list[str]):
        self.client = pulsar.Client(url, logger=pulsar.FileLogger(pulsar.LoggerLevel.Error, "/dev/null"))
        name = f"intake-{uuid.uuid4().hex[:8]}"
        self.consumers = {t: self.client.subscribe(t, name, initial_position=pulsar.InitialPosition.Latest)
                          for t in topics}

    def take(self, topic: str, match, n: int, timeout_s: float = 60) -> list[pulsar.Message]:
        """The first n messages on `topic` for which match(decoded event) is true."""
        out: list[pulsar.Message] = []
        consumer = self.consumers[topic]
        deadline = time.monotonic() + timeout_s
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{topic}: got {len(out)} of the {n} messages expected within {timeout_s}s")
            try:
                msg = consumer.receive(timeout_millis=int(min(left, 5) * 1000))
            except pulsar.Timeout:
                continue
            consumer.acknowledge(msg)
            if match(json.loads(msg.data())):
                out.append(msg)
        return out

    def close(self) -> None:
        self.client.close()


@pytest.fixture(scope="module")
def api(pulsar_server, temporal_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("intake")
    ep = Endpoints(temporal=temporal_server.address, pulsar=pulsar_server.address,
                   store=f"sqlite:///{tmp / 'results.db'}")
    with TestClient(create_app(ep)) as client:
        yield client


VALID = {
    "mediawiki.revision-create": lambda: example("mediawiki__revision__create"),
    "mediawiki.revision-score": lambda: example("mediawiki__revision__score"),
    "mediawiki.page_change.v1": lambda: example("mediawiki__page__change", "mediawiki.page_change.v1"),
}


def ids(events: list[dict]) -> set[str]:
    return {e["meta"]["id"] for e in events}


def test_all_valid_examples_are_accepted_onto_their_topics(api, pulsar_server):
    batches = {stream: make() for stream, make in VALID.items()}
    topics = Topics(pulsar_server.address, [topic_for(s) for s in batches])
    try:
        posted = [e for events in batches.values() for e in events]
        r = api.post("/v1/events", json=posted)
        assert r.status_code == 201, r.text
        for stream, events in batches.items():
            mine = ids(events)
            got = topics.take(topic_for(stream), lambda e, mine=mine: e["meta"]["id"] in mine, len(events))
            assert [json.loads(m.data()) for m in got] == events  # unchanged, in the order posted
            for msg, event in zip(got, events):
                if stream == "mediawiki.page_change.v1":
                    assert msg.partition_key() == page_key(event)
    finally:
        topics.close()


def test_one_event_object_and_hasty(api, pulsar_server):
    (first, second, *_) = example("mediawiki__revision__create")
    topics = Topics(pulsar_server.address, [topic_for("mediawiki.revision-create")])
    try:
        assert api.post("/v1/events", json=first).status_code == 201
        r = api.post("/v1/events?hasty=true", json=[second])
        assert r.status_code == 202, r.text
        mine = ids([first, second])
        topics.take(topic_for("mediawiki.revision-create"), lambda e: e["meta"]["id"] in mine, 2)
    finally:
        topics.close()


def test_some_invalid_is_207_and_their_error_events(api, pulsar_server):
    good = example("mediawiki__revision__score")
    unconfigured = example("mediawiki__page__change")[0]             # the example's own stream name
    bad_type = example("mediawiki__page__change", "mediawiki.page_change.v1")[0]
    bad_type["page"]["page_id"] = str(bad_type["page"]["page_id"])  # a string where an integer belongs
    posted = [good[0], unconfigured, good[1], bad_type]
    topics = Topics(pulsar_server.address, [topic_for("mediawiki.revision-score"), ERROR_TOPIC])
    try:
        r = api.post("/v1/events", json=posted)
        assert r.status_code == 207, r.text
        body = r.json()
        assert body["error"] == []
        assert [(i["status"], i["index"]) for i in body["invalid"]] == [("invalid", 1), ("invalid", 3)]
        assert "is not configured here" in body["invalid"][0]["context"]["message"]
        assert "$.page.page_id" in body["invalid"][1]["context"]["message"]
        assert body["invalid"][1]["event"] == bad_type

        mine = ids(good)
        topics.take(topic_for("mediawiki.revision-score"), lambda e: e["meta"]["id"] in mine, 2)
        rejected = {unconfigured["meta"]["id"], bad_type["meta"]["id"]}
        errors = topics.take(ERROR_TOPIC, lambda e: json.loads(e.get("raw_event", "{}")).get("meta", {}).get("id")
                             in rejected, 2)
        for msg, original in zip(errors, [unconfigured, bad_type]):
            error = json.loads(msg.data())
            assert validate(error) == [], "the error event must itself be a valid /error/2.1.0 event"
            assert error["meta"]["stream"] == ERROR_STREAM
            assert json.loads(error["raw_event"]) == original
            assert error["errored_stream_name"] == original["meta"]["stream"]
    finally:
        topics.close()


def test_none_valid_is_400_and_not_json_is_400(api):
    bad = copy.deepcopy(example("mediawiki__revision__create")[0])
    del bad["meta"]["stream"]
    r = api.post("/v1/events", json=[bad, "not an object"])
    assert r.status_code == 400, r.text
    assert [i["index"] for i in r.json()["invalid"]] == [0, 1]
    assert "an event is a JSON object" in r.json()["invalid"][1]["context"]["message"]

    r = api.post("/v1/events", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not JSON" in r.json()["error"]


def test_health_ready_and_metrics(api):
    assert api.get("/health").json() == {"status": "ok"}
    r = api.get("/ready")
    assert r.status_code == 200, r.text
    assert r.json()["ready"] is True and set(r.json()["checks"]) == {"store", "temporal"}
    text = api.get("/metrics").text
    assert 'timeline_api_requests_total{method="GET",route="/health",status="200"}' in text
    assert 'timeline_intake_events_total{outcome="accepted",stream="mediawiki.revision-create"}' in text
