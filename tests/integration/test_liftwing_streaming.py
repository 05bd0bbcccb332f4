"""A shipped LiftWing timeline streamed from its two streams (edits, predictions),
events from the lifecycle simulation: the feeder validates them against the real
schemas, dead-letters an invalid one with the validator's reason, drops canaries,
and the results equal the batch evaluator's on the valid events."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import uuid
from pathlib import Path

import msgspec
import pulsar
from runtime_helpers import batch_timelines, produce, spawn, wait_equal

from timeline.catalog import ARTICLE_COUNTRY, CATALOG, PAGE_CHANGE
from timeline.producers.liftwing import simulate_lifecycle
from timeline.store import open_store

ROOT = Path(__file__).resolve().parents[2]


def test_prediction_wait_streams_equal_batch(temporal_server, pulsar_server, tmp_path, wait_for):
    prefix = f"t{uuid.uuid4().hex[:6]}."
    store_url = f"sqlite:///{tmp_path / 'results.db'}"
    ep = ["--temporal", temporal_server.address, "--pulsar", pulsar_server.address, "--store", store_url]
    definition = CATALOG["prediction-wait"]
    name = f"prediction-wait-{prefix[1:-1]}"
    procs = [spawn("worker", ["worker", *ep], tmp_path / "logs")]
    client = pulsar.Client(pulsar_server.address, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        reg = subprocess.run([sys.executable, "-m", "timeline.cli.main", "register", name, "--builtin", "prediction-wait",
                              "--topic-prefix", prefix, "--shards", "2", *ep], capture_output=True, text=True,
                             cwd=ROOT, timeout=60)
        assert reg.returncode == 0, reg.stderr
        assert f"{prefix}{PAGE_CHANGE}" in reg.stdout and "schema mediawiki/page/change" in reg.stdout
        dlq = client.subscribe(f"{prefix}{PAGE_CHANGE}-dead-letter", "test",
                               initial_position=pulsar.InitialPosition.Earliest)
        for stream in (PAGE_CHANGE, ARTICLE_COUNTRY):
            procs.append(spawn(f"feeder-{stream}", ["feeder", "--topic", f"{prefix}{stream}", *ep],
                               tmp_path / "logs"))

        events = [e for e in simulate_lifecycle(30, seed=3) if e.stream in (PAGE_CHANGE, ARTICLE_COUNTRY)]
        assert events and all(e.bug is None for e in events)  # what EventGate accepted
        edit = next(e.event for e in events if e.stream == PAGE_CHANGE)
        invalid = copy.deepcopy(edit)
        del invalid["page_change_kind"]
        canary = copy.deepcopy(edit)
        canary["meta"]["domain"] = "canary"
        canary["wiki_id"] = "canarywiki"
        for stream in (PAGE_CHANGE, ARTICLE_COUNTRY):
            payloads = [msgspec.json.encode(e.event) for e in events if e.stream == stream]
            if stream == PAGE_CHANGE:
                payloads += [msgspec.json.encode(invalid), msgspec.json.encode(canary)]
            produce(pulsar_server.address, f"{prefix}{stream}", payloads)

        msg = dlq.receive(timeout_millis=60_000)
        assert json.loads(msg.data())["meta"]["id"] == invalid["meta"]["id"]
        assert msg.properties()["reason"].startswith("schema:") and "page_change_kind" in msg.properties()["reason"]

        normalised = [{**e.event, "k": e.key} for e in events]
        expected = batch_timelines(definition.expression, normalised, "k", "meta.dt")
        store = open_store(store_url)

        wait_equal(wait_for, store, name, expected, procs, 120, "prediction-wait results equal to batch")
        assert not any(k.startswith("canarywiki:") for k in store.keys(name))  # the canary changed nothing
    finally:
        client.close()
        for p in procs:
            p.stop()
