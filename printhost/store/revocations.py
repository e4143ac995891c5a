"""The token deny-list: revoked token ids (`jti`) and login sessions (`sid`).

Logging out puts the token's `jti` and its session's `sid` here; using a refresh
token puts its `jti` here (it is single-use). An entry is kept until the latest
moment a token it names could still be valid (`exp`) and dropped after that, so
the table stays as small as the number of logouts within one token lifetime.

A document in table "revoked_tokens" is ``{"kind": "jti"|"sid", "id": "...",
"exp": 1700003600}``. Every function runs in one store transaction (or one
snapshot read), so concurrent logouts and refreshes, in threads of the service or
in other processes, see each other's entries: exactly one of two simultaneous uses
of a refresh token wins.
"""

from __future__ import annotations

from typing import Any

from printhost.store.db import NOT_CURRENT, Store

__all__ = ["TABLE", "JTI", "SID", "revoke", "is_revoked", "is_revoked_if_current", "consume",
           "prune", "count"]

TABLE = "revoked_tokens"
JTI = "jti"
SID = "sid"


def _insert(db: Any, kind: str, ident: str, exp: float) -> None:
    table = db.table(TABLE)
    for doc in table.all():
        if doc.get("kind") == kind and doc.get("id") == ident:
            if doc.get("exp", 0) < exp:
                table.update({"exp": int(exp) + 1}, doc_ids=[doc.doc_id])
            return
    table.insert({"kind": kind, "id": ident, "exp": int(exp) + 1})


def _prune(db: Any, now: float) -> int:
    table = db.table(TABLE)
    stale = [doc.doc_id for doc in table.all() if float(doc.get("exp", 0)) <= now]
    if stale:
        table.remove(doc_ids=stale)
    return len(stale)


def revoke(store: Store, entries: list[tuple[str, str, float]], now: float) -> None:
    """Add (kind, id, exp) entries; expired entries are dropped in the same write."""
    with store.transaction() as db:
        for kind, ident, exp in entries:
            if kind not in (JTI, SID):
                raise ValueError(f"unknown revocation kind {kind!r}")
            if exp > now:
                _insert(db, kind, ident, exp)
        _prune(db, now)


def _entries(data: dict[str, Any]) -> frozenset[tuple[Any, Any]]:
    docs = data.get(TABLE) or {}
    return frozenset((d.get("kind"), d.get("id")) for d in docs.values() if isinstance(d, dict))


def is_revoked_if_current(store: Store, jti: str, sid: str) -> bool | None:
    """`is_revoked` when the list is current without reading the file (for the event
    loop); None when `is_revoked` must read it."""
    entries = store.derived_if_current("revocations")
    if entries is NOT_CURRENT:
        return None
    return (JTI, jti) in entries or (SID, sid) in entries


def is_revoked(store: Store, jti: str, sid: str) -> bool:
    """True when the token id or its session is on the list (checked on every
    authenticated request: a set, rebuilt only when the store changed)."""
    entries = store.derived("revocations", _entries)
    return (JTI, jti) in entries or (SID, sid) in entries


def consume(store: Store, jti: str, sid: str, exp: float, session_exp: float,
            now: float) -> bool:
    """Use a single-use token: True if it was unused (it is now on the list).

    If it was used before (or its session revoked), False; a second use of a refresh
    token means it was copied, so the whole session is revoked as well (until
    `session_exp`), which also logs out whoever rotated it first.
    """
    with store.transaction() as db:
        used = False
        for doc in db.table(TABLE).all():
            kind, ident = doc.get("kind"), doc.get("id")
            if (kind == JTI and ident == jti) or (kind == SID and ident == sid):
                used = True
                break
        if used:
            _insert(db, SID, sid, session_exp)
        else:
            _insert(db, JTI, jti, exp)
        _prune(db, now)
    return not used


def prune(store: Store, now: float) -> int:
    """Drop entries whose tokens have all expired; returns how many."""
    with store.transaction() as db:
        return _prune(db, now)


def count(store: Store) -> int:
    return len(store.table_snapshot(TABLE))
