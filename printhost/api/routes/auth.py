"""Login and token check."""

from __future__ import annotations

from datetime import datetime, timezone

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from printhost.api.auth.guard import Principal
from printhost.api.endpoint import EndpointSet
from printhost.api.errors import INVALID_CREDENTIALS, ApiError
from printhost.api.schemas import AUTH_CHECK, LOGIN_REQUEST, LOGIN_RESPONSE, read_json
from printhost.store.users import verify_credentials

endpoints = EndpointSet()


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@endpoints.route("POST", "/api/v1/auth/login", summary="Log in and get a token", role=None,
                 request=LOGIN_REQUEST, response=LOGIN_RESPONSE, errors=(401, 429))
async def login(request: Request, _: Principal | None) -> dict:
    """Exchange a user name and password for a bearer token.

    Wrong user names and wrong passwords get the same 401 after the same amount of
    work. Repeated failures for one user name or from one address lock further
    attempts out for a while (429 with Retry-After).
    """
    body = await read_json(request, LOGIN_REQUEST)
    throttle = request.app.state.throttle
    client = request.client.host if request.client else "unknown"
    keys = throttle.keys(body["username"], client)
    wait = throttle.retry_after(keys)
    if wait is not None:
        raise ApiError(429, f"Too many failed logins; try again in {wait} s", retry_after=wait)
    user = await run_in_threadpool(verify_credentials, request.app.state.store,
                                   body["username"], body["password"])
    if user is None:
        throttle.record_failure(keys)
        raise ApiError(401, INVALID_CREDENTIALS)
    # Only the user's own counter is cleared: a valid login must not wipe the failures
    # counted against an address that is guessing other users' passwords.
    throttle.record_success(keys[:1])
    token, expires = request.app.state.tokens.issue(user["username"], [user["role"]],
                                                    int(user.get("token_version", 0)))
    return {"token": token, "token_type": "bearer", "expires_at": iso(expires)}


@endpoints.route("GET", "/api/v1/auth/check", summary="Check a token", role="viewer",
                 response=AUTH_CHECK)
async def check(request: Request, principal: Principal | None) -> dict:
    """Tell whether the bearer token is valid, and whose it is."""
    assert principal is not None
    return {"valid": True, "username": principal.username, "roles": [principal.role],
            "expires_at": iso(principal.expires_at)}
