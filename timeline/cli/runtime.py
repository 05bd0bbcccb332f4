"""The runtime commands: worker, feeder, register-workflow."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import time
import uuid
from typing import Any

import msgspec

from timeline.cli.evaluate import read_expression
from timeline.dsl.compiler import Plan
from timeline.dsl.errors import UsageError
from timeline.dsl.events import split_key_paths, split_path
from timeline.dsl.incremental import EventBatch
from timeline.dsl.limits import DEFAULT_ALLOWED_LATENESS_S, MAX_DELIVERIES
from timeline.dsl.results import key_timeline_spans
from timeline.models import TimelineSpec
from timeline.runtime.control import ServiceUnavailable, connect_temporal
from timeline.runtime.registry import (
    build_spec,
    duration_option_s,
    register_spec,
    remove_spec,
    start_option,
)
from timeline.runtime.settings import (
    WORKFLOW_TASK_SLOTS,
    Endpoints,
    add_endpoint_options,
    endpoints,
    whole_number_at_least,
)
from timeline.store import open_store


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def _operate(args: argparse.Namespace) -> None:
    """Logging (text or JSON) and the Prometheus endpoints of a long-running process (worker, feeder)."""
    from timeline.runtime.telemetry import (
        configure_logging,
        serve_metrics,
        temporal_runtime_with_metrics,
    )

    configure_logging(fmt=getattr(args, "log_format", None))
    if getattr(args, "metrics_port", None):
        serve_metrics(args.metrics_port, args.metrics_host)
    if getattr(args, "temporal_metrics_port", None):  # before the first Temporal client of the process
        temporal_runtime_with_metrics(f"{args.metrics_host}:{args.temporal_metrics_port}")


def add_operate_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("operating")
    g.add_argument("--log-format", choices=["text", "json"], default=None,
                   help="log lines as text or one JSON object each (default: TIMELINE_LOG_FORMAT, else text)")
    g.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Timeline's Prometheus metrics on PORT (/metrics); default: off")
    g.add_argument("--temporal-metrics-port", type=int, metavar="PORT",
                   help="serve the Temporal SDK's runtime metrics (workflow task latency, polls, ...) on PORT")
    g.add_argument("--metrics-host", default="127.0.0.1", metavar="ADDR",
                   help="address the metrics endpoints listen on (default 127.0.0.1)")


# --- worker -------------------------------------------------------------------------------

def worker_command(args: argparse.Namespace) -> int:
    from timeline.workflows.worker import run_worker

    _operate(args)
    ep = endpoints(args)

    async def main():
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await connect_temporal(ep)  # a clear error before the worker starts
        await run_worker(ep.temporal, ep.store, ep.pulsar, args.task_queue, stop, ep.namespace,
                         workflow_task_slots=args.max_concurrent_workflow_tasks)

    asyncio.run(main())
    return 0


# --- feeder -------------------------------------------------------------------------------

def feeder_command(args: argparse.Namespace) -> int:
    from timeline.feeder.backfill import BackfillSupervisor
    from timeline.feeder.feeder import Feeder, FeederSettings
    from timeline.runtime.pulsar import open_client

    _operate(args)
    ep = endpoints(args)
    settings = FeederSettings(topic=args.topic, subscription=args.subscription, batch_size=args.batch_size,
                              linger_ms=args.linger_ms, dead_letter_topic=args.dead_letter_topic,
                              receiver_queue=args.receiver_queue, max_deliveries=args.max_deliveries,
                              pipeline=args.pipeline, consumer_name=args.consumer_name,
                              subscription_type=args.subscription_type)

    async def main():
        stop = asyncio.Event()
        _stop_on_signals(stop)
        client = await _connect_until_stopped(ep, stop)
        if client is None:
            return
        pulsar = open_client(ep.pulsar, timeout_s=15)
        store = open_store(ep.store)
        feeder = Feeder(client, pulsar, store, settings, reconnect=lambda: open_client(ep.pulsar, timeout_s=15))
        # Timelines registered with --from read with subscriptions of their own, in this process too.
        backfills = BackfillSupervisor(client, pulsar, store, settings)
        try:
            await asyncio.gather(feeder.run(stop), backfills.run(stop))
        finally:
            feeder.pulsar.close()
            store.close()
        s = feeder.stats
        logging.getLogger("timeline.feeder").info(
            "stopped: %d messages, %d events routed, %d dead-lettered, %d signals", s.messages, s.events_routed,
            s.dead_lettered, s.signals)

    asyncio.run(main())
    return 0


async def _connect_until_stopped(ep: Endpoints, stop: asyncio.Event):
    """Temporal, retried with backoff while it is away (a feeder started before it waits);
    None if stopped meanwhile."""
    delay = 1.0
    while not stop.is_set():
        try:
            return await connect_temporal(ep, timeout_s=10)
        except ServiceUnavailable as exc:
            logging.getLogger("timeline.feeder").warning("%s; retrying in %.0fs", exc, delay)
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, 10.0)
    return None


# --- register-workflow -----------------------------------------------------------------------

def register_command(args: argparse.Namespace) -> int:
    ep = endpoints(args)
    args.shards_given = args.shards is not None
    if args.shards is None:
        args.shards = 4
    if args.list:
        return _list(ep, args.json)
    if args.remove:
        return asyncio.run(_remove(ep, args.remove))
    if args.builtin:
        return _register_builtin(ep, args)
    if not args.name or not args.expr:
        raise UsageError("register-workflow needs NAME and EXPR (or --builtin NAME, --list, or --remove NAME)")
    sources = [tuple(s) for s in (args.source or [])]
    if args.topic or args.key or args.time or not sources:
        for option in ("topic", "key", "time"):
            if not getattr(args, option):
                raise UsageError(f"register-workflow needs --{option} (or --source TOPIC KEY TIME, repeatable)")
        sources.insert(0, (args.topic, args.key, args.time, args.schema))
    spec, plan = build_spec(args.name, read_expression(args.expr), sources=sources, shards=args.shards,
                            idle_timeout_s=duration_option_s(args.idle_timeout, "--idle-timeout"),
                            start_from=start_option(args.start_from),
                            allowed_lateness_s=duration_option_s(args.allowed_lateness, "--allowed-lateness"))
    if args.dry_run:
        return asyncio.run(_dry_run(ep, spec, plan, args))
    return asyncio.run(_register(ep, spec, plan, args.continue_as_new_after))


def _register_builtin(ep: Endpoints, args: argparse.Namespace) -> int:
    from timeline.catalog import CATALOG

    definition = CATALOG.get(args.builtin)
    if definition is None:
        raise UsageError(f"no shipped timeline named {args.builtin!r}; `timeline catalog` lists: "
                         f"{', '.join(CATALOG)}")
    sources = [(f"{args.topic_prefix or ''}{topic}", key, time_, schema)
               for topic, key, time_, schema in definition.sources]
    spec, plan = build_spec(args.name or definition.name, definition.expression, sources=sources,
                            shards=args.shards if args.shards_given else definition.shards,
                            idle_timeout_s=definition.idle_timeout_s, start_from=start_option(args.start_from),
                            allowed_lateness_s=definition.allowed_lateness_s)
    if args.dry_run:
        return asyncio.run(_dry_run(ep, spec, plan, args))
    return asyncio.run(_register(ep, spec, plan, args.continue_as_new_after))


def catalog_command(args: argparse.Namespace) -> int:
    from timeline.catalog import CATALOG

    for d in CATALOG.values():
        print(f"{d.name}: {d.title}\n    {d.answers}\n    expression: {d.expression}")
        for topic, key, time_, schema in d.sources:
            print(f"    source: {topic} (key {key}, time {time_}, schema {schema})")
        print()
    print("install one with: register-workflow --builtin NAME")
    return 0


async def _register(ep: Endpoints, spec: TimelineSpec, plan: Plan, continue_as_new_after: int | None = None) -> int:
    client = await connect_temporal(ep)
    store = open_store(ep.store)
    created, tree, spec = await register_spec(client, store, spec, continue_as_new_after)
    store.close()
    verb = "registered" if created else "already registered (unchanged); workflows checked"
    print(f"{verb}: timeline {spec.name!r} from {spec.describe_sources()}, {spec.shards} shards, "
          f"idle timeout {spec.idle_timeout_s:g}s")
    print(render_workflow_tree(spec, plan, len(tree)))
    return 0


def render_workflow_tree(spec: TimelineSpec, plan: Plan, total: int | None = None) -> str:
    from timeline.models import node_workflow_id

    n = len(plan.nodes)
    lines = [f"workflow tree: {n} nodes x {spec.shards} shards = {total or n * spec.shards} workflows "
             f"(shard 0 shown; the others end in /1 ... /{spec.shards - 1})"]

    for node, depth, again in plan.walk():
        lines.append(f"  {'  ' * depth}{node_workflow_id(spec, node.id, 0)}  "
                     f"[{'leaf' if node.is_leaf else 'derived'}, {node.kind.value}]  {node.label}"
                     f"{'  (shared, above)' if again else ''}")
    return "\n".join(lines)


def _list(ep: Endpoints, as_json: bool) -> int:
    store = open_store(ep.store)
    specs = store.list()
    store.close()
    if as_json:
        print(json.dumps([s.model_dump() for s in specs], indent=2))
        return 0
    if not specs:
        print("no timelines registered")
        return 0
    for s in specs:
        expr = " ".join(s.expression.split())
        print(f"{s.name}: {s.describe_sources()}, {s.shards} shards, idle {s.idle_timeout_s:g}s\n    {expr}")
    return 0


async def _remove(ep: Endpoints, name: str) -> int:
    store = open_store(ep.store)
    spec = store.get(name)
    client = await connect_temporal(ep)
    stopped = await remove_spec(client, store, spec)
    store.close()
    print(f"removed timeline {name!r}: {stopped} workflows stopped, results deleted")
    return 0


def sample_event(spec: TimelineSpec, plan: Plan, when_ms: int) -> dict[str, Any]:
    """An event that exercises the expression: each column gets a constant it is compared with."""
    from timeline.dsl import ast as A

    event: dict[str, Any] = {}

    def put(path: tuple[str, ...], value: Any) -> None:
        cur = event
        for part in path[:-1]:
            cur = cur.setdefault(part, {})
        cur.setdefault(path[-1], value)

    def visit(node: A.Node) -> None:
        if isinstance(node, A.Compare) and isinstance(node.left, A.Column) and isinstance(node.right, A.Literal):
            put(node.left.path, node.right.value)
        for child in node.children():
            visit(child)

    for n in plan.nodes.values():
        visit(n.expr)
    for path in plan.columns():
        put(path, "sample")
    for i, path in enumerate(split_key_paths(spec.key_path)):
        put(path, f"dry-run-key{i}" if i else "dry-run-key")
    put(split_path(spec.time_path), when_ms)
    return event


def _scalar(value: Any) -> Any:
    """A field value as a leaf reads it: scalars as they are; missing, objects and arrays as None."""
    return value if isinstance(value, (str, int, float, bool)) else None


async def _dry_run(ep: Endpoints, spec: TimelineSpec, plan: Plan, args: argparse.Namespace) -> int:
    """Register a throw-away copy, send one event through the real tree, print the root's result, clean up."""
    from timeline.dsl.events import event_key, get_path, parse_time, split_key_paths
    from timeline.models import EventBatchSignal, shard_of
    from timeline.runtime.control import send_batch, start_tree, stop_tree

    client = await connect_temporal(ep)
    store = open_store(ep.store)
    temp = spec.model_copy(update={"name": f"{spec.name[:40]}-dry-run-{uuid.uuid4().hex[:6]}", "shards": 1})
    if args.sample_event:
        try:
            event = json.loads(args.sample_event)
        except ValueError as exc:
            raise UsageError(f"--sample-event is not JSON: {exc}") from None
    else:
        event = sample_event(spec, plan, int(time.time() * 1000))
    key = event_key(event, split_key_paths(spec.key_path))
    t = parse_time(get_path(event, split_path(spec.time_path)), spec.time_path)
    print(render_workflow_tree(spec, plan))
    print(f"dry run: sending {json.dumps(event)} through {temp.name} ...")
    store.register(temp)
    try:
        await start_tree(client, temp)
        columns = {".".join(p): [_scalar(get_path(event, p))] for p in plan.columns()}
        signal_ = EventBatchSignal(topic="dry-run", positions=[(0, 0, -1)],
                                   events=EventBatch(keys=[key], times=[t], columns=columns))
        await send_batch(client, temp, plan, shard_of(key, temp.shards), signal_)
        deadline = time.monotonic() + args.timeout
        result = None
        while time.monotonic() < deadline:
            result = store.result(temp.name, key)
            if result is not None:
                break
            await asyncio.sleep(0.2)
        if result is None:
            raise ServiceUnavailable(
                f"no result within {args.timeout:g}s: is a worker polling task queue 'timeline'? "
                "(start one with `timeline worker`, or the whole stack with `timeline up`)")
        spans = msgspec.to_builtins(key_timeline_spans(result.timeline))
        print(f"result for key {key!r}: {json.dumps(spans)}")
        print("dry run ok: the tree received the event and the root published its result")
        return 0
    finally:
        # A throw-away tree: a short grace (without a worker nothing would end on its own).
        await stop_tree(client, temp, grace_s=5)
        store.remove(temp.name)
        store.close()


def add_parsers(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("worker", help="run a Temporal worker for the node workflows and activities")
    add_endpoint_options(w)
    w.add_argument("--task-queue", default="timeline", help="task queue (default timeline)")
    w.add_argument("--max-concurrent-workflow-tasks", type=whole_number_at_least(2), default=WORKFLOW_TASK_SLOTS,
                   metavar="N",
                   help=f"workflow tasks run at once (at least 2, default {WORKFLOW_TASK_SLOTS}): they share one core "
                        "(Python's GIL), and one that does not yield within 2 s fails (deadlock detection), "
                        "so more at once only makes each slower; run more workers for more cores")
    add_operate_options(w)
    w.set_defaults(handler=worker_command)

    f = sub.add_parser("feeder", help="feed a source topic into every timeline registered on it "
                                      "(also: sample-event-feeder)")
    add_feeder_options(f)

    r = sub.add_parser("register", help="register a timeline (also: register-workflow)")
    add_register_options(r)
    c = sub.add_parser("catalog", help="list the shipped timelines (LiftWing lifecycle, ...)")
    c.set_defaults(handler=catalog_command)


def add_feeder_options(f: argparse.ArgumentParser) -> None:
    add_endpoint_options(f)
    f.add_argument("--topic", default="video-events", help="source topic (default video-events)")
    f.add_argument("--subscription", default="timeline-feeder", help="subscription name (default timeline-feeder)")
    f.add_argument("--batch-size", type=int, default=2000,
                   help="events per batch at most (default 2000; batches are smaller when the load is light)")
    f.add_argument("--linger-ms", type=int, default=200, help="longest wait to fill a batch (default 200)")
    f.add_argument("--dead-letter-topic", help="where bad messages go (default TOPIC-dead-letter)")
    f.add_argument("--subscription-type", choices=["exclusive", "failover"], default="failover",
                   help="several feeders on one topic: failover (default) = the broker picks the active one "
                        "(per partition on Apache Pulsar) and moves to another when it dies; exclusive = one "
                        "feeds, the others stand by and retry (on pulsar-lite a feeder restarted after kill -9 "
                        "could wait on the dead holder's subscription: see the README's distributed section)")
    f.add_argument("--consumer-name", metavar="NAME",
                   help="this feeder's name on the subscription (default: random; failover orders by it)")
    f.add_argument("--receiver-queue", type=int, default=1000, metavar="N",
                   help="messages the Pulsar client prefetches (default 1000)")
    f.add_argument("--pipeline", type=int, default=1, choices=(1, 2, 3, 4), metavar="N",
                   help="batches in flight at once (default 1)")
    f.add_argument("--max-deliveries", type=int, default=MAX_DELIVERIES, metavar="N",
                   help=f"dead-letter a message delivered N times without success (default {MAX_DELIVERIES})")
    add_operate_options(f)
    f.set_defaults(handler=feeder_command)


def add_register_options(r: argparse.ArgumentParser) -> None:
    r.description = ("Register a named timeline: type-check EXPR, save the registration (durable), start its "
                     "workflow tree (a workflow per node per shard) and print it.")
    r.add_argument("name", nargs="?", metavar="NAME", help="timeline name: a-z, 0-9, '-', '_'")
    r.add_argument("expr", nargs="?", metavar="EXPR", help="the expression, or @FILE")
    r.add_argument("--topic", help="source topic the feeder reads")
    r.add_argument("--key", help="dotted path of the key in an event (session_id, page.page_id); several joined "
                                 "by commas make a composite key (wiki_id,page.page_id)")
    r.add_argument("--time", help="dotted path of the event time (ts, meta.dt)")
    r.add_argument("--source", nargs=3, action="append", metavar=("TOPIC", "KEY", "TIME"),
                   help="another source: its topic, key path(s) and time path (repeatable; events of every "
                        "source of a timeline meet per key)")
    r.add_argument("--builtin", metavar="NAME", help="install a shipped timeline (`timeline catalog` lists them; "
                                                     "NAME may then name the registration)")
    r.add_argument("--schema", metavar="TITLE",
                   help="validate the --topic source's events against this event platform schema "
                        "(mediawiki/page/change); invalid ones go to the dead-letter topic, canaries are dropped")
    r.add_argument("--topic-prefix", metavar="PREFIX",
                   help="with --builtin: put PREFIX before each source topic (e.g. 'eqiad.')")
    r.add_argument("--shards", type=int, help="key shards (default 4)")
    r.add_argument("--idle-timeout", default="30m", help="close a key after this long without events "
                                                         "(default 30m)")
    r.add_argument("--from", dest="start_from", metavar="earliest|TIME", default=None,
                   help="where the timeline starts reading its topics: `live` (the default: from where the "
                        "shared feeder is, so events produced before registering are not seen), `earliest` "
                        "(replay all the topic retains, then go on live) or a TIME (epoch ms or ISO-8601: "
                        "messages published from then on)")
    r.add_argument("--allowed-lateness", default=f"{DEFAULT_ALLOWED_LATENESS_S:g}s",
                   help="apply an event up to this far (event time) behind its key's latest event; an older one "
                        f"goes to the side output as late (default {DEFAULT_ALLOWED_LATENESS_S:g}s)")
    r.add_argument("--dry-run", action="store_true",
                   help="send one sample event through a throw-away copy of the tree, print the result, clean up")
    r.add_argument("--sample-event", metavar="JSON", help="the event for --dry-run (default: made from EXPR)")
    r.add_argument("--timeout", type=float, default=30, help="seconds to wait for the dry run's result")
    r.add_argument("--continue-as-new-after", type=int, metavar="N",
                   help="continue each workflow as new after N batches (default: when Temporal suggests it; "
                        "small values are for tests)")
    r.add_argument("--list", action="store_true", help="list registered timelines")
    r.add_argument("--json", action="store_true", help="with --list: print JSON")
    r.add_argument("--remove", metavar="NAME", help="stop a timeline's workflows and delete it and its results")
    add_endpoint_options(r)  # the same server flags as every other command
    r.set_defaults(handler=register_command)
