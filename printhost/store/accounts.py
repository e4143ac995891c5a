"""Local state of users whose passwords live elsewhere (the "file" and "http" backends).

Those backends cannot store anything in their source of users, but revocation needs
a per-user token version ("log out everywhere") and the http backend needs the role
the external service granted at the last login (requests are authorised without
asking it again). Both are kept here, in table "auth_accounts"::

    {"backend": "http", "username": "alice", "token_version": 17,
     "role": "operator", "last_login": "2026-01-31T12:00:00+00:00"}
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from tinydb import Query

from printhost.store.db import Store
from printhost.store.users import initial_token_version

__all__ = ["TABLE", "get_account", "list_accounts", "record_login", "bump_version"]

TABLE = "auth_accounts"


def _query(backend: str, username: str) -> Any:
    q = Query()
    return (q.backend == backend) & (q.username == username)


def _by_key(data: dict[str, Any]) -> dict[tuple[Any, Any], dict[str, Any]]:
    docs = data.get(TABLE) or {}
    return {(d.get("backend"), d.get("username")): d for d in docs.values()
            if isinstance(d, dict)}


def get_account(store: Store, backend: str, username: str) -> dict[str, Any] | None:
    """Looked up on every authenticated request: an index rebuilt only when the store
    changed."""
    doc = store.derived("accounts_by_key", _by_key).get((backend, username))
    return dict(doc) if doc is not None else None


def list_accounts(store: Store, backend: str) -> list[dict[str, Any]]:
    return [doc for doc in store.table_snapshot(TABLE) if doc.get("backend") == backend]


def _ensure(db: Any, backend: str, username: str) -> Any:
    table = db.table(TABLE)
    doc = table.get(_query(backend, username))
    if doc is None:
        table.insert({"backend": backend, "username": username,
                      "token_version": initial_token_version()})
        doc = table.get(_query(backend, username))
    return doc


def record_login(store: Store, backend: str, username: str,
                 role: str | None = None) -> dict[str, Any]:
    """Note a successful login (and the granted role); returns the account state.

    A role different from the one recorded bumps the token version, so tokens issued
    under the old role stop working."""
    with store.transaction() as db:
        doc = _ensure(db, backend, username)
        changes: dict[str, Any] = {"last_login": datetime.now(timezone.utc)
                                   .isoformat(timespec="seconds")}
        if role is not None and doc.get("role") != role:
            changes["role"] = role
            if doc.get("role") is not None:
                changes["token_version"] = int(doc.get("token_version", 0)) + 1
        db.table(TABLE).update(changes, doc_ids=[doc.doc_id])
        return dict(db.table(TABLE).get(doc_id=doc.doc_id))


def bump_version(store: Store, backend: str, username: str) -> int:
    """Revoke every token of the user; returns the new version."""
    with store.transaction() as db:
        doc = _ensure(db, backend, username)
        version = int(doc.get("token_version", 0)) + 1
        db.table(TABLE).update({"token_version": version}, doc_ids=[doc.doc_id])
        return version
