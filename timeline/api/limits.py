"""The request body limit (MAX_REQUEST_BYTES), enforced before a body is read whole.

A pure ASGI middleware: a declared Content-Length over the limit is answered
413 at once, without reading anything; a body without one (chunked) is counted
as it arrives and refused as soon as it passes the limit. Either way the
answer is the API's JSON error shape."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from timeline.dsl.limits import MAX_REQUEST_BYTES


def too_large_message(limit: int = MAX_REQUEST_BYTES) -> str:
    return (f"the request body is larger than {limit:,} bytes, the limit: an expression is at most "
            f"a few kilobytes, so check what is being sent")


class RequestBodyLimit:
    def __init__(self, app: ASGIApp, limit: int = MAX_REQUEST_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.limit
            except ValueError:
                too_big = False  # the server refuses a malformed length itself
            if too_big:
                await self._refuse(send)
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # FastAPI passes an HTTPException raised while reading the body on to the
                    # app's handler, which answers in the JSON error shape.
                    raise HTTPException(413, too_large_message(self.limit))
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"error": too_large_message(self.limit)}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
