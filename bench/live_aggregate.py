"""Live aggregates and backfill on the embedded stack (real Temporal dev server, pulsar-lite,
worker and feeder processes).

In one run, on the same N sessions (produced at once):
  * live: the per-key timeline T = duration_where(latest_event_to_state(playerStateChange) == "buffer")
    and, registered next to it, T | aggregate(group_by(cdn), count, sum, avg, min, max); seconds from
    the first send until every key of T is final in the store, and until the aggregate's answer at
    the last event time equals `timeline eval`'s (checked by querying the combining workflow);
  * the aggregate query: mean ms of a query at one time, and over [first, last) at every change point;
  * backfill: T registered again with --from earliest after everything was consumed; seconds until
    every key is final, as events/s, next to the live events/s of T; then the aggregate registered
    again with --from earliest, until it equals eval (alone on its subscription: the aggregate's cost
    next to the plain timeline's).

    .venv/bin/python -m bench.live_aggregate --sessions 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time

import msgspec

from bench.streaming import ROOT, Stack, records_for, send, wait_final
from timeline.dsl.batch import root_timelines, run_eval
from timeline.dsl.compiler import compile_expression
from timeline.dsl.decode import decode_jsonl
from timeline.dsl.events import split_path
from timeline.models import AggregateQuery
from timeline.runtime.control import connect, query_aggregate
from timeline.store import open_store

BUFFERING = 'duration_where(latest_event_to_state(playerStateChange) == "buffer")'
AGGREGATE = f"{BUFFERING} | aggregate(group_by(cdn), count, sum, avg, min, max)"


def register(st: Stack, name: str, expression: str, topic: str, shards: int, *extra: str) -> None:
    out = subprocess.run([sys.executable, "-m", "timeline.cli.main", "register", name, expression, "--topic", topic,
                          "--key", "session_id", "--time", "ts", "--shards", str(shards), "--idle-timeout", "1h",
                          *extra, "--temporal", st.temporal.address, "--store", st.store_url],
                         capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(out.stderr)


def eval_groups(records: list[dict], t: int) -> dict:
    plan = compile_expression(AGGREGATE)
    data = b"\n".join(msgspec.json.encode(r) for r in records)
    decoded = decode_jsonl(data, split_path("session_id"), split_path("ts"), plan.columns())
    return json.loads(msgspec.json.encode(run_eval(plan, decoded, t, None, None)))


async def wait_aggregate(address: str, spec, t: int, expected: dict, timeout: float) -> float | None:
    client = await connect(address)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ans = await query_aggregate(client, spec, AggregateQuery(t=t))
            if ans.points[0].groups == expected:
                return time.monotonic()
        except Exception:  # noqa: BLE001 - not started yet
            pass
        await asyncio.sleep(1.0)  # each query after a change merges the shards again: poll gently
    return None


async def query_costs(address: str, spec, lo: int, hi: int, n: int = 20) -> tuple[float, float, int]:
    client = await connect(address)
    t0 = time.perf_counter()
    for i in range(n):
        await query_aggregate(client, spec, AggregateQuery(t=lo + (hi - lo) * i // n))
    one = (time.perf_counter() - t0) / n * 1000
    t0 = time.perf_counter()
    over = await query_aggregate(client, spec, AggregateQuery(frm=lo, to=hi))
    return one, (time.perf_counter() - t0) * 1000, len(over.points)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=500)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args(argv)
    st = Stack.in_temp_folder("timeline-bench-agg-", batch_size=500, linger_ms=200)
    try:
        topic = "bench-agg"
        records = records_for(args.sessions, seed=7, prefix="s", start_ms=1_700_000_000_000)
        last_t = max(r["ts"] for r in records)
        first_t = min(r["ts"] for r in records)
        expected = root_timelines(BUFFERING, records, "session_id", "ts")
        groups = eval_groups(records, last_t)
        st.start_worker()
        register(st, "per-key", BUFFERING, topic, args.shards)
        register(st, "groups", AGGREGATE, topic, args.shards)
        spec = open_store(st.store_url).get("groups")
        st.start_feeder(topic, 500)
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            t0 = time.monotonic()
            watcher = pool.submit(wait_final, st.store_url, "per-key", expected, args.timeout)
            send(st.pulsar.address, topic, records)
            agg_done = asyncio.run(wait_aggregate(st.temporal.address, spec, last_t, groups, args.timeout))
            final = watcher.result()
        keys_s = max(final.values()) - t0 if len(final) == len(expected) else float("nan")
        agg_s = agg_done - t0 if agg_done else float("nan")
        one_ms, over_ms, points = asyncio.run(query_costs(st.temporal.address, spec, first_t, last_t))

        t1 = time.monotonic()
        register(st, "backfilled", BUFFERING, topic, args.shards, "--from", "earliest")
        final_b = wait_final(st.store_url, "backfilled", expected, args.timeout)
        back_s = max(final_b.values()) - t1 if len(final_b) == len(expected) else float("nan")
        t2 = time.monotonic()
        register(st, "backfilled-groups", AGGREGATE, topic, args.shards, "--from", "earliest")
        spec_b = open_store(st.store_url).get("backfilled-groups")
        agg_b = asyncio.run(wait_aggregate(st.temporal.address, spec_b, last_t, groups, args.timeout))
        back_agg_s = agg_b - t2 if agg_b else float("nan")
        n = len(records)
        print(f"{n:,} events, {len(expected):,} sessions, {args.shards} shards; 2 timelines live on one feeder")
        print(f"live per-key timeline final in the store   {keys_s:7.1f} s  {n / keys_s:8,.0f} events/s")
        print(f"live aggregate equal to eval at last event {agg_s:7.1f} s  {n / agg_s:8,.0f} events/s "
              f"({len(groups)} groups)")
        print(f"aggregate query: at one t {one_ms:.1f} ms; over [first, last) {over_ms:.1f} ms ({points} change points)")
        print(f"backfill --from earliest, all keys final    {back_s:7.1f} s  {n / back_s:8,.0f} events/s "
              f"({len(final_b):,}/{len(expected):,} sessions)")
        print(f"backfill of the aggregate, equal to eval    {back_agg_s:7.1f} s  {n / back_agg_s:8,.0f} events/s")
        print(f"ratio backfill / live events/s: {keys_s / back_s:.2f}x; "
              f"backfill aggregate / backfill per-key time: {back_agg_s / back_s:.2f}x")
    finally:
        st.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
