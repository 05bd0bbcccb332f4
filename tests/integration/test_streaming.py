"""The durable runtime end to end on real servers: Pulsar -> feeder -> tree of
Temporal workflows -> results store, compared with the batch evaluator."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import msgspec
import pytest
from runtime_helpers import batch_timelines, produce, spawn, wait_equal

from timeline.dsl.compiler import compile_expression
from timeline.models import node_workflow_id
from timeline.producers.video_sessions import generate_sessions
from timeline.runtime.control import connect, node_status
from timeline.store import open_store

ROOT = Path(__file__).resolve().parents[2]
CIR = (ROOT / "examples" / "cir.tl").read_text()
EXPRESSIONS = {
    "cir": CIR,
    "cdn": 'duration_in_cur_state(latest_event_to_state(cdn)) >= 30s || latest_event_to_state(bitrate) > 3000',
    "seeky": 'has_existed_within(playerStateChange == "seek", 2s) && !has_existed(playerStateChange == "pause")',
}


@pytest.fixture
def runtime(temporal_server, pulsar_server, tmp_path):
    """Endpoints, a unique topic and store, and the processes started (stopped at the end)."""
    store_url = f"sqlite:///{tmp_path / 'results.db'}"
    endpoints = ["--temporal", temporal_server.address, "--pulsar", pulsar_server.address, "--store", store_url]
    procs = []

    class Runtime:
        server_options = endpoints  # --temporal, --pulsar, --store
        procs = []
        topic = f"video-{uuid.uuid4().hex[:8]}"
        suffix = uuid.uuid4().hex[:6]
        logs = tmp_path / "logs"

        def start(self, name, *argv):
            proc = spawn(name, [*argv, *endpoints], self.logs)
            procs.append(proc)
            self.procs.append(proc)
            return proc

        def worker(self):
            return self.start("worker", "worker")

        def feeder(self, *extra):
            return self.start("feeder", "feeder", "--topic", self.topic, "--batch-size", "300", "--linger-ms", "100",
                              *extra)

        def register(self, name, expression, shards=3, *extra):
            proc = subprocess.run(
                [sys.executable, "-m", "timeline.cli.main", "register", name, expression, "--topic", self.topic, "--key",
                 "session_id", "--time", "ts", "--shards", str(shards), "--idle-timeout", "1h", *extra,
                 *endpoints[:2], *endpoints[4:]], capture_output=True, text=True, cwd=ROOT, timeout=60)
            assert proc.returncode == 0, proc.stderr
            return proc.stdout

        def store(self):
            return open_store(store_url)

    rt = Runtime()
    yield rt
    for p in procs:
        p.stop()


def _records(n_sessions, seed):
    events = generate_sessions(n_sessions, seed=seed, out_of_order=0.2)
    return events.to_records()


def _assert_streaming_equals_batch(rt, names, records, wait_for, timeout=180):
    store = rt.store()
    for name in names:
        expected = batch_timelines(EXPRESSIONS[name.split("-")[0]], records, "session_id", "ts")
        wait_equal(wait_for, store, name, expected, rt.procs, timeout)


def _events_applied(aio, temporal_address, spec_name, expression, shards=3, store=None, counter="events_applied"):
    """Per leaf, the events its workflows applied over all shards (the `status` query)."""
    spec = (store or _current_store).get(spec_name)

    async def total():
        client = await connect(temporal_address)
        plan = compile_expression(expression)
        counts = {}
        for leaf in plan.leaves:
            counts[leaf.id] = 0
            for shard in range(shards):
                st = await node_status(client, spec, leaf.id, shard)
                counts[leaf.id] += getattr(st, counter)
        return counts

    return aio.run(total())


_current_store = None


@pytest.fixture(autouse=True)
def _registrations(runtime):
    """Where _events_applied reads the registrations (their generation is in the workflow ids)."""
    global _current_store
    _current_store = runtime.store()
    yield
    _current_store = None


def test_streaming_equals_batch_for_several_expressions(runtime, pulsar_server, temporal_server, wait_for, aio):
    names = [f"{n}-{runtime.suffix}" for n in EXPRESSIONS]
    runtime.worker()
    for name in names:
        out = runtime.register(name, EXPRESSIONS[name.split("-")[0]])
        assert f"timeline/{name}/" in out
    runtime.feeder()
    records = _records(150, seed=11)
    produce(pulsar_server.address, runtime.topic, [msgspec.json.encode(r) for r in records])
    _assert_streaming_equals_batch(runtime, names, records, wait_for)
    counts = _events_applied(aio, temporal_server.address, names[0], CIR)
    assert set(counts.values()) == {len(records)}, counts  # every event applied once, by every leaf


def test_kill_worker_then_feeder_mid_stream(runtime, pulsar_server, temporal_server, wait_for, aio):
    name = f"cir-{runtime.suffix}"
    worker = runtime.worker()
    runtime.register(name, CIR)
    feeder = runtime.feeder()
    records = _records(200, seed=5)
    payloads = [msgspec.json.encode(r) for r in records]
    third = len(payloads) // 3
    produce(pulsar_server.address, runtime.topic, payloads[:third])
    store = runtime.store()
    wait_for(lambda: len(store.keys(name)) > 10, timeout=60, message="first results")
    worker.kill()
    produce(pulsar_server.address, runtime.topic, payloads[third:2 * third])
    runtime.worker()
    wait_for(lambda: len(store.keys(name)) > 40, timeout=90, message="results after the worker restart")
    feeder.kill()
    produce(pulsar_server.address, runtime.topic, payloads[2 * third:])
    runtime.feeder()
    _assert_streaming_equals_batch(runtime, [name], records, wait_for)
    counts = _events_applied(aio, temporal_server.address, name, CIR)
    assert set(counts.values()) == {len(records)}, counts


def test_bad_messages_reach_the_dead_letter_topic(runtime, pulsar_server, wait_for):
    import pulsar

    name = f"cir-{runtime.suffix}"
    runtime.worker()
    runtime.register(name, CIR, shards=1)
    runtime.feeder()
    good = {"session_id": "ok", "ts": 1000, "playerStateChange": "play"}
    bad = [b"not json", b"[1, 2]", json.dumps({"ts": 5}).encode(), json.dumps({"session_id": "x"}).encode(),
           json.dumps({"session_id": "y", "ts": "tuesday"}).encode()]
    client = pulsar.Client(pulsar_server.address, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        dlq = client.subscribe(f"{runtime.topic}-dead-letter", "test",
                               initial_position=pulsar.InitialPosition.Earliest)
        produce(pulsar_server.address, runtime.topic, [msgspec.json.encode(good), *bad])
        reasons = {}
        for _ in bad:
            msg = dlq.receive(timeout_millis=60_000)
            reasons[msg.data()] = msg.properties()["reason"]
            dlq.acknowledge(msg)
        assert reasons[b"not json"].startswith("not valid JSON")
        assert reasons[b"[1, 2]"] == "not a JSON object: list"
        assert reasons[json.dumps({"ts": 5}).encode()] == "no key at 'session_id'"
        assert "no usable time at 'ts'" in reasons[json.dumps({"session_id": "x"}).encode()]
        assert "not epoch ms or ISO-8601" in reasons[json.dumps({"session_id": "y", "ts": "tuesday"}).encode()]
    finally:
        client.close()
    store = runtime.store()
    wait_for(lambda: store.result(name, "ok"), timeout=60, message="the good event's result")

    # The root published the change as an event of the project's own schema.
    from timeline.sources.eventplatform import SchemaRepository

    client = pulsar.Client(pulsar_server.address, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        results = client.subscribe(f"timeline-results-{name}", "test",
                                   initial_position=pulsar.InitialPosition.Earliest)
        event = json.loads(results.receive(timeout_millis=30_000).data())
    finally:
        client.close()
    assert event["$schema"] == "/timeline/result_change/1.0.0" and event["key"] == "ok"
    assert SchemaRepository().validate(event) == []


def test_continue_as_new_loses_nothing(runtime, pulsar_server, temporal_server, wait_for, aio):
    name = f"cir-{runtime.suffix}"
    runtime.worker()
    runtime.register(name, CIR, 2, "--continue-as-new-after", "3")
    runtime.feeder("--batch-size", "100")
    records = _records(120, seed=21)
    produce(pulsar_server.address, runtime.topic, [msgspec.json.encode(r) for r in records])
    _assert_streaming_equals_batch(runtime, [name], records, wait_for)
    counts = _events_applied(aio, temporal_server.address, name, CIR, shards=2)
    assert set(counts.values()) == {len(records)}, counts

    async def runs():
        client = await connect(temporal_server.address)
        n = 0
        wid = node_workflow_id(runtime.store().get(name), compile_expression(CIR).root, 0)
        async for wf in client.list_workflows(f"WorkflowId = '{wid}'"):
            n += 1
        return n

    assert aio.run(runs()) > 1  # the root of shard 0 continued as new at least once


def test_two_sources_with_different_key_and_time_paths(runtime, pulsar_server, wait_for):
    """Edits and predictions of one page meet in one timeline although their events
    spell the page (composite key) and the time differently."""
    import datetime as dt
    import random

    name = f"wait-{runtime.suffix}"
    edits, predictions = f"edits-{runtime.suffix}", f"predictions-{runtime.suffix}"
    expr = 'duration_where(latest_event_to_state(kind) == "edit")'
    runtime.worker()
    reg = subprocess.run(
        [sys.executable, "-m", "timeline.cli.main", "register", name, expr, "--source", edits, "wiki,page.id", "ts",
         "--source", predictions, "db,page_id", "meta.dt", "--shards", "2", *runtime.server_options],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert reg.returncode == 0, reg.stderr
    assert f"topic {edits} (key wiki,page.id, time ts); topic {predictions} (key db,page_id, time meta.dt)" \
        in reg.stdout
    runtime.start("feeder-edits", "feeder", "--topic", edits, "--batch-size", "50")
    runtime.start("feeder-predictions", "feeder", "--topic", predictions, "--batch-size", "50")

    rng = random.Random(4)
    edit_events, prediction_events, normalised = [], [], []
    for page in range(30):
        wiki = rng.choice(["enwiki", "dewiki"])
        t = 1_700_000_000_000 + rng.randrange(0, 60_000)
        for _ in range(rng.randrange(1, 4)):
            edit_events.append({"wiki": wiki, "page": {"id": page}, "ts": t, "kind": "edit"})
            normalised.append({"k": f"{wiki}:{page}", "t": t, "kind": "edit"})
            if rng.random() < 0.8:
                p = t + rng.randrange(100, 5_000)
                iso = dt.datetime.fromtimestamp(p / 1000, dt.timezone.utc).isoformat().replace("+00:00", "Z")
                prediction_events.append({"db": wiki, "page_id": page, "meta": {"dt": iso}, "kind": "prediction"})
                normalised.append({"k": f"{wiki}:{page}", "t": p, "kind": "prediction"})
            t += rng.randrange(1_000, 20_000)
    produce(pulsar_server.address, edits, [msgspec.json.encode(e) for e in edit_events])
    produce(pulsar_server.address, predictions, [msgspec.json.encode(e) for e in prediction_events])
    expected = batch_timelines(expr, normalised, "k", "t")
    store = runtime.store()
    wait_for(lambda: all((r := store.result(name, k)) is not None and r.timeline == tl for k, tl in expected.items()),
             timeout=120, interval=0.5, message="two-source results to equal batch results")



def test_feeder_started_before_any_timeline_loses_nothing(runtime, pulsar_server, wait_for):
    """`timeline up` starts the feeder before anything is registered: events that arrive
    before their timeline is registered are kept in Pulsar, not acknowledged unread."""
    name = f"cir-{runtime.suffix}"
    runtime.worker()
    runtime.feeder()
    records = _records(60, seed=17)
    produce(pulsar_server.address, runtime.topic, [msgspec.json.encode(r) for r in records])
    wait_for(lambda: any("no timeline is registered" in p.tail() for p in runtime.procs), timeout=30,
             message="the feeder to say it holds the messages")
    runtime.register(name, CIR)
    _assert_streaming_equals_batch(runtime, [name], records, wait_for)
