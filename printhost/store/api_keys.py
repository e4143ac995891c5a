"""API keys for machine clients (slicers, home automation, the fleet connector).

A key looks like ``phk_<id>_<secret>``: `id` is 12 hex digits that name the key
(shown in lists, used to revoke it), `secret` 32 random bytes in URL-safe base64.
Only a SHA-256 digest of the whole key is stored. A slow password hash is not needed
here: the key has 256 bits of randomness, so its digest cannot be reversed by
guessing, and checking a key costs microseconds instead of a scrypt run per request.
The full key is returned once, when it is created, and cannot be read back.

A document in table "api_keys" looks like::

    {"id": "3f9a0c1b2d4e", "name": "prusaslicer", "role": "operator",
     "digest": "<sha256 hex>", "created_at": "2026-01-31T12:00:00Z",
     "created_by": "admin", "expires_at": 1769860800}

Revoking deletes the document; the key stops working at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from datetime import datetime, timezone
from typing import Any

from tinydb import Query

from printhost.store.db import Store
from printhost.store.users import validate_role

__all__ = ["TABLE", "PREFIX", "ApiKeyNotFound", "create_key", "find_key", "list_keys",
           "revoke_key", "parse_key", "validate_key_name"]

TABLE = "api_keys"
PREFIX = "phk_"
_ID_RE = re.compile(r"[0-9a-f]{12}")
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_NAME_RE = re.compile(r"[A-Za-z0-9 _.:@-]{1,64}")
_DUMMY_DIGEST = hashlib.sha256(b"printhost api key: no such key").hexdigest()


class ApiKeyNotFound(LookupError):
    """No key with that id."""


def _digest(key: str) -> str:
    return hashlib.sha256(b"printhost api key\0" + key.encode("ascii")).hexdigest()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def validate_key_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or not name.strip():
        raise ValueError("name must be 1 to 64 letters, digits, spaces or _ . : @ -")
    return name


def parse_key(key: str) -> str | None:
    """The key's id if `key` has the shape of an API key, else None."""
    if not isinstance(key, str) or len(key) != len(PREFIX) + 12 + 1 + 43:
        return None
    if not key.startswith(PREFIX) or key[len(PREFIX) + 12] != "_":
        return None
    ident, secret = key[len(PREFIX):len(PREFIX) + 12], key[len(PREFIX) + 13:]
    if not _ID_RE.fullmatch(ident) or not _SECRET_RE.fullmatch(secret):
        return None
    return ident


def public_record(doc: Any) -> dict[str, Any]:
    return {"id": doc["id"], "name": doc["name"], "role": doc["role"],
            "created_at": doc["created_at"], "created_by": doc.get("created_by"),
            "expires_at": _iso(doc["expires_at"])}


def create_key(store: Store, name: str, role: str, created_by: str, ttl_s: float,
               now: float | None = None) -> tuple[str, dict[str, Any]]:
    """Create a key; returns (the full key, its public record). The full key is not
    stored and cannot be shown again."""
    validate_key_name(name)
    validate_role(role)
    now = time.time() if now is None else now
    with store.transaction() as db:
        table = db.table(TABLE)
        taken = {doc.get("id") for doc in table.all()}
        ident = secrets.token_hex(6)
        while ident in taken:
            ident = secrets.token_hex(6)
        key = f"{PREFIX}{ident}_{secrets.token_urlsafe(32)}"
        doc = {"id": ident, "name": name, "role": role, "digest": _digest(key),
               "created_at": _iso(now), "created_by": created_by,
               "expires_at": int(now + ttl_s)}
        table.insert(doc)
    return key, public_record(doc)


def _by_id(data: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    docs = data.get(TABLE) or {}
    return {d.get("id"): d for d in docs.values() if isinstance(d, dict)}


def find_key(store: Store, key: str, now: float | None = None) -> dict[str, Any] | None:
    """The stored record of a valid, unexpired `key`, else None.

    The digest is compared in constant time, and a digest comparison runs even when
    no key has that id, so the answer time does not tell which ids exist.
    """
    now = time.time() if now is None else now
    ident = parse_key(key)
    doc = None
    if ident is not None:
        found = store.derived("api_keys_by_id", _by_id).get(ident)
        doc = dict(found) if found is not None else None
    offered = _digest(key) if ident is not None else _DUMMY_DIGEST
    expected = doc.get("digest") if doc is not None else None
    if not isinstance(expected, str):
        hmac.compare_digest(offered, _DUMMY_DIGEST)
        return None
    if not hmac.compare_digest(offered, expected):
        return None
    if float(doc.get("expires_at", 0)) <= now:
        return None
    return doc


def list_keys(store: Store) -> list[dict[str, Any]]:
    """Every key's public record (never the digest), in creation order."""
    return [public_record(doc) for doc in store.table_snapshot(TABLE)]


def revoke_key(store: Store, ident: str) -> None:
    """Delete the key; raises ApiKeyNotFound."""
    with store.transaction() as db:
        table = db.table(TABLE)
        if not table.remove(Query().id == ident):
            raise ApiKeyNotFound(f"no such API key: {ident!r}")
