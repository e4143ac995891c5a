"""Signed login tokens (JWT, HS256).

Only HS256 is ever accepted, whatever the token header claims: accepting the
header's choice is how "alg: none" and RS/HS key-confusion forgeries work. Every
claim the API relies on is required and type-checked, and times are checked against
the injected clock with no leeway (the issuer and the verifier are the same host).

Tokens are stateless, so revocation works through `ver`: the user record holds a
`token_version` that is bumped on password change or explicit revocation, and the
caller rejects a token whose `ver` no longer matches. That check needs the store and
is therefore not done here.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import jwt

__all__ = ["TokenService", "InvalidToken", "ALGORITHM", "REQUIRED_CLAIMS"]

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("sub", "roles", "ver", "iss", "aud", "iat", "nbf", "exp", "jti")
MIN_SECRET_BYTES = 32


class InvalidToken(Exception):
    """The token must not be trusted; the message says why (for logs, not for clients)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class TokenService:
    """Issues and checks tokens for one issuer with one secret."""

    def __init__(self, secret: bytes, issuer: str, ttl_s: int,
                 clock: Callable[[], float] = time.time) -> None:
        if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"token secret must be at least {MIN_SECRET_BYTES} bytes")
        if not issuer:
            raise ValueError("token issuer must not be empty")
        if not _is_int(ttl_s) or ttl_s <= 0:
            raise ValueError("token ttl_s must be a positive integer")
        self._secret = secret
        self.issuer = issuer
        self.ttl_s = ttl_s
        self._clock = clock

    def issue(self, username: str, roles: list[str], token_version: int) -> tuple[str, datetime]:
        """Return a signed token and the moment (UTC) it expires."""
        now = int(self._clock())
        expires = now + self.ttl_s
        claims = {
            "sub": username,
            "roles": list(roles),
            "ver": int(token_version),
            "iss": self.issuer,
            "aud": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": expires,
            "jti": secrets.token_urlsafe(16),
        }
        token = jwt.encode(claims, self._secret, algorithm=ALGORITHM)
        return token, datetime.fromtimestamp(expires, tz=timezone.utc)

    def decode(self, token: str) -> dict[str, Any]:
        """Verify `token` and return its claims; raise InvalidToken for any defect."""
        if not isinstance(token, str) or not token:
            raise InvalidToken("no token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidToken(f"algorithm {header.get('alg')!r} is not accepted")
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM],
                issuer=self.issuer, audience=self.issuer,
                # Time claims are checked below against self._clock; PyJWT would use
                # the wall clock, which tests and simulated time cannot steer.
                options={"verify_signature": True, "verify_exp": False,
                         "verify_nbf": False, "verify_iat": False,
                         "verify_iss": True, "verify_aud": True,
                         "require": list(REQUIRED_CLAIMS)},
            )
        except jwt.InvalidSignatureError:
            raise InvalidToken("bad signature") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc) or type(exc).__name__) from None
        except (ValueError, TypeError) as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        self._check_claims(claims)
        return claims

    def _check_claims(self, claims: dict[str, Any]) -> None:
        # PyJWT accepts an `aud` list that merely contains the issuer; be exact.
        if claims["iss"] != self.issuer or claims["aud"] != self.issuer:
            raise InvalidToken("wrong issuer or audience")
        sub, roles = claims["sub"], claims["roles"]
        if not isinstance(sub, str) or not sub:
            raise InvalidToken("claim 'sub' must be a non-empty string")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise InvalidToken("claim 'roles' must be a list of strings")
        if not _is_int(claims["ver"]):
            raise InvalidToken("claim 'ver' must be an integer")
        if not isinstance(claims["jti"], str) or not claims["jti"]:
            raise InvalidToken("claim 'jti' must be a non-empty string")
        for name in ("iat", "nbf", "exp"):
            if not _is_number(claims[name]):
                raise InvalidToken(f"claim {name!r} must be a number")
        now = self._clock()
        if now >= claims["exp"]:
            raise InvalidToken("token has expired")
        if now < claims["nbf"]:
            raise InvalidToken("token is not valid yet")
        if now < claims["iat"]:
            raise InvalidToken("token was issued in the future")
