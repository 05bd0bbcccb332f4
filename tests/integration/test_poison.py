"""A message can never stop a topic (issue 9, item 2), on the real servers.

Each kind of poison goes to the dead-letter topic with its reason, and the
events produced after it are applied; a batch larger than a signal may carry is
split; a signal that bypasses the feeder's checks cannot fail a workflow task;
the feeder keeps retrying a broker or Temporal that is away, and stops cleanly
on SIGTERM meanwhile.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import uuid

import msgspec
import pulsar
import pytest
from runtime_helpers import batch_timelines, produce, spawn, wait_equal

from timeline.dsl.events import parse_time
from timeline.dsl.incremental import EventBatch
from timeline.dsl.limits import MAX_EVENT_BYTES, MAX_SIGNAL_BYTES, MAX_TIME_MS
from timeline.models import EventBatchSignal
from timeline.runtime.control import connect, node_status, send_batch
from timeline.runtime.registry import build_spec, register_spec
from timeline.store import open_store

EXPR = 'latest_event_to_state(cdn) == "edge" || has_existed(bitrate > 3000)'


@pytest.fixture
def rt(temporal_server, pulsar_server, tmp_path):
    class Runtime:
        store_url = f"sqlite:///{tmp_path / 'results.db'}"
        ep = ["--temporal", temporal_server.address, "--pulsar", pulsar_server.address, "--store", store_url]
        topic = f"poison-{uuid.uuid4().hex[:8]}"
        name = f"poison-{uuid.uuid4().hex[:6]}"
        logs = tmp_path / "logs"
        procs: list = []

        def start(self, name, *argv):
            proc = spawn(name, list(argv), self.logs)
            self.procs.append(proc)
            return proc

    r = Runtime()
    yield r
    for p in r.procs:
        p.stop()


def _register(aio, rt, address, shards=1):
    async def go():
        client = await connect(address)
        spec, _ = build_spec(rt.name, EXPR, rt.topic, "session_id", "ts", shards=shards)
        return (await register_spec(client, open_store(rt.store_url), spec))[2]

    return aio.run(go())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_poison_is_dead_lettered_and_the_stream_goes_on(rt, temporal_server, pulsar_server, wait_for, aio):
    rt.start("worker", "worker", *rt.ep)
    _register(aio, rt, temporal_server.address)
    rt.start("feeder", "feeder", "--topic", rt.topic, "--batch-size", "100", "--linger-ms", "100", *rt.ep)

    def ev(key, ts, **fields):
        return {"session_id": key, "ts": ts, **fields}

    poison = {
        b'{"session_id": "deep", "ts": 5, "x": ' + b"[" * 1000 + b"]" * 1000 + b"}": "not valid JSON: nested too deeply",
        json.dumps(ev("nested", 5, x=json.loads("[" * 100 + "]" * 100))).encode():
            "event is nested deeper than 64 levels",
        b'{"session_id": "far", "ts": 99999999999999999999999}': "integer in event is outside int64",
        json.dumps(ev("late", MAX_TIME_MS + 1)).encode(): "time at 'ts' is out of range: 253402300800000",
        b'{"session_id": "huge", "ts": 5, "bitrate": 18446744073709551615}': "integer in event is outside int64",
        b'{"session_id": "inf", "ts": 5, "bitrate": 1e999}': "not valid JSON",
        json.dumps(ev("big", 5, pad="x" * 3_000_000)).encode(): f"is over the limit of {MAX_EVENT_BYTES} bytes",
        json.dumps(ev("wide", 5, cdn="y" * (MAX_SIGNAL_BYTES + 1000))).encode(): "over the",
    }
    # After the poison: good events, a few of them large enough together to need several signals.
    good = [ev(f"k{i % 7}", 1000 + i, cdn="edge" if i % 3 else "other", bitrate=i * 100) for i in range(60)]
    good += [ev("medium", 2000 + i, cdn="edge" + "z" * 100_000) for i in range(12)]
    client = pulsar.Client(pulsar_server.address, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        dlq = client.subscribe(f"{rt.topic}-dead-letter", "test", initial_position=pulsar.InitialPosition.Earliest)
        produce(pulsar_server.address, rt.topic, [*poison, *(msgspec.json.encode(g) for g in good)])
        reasons = {}
        while len(reasons) < len(poison):
            msg = dlq.receive(timeout_millis=120_000)  # pulsar.Timeout: a poison was not dead-lettered
            reasons[msg.data()] = msg.properties()["reason"]
            dlq.acknowledge(msg)
        for data, reason in poison.items():
            assert reason in reasons[data], (data[:60], reasons[data])
        store = open_store(rt.store_url)
        wait_equal(wait_for, store, rt.name, batch_timelines(EXPR, good, "session_id", "ts"), rt.procs, timeout=180,
                   what="the events after the poison applied")
        for key in ("deep", "nested", "far", "late", "huge", "inf", "big", "wide"):
            assert store.result(rt.name, key) is None, key
    finally:
        client.close()


def test_a_bad_signal_cannot_fail_a_workflow_task(rt, temporal_server, wait_for, aio):
    """A signal that did not go through the feeder's checks: the bad event is counted and
    skipped by the leaf, the next one applied, the workflow keeps running."""
    rt.start("worker", "worker", *rt.ep)
    spec = _register(aio, rt, temporal_server.address)
    plan = spec.plan

    def signal(key, t, cdn, entry):
        return EventBatchSignal(topic="direct", positions=[(0, entry, -1)], generation=spec.generation,
                                events=EventBatch(keys=[key], times=[t], columns={"cdn": [cdn], "bitrate": [None]}))

    async def go():
        client = await connect(temporal_server.address)
        await send_batch(client, spec, plan, 0, signal("a", 99999999999999999999999, "edge", 1))
        await send_batch(client, spec, plan, 0, signal("a", 10**19, "edge", 2))
        await send_batch(client, spec, plan, 0, signal("a", 1000, 2**70, 3))
        await send_batch(client, spec, plan, 0, signal("a", 2000, "edge", 4))

    aio.run(go())
    store = open_store(rt.store_url)
    expected = batch_timelines(EXPR, [{"session_id": "a", "ts": parse_time(2000), "cdn": "edge"}], "session_id", "ts")
    wait_equal(wait_for, store, rt.name, expected, rt.procs, timeout=120, what="the good event after bad ones")

    async def counts():
        client = await connect(temporal_server.address)
        return {leaf.id: await node_status(client, spec, leaf.id, 0) for leaf in plan.leaves}

    for leaf, st in aio.run(counts()).items():
        assert (st.events_applied, st.events_rejected) == (1, 3), (leaf, st)


@pytest.mark.parametrize("away", ["pulsar", "temporal"])
def test_the_feeder_waits_for_a_server_and_stops_on_sigterm(rt, temporal_server, pulsar_server, away, wait_for):
    """Subscribe (or connect) failing again and again does not end the feeder; SIGTERM does, at once."""
    nowhere = f"127.0.0.1:{_free_port()}"
    ep = ["--temporal", nowhere if away == "temporal" else temporal_server.address,
          "--pulsar", f"pulsar://{nowhere}" if away == "pulsar" else pulsar_server.address, "--store", rt.store_url]
    feeder = rt.start(f"feeder-{away}", "feeder", "--topic", rt.topic, *ep)
    # A broker that does not answer looks like a subscription held by another feeder: the
    # feeder stands by and tries again (every 2 s), as it retries a Temporal that is away.
    wait_for(lambda: feeder.tail().count("retrying") >= 2 or "standing by" in feeder.tail()
             or feeder.popen.poll() is not None, timeout=90, message=f"the feeder retrying {away}")
    assert feeder.popen.poll() is None, f"the feeder gave up:\n{feeder.tail()}"
    started = time.monotonic()
    feeder.popen.send_signal(signal.SIGTERM)
    try:
        code = feeder.popen.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the feeder ignored SIGTERM while retrying:\n{feeder.tail()}")
    assert code == 0, feeder.tail()
    assert time.monotonic() - started < 20
