"""Capacity benchmark: N live sessions (~48 events each) of the CIR timeline
through the embedded stack (real Temporal dev server, pulsar-lite, worker and
feeder processes), all still live (idle timeout 1h) when measured. Prints:

  * state bytes per key per node (status query of every node workflow);
  * the largest continue-as-new payload (the largest state carried, and the
    state each node would carry now);
  * events/s, from the first send until every session's result in the store
    equals the batch evaluator's;
  * whether every session equals batch (exit status 1 with what differs if not);
  * the capacity model: live keys a shard holds under a state limit.

    .venv/bin/python -m bench.capacity --sessions 10000 --shards 4
"""

from __future__ import annotations

import argparse
import sys
import time

from bench.streaming import CIR, NotConverged, Stack, records_for, run_case
from timeline.dsl.compiler import plan_for
from timeline.dsl.limits import DEFAULT_MAX_STATE_BYTES

ONE_MB = 1_000_000


def report(statuses: list, plan_labels: dict[str, str]) -> tuple[float, int]:
    """Prints state per key per node, as JSON and as Temporal stores it (compressed);
    returns (the most stored bytes per key of any node, the largest payload as stored)."""
    by_node: dict[str, list] = {}
    for s in statuses:
        by_node.setdefault(s.node_id, []).append(s)
    worst_per_key = 0.0
    largest = 0

    def per_key(rows, size) -> float:
        keys = sum(r.keys for r in rows)
        empty = min((size(r) for r in rows if r.keys == 0), default=0)
        return (sum(size(r) for r in rows) - empty * len(rows)) / keys if keys else 0.0

    print(f"{'node':<56} {'keys/shard':>10} {'JSON B':>9} {'B/key':>6} {'stored B':>9} {'B/key':>6} "
          f"{'carried max':>11}")
    for node_id, rows in by_node.items():
        keys = sum(r.keys for r in rows)
        json_per_key = per_key(rows, lambda r: r.state_bytes)
        stored_per_key = per_key(rows, lambda r: r.payload_bytes)
        carried = max(max(r.largest_carried_bytes, r.payload_bytes) for r in rows)
        worst_per_key = max(worst_per_key, stored_per_key)
        largest = max(largest, carried)
        print(f"{plan_labels[node_id][:56]:<56} {keys / len(rows):>10,.0f} {max(r.state_bytes for r in rows):>9,} "
              f"{json_per_key:>6,.0f} {max(r.payload_bytes for r in rows):>9,} {stored_per_key:>6,.0f} "
              f"{carried:>11,}")
    return worst_per_key, largest


def report_state(statuses: list, labels: dict[str, str], plan, sessions: int) -> None:
    per_key, largest = report(statuses, labels)
    late = sum(s.late_events for s in statuses if s.node_id == plan.leaves[0].id)
    print(f"largest continue-as-new payload as Temporal stores it (state carried or held now): {largest:,} bytes "
          f"({'under' if largest < ONE_MB else 'OVER'} 1 MB); late events: {late}")
    for limit in (DEFAULT_MAX_STATE_BYTES, 2 * ONE_MB):
        print(f"capacity model: at {per_key:,.0f} stored bytes per key in the largest node, a shard holds "
              f"{limit / per_key:,.0f} live keys under {limit:,} bytes; {sessions:,} live keys need "
              f"{-(-sessions * per_key // limit):,.0f} shards")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=10_000, help="live sessions (~48 events each)")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--allowed-lateness", default="30s", help="the registration's allowed lateness (the "
                    "generator's late events are at most 30s late)")
    ap.add_argument("--batch-size", type=int, default=2000, help="feeder batch size")
    ap.add_argument("--linger-ms", type=int, default=200)
    ap.add_argument("--rate", type=float, default=0, help="events/s to produce at (0: at once)")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--keep", action="store_true", help="keep the state folder")
    args = ap.parse_args(argv)

    st = Stack.in_temp_folder("timeline-capacity-", args.batch_size, args.linger_ms)
    state = st.state
    try:
        st.start_worker()
        now = int(time.time() * 1000) - 3_600_000
        records = records_for(args.sessions, 7, "c", now)
        print(f"stack up in {state}; {args.sessions:,} sessions, {len(records):,} events, shards={args.shards}, "
              f"allowed lateness {args.allowed_lateness}, feeder batch={args.batch_size}")
        t0 = time.monotonic()
        plan = plan_for(CIR)
        labels = {n.id: n.label for n in plan.nodes.values()}
        try:
            result = run_case(st, "capacity", "capacity", records, args.shards, args.batch_size, args.rate,
                              args.timeout, register=("--allowed-lateness", args.allowed_lateness))
        except NotConverged as exc:
            # The state figures still tell the capacity; the run fails all the same.
            print(f"{exc.final:,} of {args.sessions:,} sessions equal the batch evaluator")
            report_state(exc.statuses, labels, plan, args.sessions)
            print(exc.code, file=sys.stderr)
            return 1
        print(f"every one of {result['sessions']:,} sessions equals the batch evaluator: {result['events']:,} events "
              f"final in {result['seconds']:.1f}s = {result['events_per_s']:,.0f} events/s "
              f"(run {time.monotonic() - t0:.0f}s in all)")
        report_state(result["statuses"], labels, plan, args.sessions)
        return 0
    finally:
        st.close(keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
