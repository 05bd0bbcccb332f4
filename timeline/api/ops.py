"""Operating the API: `/health` (the process answers), `/ready` (it can serve: the store opens,
Temporal answers), `/metrics` (Prometheus), and the request metrics behind it.

    timeline_api_requests_total{method,route,status}    requests answered
    timeline_api_request_seconds{method,route}          time to answer (histogram)
    timeline_intake_events_total{stream,outcome}        events posted to /v1/events (intake.py)

`route` is the route's path template (`/timelines/{name}/keys/{key}`), never the raw path:
one series per route, however many keys are asked for.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field

READY_TIMEOUT_S = 3.0

REQUESTS = Counter("timeline_api_requests", "HTTP requests answered by the API", ["method", "route", "status"])
REQUEST_SECONDS = Histogram("timeline_api_request_seconds", "Time to answer an HTTP request", ["method", "route"])


class HealthOut(BaseModel):
    status: str = Field(description="ok")


class CheckOut(BaseModel):
    ok: bool
    detail: str


class ReadyOut(BaseModel):
    ready: bool = Field(description="true: the store opens and Temporal answers")
    checks: dict[str, CheckOut]
    error: str | None = Field(default=None, description="when not ready: which check failed and why "
                                                        "(the API's error shape)")


router = APIRouter(tags=["operations"])


@router.get("/health", response_model=HealthOut, summary="Liveness: the API process answers")
async def health() -> HealthOut:
    return HealthOut(status="ok")


@router.get("/ready", response_model=ReadyOut, responses={503: {"model": ReadyOut}},
            summary="Readiness: the results store and Temporal are reachable (503 if not, saying which)")
async def ready(request: Request) -> JSONResponse:
    services = request.app.state.services
    checks: dict[str, CheckOut] = {}
    try:
        count = len(services.store.list())  # the store's connection belongs to the event loop's thread
        checks["store"] = CheckOut(ok=True, detail=f"{services.endpoints.store}: {count} timelines registered")
    except Exception as exc:  # noqa: BLE001 - reported in the answer
        checks["store"] = CheckOut(ok=False, detail=f"{services.endpoints.store}: {exc}")
    try:
        client = await asyncio.wait_for(services.temporal(), timeout=READY_TIMEOUT_S)
        await asyncio.wait_for(client.service_client.check_health(), timeout=READY_TIMEOUT_S)
        checks["temporal"] = CheckOut(ok=True, detail=f"{services.endpoints.temporal}: serving")
    except Exception as exc:  # noqa: BLE001 - reported in the answer
        reason = str(exc) or f"no answer within {READY_TIMEOUT_S:g}s"
        checks["temporal"] = CheckOut(ok=False, detail=f"{services.endpoints.temporal}: {reason}")
    failed = [f"{name}: {c.detail}" for name, c in checks.items() if not c.ok]
    out = ReadyOut(ready=not failed, checks=checks, error=f"not ready; {'; '.join(failed)}" if failed else None)
    return JSONResponse(status_code=200 if out.ready else 503, content=out.model_dump())


@router.get("/metrics", summary="Prometheus metrics of the API process", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _route_of(request: Request) -> str:
    route = request.scope.get("route")  # set by the router to the route that answered
    return getattr(route, "path", None) or "other"  # static files, unknown paths


def install_operations(app: FastAPI) -> None:
    """The /health, /ready and /metrics routes, and request metrics for every route."""
    app.include_router(router)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = _route_of(request)
            REQUESTS.labels(request.method, route, str(status)).inc()
            REQUEST_SECONDS.labels(request.method, route).observe(time.perf_counter() - started)
