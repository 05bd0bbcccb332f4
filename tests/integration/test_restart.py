"""Stop and restart the Temporal dev server (same SQLite file, same port) mid-run:
results still equal the batch evaluator's, and no event is applied twice."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import msgspec
from runtime_helpers import batch_timelines, produce, spawn, wait_equal

from timeline.dsl.compiler import compile_expression
from timeline.producers.video_sessions import generate_sessions
from timeline.runtime.control import connect, node_status
from timeline.runtime.stack import free_port, start_temporal
from timeline.store import open_store

ROOT = Path(__file__).resolve().parents[2]
CIR = (ROOT / "examples" / "cir.tl").read_text()


def test_temporal_restart_mid_run(pulsar_server, tmp_path, wait_for, aio):
    port = free_port()
    temporal_dir = tmp_path / "temporal"
    temporal = start_temporal(temporal_dir, port=port)
    topic, name = f"video-{uuid.uuid4().hex[:8]}", f"cir-{uuid.uuid4().hex[:6]}"
    store_url = f"sqlite:///{tmp_path / 'results.db'}"
    ep = ["--temporal", temporal.address, "--pulsar", pulsar_server.address, "--store", store_url]
    procs = []
    try:
        procs.append(spawn("worker", ["worker", *ep], tmp_path / "logs"))
        reg = subprocess.run([sys.executable, "-m", "timeline.cli.main", "register", name, CIR, "--topic", topic, "--key",
                              "session_id", "--time", "ts", "--shards", "2", "--temporal", temporal.address,
                              "--store", store_url], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert reg.returncode == 0, reg.stderr
        procs.append(spawn("feeder", ["feeder", "--topic", topic, "--batch-size", "200", *ep], tmp_path / "logs"))
        records = generate_sessions(150, seed=9, out_of_order=0.2).to_records()
        payloads = [msgspec.json.encode(r) for r in records]
        half = len(payloads) // 2
        produce(pulsar_server.address, topic, payloads[:half])
        store = open_store(store_url)
        wait_for(lambda: len(store.keys(name)) > 10, timeout=60, message="first results")

        temporal.stop()
        produce(pulsar_server.address, topic, payloads[half:])  # arrives while Temporal is down
        temporal = start_temporal(temporal_dir, port=port)

        expected = batch_timelines(CIR, records, "session_id", "ts")

        wait_equal(wait_for, store, name, expected, procs, what="results equal to batch after the restart")

        async def applied():
            client = await connect(temporal.address)
            spec = store.get(name)  # as registered: its generation is in the workflow ids
            plan = compile_expression(CIR)
            return {leaf.id: sum([(await node_status(client, spec, leaf.id, s)).events_applied for s in range(2)])
                    for leaf in plan.leaves}

        assert set(aio.run(applied()).values()) == {len(records)}
    finally:
        for p in procs:
            p.stop()
        temporal.stop()
