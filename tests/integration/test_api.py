"""The HTTP API (api/app.py) on real servers: a Temporal dev server, pulsar-lite
(the worker publishes results to it), a worker process and the results store.
Events go straight to the leaf workflows with `workflows.control.send_batch`
(the feeder's own path is covered by test_streaming.py). Answers are compared
with the batch evaluator's (`timeline eval`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import httpx
import msgspec
import pytest
from runtime_helpers import spawn

from timeline.api.app import create_app
from timeline.dsl.batch import run_eval
from timeline.dsl.compiler import compile_expression
from timeline.dsl.decode import decode_jsonl
from timeline.dsl.events import field_value, parse_time, split_path
from timeline.dsl.incremental import EventBatch
from timeline.models import EventBatchSignal, TimelineSpec, shard_of
from timeline.producers.video_sessions import generate_sessions
from timeline.runtime.control import connect, send_batch
from timeline.runtime.settings import Endpoints
from timeline.runtime.stack import free_port
from timeline.store import open_store

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx; TestClient works the same
    from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]
CIR = (ROOT / "examples" / "cir.tl").read_text()
S1 = [json.loads(line) for line in (ROOT / "examples" / "cir_session.jsonl").read_text().splitlines()]
SHARDS = 3


def body(name: str, expression: str = CIR, **extra) -> dict:
    return {"name": name, "expression": expression, "source_topic": "api-test", "key_path": "session_id",
            "time_path": "ts", "shards": SHARDS, **extra}


def eval_json(expression: str, records: list[dict], at=None, frm=None, to=None) -> dict:
    """What `timeline eval` prints for these events."""
    plan = compile_expression(expression)
    data = b"\n".join(msgspec.json.encode(r) for r in records)
    decoded = decode_jsonl(data, split_path("session_id"), split_path("ts"), plan.columns())
    return json.loads(msgspec.json.encode(run_eval(plan, decoded, at, frm, to)))


def send(aio, address: str, spec: TimelineSpec, records: list[dict], chunks: int = 3) -> None:
    """The events to the leaves of their keys' shards, in a few batches per shard (as the feeder does)."""
    plan = compile_expression(spec.expression)
    paths = plan.columns()

    async def go():
        client = await connect(address)
        per_shard: dict[int, list[tuple[int, dict]]] = {}
        for i, r in enumerate(records):
            per_shard.setdefault(shard_of(str(r["session_id"]), spec.shards), []).append((i, r))
        for shard, rows in per_shard.items():
            size = max(1, -(-len(rows) // chunks))
            for lo in range(0, len(rows), size):
                part = rows[lo:lo + size]
                events = EventBatch(
                    keys=[str(r["session_id"]) for _, r in part], times=[parse_time(r["ts"]) for _, r in part],
                    columns={".".join(p): [field_value(r, p) for _, r in part] for p in paths})
                await send_batch(client, spec, plan, shard, EventBatchSignal(
                    topic="api-test", positions=[(0, i, -1) for i, _ in part], events=events))

    aio.run(go())


def spans(answer: dict) -> list[dict]:
    return [{k: v for k, v in s.items() if k != "provisional"} for s in answer["spans"]]


class Env:
    def __init__(self, client: TestClient, endpoints: Endpoints, tmp: Path):
        self.client, self.endpoints, self.tmp = client, endpoints, tmp
        self.suffix = uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def env(temporal_server, pulsar_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    ep = Endpoints(temporal=temporal_server.address, pulsar=pulsar_server.address,
                   store=f"sqlite:///{tmp / 'results.db'}")
    worker = spawn("api-worker", ["worker", "--temporal", ep.temporal, "--pulsar", ep.pulsar, "--store", ep.store],
                   tmp / "logs")
    try:
        with TestClient(create_app(ep)) as client:
            yield Env(client, ep, tmp)
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def cir(env, aio):
    """A CIR timeline registered through the API and fed the SPEC example session and 20 generated ones."""
    name = f"cir-{env.suffix}"
    r = env.client.post("/timelines", json=body(name))
    assert r.status_code == 201, r.text
    assert r.json()["created"] is True and len(r.json()["workflows"]) == 7 * SHARDS
    records = S1 + generate_sessions(20, seed=3, out_of_order=0.2).to_records()
    send(aio, env.endpoints.temporal, TimelineSpec.model_validate(r.json()["spec"]), records)
    return name, records


def test_register_checks_the_expression_and_the_name(env, cir):
    name, _ = cir
    c = env.client
    r = c.post("/timelines", json=body(f"bad-{env.suffix}", "duration_where(x == 1)"))
    assert r.status_code == 400
    err = r.json()
    assert (err["kind"], err["line"], err["column"]) == ("type error", 1, 16)
    assert err["expected"] == "wrap it: duration_where(has_existed(x == 1))"
    assert "duration_where(x == 1)\n" in err["detail"] and "^^^^^^" in err["detail"]
    assert err["error"].startswith("type error at line 1, column 16: duration_where takes a boolean timeline")

    r = c.post("/timelines", json=body(f"bad-{env.suffix}", 'TL_HasExisted(col("x") = 1)'))
    assert r.status_code == 400 and (r.json()["kind"], r.json()["column"]) == ("syntax error", 24)

    again = c.post("/timelines", json=body(name))  # the same registration: unchanged, workflows checked
    assert again.status_code == 200 and again.json()["created"] is False

    clash = c.post("/timelines", json=body(name, 'has_existed(playerStateChange == "play")'))
    assert clash.status_code == 409
    assert f"DELETE /timelines/{name}" in clash.json()["error"]

    r = c.post("/timelines", json=body("Not A Name"))
    assert r.status_code == 400 and "a timeline name is" in r.json()["error"]
    r = c.post("/timelines", json=body(f"x-{env.suffix}", shards=0))
    assert r.status_code == 400 and "shards" in r.json()["error"]
    r = c.post("/timelines", json={"name": "x"})
    assert r.status_code == 422 and "body field 'expression': Field required" in r.json()["error"]
    listed = [t["name"] for t in c.get("/timelines").json()["timelines"]]
    assert f"bad-{env.suffix}" not in listed and f"x-{env.suffix}" not in listed  # nothing half-registered


def test_list_and_describe(env, cir):
    name, _ = cir
    listed = env.client.get("/timelines").json()
    assert name in [s["name"] for s in listed["timelines"]] and listed["count"] == len(listed["timelines"])
    d = env.client.get(f"/timelines/{name}").json()
    plan = compile_expression(CIR)
    assert d["spec"]["key_path"] == "session_id" and d["spec"]["shards"] == SHARDS
    assert d["plan"]["root"] == plan.root and len(d["plan"]["nodes"]) == len(plan.nodes) == 7
    assert len(d["workflows"]) == 7 * SHARDS
    generation = d["spec"]["generation"]
    assert generation and f"timeline/{name}/{generation}/{plan.root}/2" in {w["workflow_id"] for w in d["workflows"]}
    assert "/docs" in env.client.get("/nope").json()["error"]
    assert env.client.get("/openapi.json").json()["paths"].keys() >= {"/timelines", "/timelines/{name}/keys/{key}"}


def test_live_timelines_equal_the_batch_evaluator(env, cir, wait_for):
    name, records = cir
    expected = eval_json(CIR, records)

    def converged():
        return all(spans(env.client.get(f"/timelines/{name}/keys/{k}").json()) == tl for k, tl in expected.items())

    wait_for(converged, timeout=40, interval=0.3, message="every key's live timeline to equal timeline eval's")
    last = {}
    for r in records:
        last[r["session_id"]] = max(last.get(r["session_id"], r["ts"]), r["ts"])
    for key in expected:
        a = env.client.get(f"/timelines/{name}/keys/{key}").json()
        assert (a["source"], a["closed"], a["kind"], a["watermark"]) == ("live", False, "numeric", last[key])
        for s in a["spans"]:
            assert s["provisional"] == (s["end"] is None or s["end"] > a["watermark"])
        assert a["spans"][-1]["provisional"] is True

    s1 = env.client.get(f"/timelines/{name}/keys/s1").json()
    assert spans(s1) == [{"start": 1000, "end": 7000, "value": 0, "slope": 0},
                         {"start": 7000, "end": 9000, "value": 0, "slope": 1},
                         {"start": 9000, "end": None, "value": 2000, "slope": 0}]
    # [from, to), in epoch ms or ISO-8601, clipped as `timeline eval --from --to` clips
    clipped = env.client.get(f"/timelines/{name}/keys/s1", params={"from": 8000, "to": "1970-01-01T00:00:10Z"})
    assert clipped.json()["from"] == 8000 and clipped.json()["to"] == 10000
    assert spans(clipped.json()) == eval_json(CIR, S1, frm=8000, to=10000)["s1"] == [
        {"start": 8000, "end": 9000, "value": 1000, "slope": 1},
        {"start": 9000, "end": 10000, "value": 2000, "slope": 0}]
    key = next(k for k in expected if k != "s1")
    t0 = min(r["ts"] for r in records if r["session_id"] == key)
    got = env.client.get(f"/timelines/{name}/keys/{key}", params={"from": t0 + 1500, "to": t0 + 60_000}).json()
    assert spans(got) == eval_json(CIR, records, frm=t0 + 1500, to=t0 + 60_000)[key]


def test_value_at_t(env, cir, wait_for):
    name, records = cir
    wait_for(lambda: env.client.get(f"/timelines/{name}/keys/s1/value", params={"t": 9000}).json()["value"] == 2000,
             timeout=40, message="s1's result")
    v = env.client.get(f"/timelines/{name}/keys/s1/value", params={"t": 8000}).json()
    assert (v["value"], v["provisional"], v["source"], v["watermark"]) == (1000, False, "live", 9000)
    later = env.client.get(f"/timelines/{name}/keys/s1/value", params={"t": 12000}).json()
    assert (later["value"], later["provisional"]) == (2000, True)  # evaluated at t, past the watermark
    assert env.client.get(f"/timelines/{name}/keys/s1/value", params={"t": 500}).json()["value"] is None
    t = sorted(r["ts"] for r in records)[len(records) // 2]
    expected = eval_json(CIR, records, at=t)
    for key, value in expected.items():
        got = env.client.get(f"/timelines/{name}/keys/{key}/value", params={"t": t}).json()
        assert got["value"] == value, key


def test_tree_explains_the_result(env, cir, wait_for):
    name, _ = cir
    wait_for(lambda: env.client.get(f"/timelines/{name}/keys/s1/value", params={"t": 9000}).json()["value"] == 2000,
             timeout=40, message="s1's result")
    tree = env.client.get(f"/timelines/{name}/keys/s1/tree").json()
    plan = compile_expression(CIR)
    assert tree["root"] == plan.root and tree["shard"] == shard_of("s1", SHARDS) and tree["closed"] is False
    nodes = {n["label"]: n for n in tree["nodes"]}
    assert tree["nodes"][0]["node_id"] == plan.root and len(nodes) == 7 and all(n["held"] for n in tree["nodes"])
    assert spans(tree["nodes"][0]) == spans(env.client.get(f"/timelines/{name}/keys/s1").json())
    # the SPEC.md worked example, node by node
    states = {label: [(s["start"], s["end"], s["value"]) for s in n["spans"]] for label, n in nodes.items()}
    assert states['has_existed(playerStateChange == "play")'] == [(1000, None, True)]
    assert states['has_existed_within(playerStateChange == "seek", 5s)'] == [
        (1000, 2000, False), (2000, 7000, True), (7000, None, False)]
    assert states['latest_event_to_state(playerStateChange) == "buffer"'] == [
        (1000, 5000, False), (5000, 9000, True), (9000, None, False)]
    root_child = nodes[tree["nodes"][0]["label"]]["children"][0]
    assert [(s["start"], s["end"], s["value"]) for n in tree["nodes"] if n["node_id"] == root_child
            for s in n["spans"]] == [(1000, 7000, False), (7000, 9000, True), (9000, None, False)]
    assert {n["op"] for n in tree["nodes"]} == {"DurationWhere", "And", "HasExisted", "Not", "HasExistedWithin",
                                                "Compare", "LatestEventToState"}


def test_keys_with_results(env, cir, wait_for):
    name, records = cir
    keys = sorted({r["session_id"] for r in records})
    wait_for(lambda: env.client.get(f"/timelines/{name}/keys").json()["keys"] == keys, timeout=40,
             message="every key's results in the store")
    live = env.client.get(f"/timelines/{name}/keys", params={"closed": "false"}).json()
    assert live["keys"] == keys and live["count"] == len(keys) and live["closed"] is False
    assert env.client.get(f"/timelines/{name}/keys", params={"closed": "true"}).json()["keys"] == []


def test_unknown_names_and_bad_times(env, cir):
    name, _ = cir
    c = env.client
    for method, path in [("get", "/timelines/nope"), ("delete", "/timelines/nope"), ("get", "/timelines/nope/keys"),
                         ("get", "/timelines/nope/keys/s1"), ("get", "/timelines/nope/keys/s1/tree")]:
        r = c.request(method, path)
        assert r.status_code == 404 and "no timeline named 'nope'" in r.json()["error"], path
    r = c.get(f"/timelines/{name}/keys/no-such-key")
    assert r.status_code == 404 and "has no key 'no-such-key'" in r.json()["error"]
    assert c.get(f"/timelines/{name}/keys/no-such-key/tree").status_code == 404
    r = c.get(f"/timelines/{name}/keys/a/b%2Fc")  # a key may hold '/'
    assert r.status_code == 404 and "has no key 'a/b/c'" in r.json()["error"]
    assert c.get(f"/timelines/{name}/keys/no-such-key/value", params={"t": 1}).status_code == 404
    r = c.get(f"/timelines/{name}/keys/s1", params={"from": "yesterday"})
    assert r.status_code == 400 and r.json()["error"].startswith("from='yesterday' is not a time")
    r = c.get(f"/timelines/{name}/keys/s1", params={"from": 5000, "to": 5000})
    assert r.status_code == 400 and "must be before" in r.json()["error"]
    assert c.get(f"/timelines/{name}/keys/s1/value", params={"t": "noon"}).status_code == 400
    r = c.get(f"/timelines/{name}/keys/s1/value")
    assert r.status_code == 422 and "query parameter 't'" in r.json()["error"]
    assert c.get(f"/timelines/{name}/keys", params={"closed": "perhaps"}).status_code == 422


def test_closed_keys_are_answered_from_the_store(env, aio, wait_for):
    name = f"idle-{env.suffix}"
    r = env.client.post("/timelines", json=body(name, shards=1, idle_timeout_s=1))
    assert r.status_code == 201, r.text
    send(aio, env.endpoints.temporal, TimelineSpec.model_validate(r.json()["spec"]), S1, chunks=1)
    wait_for(lambda: env.client.get(f"/timelines/{name}/keys", params={"closed": "true"}).json()["keys"] == ["s1"],
             timeout=30, message="s1 to close (idle timeout 1 s)")
    a = env.client.get(f"/timelines/{name}/keys/s1").json()
    assert (a["source"], a["closed"]) == ("store", True)
    assert spans(a) == eval_json(CIR, S1)["s1"] and not any(s["provisional"] for s in a["spans"])
    v = env.client.get(f"/timelines/{name}/keys/s1/value", params={"t": 8500}).json()
    assert (v["value"], v["source"], v["provisional"]) == (1500, "store", False)
    # every node closes the key on its own idle clock: soon none holds it, and the tree says where it went
    tree = wait_for(lambda: (t := env.client.get(f"/timelines/{name}/keys/s1/tree").json())["note"] and t,
                    timeout=15, message="every node to release s1")
    assert tree["closed"] is True and "kept in the store" in tree["note"]
    assert not any(n["held"] or n["spans"] for n in tree["nodes"])
    assert env.client.delete(f"/timelines/{name}").status_code == 200


def test_delete_stops_the_workflows(env):
    name = f"del-{env.suffix}"
    assert env.client.post("/timelines", json=body(name, "has_existed(x == 1)", shards=2)).status_code == 201
    r = env.client.delete(f"/timelines/{name}")
    assert r.status_code == 200 and r.json()["workflows_stopped"] == 2, r.text
    assert env.client.get(f"/timelines/{name}").status_code == 404
    assert env.client.delete(f"/timelines/{name}").status_code == 404
    assert name not in [s["name"] for s in env.client.get("/timelines").json()["timelines"]]


def test_temporal_unreachable_is_503(tmp_path):
    ep = Endpoints(temporal=f"127.0.0.1:{free_port()}", pulsar="pulsar://127.0.0.1:1",
                   store=f"sqlite:///{tmp_path / 'results.db'}")
    store = open_store(ep.store)
    store.register(TimelineSpec(name="t", expression=CIR, source_topic="x", key_path="session_id", time_path="ts"))
    store.close()
    with TestClient(create_app(ep)) as c:
        assert c.get("/timelines").status_code == 200  # the store alone still answers
        for r in (c.get("/timelines/t/keys/s1"), c.post("/timelines", json=body("u")), c.delete("/timelines/t")):
            assert r.status_code == 503 and r.json()["error"].startswith("Temporal is unreachable"), r.text
        assert c.get("/timelines").json()["count"] == 1  # nothing registered or removed


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_api_command_serves_and_stops_cleanly(sig, tmp_path, temporal_server, wait_for):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "timeline.cli.api", "--port", str(port), "--temporal", temporal_server.address,
         "--store", f"sqlite:///{tmp_path / 'results.db'}", "--no-access-log"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        got = wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/timelines", timeout=2).json(), timeout=30,
                       message="the API to answer")
        assert got == {"timelines": [], "count": 0}
        assert httpx.get(f"http://127.0.0.1:{port}/docs", timeout=5).status_code == 200
        os.kill(proc.pid, sig)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
