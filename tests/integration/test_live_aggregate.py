"""Live aggregates and backfill on real servers: Pulsar -> feeder -> node workflows -> partial
aggregates per shard -> the combining aggregate workflow -> `GET /timelines/{name}/aggregate`,
compared with `timeline eval` on the same events."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import msgspec
import pytest
from runtime_helpers import batch_timelines, produce, spawn, wait_equal

from timeline.api.app import create_app
from timeline.dsl.batch import run_eval
from timeline.dsl.compiler import compile_expression
from timeline.dsl.decode import decode_jsonl
from timeline.dsl.events import parse_time, split_path
from timeline.producers.video_sessions import generate_sessions
from timeline.runtime.control import connect, node_status
from timeline.runtime.settings import Endpoints
from timeline.store import open_store

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]
BUFFERING = 'duration_where(latest_event_to_state(playerStateChange) == "buffer")'
AGGREGATE = f"{BUFFERING} | aggregate(group_by(cdn), count, sum, avg, min, max)"


@pytest.fixture
def runtime(temporal_server, pulsar_server, tmp_path):
    store_url = f"sqlite:///{tmp_path / 'results.db'}"
    options = ["--temporal", temporal_server.address, "--pulsar", pulsar_server.address, "--store", store_url]
    procs = []

    class Runtime:
        topic = f"agg-{uuid.uuid4().hex[:8]}"
        suffix = uuid.uuid4().hex[:6]
        endpoints = Endpoints(temporal=temporal_server.address, pulsar=pulsar_server.address, store=store_url)

        def start(self, name, *argv):
            proc = spawn(name, [*argv, *options], tmp_path / "logs")
            procs.append(proc)
            return proc

        def register(self, name, expression, *extra, shards=3, idle="1h"):
            proc = subprocess.run(
                [sys.executable, "-m", "timeline.cli.main", "register", name, expression, "--topic", self.topic,
                 "--key", "session_id", "--time", "ts", "--shards", str(shards), "--idle-timeout", idle, *extra,
                 *options], capture_output=True, text=True, cwd=ROOT, timeout=90)
            assert proc.returncode == 0, proc.stderr
            return proc.stdout

        def logs(self):
            return "\n".join(f"--- {p.name}\n{p.tail()}" for p in procs)

    yield Runtime()
    for p in procs:
        p.stop()


def eval_aggregate(records: list[dict], at: int) -> dict:
    plan = compile_expression(AGGREGATE)
    data = b"\n".join(msgspec.json.encode(r) for r in records)
    decoded = decode_jsonl(data, split_path("session_id"), split_path("ts"), plan.columns())
    return json.loads(msgspec.json.encode(run_eval(plan, decoded, at, None, None)))


def _records(n, seed):
    return generate_sessions(n, seed=seed, out_of_order=0.2).to_records()


def _check_times(records):
    times = sorted(parse_time(r["ts"]) for r in records)
    lo, hi = times[0], times[-1]
    return [lo - 1, lo, times[len(times) // 4], times[len(times) // 2], hi, hi + 60_000]


def test_live_aggregate_equals_eval_as_keys_change_and_close(runtime, pulsar_server, wait_for):
    name = f"agg-{runtime.suffix}"
    runtime.start("worker", "worker")
    # keys close 30 s after their last event: long enough that none closes while its events still come
    # (a late event would start a closed key again, see "Limits to know" in the README)
    out = runtime.register(name, AGGREGATE, idle="30s")
    assert f"timeline/{name}/" in out
    runtime.start("feeder", "feeder", "--topic", runtime.topic, "--batch-size", "200", "--linger-ms", "100")
    first, second = _records(60, seed=3), _records(60, seed=4)
    for r in second:
        r["session_id"] = f"b-{r['session_id']}"
    with TestClient(create_app(runtime.endpoints)) as api:
        def matches(records, closed_at_least=0):
            def check():
                for t in _check_times(records):
                    got = api.get(f"/timelines/{name}/aggregate", params={"t": t})
                    if got.status_code != 200:
                        return False
                    body = got.json()
                    check.seen = (t, body["closed_keys"], body["live_keys"], body["points"][0]["groups"],
                                  eval_aggregate(records, t))
                    if body["closed_keys"] < closed_at_least:
                        return False
                    if body["points"][0]["groups"] != eval_aggregate(records, t):
                        return False
                return True
            check.seen = None
            return check

        def wait_match(check, what):
            try:
                wait_for(check, timeout=240, interval=1, message=what)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; last seen (t, closed keys, live keys, groups, eval's groups): "
                                     f"{check.seen}; logs:\n{runtime.logs()}") from None

        produce(pulsar_server.address, runtime.topic, [msgspec.json.encode(r) for r in first])
        wait_match(matches(first), "the live aggregate to equal eval on the first 60 sessions")
        # every key idle past 30 s closes; the aggregate keeps them (folded), and more keys come
        wait_match(matches(first, closed_at_least=60), "the 60 keys to close with the aggregate unchanged")
        produce(pulsar_server.address, runtime.topic, [msgspec.json.encode(r) for r in second])
        both = first + second
        wait_match(matches(both), "the aggregate over all 120 sessions to equal eval")

        # over time: at every change point of the aggregate in [from, to), and sampled with a step
        times = sorted(parse_time(r["ts"]) for r in both)
        frm, to = times[0], times[len(times) // 3]
        over = api.get(f"/timelines/{name}/aggregate", params={"from": frm, "to": to}).json()
        assert over["points"][0]["t"] == frm and len(over["points"]) > 2
        for point in over["points"][:40]:
            assert point["groups"] == eval_aggregate(both, point["t"]), point["t"]
        sampled = api.get(f"/timelines/{name}/aggregate", params={"from": frm, "to": to, "step": 5000}).json()
        assert [p["t"] for p in sampled["points"]] == list(range(frm, to, 5000))
        for point in sampled["points"][:20]:
            assert point["groups"] == eval_aggregate(both, point["t"])

        # mistakes are 400s that say how to fix them
        assert api.get(f"/timelines/{name}/aggregate").status_code == 400
        assert api.get(f"/timelines/{name}/aggregate", params={"t": 1, "from": 0, "to": 5}).status_code == 400
        bad = api.get(f"/timelines/{name}/aggregate", params={"from": frm, "to": to, "step": 0})
        assert bad.status_code == 400 and "step" in bad.json()["error"]


def test_backfill_replays_the_topic_then_continues_live(runtime, pulsar_server, temporal_server, wait_for, aio):
    """A timeline registered after its events were produced: with --from earliest it sees them all
    (once), then what comes later; without it (the default), only what comes after."""
    first = f"first-{runtime.suffix}"
    late = f"late-{runtime.suffix}"
    runtime.start("worker", "worker")
    runtime.register(first, BUFFERING)
    runtime.start("feeder", "feeder", "--topic", runtime.topic, "--batch-size", "200", "--linger-ms", "100")
    before, after = _records(50, seed=8), _records(50, seed=9)
    for r in after:
        r["session_id"] = f"later-{r['session_id']}"
    produce(pulsar_server.address, runtime.topic, [msgspec.json.encode(r) for r in before])
    store = open_store(runtime.endpoints.store)
    wait_equal(wait_for, store, first, batch_timelines(BUFFERING, before, "session_id", "ts"), timeout=240)

    live, since = f"live-{runtime.suffix}", f"since-{runtime.suffix}"
    runtime.register(late, BUFFERING, "--from", "earliest")
    runtime.register(live, BUFFERING)  # the default: from where the shared feeder is
    runtime.register(since, BUFFERING, "--from", str(int(time.time() * 1000)))  # published from now on
    produce(pulsar_server.address, runtime.topic, [msgspec.json.encode(r) for r in after])
    expected = batch_timelines(BUFFERING, before + after, "session_id", "ts")
    only_after = batch_timelines(BUFFERING, after, "session_id", "ts")
    wait_equal(wait_for, store, late, expected, timeout=240,
               what="the backfilled timeline to equal batch over every event")
    wait_equal(wait_for, store, first, expected, timeout=240)
    wait_equal(wait_for, store, live, only_after, timeout=240, what="the live timeline to see the later events")
    wait_equal(wait_for, store, since, only_after, timeout=240, what="--from TIME to see the later events")
    assert sorted(store.keys(late)) == sorted(expected)
    assert sorted(store.keys(live)) == sorted(store.keys(since)) == sorted(only_after)
    with TestClient(create_app(runtime.endpoints)) as api:  # not an aggregated timeline: a 400 that says so
        got = api.get(f"/timelines/{late}/aggregate", params={"t": 0})
        assert got.status_code == 400 and "aggregat" in got.json()["error"]
    # nothing applied twice: every leaf of the backfilled timeline applied each event once
    applied = aio.run(_events_applied(temporal_server.address, store.get(late)))
    assert set(applied.values()) == {len(before) + len(after)}, applied


async def _events_applied(address, spec):
    client = await connect(address)
    counts = {}
    for leaf in spec.plan.leaves:
        counts[leaf.id] = 0
        for shard in range(spec.shards):
            counts[leaf.id] += (await node_status(client, spec, leaf.id, shard)).events_applied
    return counts
