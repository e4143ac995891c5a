"""The one definition of API errors.

Every error response, whichever layer produces it (validation, auth, a route, the
router's 404/405, an unexpected exception), is built here, so clients always get
`{"error": "<one clear sentence>"}` plus only the documented extras (`fields` on 400,
`retry_after` with a `Retry-After` header on 429), and never a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from printhost.api.context import request_id_of

log = logging.getLogger("printhost.api")

INTERNAL_ERROR = "Internal error"
INVALID_TOKEN = "Invalid token"
INVALID_CREDENTIALS = "Invalid credentials"
INSUFFICIENT_PERMISSIONS = "Insufficient permissions"
ORIGIN_NOT_ALLOWED = "Cross-origin requests from this origin are not allowed"

# Messages for statuses that the router and server produce on their own.
_DEFAULT_MESSAGES = {
    400: "Bad request",
    401: INVALID_TOKEN,
    403: INSUFFICIENT_PERMISSIONS,
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported content type",
    429: "Too many requests",
    500: INTERNAL_ERROR,
    503: "Service unavailable",
    507: "Insufficient storage",
}

# Each status code's meaning, for the OpenAPI document.
STATUS_DESCRIPTIONS = {
    400: "Malformed JSON, wrong types, missing or unknown fields (see `fields`)",
    401: "Missing, malformed, expired, not-yet-valid, revoked or wrongly signed token, an "
         "unknown or expired API key, or wrong credentials",
    403: "Valid token without the required role (or a CORS preflight from an origin, "
         "with a method or with headers that are not allowed)",
    404: "Unknown route or resource",
    405: "Method not allowed on this route",
    409: "The request conflicts with the printer's state",
    413: "Body or upload larger than the configured limit, or JSON nested too deeply",
    415: "Wrong content type",
    429: "Rate limit or login lockout; retry after `retry_after` seconds (also in the "
         "`Retry-After` header)",
    500: "Internal error; details are only in the service log",
    503: "The service is still starting (`starting: <what it is doing>`), or the control "
         "process or MCU is unavailable (for a login: the external authentication "
         "service)",
    507: "The upload would leave less free space in the state directory than "
         "`server.health_min_free_mb`; nothing of it is kept",
}


class ApiError(Exception):
    """Raise anywhere in a request to answer with an error object."""

    def __init__(self, status: int, message: str | None = None, *,
                 fields: dict[str, str] | None = None, retry_after: int | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(message or _DEFAULT_MESSAGES.get(status, "Error"))
        self.status = status
        self.message = message or _DEFAULT_MESSAGES.get(status, "Error")
        self.fields = fields
        self.retry_after = retry_after
        # Documented members besides `error` (the existing job's `job_id` on a 409).
        self.extra = extra


def error_response(status: int, message: str | None = None, *,
                   fields: dict[str, str] | None = None,
                   retry_after: int | None = None,
                   headers: dict[str, str] | None = None,
                   extra: dict[str, Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message or _DEFAULT_MESSAGES.get(status, "Error")}
    if extra:
        body.update({k: v for k, v in extra.items() if k not in ("error", "fields")})
    hdrs = dict(headers or {})
    if fields:
        body["fields"] = fields
    if retry_after is not None:
        body["retry_after"] = retry_after
        hdrs["Retry-After"] = str(retry_after)
    if status == 401:
        hdrs.setdefault("WWW-Authenticate", 'Bearer realm="printhost"')
    return JSONResponse(body, status_code=status, headers=hdrs)


def from_api_error(exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.message, fields=exc.fields, retry_after=exc.retry_after,
                          extra=exc.extra)


async def handle_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return from_api_error(exc)


async def handle_http_exception(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own 404/405 (unknown routes and methods) in our error shape."""
    assert isinstance(exc, HTTPException)
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
    return error_response(exc.status_code, None, headers=headers)


async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    route = getattr(request.scope.get("route"), "path", None) or "<unmatched>"
    log.error("unhandled error in %s %s (request %s)", request.method, route,
              request_id_of(request.scope), exc_info=exc)
    return error_response(500, INTERNAL_ERROR)


async def handle_client_disconnect(request: Request, exc: Exception) -> Response:
    """The client went away before its request body was complete (a closed tab, a lost
    link, the body-idle timeout): one line, no traceback; nobody is there to answer."""
    route = getattr(request.scope.get("route"), "path", None) or "<unmatched>"
    log.info("client %s disconnected during %s %s (request %s)",
             request.client.host if request.client else "?", request.method, route,
             request_id_of(request.scope))
    # 499 (as nginx logs it): in the access log only, the client never sees it.
    return Response(status_code=499)


EXCEPTION_HANDLERS = {
    ClientDisconnect: handle_client_disconnect,
    ApiError: handle_api_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
