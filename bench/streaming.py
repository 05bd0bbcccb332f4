"""Streaming benchmark on the embedded stack (real Temporal dev server, pulsar-lite,
worker and feeder processes), the CIR timeline of SPEC.md.

Measures, in one run:
  * sustained throughput: N events produced at once; events/s from the first
    send until every session's result in the store equals the batch
    evaluator's on the same events (final, queryable);
  * latency: events produced at a fixed rate; for each session, the time from
    sending its last event until its final result is queryable (p50, p99);
  * Temporal cost: history events of the timeline's workflows per 1,000 events
    (signals, workflow tasks, activities, timers: what the server stores);
  * the naive baseline: the same pipeline with one event per signal
    (feeder --batch-size 1), on fewer events; the ratio of events/s;
  * the machine's ceiling: the same events, as batched signals of the size the
    feeder sends, to one workflow that does nothing, on the same dev server
    (an in-process worker); the throughput above as a fraction of it.

    .venv/bin/python -m bench.streaming --sessions 2000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import msgspec
from temporalio import workflow

from timeline.dsl.batch import root_timelines
from timeline.models import EventBatchSignal
from timeline.producers.video_sessions import generate_sessions
from timeline.runtime import stack

ROOT = Path(__file__).resolve().parent.parent
CIR = (ROOT / "examples" / "cir.tl").read_text()


class Stack:
    """The embedded stack of one benchmark run, in a folder of its own."""

    @classmethod
    def in_temp_folder(cls, prefix: str, batch_size: int, linger_ms: int) -> "Stack":
        return cls(Path(tempfile.mkdtemp(prefix=prefix)), batch_size, linger_ms)

    def __init__(self, state: Path, batch_size: int, linger_ms: int):
        self.state = state
        self.temporal = stack.start_temporal(state / "temporal")
        self.pulsar = stack.start_pulsar(state / "pulsar")
        self.store_url = f"sqlite:///{state / 'results.db'}"
        self.ep = ["--temporal", self.temporal.address, "--pulsar", self.pulsar.address, "--store", self.store_url]
        self.batch_size, self.linger_ms = batch_size, linger_ms
        self.procs: list[stack.ManagedProcess] = []
        self.topics: list[str] = []

    def spawn(self, name: str, argv: list[str]) -> stack.ManagedProcess:
        proc = stack.launch_component(name, [*argv, *self.ep], self.state / "logs")
        self.procs.append(proc)
        return proc

    def start_worker(self, n: int = 1):
        for i in range(n):
            self.spawn("worker" if n == 1 else f"worker-{i}", ["worker"])

    def start_feeder(self, topic: str, batch_size: int):
        self.spawn(f"feeder-{topic}", ["feeder", "--topic", topic, "--batch-size", str(batch_size),
                                       "--linger-ms", str(self.linger_ms)])

    def register(self, name: str, topic: str, shards: int, *extra: str):
        import subprocess

        out = subprocess.run(stack.timeline_command("register", name, CIR, "--topic", topic, "--key", "session_id",
                                                    "--time", "ts", "--shards", str(shards), "--idle-timeout", "1h", *extra,
                                                    "--temporal", self.temporal.address, "--store", self.store_url),
                             capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            raise SystemExit(out.stderr)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system, all threads) used so far, per component role; the
        bench itself (producer, store watcher) is "bench"."""
        import psutil

        roles = {"temporal": [self.temporal.pid], "pulsar": [self.pulsar.pid]}
        for p in self.procs:
            roles.setdefault(p.name.split("-")[0], []).append(p.pid)
        roles["bench"] = [os.getpid()]
        out: dict[str, float] = {}
        for role, pids in roles.items():
            for pid in pids:
                try:
                    t = psutil.Process(pid).cpu_times()
                except psutil.Error:
                    continue
                out[role] = out.get(role, 0.0) + t.user + t.system + t.children_user + t.children_system
        return out

    def close(self, keep: bool = False):
        """Stop every process; remove the state folder unless `keep` (to look at the logs)."""
        for p in self.procs:
            p.stop(timeout=20)
        self.pulsar.stop()
        self.temporal.stop()
        if not keep:
            shutil.rmtree(self.state, ignore_errors=True)


def records_for(sessions: int, seed: int, prefix: str, start_ms: int) -> list[dict]:
    recs = generate_sessions(sessions, seed=seed, out_of_order=0.1, start_ms=start_ms).to_records()
    for r in recs:
        r["session_id"] = f"{prefix}{r['session_id']}"
    return recs


def send(pulsar_url: str, topic: str, records: list[dict], rate: float = 0.0) -> dict[str, float]:
    """Produce records (at `rate` events/s, 0 = at once); returns each session's last send time."""
    from timeline.runtime.pulsar import create_producer, open_client

    client = open_client(pulsar_url)
    producer = create_producer(client, topic, batching_max_publish_delay_ms=5)
    enc = msgspec.json.Encoder()
    last_sent: dict[str, float] = {}
    start = time.monotonic()
    for i, r in enumerate(records):
        if rate:
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        producer.send_async(enc.encode(r), None, partition_key=r["session_id"])
        last_sent[r["session_id"]] = time.monotonic()
    producer.flush()
    producer.close()
    client.close()
    return last_sent


ROW_TIME_MARGIN_S = 30.0


def wait_final(store_url: str, timeline: str, expected: dict, timeout: float,
               stalled_after: float = 120.0) -> dict[str, float]:
    """Poll the store until every key's timeline equals the expected one; returns when each became final.
    Gives up at `timeout`, or when nothing became final for `stalled_after` seconds once sending is over
    (the results stopped changing: waiting longer shows nothing new)."""
    from timeline.store import open_store

    store = open_store(store_url)
    final: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    progress = time.monotonic()
    seen_until: float | None = None

    def mark_final(rows: dict, at: float) -> None:
        for k, got in rows.items():
            if k not in final and got.timeline == expected.get(k):
                final[k] = at

    while len(final) < len(expected) and time.monotonic() < deadline:
        before = len(final)
        # One read of every result (not a query per key: the watcher must cost the
        # machine little, or it measures itself).
        now, wall = time.monotonic(), time.time()
        mark_final(store.results(timeline, updated_since=seen_until), now)
        # A row's time is when its batch began to be written; the batch commits later (seconds,
        # for a large batch on a busy machine): read again what was written a while before.
        seen_until = wall - ROW_TIME_MARGIN_S
        if len(final) > before:
            progress = time.monotonic()
        elif final and time.monotonic() - progress > stalled_after:
            break
        time.sleep(0.05 if len(expected) <= 500 else 0.25 if len(expected) < 5000 else 1.0)
    if len(final) < len(expected):
        # Before saying "not converged": one read of everything, whatever its row times.
        mark_final(store.results(timeline), time.monotonic())
    store.close()
    return final


class NotConverged(SystemExit):
    """The streaming results did not all equal the batch evaluator's: the run fails (exit status 1)."""

    def __init__(self, message: str, statuses: list | None = None, final: int = 0):
        super().__init__(message)
        self.statuses = statuses or []
        self.final = final


def explain_not_converged(store_url: str, timeline: str, expected: dict, final: dict, records: list[dict],
                          statuses: list | None = None) -> str:
    """What did not converge, and clues why: missing vs different sessions, the first difference of a few,
    and how many of them have two events at the same ms (where applying an event twice changes answers)."""
    from timeline.store import open_store

    store = open_store(store_url)
    missing = [k for k in expected if k not in final]
    absent = [k for k in missing if store.result(timeline, k) is None]
    lines = [f"NOT CONVERGED: {len(missing):,} of {len(expected):,} sessions of {timeline!r} never equalled the "
             f"batch evaluator ({len(absent):,} have no result at all)"]
    by_key: dict[str, list[int]] = {}
    for r in records:
        by_key.setdefault(r["session_id"], []).append(r["ts"])
    equal_ts = sum(1 for k in missing if len(set(by_key.get(k, []))) < len(by_key.get(k, [])))
    share = sum(1 for ts in by_key.values() if len(set(ts)) < len(ts)) / max(1, len(by_key))
    lines.append(f"  {equal_ts:,} of them have two events at the same ms ({share:.0%} of all sessions do)")
    for k in [k for k in missing if k not in absent][:3]:
        got = store.result(timeline, k).timeline  # type: ignore[union-attr]
        want = expected[k]
        t = next((s for s in sorted(set(got.starts) | set(want.starts)) if got.value_at(s) != want.value_at(s)),
                 None)
        lines.append(f"  {k}: first differs at t={t}: streaming {got.value_at(t) if t is not None else '?'}, "
                     f"batch {want.value_at(t) if t is not None else '?'} ({len(got.starts)} vs {len(want.starts)} "
                     "spans)")
    for s in statuses or []:
        if s.health != "ok":
            lines.append(f"  node {s.node_id} shard {s.shard}: {s.health}, {s.state_bytes:,} bytes of state "
                         f"({s.payload_bytes:,} as stored)")
    store.close()
    return "\n".join(lines)


async def node_statuses(address: str, timeline: str, store_url: str) -> list:
    """Every node workflow's status (state size, health, late events)."""
    from timeline.runtime.control import connect, node_status
    from timeline.store import open_store

    store = open_store(store_url)
    spec = store.get(timeline)
    store.close()
    client = await connect(address)

    async def status(node_id: str, shard: int, patience_s: float = 300.0):
        # A node whose workflow task just failed (and is retried) cannot answer a query
        # for a while: ask again rather than lose the run's report.
        deadline = time.monotonic() + patience_s
        while True:
            try:
                return await node_status(client, spec, node_id, shard)
            except Exception as exc:  # noqa: BLE001 - RPCError, query failures: all mean "not now"
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node {node_id} shard {shard} did not answer its status query within "
                                       f"{patience_s:.0f}s: {exc}") from exc
                await asyncio.sleep(2.0)

    return list(await asyncio.gather(*(status(n, shard) for n in spec.plan.nodes for shard in range(spec.shards))))


async def history_events(address: str, timeline: str) -> int:
    from timeline.runtime.control import connect

    client = await connect(address)
    total = 0
    async for wf in client.list_workflows(f"WorkflowId STARTS_WITH 'timeline/{timeline}/'"):
        handle = client.get_workflow_handle(wf.id, run_id=wf.run_id)
        async for _ in handle.fetch_history_events():
            total += 1
    return total


def run_case(st: Stack, name: str, topic: str, records: list[dict], shards: int, batch_size: int,
             rate: float, timeout: float, register: tuple[str, ...] = ()) -> dict:
    st.register(name, topic, shards, *register)
    st.start_feeder(topic, batch_size)
    expected = root_timelines(CIR, records, "session_id", "ts")
    # Watch the store while sending: a session that is final early must count early.
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        cpu_before = st.cpu_seconds()
        t0 = time.monotonic()
        watcher = pool.submit(wait_final, st.store_url, name, expected, timeout)
        last_sent = send(st.pulsar.address, topic, records, rate)
        final = watcher.result()
        cpu_after = st.cpu_seconds()
    statuses = asyncio.run(node_statuses(st.temporal.address, name, st.store_url))
    if len(final) < len(expected):
        # Fail loudly: a benchmark of results that are wrong measures nothing.
        raise NotConverged(explain_not_converged(st.store_url, name, expected, final, records, statuses)
                           + f"\n  logs: {st.state / 'logs'} (run with --keep to look at them)", statuses, len(final))
    elapsed = max(final.values()) - t0
    latencies = sorted(final[k] - last_sent[k] for k in final)
    hist = asyncio.run(history_events(st.temporal.address, name))
    return {"events": len(records), "sessions": len(expected), "final": len(final), "seconds": elapsed,
            "events_per_s": len(records) / elapsed,
            "p50": _pct(latencies, 50), "p99": _pct(latencies, 99),
            "history_per_1000": hist * 1000 / len(records), "statuses": statuses,
            "cpu": {role: cpu_after.get(role, 0.0) - cpu_before.get(role, 0.0) for role in cpu_after}}


def cpu_line(cpu: dict[str, float], seconds: float) -> str:
    """Where the CPU went during a run: seconds per component (all its threads), and the
    share of the machine's cores they used over the run's wall time."""
    cores = os.cpu_count() or 1
    parts = ", ".join(f"{role} {secs:.1f}" for role, secs in sorted(cpu.items(), key=lambda kv: -kv[1]))
    return (f"CPU seconds: {parts}; total {sum(cpu.values()):.1f} of {cores * seconds:.1f} "
            f"({cores} cores x {seconds:.1f} s wall)")


@workflow.defn(name="BenchSink", sandboxed=False)
class Sink:
    """The ceiling's workflow: counts the events it is signalled, does nothing else."""

    def __init__(self) -> None:
        self.count = 0

    @workflow.signal(name="events")
    def events(self, batch: EventBatchSignal) -> None:
        self.count += len(batch.events.keys)

    @workflow.query(name="count")
    def received(self) -> int:
        return self.count

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


def ceiling(address: str, records: list[dict], events_per_signal: int, concurrency: int = 8) -> dict:
    """Events/s of batched signals carrying these events to one workflow that does nothing:
    what this Temporal server and machine accept at best, measured like the runtime's
    signals (the same model, the pydantic data converter, `concurrency` in flight)."""
    from temporalio.worker import Worker

    from timeline.dsl.incremental import EventBatch
    from timeline.runtime.control import connect

    signals = []
    for lo in range(0, len(records), events_per_signal):
        part = records[lo:lo + events_per_signal]
        signals.append(EventBatchSignal(topic="ceiling", positions=[(0, lo + i, -1) for i in range(len(part))],
                                        events=EventBatch(keys=[r["session_id"] for r in part],
                                                          times=[r["ts"] for r in part],
                                                          columns={"playerStateChange": [r.get("playerStateChange")
                                                                                         for r in part]})))

    async def go() -> dict:
        client = await connect(address)
        queue = f"bench-ceiling-{time.monotonic_ns()}"
        async with Worker(client, task_queue=queue, workflows=[Sink]):
            handle = await client.start_workflow(Sink.run, id=queue, task_queue=queue)
            t0 = time.monotonic()
            pending = iter(signals)

            async def sender() -> None:
                for sig in pending:
                    await handle.signal(Sink.events, sig)

            await asyncio.gather(*(sender() for _ in range(concurrency)))
            while await handle.query(Sink.received) < len(records):
                await asyncio.sleep(0.05)
            elapsed = time.monotonic() - t0
            await handle.terminate()
        return {"events": len(records), "signals": len(signals), "seconds": elapsed,
                "events_per_s": len(records) / elapsed}

    return asyncio.run(go())


def _pct(values: list[float], p: int) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=2000, help="sessions for the throughput run (~48 events each)")
    ap.add_argument("--latency-rate", type=float, default=1000, help="events/s for the latency run")
    ap.add_argument("--latency-sessions", type=int, default=300)
    ap.add_argument("--naive-sessions", type=int, default=40, help="sessions for the one-signal-per-event baseline")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1, help="worker processes (they share the task queue)")
    ap.add_argument("--batch-size", type=int, default=2000, help="feeder batch size")
    ap.add_argument("--linger-ms", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--keep", action="store_true", help="keep the state folder")
    args = ap.parse_args(argv)

    st = Stack.in_temp_folder("timeline-bench-", args.batch_size, args.linger_ms)
    state = st.state
    try:
        st.start_worker(args.workers)
        now = int(time.time() * 1000) - 3_600_000
        print(f"stack up in {state}; shards={args.shards}, workers={args.workers}, feeder batch={args.batch_size}, "
              f"linger={args.linger_ms}ms")
        thr = run_case(st, "bench-throughput", "bench-throughput", records_for(args.sessions, 1, "t", now),
                       args.shards, args.batch_size, 0, args.timeout)
        print(f"throughput: {thr['events']:,} events ({thr['sessions']:,} sessions) final in {thr['seconds']:.1f}s "
              f"= {thr['events_per_s']:,.0f} events/s; {thr['history_per_1000']:.0f} history events per 1,000 events")
        print("  " + cpu_line(thr["cpu"], thr["seconds"]))
        lat = run_case(st, "bench-latency", "bench-latency", records_for(args.latency_sessions, 2, "l", now),
                       args.shards, args.batch_size, args.latency_rate, args.timeout)
        print(f"latency at {args.latency_rate:,.0f} events/s: session's last event -> final result "
              f"p50 {lat['p50']:.2f}s p99 {lat['p99']:.2f}s ({lat['final']}/{lat['sessions']} sessions)")
        naive = run_case(st, "bench-naive", "bench-naive", records_for(args.naive_sessions, 3, "n", now),
                         args.shards, 1, 0, args.timeout)
        print(f"naive baseline (one event per signal): {naive['events']:,} events in {naive['seconds']:.1f}s "
              f"= {naive['events_per_s']:,.0f} events/s; {naive['history_per_1000']:.0f} history events per "
              f"1,000 events")
        print(f"ratio batched / naive: {thr['events_per_s'] / naive['events_per_s']:.1f}x events/s, "
              f"{naive['history_per_1000'] / thr['history_per_1000']:.1f}x fewer history events per event")
        per_signal = max(1, args.batch_size // args.shards)  # a full feeder batch, split over the shards
        top = ceiling(st.temporal.address, records_for(args.sessions, 1, "c", now), per_signal)
        print(f"ceiling (batched signals of {per_signal} events to one workflow that does nothing, same server): "
              f"{top['events']:,} events in {top['signals']:,} signals in {top['seconds']:.1f}s "
              f"= {top['events_per_s']:,.0f} events/s")
        print(f"throughput as a fraction of the ceiling: {thr['events_per_s'] / top['events_per_s']:.2f} "
              f"(the runtime sends one signal per leaf per shard per batch, and each node applies it)")
        return 0
    except NotConverged as exc:
        print(exc.code, file=sys.stderr)
        return 1
    finally:
        st.close(keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
