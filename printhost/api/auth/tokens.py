"""Signed tokens (JWT, HS256): access tokens, refresh tokens, and the keys that sign them.

Only the algorithms in `ALLOWED_ALGORITHMS` (HS256) are ever accepted, whatever the
token header claims: accepting the header's choice is how "alg: none" and RS/HS
key-confusion forgeries work. The header may only name `alg`, `typ` and `kid`; the
`kid` picks the verification key from a `KeyRing`, so a signing key can be replaced
while tokens signed with the old one stay valid until they expire (docs/security.md,
"Rotating the signing key"). An unknown `kid` is refused without trying other keys.

Every claim the API relies on is required and type-checked: `sub`, `roles`, `ver`
(the user's token version: bumping it revokes every older token of that user),
`iss`, `aud`, `iat`, `nbf`, `exp`, `jti` (the token's id, for the deny-list), `sid`
(the login session, shared by the access and refresh tokens of one login and its
refreshes) and `typ` (`access` or `refresh`, so a refresh token is never accepted
where an access token is expected, nor the other way round). Times are checked
against the injected clock with no leeway (the issuer and the verifier are the same
host).

Revocation needs the store (the user's version, the deny-list) and is therefore
checked by the caller, not here.
"""

from __future__ import annotations

import collections
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import jwt

__all__ = ["TokenService", "TokenPair", "InvalidToken", "KeyRing", "SigningKey", "key_id",
           "ALGORITHM", "ALLOWED_ALGORITHMS", "REQUIRED_CLAIMS", "ACCESS", "REFRESH"]

ALGORITHM = "HS256"
ALLOWED_ALGORITHMS = (ALGORITHM,)
ACCESS = "access"
REFRESH = "refresh"
REQUIRED_CLAIMS = ("sub", "roles", "ver", "iss", "aud", "iat", "nbf", "exp", "jti", "sid", "typ")
ALLOWED_HEADERS = frozenset({"alg", "typ", "kid"})
MIN_SECRET_BYTES = 32
#: Verified access tokens kept by their text (`TokenService.decode`).
VERIFIED_KEPT = 512


class InvalidToken(Exception):
    """The token must not be trusted; the message says why (for logs, not for clients)."""


def key_id(secret: bytes) -> str:
    """The `kid` of a signing secret: a fingerprint that names the key without revealing it.

    Derived, not stored, so every process that knows a secret agrees on its id (the
    service, the command line, a test forging tokens with the state directory's key).
    """
    return "k" + hashlib.sha256(b"printhost jwt kid\0" + secret).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    secret: bytes
    # Unix time after which tokens signed with this key are refused; None: no limit.
    accept_until: float | None = None

    @property
    def kid(self) -> str:
        return key_id(self.secret)


class KeyRing:
    """The key that signs new tokens and the older keys that still verify."""

    def __init__(self, current: bytes, previous: Iterable[SigningKey] = ()) -> None:
        if not isinstance(current, bytes) or len(current) < MIN_SECRET_BYTES:
            raise ValueError(f"token secret must be at least {MIN_SECRET_BYTES} bytes")
        self.current = SigningKey(current)
        self._keys: dict[str, SigningKey] = {}
        for key in previous:
            if len(key.secret) >= MIN_SECRET_BYTES:
                self._keys[key.kid] = key
        self._keys[self.current.kid] = self.current

    def lookup(self, kid: str, now: float) -> bytes | None:
        key = self._keys.get(kid)
        if key is None or (key.accept_until is not None and now >= key.accept_until):
            return None
        return key.secret

    def kids(self) -> list[str]:
        return list(self._keys)


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    access_expires: datetime
    refresh_token: str
    refresh_expires: datetime
    sid: str


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _utc(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


class TokenService:
    """Issues and checks tokens for one issuer.

    `secret` is one signing secret (bytes), a `KeyRing`, or a callable returning the
    current `KeyRing` (the service passes one that notices a rotated key on disk).
    Refresh tokens live `refresh_ttl_s` (default: 24 access-token lifetimes).
    """

    def __init__(self, secret: bytes | KeyRing | Callable[[], KeyRing], issuer: str, ttl_s: int,
                 clock: Callable[[], float] = time.time, refresh_ttl_s: int | None = None) -> None:
        self._verified: collections.OrderedDict[str, tuple[str, dict[str, Any]]] = \
            collections.OrderedDict()
        self._verified_lock = threading.Lock()
        if isinstance(secret, bytes):
            ring = KeyRing(secret)
            self._keys: Callable[[], KeyRing] = lambda: ring
        elif isinstance(secret, KeyRing):
            fixed = secret
            self._keys = lambda: fixed
        elif callable(secret):
            self._keys = secret
        else:
            raise ValueError("token secret must be bytes, a KeyRing or a callable")
        if not issuer:
            raise ValueError("token issuer must not be empty")
        if not _is_int(ttl_s) or ttl_s <= 0:
            raise ValueError("token ttl_s must be a positive integer")
        refresh_ttl_s = ttl_s * 24 if refresh_ttl_s is None else refresh_ttl_s
        if not _is_int(refresh_ttl_s) or refresh_ttl_s <= 0:
            raise ValueError("token refresh_ttl_s must be a positive integer")
        self.issuer = issuer
        self.ttl_s = ttl_s
        self.refresh_ttl_s = refresh_ttl_s
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    @property
    def keyring(self) -> KeyRing:
        return self._keys()

    def issue(self, username: str, roles: list[str], token_version: int, *,
              token_type: str = ACCESS, sid: str | None = None) -> tuple[str, datetime]:
        """Return a signed token and the moment (UTC) it expires."""
        if token_type not in (ACCESS, REFRESH):
            raise ValueError(f"unknown token type {token_type!r}")
        now = int(self._clock())
        expires = now + (self.ttl_s if token_type == ACCESS else self.refresh_ttl_s)
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
            "sid": sid or secrets.token_urlsafe(12),
            "typ": token_type,
        }
        key = self._keys().current
        token = jwt.encode(claims, key.secret, algorithm=ALGORITHM,
                           headers={"kid": key.kid, "typ": "JWT"})
        return token, _utc(expires)

    def issue_pair(self, username: str, roles: list[str], token_version: int,
                   sid: str | None = None) -> TokenPair:
        """An access token and a refresh token of one login session (`sid`)."""
        sid = sid or secrets.token_urlsafe(12)
        access, access_exp = self.issue(username, roles, token_version, sid=sid)
        refresh, refresh_exp = self.issue(username, roles, token_version, token_type=REFRESH,
                                          sid=sid)
        return TokenPair(access, access_exp, refresh, refresh_exp, sid)

    def decode(self, token: str, expected_type: str = ACCESS) -> dict[str, Any]:
        """Verify `token` and return its claims; raise InvalidToken for any defect.

        An access token comes with every request of an app, so its verified claims are
        kept by its exact text (the last VERIFIED_KEPT): the header, the signature and
        the issuer are checked once; the key (still accepted?) and the times are checked
        again on every use."""
        if not isinstance(token, str) or not token:
            raise InvalidToken("no token")
        if expected_type == ACCESS:
            with self._verified_lock:
                hit = self._verified.get(token)
            if hit is not None:
                kid, claims = hit
                now = self._clock()
                if self._keys().lookup(kid, now) is None:
                    with self._verified_lock:
                        self._verified.pop(token, None)
                    raise InvalidToken(f"unknown or retired key id {kid[:40]!r}")
                self._check_claims(claims, expected_type, now)
                return dict(claims)
        claims = self._decode(token, expected_type)
        kid = claims.pop("_kid")
        if expected_type == ACCESS:
            with self._verified_lock:
                self._verified[token] = (kid, claims)
                while len(self._verified) > VERIFIED_KEPT:
                    self._verified.popitem(last=False)
        return dict(claims)

    def _decode(self, token: str, expected_type: str) -> dict[str, Any]:
        if not isinstance(token, str) or not token:
            raise InvalidToken("no token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise InvalidToken(f"algorithm {alg!r} is not accepted")
        extra = set(header) - ALLOWED_HEADERS
        if extra:
            raise InvalidToken(f"header members not accepted: {sorted(extra)}")
        if "typ" in header and header["typ"] != "JWT":
            raise InvalidToken("header typ must be JWT")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("no key id")
        now = self._clock()
        secret = self._keys().lookup(kid, now)
        if secret is None:
            raise InvalidToken(f"unknown or retired key id {kid[:40]!r}")
        try:
            claims = jwt.decode(
                token, secret, algorithms=list(ALLOWED_ALGORITHMS),
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
        self._check_claims(claims, expected_type, now)
        claims["_kid"] = kid
        return claims

    def _check_claims(self, claims: dict[str, Any], expected_type: str, now: float) -> None:
        # PyJWT accepts an `aud` list that merely contains the issuer; be exact.
        if claims["iss"] != self.issuer or claims["aud"] != self.issuer:
            raise InvalidToken("wrong issuer or audience")
        if claims["typ"] != expected_type:
            raise InvalidToken(f"a {claims['typ']!r} token where {expected_type!r} is expected")
        sub, roles = claims["sub"], claims["roles"]
        if not isinstance(sub, str) or not sub:
            raise InvalidToken("claim 'sub' must be a non-empty string")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise InvalidToken("claim 'roles' must be a list of strings")
        if not _is_int(claims["ver"]):
            raise InvalidToken("claim 'ver' must be an integer")
        for name in ("jti", "sid"):
            if not isinstance(claims[name], str) or not claims[name] or len(claims[name]) > 64:
                raise InvalidToken(f"claim {name!r} must be a short non-empty string")
        for name in ("iat", "nbf", "exp"):
            if not _is_number(claims[name]):
                raise InvalidToken(f"claim {name!r} must be a number")
        if now >= claims["exp"]:
            raise InvalidToken("token has expired")
        if now < claims["nbf"]:
            raise InvalidToken("token is not valid yet")
        if now < claims["iat"]:
            raise InvalidToken("token was issued in the future")
