"""Batch benchmark: the CIR metric of SPEC.md over N generated video events.

In one run, on the same events:
  1. DuckDB: the hand-written window-function SQL (bench/cir_sql.py) over a
     table held in memory;
  2. Timeline, in memory: the batch evaluator over the same columns
     (session codes, times, state codes in arrival order): sort, evaluate
     the plan, read each session's value at its last event;
  3. Timeline, end to end: `timeline eval`'s engine on a JSON-lines file
     (read, decode, evaluate, encode the JSON answer);
  4. DuckDB, end to end on the same file: `read_json` feeding the same SQL.
It checks that every session's CIR agrees between 1 and 2 (and 3, 4), then
prints events/s for each and the ratios. Each timing is the best of
--repeat runs, so a noisy neighbour slows a run, not the result; 3 and 4
run in alternation, so both see the same neighbours.

    .venv/bin/python -m bench.batch_cir --events 1000000
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import msgspec
import numpy as np

from bench.cir_sql import cir_duckdb, cir_duckdb_jsonl, load_events
from timeline.dsl.batch import evaluate
from timeline.dsl.columnar import _thread_count, answer_json, key_range_frame, key_ranges, read_events_file
from timeline.dsl.compiler import compile_expression
from timeline.dsl.events import CodedColumn, EventFrame
from timeline.dsl.spans import values_at
from timeline.producers.video_sessions import STATES, VideoEvents, generate_events

CIR = Path(__file__).resolve().parent.parent / "examples" / "cir.tl"


def best_of(repeat: int, fn):
    """(best seconds, last result) over `repeat` runs."""
    best, result = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def timeline_in_memory(plan, events: VideoEvents, threads: int | None = None) -> dict[int, int]:
    """Per-session CIR at the session's last event, from columns in arrival order: sorted once,
    then evaluated in key ranges on every core (as `timeline eval` does; DuckDB uses them too)."""
    n_sessions = int(events.session.max()) + 1
    state = CodedColumn(events.state.astype(np.int32), list(STATES))
    frame = EventFrame.build(events.session, events.ts, {("playerStateChange",): state}, n_keys=n_sessions)
    last = np.full(n_sessions, np.iinfo(np.int64).min, dtype=np.int64)
    ends = np.flatnonzero(np.r_[frame.key[1:] != frame.key[:-1], True])
    last[frame.key[ends]] = frame.time[ends]

    def one(bounds: tuple[int, int, int, int]) -> list:
        k0, k1, e0, e1 = bounds
        part = key_range_frame(frame, k0, k1, e0, e1)
        root = evaluate(plan, part, {plan.root})[plan.root]
        return values_at(root, np.arange(k1 - k0), last[k0:k1], part.frame)

    ranges = key_ranges(frame.key, n_sessions, _thread_count(threads, len(frame.key)))
    with ThreadPoolExecutor(len(ranges)) as pool:
        values = [v for part in pool.map(one, ranges) for v in part]
    return dict(enumerate(values))


def timeline_end_to_end(plan, path: Path) -> tuple[int, bytes]:
    """What `timeline eval EXPR --events path --key session_id --time ts` does, minus printing."""
    decoded = read_events_file(str(path), ("session_id",), ("ts",), plan.columns())
    return len(decoded.events), answer_json(plan, decoded, None, None, None)


def alternating_best_of(repeat: int, *fns):
    """(best wall seconds, best CPU seconds of all threads, last result) of each fn, running them
    in turn `repeat` times. CPU seconds say what a run costs however busy the machine is."""
    best = [float("inf")] * len(fns)
    best_cpu = [float("inf")] * len(fns)
    results: list = [None] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            gc.collect()
            start, start_cpu = time.perf_counter(), time.process_time()
            results[i] = fn()
            best[i] = min(best[i], time.perf_counter() - start)
            best_cpu[i] = min(best_cpu[i], time.process_time() - start_cpu)
    return list(zip(best, best_cpu, results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="number of events (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out-of-order", type=float, default=0.1, help="share of late events (default 0.1)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing; the best counts (default 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="DuckDB threads")
    args = parser.parse_args(argv)

    plan = compile_expression(CIR.read_text())
    events = generate_events(args.events, seed=args.seed, out_of_order=args.out_of_order)
    n = len(events)
    n_sessions = int(events.session.max()) + 1
    print(f"{n:,} events, {n_sessions:,} sessions, {args.out_of_order:.0%} out of order; "
          f"best of {args.repeat}; {os.cpu_count()} cores, DuckDB threads={args.threads}")

    con = duckdb.connect()
    con.execute(f"SET threads TO {args.threads}")
    load_events(con, events)
    t_sql, sql = best_of(args.repeat, lambda: cir_duckdb(con))
    t_mem, mine = best_of(args.repeat, lambda: timeline_in_memory(plan, events))

    disagree = [s for s in range(n_sessions) if sql.get(s, 0) != (mine.get(s) or 0)]
    if disagree:
        s = disagree[0]
        print(f"DISAGREE on {len(disagree)} sessions, e.g. session {s}: duckdb {sql.get(s)} timeline {mine.get(s)}")
        return 1

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        events.write_jsonl(path)
        size = path.stat().st_size
        (t_e2e, cpu_e2e, (decoded_n, answer)), (t_sql_e2e, cpu_sql_e2e, sql_e2e) = alternating_best_of(
            args.repeat, lambda: timeline_end_to_end(plan, path), lambda: cir_duckdb_jsonl(con, str(path)))
    timelines = msgspec.json.decode(answer)
    last = np.full(n_sessions, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, events.session, events.ts)
    e2e_disagree = [s for s in range(n_sessions)
                    if _final_value(timelines[events.session_id(s)], int(last[s])) != (mine[s] or 0)]
    if decoded_n != n or e2e_disagree:
        print(f"DISAGREE end to end: decoded {decoded_n} of {n}; {len(e2e_disagree)} sessions differ")
        return 1
    sql_e2e_disagree = [s for s in range(n_sessions) if sql_e2e.get(events.session_id(s), 0) != (mine[s] or 0)]
    if sql_e2e_disagree:
        print(f"DISAGREE: duckdb from the file differs on {len(sql_e2e_disagree)} sessions")
        return 1

    total_cir = sum(v or 0 for v in mine.values())
    print(f"all {n_sessions:,} sessions agree (total CIR {total_cir / 1000:,.1f} s)")
    print(f"{'duckdb SQL (in memory)':34s} {t_sql:7.3f} s {n / t_sql / 1e6:6.2f} M events/s")
    print(f"{'timeline batch (in memory)':34s} {t_mem:7.3f} s {n / t_mem / 1e6:6.2f} M events/s")
    print(f"{'timeline eval (JSON lines file)':34s} {t_e2e:7.3f} s {n / t_e2e / 1e6:6.2f} M events/s "
          f"({size / 1e6:.0f} MB; {cpu_e2e:.3f} CPU s)")
    print(f"{'duckdb read_json + SQL (same file)':34s} {t_sql_e2e:7.3f} s {n / t_sql_e2e / 1e6:6.2f} M events/s "
          f"({cpu_sql_e2e:.3f} CPU s)")
    print(f"ratio timeline batch / duckdb: {t_sql / t_mem:.2f}x")
    print(f"ratio timeline eval / duckdb, end to end from the same file: {t_sql_e2e / t_e2e:.2f}x "
          f"(CPU seconds: {cpu_sql_e2e / cpu_e2e:.2f}x)")
    return 0


def _final_value(spans: list[dict], t: int) -> int:
    for span in reversed(spans):
        if span["start"] <= t:
            return int(span["value"] + span["slope"] * (t - span["start"])) if span["value"] is not None else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
