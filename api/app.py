"""The HTTP query API: register and remove timelines, read a key's timeline.

`create_app(endpoints)` builds the FastAPI app (OpenAPI at /docs and
/openapi.json). Its lifespan opens the results store and connects the Temporal
client (pydantic data converter, via `workflows.control.connect`); when
Temporal is not reachable the API still starts, the routes that need Temporal
answer 503 and try to connect again on the next request.

Where an answer comes from:

* a key that is still live (its root workflow holds it) is answered by a
  query of the root node workflow of the key's shard: `source: "live"`, with
  the key's watermark (latest event time seen); a span is `provisional` when
  its end is past the watermark or open, since later events may change it;
* a closed key (idle past the timeline's idle timeout), or one the root no
  longer holds, is answered from the results store: `source: "store"`.

Spans have the shape `timeline eval` prints: `{"start", "end", "value"}`, plus
`"slope"` on numeric timelines (durations in ms, slope per ms).

Every 4xx/5xx answer is `{"error": "what is wrong and how to fix it", ...}`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import Client, WorkflowQueryFailedError, WorkflowQueryRejectedError
from temporalio.service import RPCError, RPCStatusCode

from cli.runtime import (
    ServiceUnavailable, build_spec, connect_temporal, open_results_store, register_spec, remove_spec,
)
from cli.settings import Endpoints
from dsl.compiler import Plan, compile_expression
from dsl.errors import DslError, TimelineError
from dsl.events import parse_time
from dsl.incremental import KeyTimeline
from dsl.results import NumericSpan, key_timeline_spans
from store import ResultsStore, TimelineExists, UnknownTimeline
from store.base import StoredResult
from workflows.control import WorkflowNode, query_key, workflow_tree
from workflows.models import TASK_QUEUE, KeyAnswer, TimelineSpec, node_workflow_id, shard_of

log = logging.getLogger("timeline.api")

CONNECT_TIMEOUT_S = 5.0    # connecting to Temporal, per attempt
QUERY_TIMEOUT_S = 10.0     # one workflow query (it needs a worker to answer)
T = TypeVar("T")


# --- response models ------------------------------------------------------------------------

class ErrorBody(BaseModel):
    """Every 4xx/5xx answer. DSL errors also say where (line, column) and what was expected."""

    error: str = Field(description="what is wrong and how to fix it")
    kind: str | None = Field(None, description="DSL errors: syntax error, type error, unknown operator, ...")
    line: int | None = None
    column: int | None = None
    expected: str | None = None
    detail: str | None = Field(None, description="DSL errors: the message with the expression and a caret")


class SourceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str
    key_path: str
    time_path: str


class RegisterIn(BaseModel):
    """A timeline to register: what to compute, from which topic, how to shard it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "name": "cir", "expression": 'duration_where(has_existed(playerStateChange == "play") && '
                                     '!has_existed_within(playerStateChange == "seek", 5s) && '
                                     'latest_event_to_state(playerStateChange) == "buffer")',
        "source_topic": "video-events", "key_path": "session_id", "time_path": "ts", "shards": 4,
        "idle_timeout_s": 1800}]})

    name: str = Field(description="1-63 characters of a-z, 0-9, '-' and '_'")
    expression: str = Field(description="a timeline expression (see the README)")
    source_topic: str | None = Field(None, description="the Pulsar topic the feeder reads (one source)")
    key_path: str | None = Field(None, description="dotted path of the key in an event (session_id, "
                                                   "page.page_id); comma-joined paths make a composite key")
    time_path: str | None = Field(None, description="dotted path of the event time (ts, meta.dt)")
    sources: list[SourceIn] | None = Field(None, description="several sources, each with its topic, key and "
                                                             "time paths (instead of source_topic/key_path/time_path)")
    shards: int = Field(4, description="key shards (1-1024): one workflow per plan node per shard")
    idle_timeout_s: float = Field(1800.0, description="close a key after this many seconds without events")


class PlanNodeOut(BaseModel):
    id: str
    op: str = Field(description="operator class: HasExisted, Compare, DurationWhere, ...")
    kind: str = Field(description="state, boolean or numeric")
    leaf: bool = Field(description="true: reads events; false: reads its children's timelines")
    children: list[str]
    label: str = Field(description="canonical text of the sub-expression")


class PlanOut(BaseModel):
    root: str
    nodes: list[PlanNodeOut] = Field(description="children before parents; shared sub-expressions once")
    aggregation: str | None = None


class WorkflowOut(BaseModel):
    workflow_id: str
    node_id: str
    shard: int
    leaf: bool
    children: list[str] = Field(description="workflow ids of the children (same shard)")
    label: str


class TimelineOut(BaseModel):
    """A registration, its plan and the workflow ids of its tree (nodes x shards)."""

    spec: TimelineSpec
    plan: PlanOut
    workflows: list[WorkflowOut]


class RegisteredOut(TimelineOut):
    created: bool = Field(description="false: the same registration existed (its workflows were checked)")


class TimelineListOut(BaseModel):
    timelines: list[TimelineSpec]
    count: int


class RemovedOut(BaseModel):
    name: str
    workflows_stopped: int
    message: str


class KeysOut(BaseModel):
    timeline: str
    closed: bool | None = Field(description="the filter asked for: true, false, or null (all keys)")
    keys: list[str]
    count: int


class StateSpanOut(BaseModel):
    """A span of a state or boolean timeline: [start, end) -> value (end null: open; value null: unknown)."""

    model_config = ConfigDict(extra="forbid")

    start: int
    end: int | None
    value: Any
    provisional: bool = Field(description="true: past the key's watermark (or open), later events may change it")


class NumericSpanOut(BaseModel):
    """A span of a numeric timeline: the value at start and its change per ms (durations in ms)."""

    model_config = ConfigDict(extra="forbid")

    start: int
    end: int | None
    value: int | float | None
    slope: int | float | None
    provisional: bool = Field(description="true: past the key's watermark (or open), later events may change it")


SpanOut = NumericSpanOut | StateSpanOut
Source = Literal["live", "store"]


class KeyTimelineOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    timeline: str
    key: str
    node_id: str = Field(description="the root node")
    kind: str = Field(description="state, boolean or numeric")
    source: Source = Field(description="live: queried from the root workflow; store: the results store")
    closed: bool = Field(description="the key went idle: its timeline is final")
    watermark: int | None = Field(description="latest event time seen for the key: final up to it")
    from_: int | None = Field(None, alias="from")
    to: int | None = None
    spans: list[SpanOut]


class ValueOut(BaseModel):
    timeline: str
    key: str
    t: int
    value: Any = Field(description="the value at t (numeric timelines evaluated at t); null: unknown")
    kind: str
    source: Source
    closed: bool
    watermark: int | None
    provisional: bool = Field(description="t is past the key's watermark: later events may change the value")


class TreeNodeOut(BaseModel):
    node_id: str
    workflow_id: str
    op: str
    kind: str
    label: str
    leaf: bool
    children: list[str] = Field(description="node ids this node reads")
    held: bool = Field(description="the node workflow holds the key (false: not reached yet, or released)")
    watermark: int | None
    spans: list[SpanOut]


class TreeOut(BaseModel):
    """Every node's timeline of the key (root first), to explain the root's result."""

    timeline: str
    key: str
    shard: int
    root: str
    closed: bool
    note: str | None = None
    nodes: list[TreeNodeOut]


# --- errors ---------------------------------------------------------------------------------------

class ApiError(Exception):
    def __init__(self, status: int, error: str, **extra: Any):
        super().__init__(error)
        self.status = status
        self.body = ErrorBody(error=error, **extra)


def _error_response(status: int, body: ErrorBody) -> JSONResponse:
    return JSONResponse(status_code=status, content=body.model_dump(exclude_none=True))


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": ErrorBody} for c in codes}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ())]
        where = loc[0] if loc else "request"
        name = ".".join(loc[1:]) or where
        if where == "query":
            what = f"query parameter {name!r}"
        elif where == "path":
            what = f"path parameter {name!r}"
        elif where == "body":
            what = f"body field {name!r}" if len(loc) > 1 else "the request body"
        else:
            what = name
        parts.append(f"{what}: {e.get('msg', 'invalid')}")
    return "bad request: " + "; ".join(parts) + " (the schema is at /docs)"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc.status, exc.body)

    @app.exception_handler(DslError)
    async def dsl_error(_: Request, exc: DslError) -> JSONResponse:
        where = f" at line {exc.line}, column {exc.column}" if exc.line is not None else ""
        fix = f"; expected: {exc.expected}" if exc.expected else ""
        return _error_response(400, ErrorBody(
            error=f"{exc.kind}{where}: {exc.message}{fix}", kind=exc.kind, line=exc.line, column=exc.column,
            expected=exc.expected, detail=exc.render()))

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(_: Request, exc: ServiceUnavailable) -> JSONResponse:
        return _error_response(503, ErrorBody(error=str(exc)))

    @app.exception_handler(TimelineError)
    async def user_error(_: Request, exc: TimelineError) -> JSONResponse:
        return _error_response(400, ErrorBody(error=str(exc)))

    @app.exception_handler(RPCError)
    async def rpc_error(_: Request, exc: RPCError) -> JSONResponse:
        if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            return _error_response(503, ErrorBody(
                error=f"Temporal is unreachable or did not answer ({exc.status.name}: {exc.message}); check "
                      "that it is running (`timeline up`) and retry"))
        return _error_response(502, ErrorBody(error=f"Temporal refused the request ({exc.status.name}: "
                                                    f"{exc.message})"))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(422, ErrorBody(error=_validation_message(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"no such route: {request.method} {request.url.path} (the routes are listed at /docs)"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path} (the routes are listed at /docs)"
        else:
            message = str(exc.detail)
        return JSONResponse(status_code=exc.status_code, content={"error": message},
                            headers=getattr(exc, "headers", None))


# --- helpers -----------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def _plan(expression: str) -> Plan:
    return compile_expression(expression)


def _plan_out(plan: Plan) -> PlanOut:
    return PlanOut.model_validate(plan.describe())


def _workflows_out(tree: list[WorkflowNode]) -> list[WorkflowOut]:
    return [WorkflowOut(workflow_id=n.workflow_id, node_id=n.node_id, shard=n.shard, leaf=n.leaf,
                        children=list(n.children), label=n.label) for n in tree]


def _timeline_out(spec: TimelineSpec) -> TimelineOut:
    plan = _plan(spec.expression)
    return TimelineOut(spec=spec, plan=_plan_out(plan), workflows=_workflows_out(workflow_tree(spec, plan)))


def _time(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value, name)
    except TimelineError:
        raise ApiError(400, f"{name}={value!r} is not a time: give epoch milliseconds (1738934940000) or "
                            "ISO-8601 (2025-02-07T13:29:00Z)") from None


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
                return _Answer(live.timeline, live.watermark, "live", False)
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
        plan = _plan(spec.expression)
        wid = node_workflow_id(spec.name, node_id or plan.root, shard_of(key, spec.shards))
        raise ServiceUnavailable(
            f"workflow {wid} did not answer within {QUERY_TIMEOUT_S:g}s: is a worker running on task queue "
            f"{TASK_QUEUE!r} (`timeline worker`)?") from None


# --- the app ---------------------------------------------------------------------------------------------

DESCRIPTION = """\
Register timelines (a DSL expression over a Pulsar topic, run as a tree of durable
Temporal workflows) and read each key's timeline: live from the workflows while the
key is active, from the results store once it has closed. Spans are `[start, end)`
in epoch ms, `end: null` is open, `value: null` is unknown; numeric timelines add
`slope` (per ms). Times in queries are epoch ms or ISO-8601.
"""


def create_app(endpoints: Endpoints) -> FastAPI:
    services = Services(endpoints)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        services.store = open_results_store(endpoints)
        try:
            services.client = await services._connect()
        except ServiceUnavailable as exc:
            log.warning("%s (the API starts anyway; routes that need Temporal answer 503)", exc)
        try:
            yield
        finally:
            services.store.close()

    app = FastAPI(title="Timeline", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.services = services
    _install_error_handlers(app)

    @app.get("/timelines", response_model=TimelineListOut, summary="List registered timelines")
    async def list_timelines() -> TimelineListOut:
        assert services.store is not None
        specs = services.store.list()
        return TimelineListOut(timelines=specs, count=len(specs))

    @app.post("/timelines", response_model=RegisteredOut, status_code=201,
              summary="Register a timeline and start its workflow tree",
              responses={200: {"model": RegisteredOut, "description": "the same registration existed"},
                         **_responses(400, 409, 422, 503)})
    async def register(body: RegisterIn, response: Response) -> RegisteredOut:
        if body.sources is None and not (body.source_topic and body.key_path and body.time_path):
            raise ApiError(400, "give source_topic, key_path and time_path, or sources: "
                                "[{topic, key_path, time_path}, ...]")
        spec, plan = build_spec(body.name, body.expression, body.source_topic, body.key_path, body.time_path,
                                body.shards, body.idle_timeout_s,
                                sources=[(s.topic, s.key_path, s.time_path) for s in body.sources or []])
        client = await services.temporal()  # before saving: no registration without its workflows
        try:
            created, tree = await register_spec(client, services.store, spec)
        except TimelineExists:
            raise ApiError(409, f"a timeline named {spec.name!r} is already registered with a different "
                                f"definition: DELETE /timelines/{spec.name} first, or choose another name") from None
        if not created:
            response.status_code = 200
        return RegisteredOut(spec=spec, plan=_plan_out(plan), workflows=_workflows_out(tree), created=created)

    @app.get("/timelines/{name}", response_model=TimelineOut, responses=_responses(404),
             summary="A timeline's registration, plan and workflow tree")
    async def describe(name: str) -> TimelineOut:
        return _timeline_out(services.spec(name))

    @app.delete("/timelines/{name}", response_model=RemovedOut, responses=_responses(404, 503),
                summary="Stop a timeline's workflows and delete it and its results")
    async def remove(name: str) -> RemovedOut:
        spec = services.spec(name)
        client = await services.temporal()
        stopped = await remove_spec(client, services.store, spec)
        return RemovedOut(name=name, workflows_stopped=stopped,
                          message=f"removed timeline {name!r}: {stopped} workflows stopped, results deleted")

    @app.get("/timelines/{name}/keys", response_model=KeysOut, responses=_responses(404, 422),
             summary="Keys that have results in the store")
    async def keys(name: str, closed: bool | None = Query(
            None, description="true: closed keys only; false: live keys only; absent: all")) -> KeysOut:
        spec = services.spec(name)
        found = services.store.keys(spec.name, closed)  # type: ignore[union-attr]
        return KeysOut(timeline=name, closed=closed, keys=found, count=len(found))

    # The key is a path parameter that may contain '/': the routes with a suffix come first.
    @app.get("/timelines/{name}/keys/{key:path}/value", response_model=ValueOut,
             responses=_responses(400, 404, 422, 503), summary="A key's value at time t")
    async def value(name: str, key: str, t: str = Query(..., description="epoch ms or ISO-8601")) -> ValueOut:
        spec = services.spec(name)
        at = _time(t, "t")
        assert at is not None
        ans = await services.answer(spec, key)
        return ValueOut(timeline=name, key=key, t=at, value=ans.timeline.value_at(at),
                        kind=_plan(spec.expression).root_node.kind.value, source=ans.source, closed=ans.closed,
                        watermark=ans.watermark,
                        provisional=not ans.closed and (ans.watermark is None or at > ans.watermark))

    @app.get("/timelines/{name}/keys/{key:path}/tree", response_model=TreeOut, responses=_responses(404, 503),
             summary="Every node's timeline of a key (to explain the root's)")
    async def tree(name: str, key: str, frm: str | None = Query(None, alias="from", description="clip start"),
                   to: str | None = Query(None, description="clip end (exclusive)")) -> TreeOut:
        spec = services.spec(name)
        lo, hi = _range(frm, to)
        plan = _plan(spec.expression)
        shard = shard_of(key, spec.shards)
        order = _root_first(plan)
        answers = await asyncio.gather(*(services.query(spec, key, nid) for nid in order))
        stored = services.store.result(spec.name, key)  # type: ignore[union-attr]
        nodes = []
        for nid, ans in zip(order, answers):
            node = plan.nodes[nid]
            held = ans is not None and bool(ans.timeline.starts)
            tl = ans.timeline if held else KeyTimeline()
            wm = ans.watermark if held else None
            nodes.append(TreeNodeOut(
                node_id=nid, workflow_id=node_workflow_id(spec.name, nid, shard), op=node.op, kind=node.kind.value,
                label=node.label, leaf=node.is_leaf, children=list(node.children), held=held, watermark=wm,
                spans=_spans(tl, wm, False, lo, hi)))
        note = None
        if not any(n.held for n in nodes):
            if stored is None:
                raise ApiError(404, _no_key(spec, key))
            note = (f"no node workflow holds the key any more ({'closed' if stored.closed else 'released'}); "
                    f"its root timeline is kept in the store: GET /timelines/{name}/keys/{key}")
        return TreeOut(timeline=name, key=key, shard=shard, root=plan.root,
                       closed=bool(stored and stored.closed and not nodes[0].held), note=note, nodes=nodes)

    @app.get("/timelines/{name}/keys/{key:path}", response_model=KeyTimelineOut,
             responses=_responses(400, 404, 422, 503), summary="A key's timeline over [from, to)")
    async def key_timeline(name: str, key: str,
                           frm: str | None = Query(None, alias="from", description="epoch ms or ISO-8601"),
                           to: str | None = Query(None, description="epoch ms or ISO-8601 (exclusive)")
                           ) -> KeyTimelineOut:
        spec = services.spec(name)
        lo, hi = _range(frm, to)
        ans = await services.answer(spec, key)
        plan = _plan(spec.expression)
        return KeyTimelineOut(timeline=name, key=key, node_id=plan.root, kind=plan.root_node.kind.value,
                              source=ans.source, closed=ans.closed, watermark=ans.watermark, from_=lo, to=hi,
                              spans=_spans(ans.timeline, ans.watermark, ans.closed, lo, hi))

    return app


def _range(frm: str | None, to: str | None) -> tuple[int | None, int | None]:
    lo, hi = _time(frm, "from"), _time(to, "to")
    if lo is not None and hi is not None and lo >= hi:
        raise ApiError(400, f"from ({lo}) must be before to ({hi}): the range is [from, to)")
    return lo, hi


def _root_first(plan: Plan) -> list[str]:
    order: list[str] = []

    def walk(nid: str) -> None:
        if nid in order:
            return
        order.append(nid)
        for c in plan.nodes[nid].children:
            walk(c)

    walk(plan.root)
    return order
