"""Reading many keys at once, and a timeline's health.

`GET /timelines/{name}/results` pages through every key with results, in key
order (`after` is the cursor, `limit` up to 10,000 keys a page);
`POST /timelines/{name}/results` answers the keys listed in the body. Either
way a page costs one read of the store (closed keys, and the final part of live
keys: before a key's frontier a root node holds nothing) plus one `timelines`
query per shard's root workflow (the live part of the page's live keys), not
one query per key.

`timeline_health` asks every node workflow of a timeline for its status: the
state each holds against the registration's limit, and the late events.
"""

from __future__ import annotations

import asyncio
import bisect
from typing import Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from temporalio.client import WorkflowQueryFailedError, WorkflowQueryRejectedError
from temporalio.service import RPCError, RPCStatusCode

from timeline.api.errors import ApiError, _responses
from timeline.api.models import Source, SpanOut, TimelineOut
from timeline.api.services import QUERY_TIMEOUT_S, Services, _spans, _timeline_out
from timeline.dsl.incremental import KeyTimeline
from timeline.models import KeyAnswer, NodeStatus, TimelineSpec, node_workflow_id, shard_of
from timeline.runtime.control import ServiceUnavailable

MAX_KEYS_PER_PAGE = 10_000
KEYS_PER_QUERY = 2_000   # a query's answer stays well under gRPC's message size

router = APIRouter()


class BulkKeyOut(BaseModel):
    key: str
    source: Source = Field(description="live: its root workflow holds the key; store: closed (or released)")
    closed: bool
    watermark: int | None
    spans: list[SpanOut]


class BulkResultsOut(BaseModel):
    timeline: str
    kind: str = Field(description="state, boolean or numeric")
    keys: list[BulkKeyOut]
    count: int
    next_after: str | None = Field(description="the cursor of the next page (pass it as `after`); null: the last page")


class BulkKeysIn(BaseModel):
    keys: list[str] = Field(max_length=MAX_KEYS_PER_PAGE, description=f"up to {MAX_KEYS_PER_PAGE:,} keys")


class NodeHealthOut(BaseModel):
    node_id: str
    shard: int
    keys: int
    state_bytes: int = Field(description="the node's state as JSON")
    payload_bytes: int = Field(description="the same as Temporal stores it (compressed): what max_state_bytes "
                                           "counts")
    largest_carried_bytes: int
    late_events: int
    health: str


class TimelineHealthOut(BaseModel):
    """How a timeline's workflows are doing: `ok`, `state_over_limit` (a node holds more state than
    the registration's max_state_bytes: more live keys than its shards hold, see the README's capacity
    model), or `unavailable` (a node did not answer)."""

    status: Literal["ok", "state_over_limit", "unavailable"]
    late_events: int = Field(description="events not applied because they came later than the allowed "
                                         "lateness (sent to the side-output topic with reason late)")
    max_state_bytes: int = Field(description="the registration's limit on a node's state as Temporal stores it")
    largest_state_bytes: int = Field(description="the largest node state, as JSON")
    largest_payload_bytes: int = Field(0, description="the largest node state as Temporal stores it (compressed)")
    nodes: list[NodeHealthOut] = Field(description="the nodes that are not ok (all of them with ?nodes=all)")
    problems: list[str] = []


class TimelineStatusOut(TimelineOut):
    """A registration, its plan, its workflow tree, and how its workflows are doing."""

    health: TimelineHealthOut


async def describe_with_health(services: Services, spec: TimelineSpec) -> TimelineStatusOut:
    out = _timeline_out(spec)
    try:
        health = await timeline_health(services, spec)
    except ServiceUnavailable as exc:
        health = TimelineHealthOut(status="unavailable", late_events=0, max_state_bytes=spec.max_state_bytes,
                                   largest_state_bytes=0, nodes=[], problems=[str(exc)])
    return TimelineStatusOut(spec=out.spec, plan=out.plan, workflows=out.workflows, health=health)


def _services(request: Request) -> Services:
    return request.app.state.services


async def _live_parts(services: Services, spec: TimelineSpec, keys: list[str]) -> dict[str, KeyAnswer]:
    """The root's live part of each key, one query per shard (and per KEYS_PER_QUERY keys)."""
    client = await services.temporal()
    by_shard: dict[int, list[str]] = {}
    for k in keys:
        by_shard.setdefault(shard_of(k, spec.shards), []).append(k)

    async def ask(shard: int, part: list[str]) -> list[KeyAnswer]:
        handle = client.get_workflow_handle(node_workflow_id(spec, spec.plan.root, shard))
        try:
            return await asyncio.wait_for(handle.query("timelines", part, result_type=list[KeyAnswer]),
                                          timeout=QUERY_TIMEOUT_S)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return []
            raise
        except asyncio.TimeoutError:
            raise ApiError(503, f"the root workflow of shard {shard} did not answer within {QUERY_TIMEOUT_S:g}s: "
                                "is a worker running (`timeline worker`)?") from None
        except (WorkflowQueryFailedError, WorkflowQueryRejectedError) as exc:
            raise ApiError(502, f"the root workflow of shard {shard} could not answer: {exc}; see the worker's "
                                "log") from None

    calls = [ask(shard, part[i:i + KEYS_PER_QUERY]) for shard, part in by_shard.items()
             for i in range(0, len(part), KEYS_PER_QUERY)]
    answers = await asyncio.gather(*calls)
    return {a.key: a for batch in answers for a in batch}


async def _page(services: Services, spec: TimelineSpec, keys: list[str]) -> list[BulkKeyOut]:
    store = services.store
    assert store is not None
    found = store.results(spec.name, keys)
    stored = {k: found.get(k) for k in keys}
    open_keys = [k for k in keys if (s := stored[k]) is None or not s.closed]
    live = await _live_parts(services, spec, open_keys) if open_keys else {}
    out = []
    for k in keys:
        s, ans = stored[k], live.get(k)
        if ans is not None and ans.timeline.starts:
            before = s.timeline if s is not None else KeyTimeline()
            tl = before.then(ans.timeline)
            out.append(BulkKeyOut(key=k, source="live", closed=False, watermark=ans.watermark,
                                  spans=_spans(tl, ans.watermark, False)))
        elif s is not None:
            out.append(BulkKeyOut(key=k, source="store", closed=s.closed, watermark=s.watermark,
                                  spans=_spans(s.timeline, s.watermark, s.closed)))
    return out


@router.get("/timelines/{name}/results", response_model=BulkResultsOut, responses=_responses(404, 422, 503),
            summary="Many keys' timelines, paged in key order")
async def results_page(request: Request, name: str,
                       after: str | None = Query(None, description="the previous page's next_after"),
                       limit: int = Query(1_000, ge=1, le=MAX_KEYS_PER_PAGE, description="keys per page"),
                       closed: bool | None = Query(None, description="true: closed keys only; false: live only")
                       ) -> BulkResultsOut:
    services = _services(request)
    spec = services.spec(name)
    every = services.store.keys(spec.name, closed)  # type: ignore[union-attr]  (sorted)
    lo = bisect.bisect_right(every, after) if after is not None else 0
    keys = every[lo:lo + limit]
    rows = await _page(services, spec, keys)
    more = lo + limit < len(every)
    return BulkResultsOut(timeline=name, kind=spec.plan.root_node.kind.value, keys=rows, count=len(rows),
                          next_after=keys[-1] if more and keys else None)


@router.post("/timelines/{name}/results", response_model=BulkResultsOut, responses=_responses(404, 422, 503),
             summary="The timelines of the keys listed (keys with no result are left out)")
async def results_of_keys(request: Request, name: str, body: BulkKeysIn) -> BulkResultsOut:
    services = _services(request)
    spec = services.spec(name)
    keys = list(dict.fromkeys(body.keys))
    rows = await _page(services, spec, keys)
    return BulkResultsOut(timeline=name, kind=spec.plan.root_node.kind.value, keys=rows, count=len(rows),
                          next_after=None)


async def timeline_health(services: Services, spec: TimelineSpec, every_node: bool = False) -> TimelineHealthOut:
    """Every node workflow's status (one query each, at once) summed up."""
    client = await services.temporal()
    plan = spec.plan
    targets = [(n, shard) for n in plan.nodes for shard in range(spec.shards)]

    async def status(node_id: str, shard: int) -> NodeStatus | str:
        handle = client.get_workflow_handle(node_workflow_id(spec, node_id, shard))
        try:
            return await asyncio.wait_for(handle.query("status", result_type=NodeStatus), timeout=QUERY_TIMEOUT_S)
        except (asyncio.TimeoutError, RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError) as exc:
            return f"node {node_id} shard {shard} did not answer: {type(exc).__name__} {exc}"

    answers = await asyncio.gather(*(status(n, s) for n, s in targets))
    statuses = [a for a in answers if isinstance(a, NodeStatus)]
    problems = [a for a in answers if isinstance(a, str)]
    first_leaf = plan.leaves[0].id
    over = [s for s in statuses if s.health != "ok"]
    state = "unavailable" if problems else ("state_over_limit" if over else "ok")
    shown = statuses if every_node else over
    return TimelineHealthOut(
        status=state, late_events=sum(s.late_events for s in statuses if s.node_id == first_leaf),
        max_state_bytes=spec.max_state_bytes, largest_state_bytes=max((s.state_bytes for s in statuses), default=0),
        largest_payload_bytes=max((s.payload_bytes for s in statuses), default=0),
        nodes=[NodeHealthOut(node_id=s.node_id, shard=s.shard, keys=s.keys, state_bytes=s.state_bytes,
                             payload_bytes=s.payload_bytes,
                             largest_carried_bytes=s.largest_carried_bytes, late_events=s.late_events,
                             health=s.health) for s in shown],
        problems=problems[:20])
