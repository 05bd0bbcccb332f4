"""Every 4xx/5xx answer in one JSON shape: `{"error": "what is wrong and how to fix it", ...}`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError, RPCStatusCode

from timeline.api.models import ErrorBody
from timeline.dsl.errors import DslError, TimelineError
from timeline.runtime.control import ServiceUnavailable

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
