"""Pure-ASGI middleware: body size limits and a last-resort error boundary.

Pure ASGI (rather than BaseHTTPMiddleware) so that uploads stream through without
being buffered and the limits apply while bytes arrive, not after.
"""

from __future__ import annotations

import logging
from typing import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from printhost.api.errors import ApiError, INTERNAL_ERROR, error_response

log = logging.getLogger("printhost.api")


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body too large (limit {limit} bytes)")


class BodyLimitMiddleware:
    """Refuse bodies over a per-route limit: early by Content-Length, else while streaming.

    `limit_for(scope)` returns the byte limit for a request, so uploads can have a
    larger limit than JSON endpoints.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await error_response(400, "Invalid Content-Length header")(scope, receive, send)
                    return
                if declared > limit:
                    await error_response(413, f"Request body too large (limit {limit} bytes)")(
                        scope, receive, send)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


class ErrorBoundaryMiddleware:
    """Outermost layer: whatever escapes, the client gets a JSON 500 and no traceback.

    Starlette's own server-error layer answers with our handler and then re-raises for
    the server to log; this layer logs once and stops the exception there.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if scope["type"] != "http":
                raise
            if not started:
                log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
                await error_response(500, INTERNAL_ERROR)(scope, receive, send)
