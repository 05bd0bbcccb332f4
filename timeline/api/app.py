"""The HTTP query API: register and remove timelines, read a key's timeline.

`create_app(endpoints)` builds the FastAPI app (OpenAPI at /docs and
/openapi.json). Its lifespan opens the results store and connects the Temporal
client (pydantic data converter, via `timeline.runtime.control.connect`); when
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
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Query, Response

from timeline.dsl.incremental import KeyTimeline
from timeline.models import node_workflow_id, shard_of
from timeline.runtime.control import ServiceUnavailable
from timeline.runtime.registry import build_spec, register_spec, remove_spec, start_option
from timeline.runtime.settings import Endpoints, endpoints
from timeline.store import TimelineExists, open_store

log = logging.getLogger("timeline.api")


from timeline.api.aggregate import router as aggregate_router
from timeline.api import bulk
from timeline.api.bulk import TimelineStatusOut, describe_with_health
from timeline.api.auth import AuthSettings, require_change, require_read
from timeline.api.errors import ApiError, _install_error_handlers, _responses
from timeline.api.limits import RequestBodyLimit
from timeline.api.intake import router as intake_router
from timeline.api.ops import install_operations
from timeline.api.ui import install_ui
from timeline.api.models import (
    KeysOut,
    KeyTimelineOut,
    RegisteredOut,
    RegisterIn,
    RemovedOut,
    TimelineListOut,
    TreeNodeOut,
    TreeOut,
    ValueOut,
)
from timeline.api.services import (
    Services,
    _no_key,
    _plan_out,
    _spans,
    _time,
    _workflows_out,
)

# --- the app ---------------------------------------------------------------------------------------------

DESCRIPTION = """\
Register timelines (a DSL expression over a Pulsar topic, run as a tree of durable
Temporal workflows) and read each key's timeline: live from the workflows while the
key is active, from the results store once it has closed. Spans are `[start, end)`
in epoch ms, `end: null` is open, `value: null` is unknown; numeric timelines add
`slope` (per ms). Times in queries are epoch ms or ISO-8601.
"""


def app_from_environment() -> FastAPI:
    """The app for the servers named by TIMELINE_* variables (uvicorn's factory for `timeline api`)."""
    import argparse

    return create_app(endpoints(argparse.Namespace()))


def create_app(endpoints: Endpoints) -> FastAPI:
    services = Services(endpoints)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        services.store = open_store(endpoints.store)
        try:
            services.client = await services._connect()
        except ServiceUnavailable as exc:
            log.warning("%s (the API starts anyway; routes that need Temporal answer 503)", exc)
        try:
            yield
        finally:
            services.store.close()

    # /docs and /redoc are served by ui.py with local assets (FastAPI's own pages load them from a CDN).
    # Reads follow TIMELINE_API_READ; changing routes add require_change (timeline/api/auth.py).
    app = FastAPI(title="Timeline", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None, dependencies=[Depends(require_read)])
    app.state.services = services
    app.state.auth = AuthSettings.from_environment()
    _install_error_handlers(app)
    app.add_middleware(RequestBodyLimit)
    install_operations(app)        # /health, /ready, /metrics and request metrics
    install_ui(app)                # /ui (the explain page), /docs, /redoc
    app.include_router(intake_router)  # POST /v1/events (EventGate-compatible)
    app.include_router(aggregate_router)
    app.include_router(bulk.router)  # many keys at once: GET/POST /timelines/{name}/results

    @app.get("/timelines", response_model=TimelineListOut, summary="List registered timelines")
    async def list_timelines() -> TimelineListOut:
        assert services.store is not None
        specs = services.store.list()
        return TimelineListOut(timelines=specs, count=len(specs))

    @app.post("/timelines", response_model=RegisteredOut, status_code=201,
              summary="Register a timeline and start its workflow tree", dependencies=[Depends(require_change)],
              responses={200: {"model": RegisteredOut, "description": "the same registration existed"},
                         **_responses(400, 401, 403, 409, 413, 422, 503)})
    async def register(body: RegisterIn, response: Response) -> RegisteredOut:
        if body.sources is None and not (body.source_topic and body.key_path and body.time_path):
            raise ApiError(400, "give source_topic, key_path and time_path, or sources: "
                                "[{topic, key_path, time_path}, ...]")
        spec, plan = build_spec(body.name, body.expression, body.source_topic, body.key_path, body.time_path,
                                body.shards, body.idle_timeout_s,
                                sources=[(s.topic, s.key_path, s.time_path) for s in body.sources or []],
                                start_from=start_option(body.start_from),
                                allowed_lateness_s=body.allowed_lateness_s, max_state_bytes=body.max_state_bytes)
        client = await services.temporal()  # before saving: no registration without its workflows
        try:
            created, tree, spec = await register_spec(client, services.store, spec)
        except TimelineExists:
            raise ApiError(409, f"a timeline named {spec.name!r} is already registered with a different "
                                f"definition: DELETE /timelines/{spec.name} first, or choose another name") from None
        if not created:
            response.status_code = 200
        return RegisteredOut(spec=spec, plan=_plan_out(plan), workflows=_workflows_out(tree), created=created)

    @app.get("/timelines/{name}", response_model=TimelineStatusOut, responses=_responses(404),
             summary="A timeline's registration, plan, workflow tree and health")
    async def describe(name: str) -> TimelineStatusOut:
        return await describe_with_health(services, services.spec(name))

    @app.delete("/timelines/{name}", response_model=RemovedOut, responses=_responses(401, 403, 404, 503),
                dependencies=[Depends(require_change)],
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
                        kind=spec.plan.root_node.kind.value, source=ans.source, closed=ans.closed,
                        watermark=ans.watermark,
                        provisional=not ans.closed and (ans.watermark is None or at > ans.watermark))

    @app.get("/timelines/{name}/keys/{key:path}/tree", response_model=TreeOut, responses=_responses(404, 503),
             summary="Every node's timeline of a key (to explain the root's)")
    async def tree(name: str, key: str, frm: str | None = Query(None, alias="from", description="clip start"),
                   to: str | None = Query(None, description="clip end (exclusive)")) -> TreeOut:
        spec = services.spec(name)
        lo, hi = _range(frm, to)
        plan = spec.plan
        shard = shard_of(key, spec.shards)
        order = list(dict.fromkeys(node.id for node, _, _ in plan.walk()))
        answers = await asyncio.gather(*(services.query(spec, key, nid) for nid in order))
        stored = services.store.result(spec.name, key)  # type: ignore[union-attr]
        nodes = []
        for nid, ans in zip(order, answers):
            node = plan.nodes[nid]
            held = ans is not None and bool(ans.timeline.starts)
            tl = ans.timeline if held else KeyTimeline()
            wm = ans.watermark if held else None
            nodes.append(TreeNodeOut(
                node_id=nid, workflow_id=node_workflow_id(spec, nid, shard), op=node.op, kind=node.kind.value,
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
        plan = spec.plan
        return KeyTimelineOut(timeline=name, key=key, node_id=plan.root, kind=plan.root_node.kind.value,
                              source=ans.source, closed=ans.closed, watermark=ans.watermark, from_=lo, to=hi,
                              spans=_spans(ans.timeline, ans.watermark, ans.closed, lo, hi))

    return app


def _range(frm: str | None, to: str | None) -> tuple[int | None, int | None]:
    lo, hi = _time(frm, "from"), _time(to, "to")
    if lo is not None and hi is not None and lo >= hi:
        raise ApiError(400, f"from ({lo}) must be before to ({hi}): the range is [from, to)")
    return lo, hi

