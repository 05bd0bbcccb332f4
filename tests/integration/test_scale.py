"""The runtime at scale, on real servers: many keys read in a few requests, late
events (within a live key, and after a key closed) side-output and counted
instead of overwriting results, and no workflow task failing on payload size
under a small server limit."""

from __future__ import annotations

import json
import uuid
import warnings
from pathlib import Path

import pytest
from runtime_helpers import TopicReader, spawn
from test_api import eval_json, send, spans

from timeline.api.app import create_app
from timeline.models import TimelineSpec
from timeline.producers.video_sessions import generate_sessions
from timeline.runtime.control import connect
from timeline.runtime.settings import Endpoints
from timeline.runtime.stack import start_temporal

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

CIR = (Path(__file__).resolve().parents[2] / "examples" / "cir.tl").read_text()
BUFFERING = 'duration_where(latest_event_to_state(playerStateChange) == "buffer")'


def body(name, expression=CIR, shards=3, **extra):
    return {"name": name, "expression": expression, "source_topic": f"scale-{name}", "key_path": "session_id",
            "time_path": "ts", "shards": shards, **extra}


class Env:
    def __init__(self, client, endpoints, pulsar_client):
        self.client, self.endpoints, self.pulsar = client, endpoints, pulsar_client
        self.suffix = uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def env(temporal_server, pulsar_server, tmp_path_factory):
    import pulsar

    tmp = tmp_path_factory.mktemp("scale")
    ep = Endpoints(temporal=temporal_server.address, pulsar=pulsar_server.address,
                   store=f"sqlite:///{tmp / 'results.db'}")
    worker = spawn("scale-worker", ["worker", "--temporal", ep.temporal, "--pulsar", ep.pulsar, "--store", ep.store],
                   tmp / "logs")
    client = pulsar.Client(pulsar_server.address, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        with TestClient(create_app(ep)) as api:
            yield Env(api, ep, client)
    finally:
        client.close()
        worker.stop()


def test_many_keys_in_a_few_requests(env, aio, wait_for):
    name = f"bulk-{env.suffix}"
    r = env.client.post("/timelines", json=body(name))
    assert r.status_code == 201, r.text
    records = generate_sessions(300, seed=11, out_of_order=0.2).to_records()
    send(aio, env.endpoints.temporal, TimelineSpec.model_validate(r.json()["spec"]), records, chunks=4)
    expected = eval_json(CIR, records)

    def read_all():
        got, after, requests = {}, None, 0
        while True:
            page = env.client.get(f"/timelines/{name}/results", params={"limit": 100, **({"after": after} if after
                                                                                            else {})}).json()
            requests += 1
            got.update({row["key"]: spans(row) for row in page["keys"]})
            after = page["next_after"]
            if after is None:
                return got, requests

    def converged():
        got, requests = read_all()
        return got == expected and requests

    requests = wait_for(converged, timeout=240, interval=1.0,
                        message="every key read in pages to equal timeline eval's")
    assert requests == 3  # 300 keys, 100 a page
    some = sorted(expected)[:50] + ["no-such-key"]
    listed = env.client.post(f"/timelines/{name}/results", json={"keys": some}).json()
    assert listed["count"] == 50 and {row["key"]: spans(row) for row in listed["keys"]} == {
        k: expected[k] for k in some[:50]}
    assert all(row["source"] == "live" and not row["closed"] for row in listed["keys"])
    health = env.client.get(f"/timelines/{name}").json()["health"]
    assert health["status"] == "ok" and health["late_events"] == 0, health
    too_many = env.client.post(f"/timelines/{name}/results", json={"keys": [str(i) for i in range(10_001)]})
    assert too_many.status_code == 422 and "error" in too_many.json()


def _one_key(aio, env, spec, events, first_position=0):
    """Events of key "a" in one signal, at message positions from `first_position` on (a leaf
    skips positions it has applied: a later send must go on from where the last one ended)."""
    from timeline.dsl.incremental import EventBatch
    from timeline.models import EventBatchSignal
    from timeline.runtime.control import send_batch

    async def go():
        client = await connect(env.endpoints.temporal)
        batch = EventBatch(keys=["a"] * len(events), times=[e["ts"] for e in events],
                           columns={"playerStateChange": [e["playerStateChange"] for e in events]})
        await send_batch(client, spec, spec.plan, 0, EventBatchSignal(
            topic="scale", positions=[(0, first_position + i, -1) for i in range(len(events))], events=batch))

    aio.run(go())


def test_late_event_within_a_live_key_is_side_output_and_counted(env, aio, wait_for):
    name = f"late-{env.suffix}"
    r = env.client.post("/timelines", json=body(name, BUFFERING, shards=1, allowed_lateness_s=1))
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["allowed_lateness_s"] == 1
    spec = TimelineSpec.model_validate(r.json()["spec"])
    reader = TopicReader(env.pulsar, f"timeline-results-{name}-late")
    t = 1_700_000_000_000
    _one_key(aio, env, spec, [{"ts": t, "playerStateChange": "buffer"},
                              {"ts": t + 10_000, "playerStateChange": "play"}])
    value = f"/timelines/{name}/keys/a/value"
    wait_for(lambda: env.client.get(value, params={"t": t + 20_000}).json()["value"] == 10_000, timeout=60,
             message="the key's buffering total")
    # 5 s behind the key's latest event, with 1 s allowed: late, not applied.
    _one_key(aio, env, spec, [{"ts": t + 5_000, "playerStateChange": "play"}], first_position=2)
    late = json.loads(reader.take(1, timeout_ms=60_000)[0].data())
    assert (late["key"], late["time"], late["reason"], late["fields"]) == (
        "a", t + 5_000, "late", {"playerStateChange": "play"})
    wait_for(lambda: env.client.get(f"/timelines/{name}").json()["health"]["late_events"] == 1, timeout=30,
             message="the late event counted in the timeline's health")
    assert env.client.get(value, params={"t": t + 20_000}).json()["value"] == 10_000


def test_late_event_after_the_key_closed_keeps_its_final_result(env, aio, wait_for):
    """Issue 9.8: buffer at T, play at T+10s, the key closes (idle 4 s), then play at T+5s."""
    name = f"closed-{env.suffix}"
    r = env.client.post("/timelines", json=body(name, BUFFERING, shards=1, idle_timeout_s=4))
    assert r.status_code == 201, r.text
    spec = TimelineSpec.model_validate(r.json()["spec"])
    reader = TopicReader(env.pulsar, f"timeline-results-{name}-late")
    t = 1_700_000_000_000
    _one_key(aio, env, spec, [{"ts": t, "playerStateChange": "buffer"},
                              {"ts": t + 10_000, "playerStateChange": "play"}])
    key = f"/timelines/{name}/keys/a"
    wait_for(lambda: env.client.get(key).json()["closed"], timeout=90, message="the key to close")
    final = env.client.get(key).json()
    assert env.client.get(f"{key}/value", params={"t": t + 20_000}).json()["value"] == 10_000
    _one_key(aio, env, spec, [{"ts": t + 5_000, "playerStateChange": "play"}], first_position=2)
    late = json.loads(reader.take(1, timeout_ms=60_000)[0].data())
    assert (late["key"], late["time"], late["reason"]) == ("a", t + 5_000, "late")
    after = env.client.get(key).json()
    assert after["closed"] and spans(after) == spans(final)
    assert env.client.get(f"{key}/value", params={"t": t + 20_000}).json()["value"] == 10_000


def test_nothing_fails_under_a_small_payload_limit(tmp_path, pulsar_server, aio, wait_for):
    """A dev server refusing payloads over 256 KB. One key with 20,000 events (its state
    once grew 45 bytes an event: 900 KB) and 400 sessions, continue-as-new every 5 batches:
    every result equals batch and no workflow task failed."""
    limit = 256 * 1024
    server = start_temporal(tmp_path / "temporal", die_with_parent=True,
                            dynamic_config={"limit.blobSize.error": str(limit), "limit.blobSize.warn": str(limit // 2)})
    ep = Endpoints(temporal=server.address, pulsar=pulsar_server.address, store=f"sqlite:///{tmp_path / 'r.db'}")
    worker = spawn("small-limit-worker",
                   ["worker", "--temporal", ep.temporal, "--pulsar", ep.pulsar, "--store", ep.store], tmp_path / "logs")
    try:
        with TestClient(create_app(ep)) as api:
            name = "small-limit"
            r = api.post("/timelines", json=body(name, shards=4, max_state_bytes=150_000))
            assert r.status_code == 201, r.text
            spec = TimelineSpec.model_validate(r.json()["spec"])
            aio.run(_restart_with_continue_as_new_every(ep.temporal, spec, 5))
            t = 1_700_000_000_000
            cycle = ["play", "buffer", "seek", "buffer", "play"]
            long_key = [{"session_id": "long", "ts": t + i * 300, "playerStateChange": cycle[i % 5]}
                        for i in range(20_000)]
            records = long_key + generate_sessions(400, seed=5, out_of_order=0.1).to_records()
            send(aio, ep.temporal, spec, records, chunks=120)
            expected = eval_json(CIR, records)

            def converged():
                got, after = {}, None
                while True:
                    page = api.get(f"/timelines/{name}/results", params={"limit": 1000, **(
                        {"after": after} if after else {})}).json()
                    got.update({row["key"]: spans(row) for row in page["keys"]})
                    if (after := page["next_after"]) is None:
                        break
                return got == expected

            wait_for(converged, timeout=1200, interval=5.0, message="every result to equal batch under a 256 KB limit")
            health = api.get(f"/timelines/{name}").json()["health"]
            assert health["status"] == "ok", health
            assert health["largest_payload_bytes"] < limit  # what the server's limit counts (compressed)
            failures, continued = aio.run(_failed_workflow_tasks(ep.temporal, name))
            assert failures == [], failures[:3]
            assert continued >= 28, f"only {continued} runs continued as new (every 5 batches was asked)"
    finally:
        worker.stop()
        server.stop()


async def _restart_with_continue_as_new_every(address, spec, batches):
    """Start the tree again with continue-as-new every few batches (the registration started it
    with Temporal's suggestion): stop (runtime stop_tree), then start with the option."""
    from timeline.runtime.control import start_tree, stop_tree

    client = await connect(address)
    await stop_tree(client, spec)
    await start_tree(client, spec, continue_as_new_after=batches)


async def _failed_workflow_tasks(address, name):
    """Workflow tasks that failed, and failed runs. A task that Temporal failed with cause
    UNHANDLED_COMMAND is not a failure of ours: a signal came in while the task completed
    with continue-as-new, and the task simply runs again with it."""
    from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause

    client = await connect(address)
    bad, continued = [], 0
    async for wf in client.list_workflows(f"WorkflowId STARTS_WITH 'timeline/{name}/'"):
        handle = client.get_workflow_handle(wf.id, run_id=wf.run_id)
        async for ev in handle.fetch_history_events():
            continued += ev.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
            if ev.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                cause = ev.workflow_task_failed_event_attributes.cause
                if cause != WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND:
                    bad.append((wf.id, WorkflowTaskFailedCause.Name(cause),
                                ev.workflow_task_failed_event_attributes.failure.message[:300]))
            elif ev.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
                bad.append((wf.id, "execution failed", str(ev)[:300]))
    return bad, continued


def test_a_backlog_is_applied_over_several_activations(tmp_path, pulsar_server, aio, wait_for):
    """Signals that piled up while no worker ran reach a leaf in one activation. The leaf
    applies them a budget at a time (MAX_ITEMS_PER_ACTIVATION), each part in a workflow
    task of its own, so no task runs into the SDK's 2 s deadlock detection however long the
    backlog; every result still equals batch and no workflow task failed."""
    from temporalio.api.enums.v1 import EventType

    from timeline.workflows.node import MAX_ITEMS_PER_ACTIVATION

    server = start_temporal(tmp_path / "temporal", die_with_parent=True)
    ep = Endpoints(temporal=server.address, pulsar=pulsar_server.address, store=f"sqlite:///{tmp_path / 'r.db'}")
    worker = None
    try:
        with TestClient(create_app(ep)) as api:
            name = "backlog"
            r = api.post("/timelines", json=body(name, shards=1))
            assert r.status_code == 201, r.text
            spec = TimelineSpec.model_validate(r.json()["spec"])
            records = generate_sessions(700, seed=11, out_of_order=0.1).to_records()
            assert len(records) > 3 * MAX_ITEMS_PER_ACTIVATION
            send(aio, ep.temporal, spec, records, chunks=40)  # no worker yet: 40 signals wait per leaf
            expected = eval_json(CIR, records)
            worker = spawn("backlog-worker", ["worker", "--temporal", ep.temporal, "--pulsar", ep.pulsar,
                                              "--store", ep.store], tmp_path / "logs")

            def converged():
                page = api.get(f"/timelines/{name}/results", params={"limit": 1000}).json()
                got = {row["key"]: spans(row) for row in page["keys"]}
                return got == expected

            wait_for(converged, timeout=600, interval=2.0, message="every result of the backlog to equal batch")
            failures, _ = aio.run(_failed_workflow_tasks(ep.temporal, name))
            assert failures == [], failures[:3]

            async def chunk_timers() -> int:
                client = await connect(ep.temporal)
                spec_leaf = spec.plan.leaves[0].id
                from timeline.models import node_workflow_id

                handle = client.get_workflow_handle(node_workflow_id(spec, spec_leaf, 0))
                timers = 0
                async for ev in handle.fetch_history_events():
                    if ev.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
                        timeout = ev.timer_started_event_attributes.start_to_fire_timeout
                        timers += timeout.seconds == 0 and timeout.nanos == 1_000_000
                return timers

            # The backlog (over 3 budgets) went through at least 3 activations of the first leaf.
            assert aio.run(chunk_timers()) >= 3
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
