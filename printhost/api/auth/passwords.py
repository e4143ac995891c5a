"""Password hashing with scrypt from the standard library.

scrypt is memory-hard: each guess needs `128 * r * n` bytes (16 MiB with the default
parameters), which makes GPU and ASIC cracking of a stolen store expensive. It ships
with `hashlib`, so there is no native dependency to build on ARM.

The defaults (N = 2^14, r = 8, p = 1) are chosen for the login budget of a Raspberry
Pi 4: docs/security.md has the measurement (`tools/bench login`) and the scaling
argument. They can be changed with `auth.password_scrypt_log2_n`, `_r` and `_p`;
hashes made with other parameters keep verifying, and `needs_rehash` tells the
caller to store a new hash after the next successful login.

Encoded hashes carry their own parameters (`scrypt$n$r$p$salt$hash`). Parameters read
back from a stored string are bounded, so a damaged or hostile entry cannot make a
login allocate gigabytes. At most `HASH_SLOTS` hashes run at once in a process, which
caps the memory a burst of logins can take on a small board.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading
from dataclasses import dataclass

__all__ = ["ScryptParams", "DEFAULT_PARAMS", "hash_password", "verify_password",
           "needs_rehash", "params_of", "dummy_hash", "DUMMY_HASH", "HASH_SLOTS",
           "SCRYPT_N", "SCRYPT_R", "SCRYPT_P", "DKLEN", "SALT_BYTES"]

SCRYPT_N = 2 ** 14
SCRYPT_R = 8
SCRYPT_P = 1
DKLEN = 32
SALT_BYTES = 16
# Concurrent scrypt runs per process: two (32 MiB with the defaults) keep both cores of
# a small board busy without letting a flood of logins exhaust its memory.
HASH_SLOTS = 2

_SCHEME = "scrypt"
# Upper bounds accepted when verifying; generous against the defaults, small enough
# that one verification cannot exhaust a small board's memory or CPU.
_MAX_N = 2 ** 20
_MAX_R = 32
_MAX_P = 16
_MAX_MEM = 256 * 1024 * 1024

_slots = threading.BoundedSemaphore(HASH_SLOTS)


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost parameters: CPU/memory cost `n` (a power of two), block size `r`,
    parallelism `p`. Memory per hash is `128 * r * n` bytes."""
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    def __post_init__(self) -> None:
        problem = _param_problem(self.n, self.r, self.p)
        if problem:
            raise ValueError(f"scrypt parameters: {problem}")

    @classmethod
    def from_log2(cls, log2_n: int, r: int, p: int) -> "ScryptParams":
        return cls(2 ** log2_n, r, p)

    @property
    def memory_bytes(self) -> int:
        return 128 * self.r * self.n


def _param_problem(n: int, r: int, p: int) -> str | None:
    if n < 2 or n > _MAX_N or n & (n - 1):
        return f"n must be a power of two from 2 to {_MAX_N}"
    if not 1 <= r <= _MAX_R:
        return f"r must be 1 to {_MAX_R}"
    if not 1 <= p <= _MAX_P:
        return f"p must be 1 to {_MAX_P}"
    if 128 * r * n > _MAX_MEM:
        return f"128 * r * n must not exceed {_MAX_MEM // (1024 * 1024)} MiB"
    return None


DEFAULT_PARAMS = ScryptParams()


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # hashlib refuses to allocate more than `maxmem` (32 MiB by default); give it
    # the exact need plus slack so accepted parameters never fail on that limit.
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    with _slots:
        return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=maxmem)


def hash_password(password: str, params: ScryptParams | None = None) -> str:
    """Hash `password` with a fresh random salt; returns the self-describing string.

    Raises ValueError (UnicodeEncodeError) for strings that are not valid Unicode
    text, such as lone surrogates.
    """
    params = params or DEFAULT_PARAMS
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password.encode("utf-8"), salt, params.n, params.r, params.p, DKLEN)
    return (f"{_SCHEME}${params.n}${params.r}${params.p}$"
            f"{_b64encode(salt)}${_b64encode(digest)}")


def _parse(encoded: str) -> tuple[int, int, int, bytes, bytes] | None:
    if not isinstance(encoded, str):
        return None
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        return None
    try:
        # isdigit() first: int() would also accept "+8", " 8" or "1_6".
        if not all(part.isascii() and part.isdigit() for part in parts[1:4]):
            return None
        n, r, p = (int(part) for part in parts[1:4])
        salt = _b64decode(parts[4])
        expected = _b64decode(parts[5])
    except (ValueError, binascii.Error):
        return None
    if _param_problem(n, r, p):
        return None
    if len(salt) < 8 or not 16 <= len(expected) <= 64:
        return None
    return n, r, p, salt, expected


def params_of(encoded: str) -> ScryptParams | None:
    """The parameters a stored hash was made with, or None if it is not a valid hash."""
    parsed = _parse(encoded)
    return None if parsed is None else ScryptParams(*parsed[:3])


def needs_rehash(encoded: str, params: ScryptParams | None = None) -> bool:
    """True when `encoded` was made with other parameters (or salt/digest sizes) than
    `params`, so a fresh hash should replace it after the next successful login."""
    parsed = _parse(encoded)
    if parsed is None:
        return True
    n, r, p, salt, expected = parsed
    params = params or DEFAULT_PARAMS
    return ((n, r, p) != (params.n, params.r, params.p)
            or len(salt) != SALT_BYTES or len(expected) != DKLEN)


def verify_password(password: str, encoded: str) -> bool:
    """True when `password` matches `encoded`; False for a mismatch or a malformed hash.

    The digest comparison is constant-time so that the time taken does not reveal
    how many leading bytes of a guess were right.
    """
    parsed = _parse(encoded)
    if parsed is None:
        return False
    n, r, p, salt, expected = parsed
    try:
        secret = password.encode("utf-8")
        actual = _scrypt(secret, salt, n, r, p, len(expected))
    except (ValueError, MemoryError, AttributeError):
        return False
    return hmac.compare_digest(actual, expected)


_dummy_lock = threading.Lock()
_dummies: dict[ScryptParams, str] = {}
_dummy: str | None = None


def dummy_hash(params: ScryptParams | None = None) -> str:
    """A valid hash of a random password with `params`, made on first use and reused.

    Verifying a login for a user who does not exist against this hash costs the same
    scrypt work as a real check, so response time does not tell an attacker which
    usernames exist. It is computed lazily because importing the module should not
    cost a scrypt run (the CLI imports it just to print help).
    """
    global _dummy
    params = params or DEFAULT_PARAMS
    if params == DEFAULT_PARAMS:
        if _dummy is None:
            with _dummy_lock:
                if _dummy is None:
                    _dummy = hash_password(base64.b64encode(os.urandom(24)).decode("ascii"))
        return _dummy
    found = _dummies.get(params)
    if found is None:
        with _dummy_lock:
            found = _dummies.get(params)
            if found is None:
                found = hash_password(base64.b64encode(os.urandom(24)).decode("ascii"), params)
                _dummies[params] = found
    return found


def __getattr__(name: str) -> str:
    # `DUMMY_HASH` reads like a constant but is only computed when first accessed.
    if name == "DUMMY_HASH":
        return dummy_hash()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
