"""What the routes share: the store and Temporal client, and where an answer comes from (live or store)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from temporalio.client import (
    Client,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.service import RPCError, RPCStatusCode

from timeline.dsl.compiler import Plan
from timeline.dsl.errors import TimelineError
from timeline.dsl.events import parse_time
from timeline.dsl.incremental import KeyTimeline
from timeline.dsl.results import NumericSpan, key_timeline_spans
from timeline.models import (
    TASK_QUEUE,
    KeyAnswer,
    TimelineSpec,
    node_workflow_id,
    shard_of,
)
from timeline.runtime.control import (
    ServiceUnavailable,
    WorkflowNode,
    connect_temporal,
    query_key,
    workflow_tree,
)
from timeline.runtime.settings import Endpoints
from timeline.store import ResultsStore, UnknownTimeline
from timeline.store.base import StoredResult

log = logging.getLogger("timeline.api")

CONNECT_TIMEOUT_S = 5.0    # connecting to Temporal, per attempt
QUERY_TIMEOUT_S = 10.0     # one workflow query (it needs a worker to answer)
T = TypeVar("T")


from timeline.api.errors import ApiError
from timeline.api.models import (
    NumericSpanOut,
    PlanOut,
    Source,
    SpanOut,
    StateSpanOut,
    TimelineOut,
    WorkflowOut,
)

# --- helpers -----------------------------------------------------------------------------------------



def _plan_out(plan: Plan) -> PlanOut:
    return PlanOut.model_validate(plan.describe())


def _workflows_out(tree: list[WorkflowNode]) -> list[WorkflowOut]:
    return [WorkflowOut(workflow_id=n.workflow_id, node_id=n.node_id, shard=n.shard, leaf=n.leaf,
                        children=list(n.children), label=n.label) for n in tree]


def _timeline_out(spec: TimelineSpec) -> TimelineOut:
    plan = spec.plan
    return TimelineOut(spec=spec, plan=_plan_out(plan), workflows=_workflows_out(workflow_tree(spec, plan)))


def _time(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value, name)
    except TimelineError as exc:
        raise ApiError(400, f"{name}={value!r} is not a time ({getattr(exc, 'reason', exc)}): give epoch "
                            "milliseconds (1738934940000) or ISO-8601 (2025-02-07T13:29:00Z)") from None


def _provisional(end: int | None, watermark: int | None, final: bool) -> bool:
    if final:
        return False
    return end is None or watermark is None or end > watermark


def _spans(timeline: KeyTimeline, watermark: int | None, final: bool, frm: int | None = None,
           to: int | None = None) -> list[SpanOut]:
    out: list[SpanOut] = []
    for r in key_timeline_spans(timeline, frm, to):
        # Judged by the end shown: a span clipped before the watermark shows only final values.
        provisional = _provisional(r.end, watermark, final)
        if isinstance(r, NumericSpan):
            out.append(NumericSpanOut(start=r.start, end=r.end, value=r.value, slope=r.slope,
                                      provisional=provisional))
        else:
            out.append(StateSpanOut(start=r.start, end=r.end, value=r.value, provisional=provisional))
    return out


class _Answer:
    """A key's root timeline and where it came from."""

    def __init__(self, timeline: KeyTimeline, watermark: int | None, source: Source, closed: bool):
        self.timeline, self.watermark, self.source, self.closed = timeline, watermark, source, closed


class Services:
    """What the routes use: the store (opened by the lifespan) and the Temporal client (connected by
    the lifespan, or on the first request that needs it)."""

    def __init__(self, endpoints: Endpoints):
        self.endpoints = endpoints
        self.store: ResultsStore | None = None
        self.client: Client | None = None
        self._lock = asyncio.Lock()

    async def temporal(self) -> Client:
        if self.client is None:
            async with self._lock:
                if self.client is None:
                    self.client = await self._connect()
        return self.client

    async def _connect(self) -> Client:
        ep = self.endpoints
        try:
            return await asyncio.wait_for(connect_temporal(ep), timeout=CONNECT_TIMEOUT_S)
        except ServiceUnavailable as exc:
            raise ServiceUnavailable(f"Temporal is unreachable: {exc}; then retry (the API reconnects on the "
                                     "next request)") from None
        except asyncio.TimeoutError:
            raise ServiceUnavailable(
                f"Temporal is unreachable: no answer from {ep.temporal} within {CONNECT_TIMEOUT_S:g}s; start it "
                "(`timeline up`) or restart the API with --temporal HOST:PORT, then retry") from None

    def spec(self, name: str) -> TimelineSpec:
        assert self.store is not None
        try:
            return self.store.get(name)
        except UnknownTimeline:
            raise ApiError(404, f"no timeline named {name!r} is registered: GET /timelines lists them, "
                                "POST /timelines registers one") from None

    async def query(self, spec: TimelineSpec, key: str, node_id: str | None = None) -> KeyAnswer | None:
        """A node workflow's timeline of the key; None if that workflow does not exist."""
        client = await self.temporal()
        try:
            return await _bounded(query_key(client, spec, key, node_id), spec, key, node_id)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
        except (WorkflowQueryFailedError, WorkflowQueryRejectedError) as exc:
            raise ApiError(502, f"the workflow of node {node_id or 'root'} (shard {shard_of(key, spec.shards)}) "
                                f"could not answer: {exc}; see the worker's log") from None

    async def answer(self, spec: TimelineSpec, key: str) -> _Answer:
        """Live from the root workflow, else from the store; 404 if neither has the key."""
        assert self.store is not None
        stored = self.store.result(spec.name, key)
        if stored is None or not stored.closed:
            live = await self.query(spec, key)
            if live is not None and live.timeline.starts:
                # The root holds the key from its frontier on; what came before is final and in the store.
                before = stored.timeline if stored is not None else KeyTimeline()
                return _Answer(before.then(live.timeline), live.watermark, "live", False)
            stored = self.store.result(spec.name, key)  # it may have closed meanwhile
        if stored is None:
            raise ApiError(404, _no_key(spec, key))
        return _from_store(stored)


def _from_store(stored: StoredResult) -> _Answer:
    return _Answer(stored.timeline, stored.watermark, "store", stored.closed)


def _no_key(spec: TimelineSpec, key: str) -> str:
    return (f"timeline {spec.name!r} has no key {key!r}: no event with that key (at {spec.key_path!r} of events "
            f"on topic {spec.source_topic!r}) has reached it yet; GET /timelines/{spec.name}/keys lists the keys "
            "with results")


async def _bounded(call: Awaitable[T], spec: TimelineSpec, key: str, node_id: str | None) -> T:
    try:
        return await asyncio.wait_for(call, timeout=QUERY_TIMEOUT_S)
    except asyncio.TimeoutError:
        plan = spec.plan
        wid = node_workflow_id(spec, node_id or plan.root, shard_of(key, spec.shards))
        raise ServiceUnavailable(
            f"workflow {wid} did not answer within {QUERY_TIMEOUT_S:g}s: is a worker running on task queue "
            f"{TASK_QUEUE!r} (`timeline worker`)?") from None
