"""Exactly once under crashes: produce while the worker and the feeder are killed (kill -9).

Not a timed test: a script that starts its own embedded stack (Temporal dev
server, pulsar-lite, a worker and a feeder process), registers the CIR
timeline, and for each round produces a new set of sessions in the background
while it kills -9 and restarts the worker, then the feeder, at random moments.
At the end it waits until the results stop changing (or equal the batch
evaluator's), and prints per leaf the events expected (distinct messages
produced) against the events applied and the duplicates skipped, summed over
shards, and whether every session's result equals batch.

    .venv/bin/python -m bench.exactly_once_stress --rounds 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgspec

from timeline.dsl.batch import root_timelines
from timeline.producers.video_sessions import generate_sessions
from timeline.runtime import stack
from timeline.runtime.control import connect, node_status
from timeline.runtime.registry import build_spec, register_spec
from timeline.store import open_store

FEEDER_OPTIONS = os.environ.get("STRESS_FEEDER_OPTIONS", "").split()
ROOT = Path(__file__).resolve().parent.parent
CIR = (ROOT / "examples" / "cir.tl").read_text()


class Component:
    """A `timeline` process in its own process group, killed with SIGKILL on demand."""

    def __init__(self, name: str, argv: list[str], logs: Path):
        self.name, self.argv, self.log = name, argv, logs / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "timeline.cli.main", *self.argv], cwd=ROOT,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()


def produce(url: str, topic: str, records: list[dict], rate: float) -> None:
    import pulsar

    client = pulsar.Client(url, logger=pulsar.FileLogger(pulsar.LoggerLevel.Error, os.devnull))
    producer = client.create_producer(topic, batching_enabled=True, block_if_queue_full=True)
    started = time.monotonic()
    for i, r in enumerate(records):
        producer.send_async(msgspec.json.encode(r), None)
        ahead = (i + 1) / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    producer.flush()
    producer.close()
    client.close()


async def leaf_counts(address: str, spec) -> dict[str, tuple[int, int]]:
    client = await connect(address)
    out = {}
    for leaf in spec.plan.leaves:
        applied = skipped = 0
        for shard in range(spec.shards):
            st = await node_status(client, spec, leaf.id, shard)
            applied, skipped = applied + st.events_applied, skipped + st.duplicates_skipped
        out[leaf.id] = (applied, skipped)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--sessions", type=int, default=25, help="new sessions per round (about 50 events each)")
    ap.add_argument("--rate", type=float, default=600, help="events/s produced during a round")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--wait", type=float, default=600, help="longest wait for the results at the end (s)")
    ap.add_argument("--keep", action="store_true", help="keep the stack's directory (logs)")
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    state = Path(tempfile.mkdtemp(prefix="timeline-stress-"))
    temporal = stack.start_temporal(state / "temporal")
    pulsar_server = stack.start_pulsar(state / "pulsar")
    store_url = f"sqlite:///{state / 'results.db'}"
    ep = ["--temporal", temporal.address, "--pulsar", pulsar_server.address, "--store", store_url]
    topic, name = "stress", "stress"
    store = open_store(store_url)
    spec, _ = build_spec(name, CIR, topic, "session_id", "ts", shards=args.shards)
    spec = asyncio.run(_register(temporal.address, store, spec))
    logs = state / "logs"
    worker = Component("worker", ["worker", *ep], logs)
    feeder = Component("feeder", ["feeder", "--topic", topic, "--batch-size", "500", "--linger-ms", "100", *FEEDER_OPTIONS, *ep], logs)
    worker.start()
    feeder.start()
    print(f"stack up in {state}; {args.rounds} rounds of {args.sessions} sessions, kill -9 of worker and feeder "
          "in each", flush=True)
    records: list[dict] = []
    try:
        for rnd_i in range(args.rounds):
            batch = [{**r, "session_id": f"r{rnd_i}-{r['session_id']}"}
                     for r in generate_sessions(args.sessions, seed=args.seed * 1000 + rnd_i,
                                                out_of_order=0.2).to_records()]
            records += batch
            producer = threading.Thread(target=produce, args=(pulsar_server.address, topic, batch, args.rate))
            producer.start()
            span = len(batch) / args.rate
            time.sleep(rnd.uniform(0.1, 0.5) * span)
            worker.kill9()
            worker.start()
            time.sleep(rnd.uniform(0.1, 0.5) * span)
            feeder.kill9()
            feeder.start()
            producer.join()
            print(f"round {rnd_i + 1}: {len(batch)} events produced, worker and feeder killed -9 and restarted",
                  flush=True)
        expected = root_timelines(CIR, records, "session_id", "ts")
        deadline = time.monotonic() + args.wait
        equal = 0
        while time.monotonic() < deadline:
            equal = sum(1 for k, tl in expected.items() if (r := store.result(name, k)) and r.timeline == tl)
            if equal == len(expected):
                break
            time.sleep(2)
        counts = asyncio.run(leaf_counts(temporal.address, spec))
        print(f"expected per leaf: {len(records)} events (distinct messages produced)")
        for leaf, (applied, skipped) in counts.items():
            verdict = "OK" if applied == len(records) else "WRONG"
            print(f"  {leaf:40s} applied {applied:6d}  duplicates skipped {skipped:6d}  {verdict}")
        print(f"sessions equal to batch: {equal}/{len(expected)}")
        ok = equal == len(expected) and all(a == len(records) for a, _ in counts.values())
        print("exactly once: " + ("yes" if ok else "NO"))
        return 0 if ok else 1
    finally:
        feeder.stop()
        worker.stop()
        store.close()
        pulsar_server.stop()
        temporal.stop()
        if not args.keep:
            shutil.rmtree(state, ignore_errors=True)


async def _register(address: str, store, spec):
    return (await register_spec(await connect(address), store, spec))[2]


if __name__ == "__main__":
    sys.exit(main())
