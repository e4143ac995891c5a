"""Pure-ASGI middleware: request ids and the access log, CORS, body size limits and a
last-resort error boundary.

Pure ASGI (rather than BaseHTTPMiddleware) so that uploads stream through without
being buffered and the limits apply while bytes arrive, not after. From the outside
in: `RequestContextMiddleware` (request id, one log record per request),
`CorsMiddleware`, `StartupGate` (503 while the service starts), `ErrorBoundaryMiddleware`,
`BodyLimitMiddleware`, then the app.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Callable, Iterable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from printhost.api.context import (REQUEST_ID_HEADER, SCOPE_KEY, RequestContext,
                                   new_request_id, request_id_of, sane_request_id)
from printhost.api.errors import ApiError, INTERNAL_ERROR, ORIGIN_NOT_ALLOWED, error_response

log = logging.getLogger("printhost.api")
access_log = logging.getLogger("printhost.api.access")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class RequestContextMiddleware:
    """Outermost layer: a request id for every request, and one log record per request.

    The id is the client's `X-Request-Id` if it is sane (short, no odd characters),
    else a fresh random one; it is echoed in the `X-Request-Id` response header and
    appears in every log line about the request. The record, logged to
    `printhost.api.access` as one JSON object (and as `record.access` for log
    handlers), holds the method, the route template (never the raw path or query, so
    a file name or a token in a URL never reaches the log), the status, the duration,
    the request id, the client address and the user once the request authenticated.
    `log_requests` is "all", "errors" (status 400 and above) or "off".
    """

    def __init__(self, app: ASGIApp, log_requests: str = "all") -> None:
        self.app = app
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = RequestContext(sane_request_id(_header(scope, b"x-request-id")) or new_request_id(),
                             scope.get("method", ""))
        scope[SCOPE_KEY] = ctx
        scope.setdefault("state", {})
        id_header = (REQUEST_ID_HEADER.lower().encode(), ctx.request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                ctx.status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0].lower() != id_header[0]]
                headers.append(id_header)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.log_requests == "all" or (
                    self.log_requests == "errors" and (ctx.status or 500) >= 400):
                self._log(scope, ctx)

    @staticmethod
    def _log(scope: Scope, ctx: RequestContext) -> None:
        if ctx.route is None:
            ctx.route = getattr(scope.get("route"), "path", None)
        if ctx.user is None:
            principal = scope.get("state", {}).get("principal")
            ctx.user = getattr(principal, "username", None)
        client = scope.get("client")
        record = {
            "event": "request",
            "request_id": ctx.request_id,
            "method": ctx.method,
            "route": ctx.route,
            "status": ctx.status if ctx.status is not None else 500,
            "duration_ms": round((time.perf_counter() - ctx.started) * 1000.0, 2),
            "user": ctx.user,
            "client": client[0] if client else None,
        }
        access_log.info("%s", json.dumps(record, separators=(",", ":")),
                        extra={"access": record})


class CorsMiddleware:
    """CORS for an explicit list of origins (none by default).

    A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from a
    listed origin, for a method the API has and only headers it reads, gets 204 with
    the CORS headers; any other preflight gets a 403 error object and no CORS headers,
    so the browser does not send the real request. Other requests from a listed origin
    get `Access-Control-Allow-Origin`; from any other origin they are answered as usual
    but without CORS headers, so a browser keeps the answer from the page. Tokens are
    sent in headers, never cookies, so credentials mode is not offered.
    """

    ALLOWED_HEADERS = ("authorization", "content-type", "x-api-key", "x-request-id")
    EXPOSED_HEADERS = ("X-Request-Id", "Retry-After", "WWW-Authenticate", "Allow", "ETag")

    def __init__(self, app: ASGIApp, origins: Iterable[str], methods: Iterable[str],
                 max_age_s: int) -> None:
        self.app = app
        self.origins = {o.lower() for o in origins}
        self.methods = sorted({m.upper() for m in methods} | {"GET", "HEAD"})
        self.max_age_s = max_age_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = origin.lower() in self.origins
        requested_method = _header(scope, b"access-control-request-method")
        if scope.get("method") == "OPTIONS" and requested_method is not None:
            await self._preflight(origin, allowed, requested_method,
                                  _header(scope, b"access-control-request-headers"))(
                scope, receive, send)
            return
        extra = [(b"vary", b"Origin")]
        if allowed:
            extra += [(b"access-control-allow-origin", origin.encode("latin-1")),
                      (b"access-control-expose-headers",
                       ", ".join(self.EXPOSED_HEADERS).encode())]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _preflight(self, origin: str, allowed: bool, method: str,
                   requested_headers: str | None) -> Response:
        vary = {"Vary": "Origin"}
        if not allowed:
            return error_response(403, ORIGIN_NOT_ALLOWED, headers=vary)
        if method.upper() not in self.methods:
            return error_response(403, f"Method {method[:16]!r} is not allowed for "
                                       "cross-origin requests", headers=vary)
        for name in (requested_headers or "").split(","):
            name = name.strip().lower()
            if name and name not in self.ALLOWED_HEADERS:
                return error_response(403, f"Header {name[:64]!r} is not allowed for "
                                           "cross-origin requests", headers=vary)
        return Response(status_code=204, headers={
            **vary,
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": ", ".join(self.methods),
            "Access-Control-Allow-Headers": ", ".join(self.ALLOWED_HEADERS),
            "Access-Control-Max-Age": str(self.max_age_s),
        })


class StartupGate:
    """While the service starts, every request is answered 503 with what it is doing.

    The supervisor sets `phase` (e.g. "compiling motion kernels (first start)") while
    it starts the simulated MCU, the control process and mDNS, and sets it to None at
    the moment it logs `ready`; until then the body is `{"error": "starting: <phase>"}`
    with `Retry-After: 1`, for health as for everything else. None from the start
    (the default) lets every request through.
    """

    def __init__(self, app: ASGIApp, phase: str | None = None) -> None:
        self.app = app
        self.phase = phase

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        phase = self.phase
        if phase is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await error_response(503, f"starting: {phase}", headers={"Retry-After": "1"})(
            scope, receive, send)


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
                route = getattr(scope.get("route"), "path", None) or "<unmatched>"
                log.exception("unhandled error in %s %s (request %s)", scope.get("method"),
                              route, request_id_of(scope))
                await error_response(500, INTERNAL_ERROR)(scope, receive, send)
