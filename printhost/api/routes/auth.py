"""Login, token refresh and check, logout, password change and first-boot setup."""

from __future__ import annotations

from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse

from printhost.api.auth.guard import Principal, client_address
from printhost.api.auth.tokens import TokenPair
from printhost.api.endpoint import EndpointSet
from printhost.api.schemas import AUTH_CHECK, EMPTY, LOGIN_REQUEST, RESULT_OK, read_json
from printhost.api.schemas_auth import (PASSWORD_CHANGE_REQUEST, REFRESH_REQUEST, SETUP_REQUEST,
                                        SETUP_STATUS, TOKEN_PAIR)

endpoints = EndpointSet()


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def pair_body(pair: TokenPair) -> dict:
    return {"token": pair.access_token, "token_type": "bearer",
            "expires_at": iso(pair.access_expires), "refresh_token": pair.refresh_token,
            "refresh_expires_at": iso(pair.refresh_expires)}


@endpoints.route("POST", "/api/v1/auth/login", summary="Log in and get tokens", role=None,
                 request=LOGIN_REQUEST, response=TOKEN_PAIR, errors=(401, 429, 503))
async def login(request: Request, _: Principal | None) -> dict:
    """Exchange a user name and password for an access token and a refresh token.

    Wrong user names and wrong passwords get the same 401 after the same amount of
    work. Repeated failures for a user name at an address, for a user name, or from
    an address lock further attempts out, each lockout twice as long as the one before
    (429 with Retry-After). 503 when an external authentication service (auth.backend
    = http) does not answer.
    """
    body = await read_json(request, LOGIN_REQUEST)
    pair = await request.app.state.auth.login(body["username"], body["password"],
                                              client_address(request))
    return pair_body(pair)


@endpoints.route("POST", "/api/v1/auth/refresh", summary="Exchange a refresh token for new tokens",
                 role=None, request=REFRESH_REQUEST, response=TOKEN_PAIR, errors=(401,))
async def refresh(request: Request, _: Principal | None) -> dict:
    """Returns a new access token and a new refresh token of the same session. Each refresh
    token works once: presenting a used one again answers 401 and revokes the whole
    session (it was copied). 401 also when the user is gone, deactivated, logged out
    everywhere or changed their password."""
    body = await read_json(request, REFRESH_REQUEST)
    return pair_body(await request.app.state.auth.refresh(body["refresh_token"]))


@endpoints.route("GET", "/api/v1/auth/check", summary="Check a token or API key", role="viewer",
                 response=AUTH_CHECK)
async def check(request: Request, principal: Principal | None) -> dict:
    """Tell whether the bearer token (or API key) is valid, and whose it is. For an API key,
    `username` is `api-key:<name>` and `expires_at` the key's expiry."""
    assert principal is not None
    return {"valid": True, "username": principal.username, "roles": [principal.role],
            "expires_at": iso(principal.expires_at)}


@endpoints.route("POST", "/api/v1/auth/logout", summary="Revoke this token and its session",
                 role="viewer", request=EMPTY, response=RESULT_OK)
async def logout(request: Request, principal: Principal | None) -> dict:
    """Revokes the bearer token and every token of its login session (the refresh token
    included) until they would have expired. Other sessions of the user stay valid.
    403 with an API key (revoke keys with `DELETE /api/v1/api_keys/{key_id}`)."""
    await read_json(request, EMPTY, allow_empty=True)
    assert principal is not None
    await request.app.state.auth.logout(principal)
    return {"result": "ok"}


@endpoints.route("POST", "/api/v1/auth/logout_all", summary="Revoke every token of this user",
                 role="viewer", request=EMPTY, response=RESULT_OK)
async def logout_all(request: Request, principal: Principal | None) -> dict:
    """"Log out everywhere": every access and refresh token of the user, on every device,
    stops working, this one included. 403 with an API key."""
    await read_json(request, EMPTY, allow_empty=True)
    assert principal is not None
    await request.app.state.auth.logout_all(principal)
    return {"result": "ok"}


@endpoints.route("POST", "/api/v1/auth/password", summary="Change one's own password",
                 role="viewer", request=PASSWORD_CHANGE_REQUEST, response=TOKEN_PAIR,
                 errors=(401, 409, 429))
async def change_password(request: Request, principal: Principal | None) -> dict:
    """Needs the current password (checked and throttled like a login: 401, 429). The
    change revokes every token of the user; the answer carries a new token pair for this
    client. 409 when users are managed outside printhost (auth.backend file or http);
    403 with an API key."""
    body = await read_json(request, PASSWORD_CHANGE_REQUEST)
    assert principal is not None
    pair = await request.app.state.auth.change_password(
        principal, body["current_password"], body["new_password"], client_address(request))
    return pair_body(pair)


@endpoints.route("GET", "/api/v1/auth/setup", summary="Is first-boot setup pending?", role=None,
                 response=SETUP_STATUS)
async def setup_status(request: Request, _: Principal | None) -> dict:
    """No authentication. While no user exists, `setup_required` is true and a setup code
    is valid until `expires_at`; the code is in the service log and in
    `<state dir>/setup_code.json`. An expired code is replaced (and the new one logged)
    when this is asked."""
    return await request.app.state.auth.setup_status()


@endpoints.route("POST", "/api/v1/auth/setup", summary="Create the first admin with the setup code",
                 role=None, request=SETUP_REQUEST, response=TOKEN_PAIR, status=201,
                 errors=(401, 409, 429))
async def setup(request: Request, _: Principal | None) -> JSONResponse:
    """No authentication; works once. Creates the first user, an admin, if `code` is the
    current setup code, and logs them in. 401 `Invalid setup code` for a wrong, expired
    or used code; 409 once a user exists; 429 after repeated wrong codes."""
    body = await read_json(request, SETUP_REQUEST)
    pair = await request.app.state.auth.complete_setup(body["code"], body["username"],
                                                       body["password"], client_address(request))
    return JSONResponse(pair_body(pair), status_code=201)
