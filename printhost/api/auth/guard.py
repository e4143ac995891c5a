"""Who is calling, and may they? Used by every protected route.

A token is accepted only if it decodes (signature, expiry, issuer, audience), its user
still exists, and its `ver` claim equals the user's current token version: changing a
password or revoking tokens bumps the version and so invalidates every older token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from printhost.api.auth.tokens import InvalidToken, TokenService
from printhost.api.errors import INSUFFICIENT_PERMISSIONS, INVALID_TOKEN, ApiError
from printhost.store.db import Store
from printhost.store.users import get_user, role_grants


@dataclass(frozen=True)
class Principal:
    username: str
    role: str
    expires_at: datetime
    claims: dict


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(401, INVALID_TOKEN)
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise ApiError(401, INVALID_TOKEN)
    return token


async def authenticate(request: Request, required_role: str) -> Principal:
    tokens: TokenService = request.app.state.tokens
    store: Store = request.app.state.store
    token = bearer_token(request)
    try:
        claims = tokens.decode(token)
    except InvalidToken:
        raise ApiError(401, INVALID_TOKEN) from None
    user = await run_in_threadpool(get_user, store, claims["sub"])
    if user is None or int(user.get("token_version", 0)) != int(claims.get("ver", -1)):
        raise ApiError(401, INVALID_TOKEN)
    role = user["role"]
    if not role_grants(role, required_role):
        raise ApiError(403, INSUFFICIENT_PERMISSIONS)
    expires = datetime.fromtimestamp(int(claims["exp"]), tz=timezone.utc)
    principal = Principal(user["username"], role, expires, claims)
    request.state.principal = principal
    return principal
