"""User management for admins: list, add, change role, deactivate, reset a password.

Available with the "store" backend; with a read-only backend (file, http) the
changing endpoints answer 409 and users are managed at their source.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from printhost.api.auth.guard import Principal
from printhost.api.endpoint import EndpointSet
from printhost.api.errors import ApiError
from printhost.api.schemas import RESULT_OK, read_json
from printhost.api.schemas_auth import (PASSWORD_RESET_REQUEST, USER, USER_CREATE_REQUEST,
                                        USER_LIST, USER_UPDATE_REQUEST)

endpoints = EndpointSet()


def _name(request: Request) -> str:
    return request.path_params["username"]


@endpoints.route("GET", "/api/v1/users", summary="List users", role="admin", response=USER_LIST)
async def list_users(request: Request, _: Principal | None) -> dict:
    """Every user with role and active flag, never a password hash. With the http backend,
    the users that have logged in so far."""
    return {"users": await request.app.state.auth.list_users()}


@endpoints.route("POST", "/api/v1/users", summary="Add a user", role="admin",
                 request=USER_CREATE_REQUEST, response=USER, status=201, errors=(409,))
async def add_user(request: Request, principal: Principal | None) -> JSONResponse:
    """Creates an active user. 409 when the name is taken (ignoring case) or users are
    managed outside printhost."""
    body = await read_json(request, USER_CREATE_REQUEST)
    assert principal is not None
    record = await request.app.state.auth.add_user(body["username"], body["role"],
                                                   body["password"], principal.username)
    return JSONResponse(record, status_code=201)


@endpoints.route("PATCH", "/api/v1/users/{username}", summary="Change a user's role or deactivate them",
                 role="admin", request=USER_UPDATE_REQUEST, response=USER, errors=(404, 409))
async def update_user(request: Request, principal: Principal | None) -> dict:
    """`role` changes the role; `"active": false` deactivates the user (they can no longer
    log in), `true` reactivates them. Any change revokes the user's tokens. 409 for a
    change that would leave no active admin, or users managed outside printhost."""
    body = await read_json(request, USER_UPDATE_REQUEST)
    if "role" not in body and "active" not in body:
        raise ApiError(400, "Invalid request body",
                       fields={"role": "give role, active or both"})
    assert principal is not None
    return await request.app.state.auth.update_user(_name(request), body.get("role"),
                                                    body.get("active"), principal.username)


@endpoints.route("POST", "/api/v1/users/{username}/password", summary="Reset a user's password",
                 role="admin", request=PASSWORD_RESET_REQUEST, response=RESULT_OK,
                 errors=(404, 409))
async def reset_password(request: Request, principal: Principal | None) -> dict:
    """Sets a new password for the user and revokes all of their tokens."""
    body = await read_json(request, PASSWORD_RESET_REQUEST)
    assert principal is not None
    await request.app.state.auth.reset_password(_name(request), body["password"],
                                                principal.username)
    return {"result": "ok"}
