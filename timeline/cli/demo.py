"""`timeline demo`: the README's main job, end to end on the embedded stack.

Starts the stack (unless it is running), registers the CIR timeline of
SPEC.md, produces N realistic video sessions to Pulsar, waits until every
session's streamed result is in the results store, prints a short table, and
checks every session against the batch evaluator on the same events.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

from timeline.cli.up import down, running_processes, up
from timeline.runtime.settings import endpoints, home

ROOT = Path(__file__).resolve().parents[2]
CIR_FILE = ROOT / "examples" / "cir.tl"
TOPIC = "video-events"


def demo_command(args: argparse.Namespace) -> int:
    from timeline.dsl.compiler import compile_expression
    from timeline.models import TimelineSpec
    from timeline.producers.video_sessions import generate_sessions
    from timeline.store import open_store

    state = home(args)
    started_here = False
    if not running_processes(state):
        print(f"== starting the embedded stack in {state}/")
        up(state, api_port=None if args.no_api else args.api_port, ui_port=None, topics=(TOPIC,))
        started_here = True
    try:
        ep = endpoints(argparse.Namespace(home=str(state)))
        expression = CIR_FILE.read_text()
        spec = TimelineSpec(name="cir", expression=expression, source_topic=TOPIC, key_path="session_id",
                            time_path="ts", shards=args.shards, idle_timeout_s=3600)
        print("== registering the CIR timeline of SPEC.md")
        asyncio.run(_register(ep, spec))
        print(f"   {len(compile_expression(expression).nodes)} nodes x {spec.shards} shards "
              f"= {len(compile_expression(expression).nodes) * spec.shards} workflows")

        run = uuid.uuid4().hex[:5]  # session ids unique to this run: a rerun adds sessions, never merges them
        events = generate_sessions(args.sessions, seed=args.seed, out_of_order=0.1,
                                   start_ms=int(time.time() * 1000) - 3_600_000)
        records = events.to_records()
        for r in records:
            r["session_id"] = f"{run}-{r['session_id']}"
        print(f"== producing {len(records):,} events of {args.sessions:,} sessions to {TOPIC} "
              f"(10% out of order)")
        t0 = time.monotonic()
        _produce(ep.pulsar, TOPIC, records)
        produced = time.monotonic() - t0

        expected = _batch(expression, records)
        store = open_store(ep.store)
        print("== waiting for the streamed results")
        deadline = time.monotonic() + args.timeout
        keys = list(expected)
        agree: set[str] = set()
        while time.monotonic() < deadline:
            for k, got in store.results("cir", [k for k in keys if k not in agree]).items():
                if got.timeline == expected[k]:
                    agree.add(k)
            print(f"\r   {len(agree):,}/{len(keys):,} sessions final and equal to batch", end="", flush=True)
            if len(agree) == len(keys):
                break
            time.sleep(0.25)
        elapsed = time.monotonic() - t0
        print()
        _table(records, store, keys)
        print(f"\nproduced in {produced:.1f}s; all results in {elapsed:.1f}s "
              f"({len(records) / elapsed:,.0f} events/s end to end)")
        if len(agree) != len(keys):
            missing = [k for k in keys if k not in agree]
            print(f"DISAGREE: {len(missing)} sessions differ from the batch evaluator (or are late), "
                  f"e.g. {missing[:3]}; logs in {state}/logs/", file=sys.stderr)
            return 1
        print(f"all {len(keys):,} sessions agree with the batch evaluator on the same events")
        return 0
    finally:
        if started_here and not args.keep_running:
            print("== stopping the embedded stack (state kept; `timeline demo --keep-running` leaves it up)")
            down(state, quiet=True)


async def _register(ep, spec) -> None:
    from timeline.runtime.control import connect_temporal, start_tree
    from timeline.store import open_store

    client = await connect_temporal(ep)
    store = open_store(ep.store)
    if spec.name in {s.name for s in store.list()} and store.get(spec.name) != spec:
        from timeline.runtime.control import stop_tree

        await stop_tree(client, store.get(spec.name))
        store.remove(spec.name)
    store.register(spec)
    await start_tree(client, spec)
    store.close()


def _produce(url: str, topic: str, records: list[dict]) -> None:
    from timeline.producers.pulsar_producer import open_client, produce_sessions

    client = open_client(url)
    try:
        produce_sessions(client, topic, records)
    finally:
        client.close()


def _batch(expression: str, records: list[dict]):
    from timeline.dsl.batch import root_timelines

    return root_timelines(expression, records, "session_id", "ts")


def _table(records: list[dict], store, keys: list[str]) -> None:
    last_time: dict[str, int] = {}
    last_cdn: dict[str, str] = {}
    for r in records:
        k = r["session_id"]
        if r["ts"] >= last_time.get(k, r["ts"]):
            last_time[k] = r["ts"]
    for r in sorted(records, key=lambda r: r["ts"]):  # the latest cdn by event time
        if "cdn" in r:
            last_cdn[r["session_id"]] = r["cdn"]
    cir: dict[str, int] = {}
    for k in keys:
        got = store.result("cir", k)
        cir[k] = int(got.timeline.value_at(last_time[k]) or 0) if got else 0
    total = sum(cir.values())
    with_cir = sum(1 for v in cir.values() if v > 0)
    print(f"\nsessions {len(keys):,}, with connection-induced rebuffering {with_cir:,}; "
          f"total {total / 1000:,.1f} s, mean {total / max(1, len(keys)) / 1000:.2f} s per session")
    print("top sessions by rebuffering (s):")
    for k, v in sorted(cir.items(), key=lambda kv: -kv[1])[:5]:
        print(f"   {k:16s} {v / 1000:8.1f}")
    print(f"{'CDN':12s} {'sessions':>9s} {'rebuffering s':>14s} {'mean s':>8s}")
    groups: dict[str, list[int]] = {}
    for k, v in cir.items():
        groups.setdefault(last_cdn.get(k, "(none)"), []).append(v)
    for cdn, vals in sorted(groups.items()):
        print(f"{cdn:12s} {len(vals):9,d} {sum(vals) / 1000:14,.1f} {sum(vals) / len(vals) / 1000:8.2f}")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="the main job: stream 1,000 sessions through the CIR timeline and check them",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--home", metavar="DIR", help="state folder (default .timeline)")
    d.add_argument("--sessions", type=int, default=1000)
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--shards", type=int, default=2, help="shards of the timeline (default 2: 1,000 sessions fit "
                   "one shard's state; more shards cost more signals per event)")
    d.add_argument("--timeout", type=float, default=600, help="seconds to wait for all results")
    d.add_argument("--api-port", type=int, default=8080)
    d.add_argument("--no-api", action="store_true")
    d.add_argument("--keep-running", action="store_true", help="leave the stack up afterwards")
    d.set_defaults(handler=demo_command)
