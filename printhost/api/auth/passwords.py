"""Password hashing with scrypt from the standard library.

scrypt is memory-hard: each guess needs `128 * r * n` bytes (16 MiB with the
parameters below), which makes GPU and ASIC cracking of a stolen store expensive while
a single login on a Raspberry Pi stays well under a second. It ships with `hashlib`,
so there is no native dependency to build on ARM.

Encoded hashes carry their own parameters (`scrypt$n$r$p$salt$hash`), so hashes made
today still verify after the defaults are raised. Parameters read back from a stored
string are bounded, so a damaged or hostile entry cannot make a login allocate
gigabytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading

__all__ = ["hash_password", "verify_password", "dummy_hash", "DUMMY_HASH",
           "SCRYPT_N", "SCRYPT_R", "SCRYPT_P", "DKLEN", "SALT_BYTES"]

SCRYPT_N = 2 ** 14
SCRYPT_R = 8
SCRYPT_P = 1
DKLEN = 32
SALT_BYTES = 16

_SCHEME = "scrypt"
# Upper bounds accepted when verifying; generous against the defaults, small enough
# that one verification cannot exhaust a small board's memory or CPU.
_MAX_N = 2 ** 20
_MAX_R = 32
_MAX_P = 16
_MAX_MEM = 256 * 1024 * 1024


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # hashlib refuses to allocate more than `maxmem` (32 MiB by default); give it
    # the exact need plus slack so accepted parameters never fail on that limit.
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=maxmem)


def hash_password(password: str) -> str:
    """Hash `password` with a fresh random salt; returns the self-describing string.

    Raises ValueError (UnicodeEncodeError) for strings that are not valid Unicode
    text, such as lone surrogates.
    """
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password.encode("utf-8"), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, DKLEN)
    return f"{_SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64encode(salt)}${_b64encode(digest)}"


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
    if n < 2 or n > _MAX_N or n & (n - 1):
        return None
    if not 1 <= r <= _MAX_R or not 1 <= p <= _MAX_P or 128 * r * n > _MAX_MEM:
        return None
    if len(salt) < 8 or not 16 <= len(expected) <= 64:
        return None
    return n, r, p, salt, expected


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
_dummy: str | None = None


def dummy_hash() -> str:
    """A valid hash of a random password, made on first use and then reused.

    Verifying a login for a user who does not exist against this hash costs the same
    scrypt work as a real check, so response time does not tell an attacker which
    usernames exist. It is computed lazily because importing the module should not
    cost a scrypt run (the CLI imports it just to print help).
    """
    global _dummy
    if _dummy is None:
        with _dummy_lock:
            if _dummy is None:
                _dummy = hash_password(base64.b64encode(os.urandom(24)).decode("ascii"))
    return _dummy


def __getattr__(name: str) -> str:
    # `DUMMY_HASH` reads like a constant but is only computed when first accessed.
    if name == "DUMMY_HASH":
        return dummy_hash()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
