"""Who is calling, and may they? Used by every protected route.

A request authenticates with exactly one of

* `Authorization: Bearer <access token>`: accepted only if it verifies (algorithm,
  key id, signature, type, issuer, audience, times), its user still exists and is
  active, its `ver` equals the user's current token version, and neither its `jti`
  nor its session `sid` is on the deny-list;
* `X-Api-Key: phk_...`: accepted if a key with that digest exists and has not
  expired.

The role is then checked against the route's single declaration (`EndpointSet.route(
..., role=...)`). For tokens the role is read from the user's current record, not
from the token, so a demotion takes effect at once. Everything is decided in
`AuthService` (core.py); this module maps it onto the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.requests import Request

from printhost.api.errors import INSUFFICIENT_PERMISSIONS, INVALID_TOKEN, ApiError
from printhost.store.users import role_grants

API_KEY_HEADER = "x-api-key"
TOKEN = "token"
API_KEY = "api_key"


@dataclass(frozen=True)
class Principal:
    username: str
    role: str
    expires_at: datetime
    claims: dict[str, Any] = field(default_factory=dict)
    kind: str = TOKEN
    key_id: str | None = None


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(401, INVALID_TOKEN)
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise ApiError(401, INVALID_TOKEN)
    return token


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def authenticate(request: Request, required_role: str) -> Principal:
    auth = request.app.state.auth
    api_key = request.headers.get(API_KEY_HEADER)
    if api_key is not None:
        if request.headers.get("authorization") is not None:
            raise ApiError(401, "Send either a bearer token or an API key, not both")
        principal = await auth.principal_from_api_key(api_key)
    else:
        principal = await auth.principal_from_token(bearer_token(request))
    # Known before the role check, so the access log names who was refused (403).
    request.state.principal = principal
    if not role_grants(principal.role, required_role):
        raise ApiError(403, INSUFFICIENT_PERMISSIONS)
    return principal
