"""Helpers shared by the auth tests: a clock the test sets by hand, and JWTs built
without the library, as an attacker would build them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json


class Clock:
    """A callable clock (seconds) that only moves when a test sets `now`."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def b64json(obj) -> str:
    """JSON, base64url-encoded without padding (a JWT segment)."""
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def forge_hs256(header: dict, claims: dict, key: bytes) -> str:
    """A token with exactly this header and these claims, HMAC-SHA256-signed with `key`."""
    signing_input = f"{b64json(header)}.{b64json(claims)}".encode()
    sig = hmac.new(key, signing_input, hashlib.sha256).digest()
    return signing_input.decode() + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
