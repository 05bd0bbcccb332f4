"""Registering and removing timelines: what `register-workflow` and the API share.

A registration is checked (paths, expression, fields) before anything is
saved; its plan is compiled once here and travels with the spec.
"""

from __future__ import annotations

from timeline.dsl.compiler import Plan, plan_for
from timeline.dsl.errors import UsageError
from timeline.dsl.errors import EventError
from timeline.dsl.events import parse_time, split_key_paths, split_path
from timeline.dsl.parser import parse_duration_ms
from timeline.models import TimelineSpec, new_generation
from timeline.runtime.control import start_tree, stop_tree


def duration_option_s(text: str, option: str) -> float:
    """A command-line or API duration (`30m`, `90s`, `500ms`, bare seconds) in seconds."""
    try:
        return parse_duration_ms(text)[0] / 1000
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def start_option(text: str | None) -> str | int | None:
    """`--from` (or the API's `start_from`): None for live (the default), "earliest", or a time in epoch ms."""
    if text is None or text == "live":
        return None
    if text == "earliest":
        return "earliest"
    try:
        return parse_time(text, "--from")
    except EventError:
        raise UsageError(f"--from {text!r}: give live (the default), earliest, or a time (epoch ms or "
                         "ISO-8601, e.g. 2025-02-07T13:29:00Z)") from None


def pydantic_message(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors())
    return str(exc)


def build_spec(name: str, expression: str, topic: str | None = None, key: str | None = None,
               time: str | None = None, shards: int = 4, idle_timeout_s: float = 1800.0,
               sources: list[tuple] | None = None, schema: str | None = None,
               start_from: str | int | None = None, allowed_lateness_s: float | None = None,
               max_state_bytes: int | None = None) -> tuple[TimelineSpec, Plan]:
    """Check and build a registration as `register` does: key and time paths, then the expression
    (a DslError before anything is registered), then the fields (a UsageError saying which one).
    One source (topic, key, time), or several (`sources`)."""
    sources = [tuple(s) + (None,) * (4 - len(s)) for s in sources or []]  # (topic, key, time, schema title)
    if topic is not None or not sources:
        sources.insert(0, (topic or "", key or "", time or "", schema))
    for _, k, t, _ in sources:
        split_key_paths(k), split_path(t)
    plan = plan_for(expression)  # spec.plan reads the same compiled plan
    try:
        optional = {k: v for k, v in (("allowed_lateness_s", allowed_lateness_s),
                                      ("max_state_bytes", max_state_bytes)) if v is not None}
        spec = TimelineSpec(name=name, expression=expression, shards=shards, idle_timeout_s=idle_timeout_s,
                            start_from=start_from, **optional,
                            sources=[{"topic": tp, "key_path": k, "time_path": t, "schema_title": sc}
                                     for tp, k, t, sc in sources])
    except ValueError as exc:
        raise UsageError(f"bad registration: {pydantic_message(exc)}") from None
    return spec, plan


async def register_spec(client, store, spec: TimelineSpec,
                        continue_as_new_after: int | None = None) -> tuple[bool, list, TimelineSpec]:
    """Save the registration under a new generation, then start its workflow tree (running
    workflows are kept), as `register` does. Returns (False if the same registration existed,
    the tree's WorkflowNodes, the registration as stored: with its generation); a different
    registration under the name raises store.TimelineExists."""
    created = store.register(spec.model_copy(update={"generation": new_generation()}))
    spec = store.get(spec.name)  # the new generation, or the one of the same registration
    tree = await start_tree(client, spec, continue_as_new_after=continue_as_new_after)
    return created, tree, spec


async def remove_spec(client, store, spec: TimelineSpec) -> int:
    """Stop the timeline's workflows, delete the registration and its results, and stop
    again, as `register --remove` does; returns how many workflows were running. A feeder
    that has not noticed the removal may start a workflow again (signal-with-start): one
    started before the deletion is stopped by the second pass; one started after finds its
    registration gone when it starts, and ends."""
    stopped = await stop_tree(client, spec)
    store.remove(spec.name)
    return stopped + await stop_tree(client, spec)
