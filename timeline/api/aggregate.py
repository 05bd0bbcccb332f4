"""`GET /timelines/{name}/aggregate`: a live aggregate's groups at t, or over time.

The answer comes from the timeline's combining aggregate workflow
(`workflows/aggregate.py`), which holds the whole aggregate as a series exact at
every time (`dsl.aggregate.AggregateSeries`); the groups at a time are computed
by that workflow's query, shaped as `timeline eval ... | aggregate(...) --at T` prints them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from temporalio.client import WorkflowQueryFailedError, WorkflowQueryRejectedError
from temporalio.service import RPCError, RPCStatusCode

from timeline.api.errors import ApiError, _responses
from timeline.api.services import QUERY_TIMEOUT_S, Services, _time
from timeline.dsl.aggregate import AggregateSeries, answer_times
from timeline.dsl.errors import UsageError
from timeline.models import AggregateAnswer, AggregateQuery, TimelineSpec, aggregate_workflow_id
from timeline.runtime.control import ServiceUnavailable, query_aggregate

router = APIRouter()

Groups = dict[str, dict[str, Any]]


class AggregateAtOut(BaseModel):
    t: int
    groups: Groups = Field(description="per group: the aggregate functions' values at t (as `timeline eval` "
                                       "prints them); a group with no key at t is absent")


class AggregateOut(BaseModel):
    timeline: str
    aggregation: str = Field(description="the aggregation suffix")
    points: list[AggregateAtOut] = Field(description="the groups at each time asked for")
    truncated: bool = Field(False, description="over time without a step: more change points than the limit "
                                               "(MAX_AGGREGATE_SAMPLES); ask again from the last one shown")
    shards: int
    shards_reported: int = Field(description="shards whose partial aggregate has reached the combiner; "
                                             "fewer than shards: keys of the others are not counted yet")
    live_keys: int
    closed_keys: int


@router.get("/timelines/{name}/aggregate", response_model=AggregateOut, responses=_responses(400, 404, 422, 503),
            summary="An aggregated timeline's groups at t, or over [from, to)")
async def aggregate(request: Request,
                    name: str,
                    t: str | None = Query(None, description="one time: epoch ms or ISO-8601"),
                    frm: str | None = Query(None, alias="from", description="over time: the start"),
                    to: str | None = Query(None, description="over time: the end (exclusive)"),
                    step: int | None = Query(None, description="over time: sample every step ms from `from`; "
                                                               "without it, at `from` and at every time in "
                                                               "[from, to) where the aggregate changes"),
                    ) -> AggregateOut:
    services: Services = request.app.state.services
    spec = services.spec(name)
    plan = spec.plan
    if plan.aggregation is None:
        raise ApiError(400, f"timeline {name!r} has no aggregation suffix: register one with "
                            "`EXPR | aggregate(group_by(column), count, ...)`, or read its keys at "
                            f"/timelines/{name}/keys")
    at, lo, hi = _time(t, "t"), _time(frm, "from"), _time(to, "to")
    if at is not None and (lo is not None or hi is not None or step is not None):
        raise ApiError(400, "give either t (the groups at one time) or from and to (over time, with an "
                            "optional step in ms), not both")
    try:  # the question's shape is checked here, before any workflow is asked
        answer_times(AggregateSeries(), at, lo, hi, step)
    except UsageError as exc:
        raise ApiError(400, str(exc)) from None
    answer = await _groups(services, spec, AggregateQuery(t=at, frm=lo, to=hi, step=step))
    return AggregateOut(timeline=name, aggregation=plan.aggregation.text(),
                        points=[AggregateAtOut(t=p.t, groups=p.groups) for p in answer.points],
                        truncated=answer.truncated, shards=answer.shards, shards_reported=answer.shards_reported,
                        live_keys=answer.live_keys, closed_keys=answer.closed_keys)


async def _groups(services: Services, spec: TimelineSpec, query: AggregateQuery) -> AggregateAnswer:
    client = await services.temporal()
    wid = aggregate_workflow_id(spec)
    try:
        return await asyncio.wait_for(query_aggregate(client, spec, query), timeout=QUERY_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise ServiceUnavailable(f"workflow {wid} did not answer within {QUERY_TIMEOUT_S:g}s: is a worker "
                                 "running (`timeline worker`)?") from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise ApiError(404, f"the aggregate workflow {wid} of timeline {spec.name!r} is not running: "
                                f"register the timeline again to start it") from None
        raise
    except (WorkflowQueryFailedError, WorkflowQueryRejectedError) as exc:
        raise ApiError(502, f"the aggregate workflow {wid} could not answer: {exc}; see the worker's log") from None
