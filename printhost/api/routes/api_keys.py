"""API keys for machine clients, managed by admins.

A client sends its key as `X-Api-Key: phk_...` instead of a bearer token and gets the
key's role. The key is shown once, when it is created; only a digest is stored.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from printhost.api.auth.guard import Principal
from printhost.api.endpoint import EndpointSet
from printhost.api.schemas import RESULT_OK, read_json
from printhost.api.schemas_auth import API_KEY_CREATE_REQUEST, API_KEY_CREATED, API_KEY_LIST

endpoints = EndpointSet()


@endpoints.route("GET", "/api/v1/api_keys", summary="List API keys", role="admin",
                 response=API_KEY_LIST)
async def list_keys(request: Request, _: Principal | None) -> dict:
    """Every key's id, name, role, creator and expiry; never the key itself."""
    return {"api_keys": await request.app.state.auth.list_api_keys()}


@endpoints.route("POST", "/api/v1/api_keys", summary="Create an API key", role="admin",
                 request=API_KEY_CREATE_REQUEST, response=API_KEY_CREATED, status=201)
async def create_key(request: Request, principal: Principal | None) -> JSONResponse:
    """Creates a key with the given role. The answer's `key` is the only time the key is
    shown: store it in the client right away."""
    body = await read_json(request, API_KEY_CREATE_REQUEST)
    assert principal is not None
    key, record = await request.app.state.auth.create_api_key(
        body["name"], body["role"], body.get("expires_in_days"), principal.username)
    return JSONResponse({**record, "key": key}, status_code=201)


@endpoints.route("DELETE", "/api/v1/api_keys/{key_id}", summary="Revoke an API key",
                 role="admin", response=RESULT_OK, errors=(404,))
async def revoke_key(request: Request, principal: Principal | None) -> dict:
    """The key stops working at once. 404 for an unknown id."""
    assert principal is not None
    await request.app.state.auth.revoke_api_key(request.path_params["key_id"],
                                                principal.username)
    return {"result": "ok"}
