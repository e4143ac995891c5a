"""User accounts of the "store" authentication backend: roles, password hashes, the
active flag and the token version used for revocation.

A record in table "users" looks like::

    {"username": "alice", "role": "operator", "password_hash": "scrypt$...",
     "token_version": 3, "active": true, "created_at": "2024-05-01T12:00:00+00:00",
     "password_changed_at": "2024-05-01T12:00:00+00:00"}

Issued tokens carry the `token_version` they were issued with; changing the password,
"log out everywhere", deactivating or revoking bumps it, which invalidates every older
token of that user at once. (Single tokens are revoked through the deny-list in
`store/revocations.py`.) Records written before `active` existed count as active.

Password hashing is slow on purpose, so it is done before the store lock is taken:
a login must not hold up the CLI or other requests for the length of a scrypt run.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timezone
from typing import Any

from tinydb import Query

from printhost.api.auth.passwords import (ScryptParams, dummy_hash, hash_password, needs_rehash,
                                          verify_password)
from printhost.store.db import NOT_CURRENT, Store

__all__ = ["ROLES", "TABLE", "SETUP_TABLE", "UserNotFound", "UserExists", "LastAdmin",
           "validate_username", "validate_password", "validate_role", "add_user",
           "new_user_record", "insert_user", "set_password", "revoke_tokens", "delete_user",
           "update_user", "get_user", "list_users", "public_record", "count_users",
           "verify_credentials", "rehash_if_needed", "role_grants", "highest_role"]

TABLE = "users"
# The pending first-boot setup code (store/setup_codes.py); adding a user ends setup.
SETUP_TABLE = "setup_code"
# Ordered from least to most privileged; `role_grants` relies on the order.
ROLES: tuple[str, ...] = ("viewer", "operator", "admin")

USERNAME_MAX = 32
PASSWORD_MIN = 8
PASSWORD_MAX = 1024
_USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")


class UserNotFound(LookupError, ValueError):
    """The named user does not exist.

    Also a ValueError, so callers that report bad input uniformly (the CLI) need no
    extra case, while the API can still tell "not found" apart.
    """


class UserExists(ValueError):
    """A user of that name (ignoring case) exists already."""


class LastAdmin(ValueError):
    """The change would leave no active admin, and so nobody to manage accounts."""


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def validate_username(name: str) -> str:
    """Return `name` if it is 1 to 32 characters of letters, digits, '_', '.' or '-'.

    The restricted alphabet keeps names safe in URLs, log lines and file names, and
    rules out look-alike Unicode names.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("username must not be empty")
    if len(name) > USERNAME_MAX:
        raise ValueError(f"username must be at most {USERNAME_MAX} characters")
    if not _USERNAME_RE.fullmatch(name):
        raise ValueError("username may only contain letters A-Z and a-z, digits, "
                         "'_', '.' and '-'")
    return name


def validate_password(password: str) -> str:
    """Return `password` if it is 8 to 1024 characters long.

    The upper bound stops a request from making the server hash megabytes.
    """
    if not isinstance(password, str):
        raise ValueError("password must be a string")
    if len(password) < PASSWORD_MIN:
        raise ValueError(f"password must be at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise ValueError(f"password must be at most {PASSWORD_MAX} characters")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("password contains characters that are not valid text") from None
    return password


def validate_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return role


def initial_token_version() -> int:
    """A random starting version, so a deleted and re-created user does not accept the
    tokens of the old account (which carried the old account's versions)."""
    return secrets.randbelow(2 ** 31)


def new_user_record(username: str, role: str, password: str,
                    params: ScryptParams | None = None) -> dict[str, Any]:
    """A validated record with the password hashed, ready for `insert_user`.

    Raises ValueError for invalid input. Done outside any transaction: hashing is slow.
    """
    validate_username(username)
    validate_role(role)
    validate_password(password)
    now = _now_iso()
    return {"username": username, "role": role,
            "password_hash": hash_password(password, params),
            "token_version": initial_token_version(), "active": True,
            "created_at": now, "password_changed_at": now}


def insert_user(db: Any, record: dict[str, Any]) -> None:
    """Insert inside an open transaction; names differing only in case count as taken,
    so "Admin" cannot pose as "admin". Ends a pending first-boot setup."""
    table = db.table(TABLE)
    folded = record["username"].casefold()
    for existing in table.all():
        if str(existing.get("username", "")).casefold() == folded:
            raise UserExists(f"user {existing['username']!r} already exists")
    table.insert(record)
    db.drop_table(SETUP_TABLE)


def add_user(store: Store, username: str, role: str, password: str,
             params: ScryptParams | None = None) -> dict[str, Any]:
    """Create a user and return the new record.

    Raises ValueError for invalid input, UserExists when the name is taken.
    """
    record = new_user_record(username, role, password, params)
    with store.transaction() as db:
        insert_user(db, record)
    return dict(record)


def _find(db: Any, username: str) -> Any:
    user = db.table(TABLE).get(Query().username == username)
    if user is None:
        raise UserNotFound(f"no such user: {username!r}")
    return user


def _bump_version(db: Any, username: str, **changes: Any) -> int:
    user = _find(db, username)
    version = int(user.get("token_version", 0)) + 1
    db.table(TABLE).update({**changes, "token_version": version}, doc_ids=[user.doc_id])
    return version


def set_password(store: Store, username: str, password: str,
                 params: ScryptParams | None = None) -> int:
    """Replace the password and invalidate every token issued so far.

    Returns the new token version; raises UserNotFound or ValueError.
    """
    validate_password(password)
    password_hash = hash_password(password, params)
    with store.transaction() as db:
        return _bump_version(db, username, password_hash=password_hash,
                             password_changed_at=_now_iso())


def revoke_tokens(store: Store, username: str) -> int:
    """Invalidate every token issued to `username` so far; returns the new version."""
    with store.transaction() as db:
        return _bump_version(db, username)


def _active_admins(db: Any) -> list[str]:
    return [u["username"] for u in db.table(TABLE).all()
            if u.get("role") == "admin" and u.get("active", True)]


def delete_user(store: Store, username: str) -> None:
    """Remove a user. Refuses to remove the last active admin, which would leave nobody
    able to manage accounts through the API."""
    with store.transaction() as db:
        user = _find(db, username)
        if _active_admins(db) == [username]:
            raise LastAdmin(f"{username!r} is the last admin and cannot be deleted")
        db.table(TABLE).remove(doc_ids=[user.doc_id])


def update_user(store: Store, username: str, *, role: str | None = None,
                active: bool | None = None) -> dict[str, Any]:
    """Change the role and/or the active flag; returns the public record.

    Any change bumps the token version, so tokens issued under the old role, or
    before a deactivation, never come back. Refuses (LastAdmin) to demote or
    deactivate the last active admin.
    """
    if role is not None:
        validate_role(role)
    with store.transaction() as db:
        user = _find(db, username)
        changes: dict[str, Any] = {}
        if role is not None and role != user.get("role"):
            changes["role"] = role
        if active is not None and bool(active) != bool(user.get("active", True)):
            changes["active"] = bool(active)
        if changes:
            stays_admin = (changes.get("role", user.get("role")) == "admin"
                           and changes.get("active", user.get("active", True)))
            if not stays_admin and _active_admins(db) == [username]:
                raise LastAdmin(f"{username!r} is the last active admin")
            _bump_version(db, username, **changes)
        return public_record(db.table(TABLE).get(doc_id=user.doc_id))


def _by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    docs = data.get(TABLE) or {}
    return {d["username"]: d for d in docs.values()
            if isinstance(d, dict) and isinstance(d.get("username"), str)}


def get_user_if_current(store: Store, username: str) -> tuple[bool, dict[str, Any] | None]:
    """(True, the record or None) when the index is current, without reading the
    file (for the event loop); (False, None) when `get_user` must read it."""
    index = store.derived_if_current("users_by_name")
    if index is NOT_CURRENT:
        return False, None
    user = index.get(username)
    return True, (dict(user) if user is not None else None)


def get_user(store: Store, username: str) -> dict[str, Any] | None:
    """The full record, including the password hash, or None (looked up on every
    authenticated request: an index rebuilt only when the store changed)."""
    user = store.derived("users_by_name", _by_name).get(username)
    return dict(user) if user is not None else None


def _api_time(text: Any) -> str | None:
    """A stored ISO time as the API writes times: UTC, whole seconds, a Z suffix."""
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def public_record(user: Any) -> dict[str, Any]:
    """What the API shows of a user: never the hash or the token version."""
    return {"username": user["username"], "role": user.get("role"),
            "active": bool(user.get("active", True)),
            "created_at": _api_time(user.get("created_at"))}


def list_users(store: Store) -> list[dict[str, Any]]:
    """Every user without the password hash, in creation order.

    The hash is left out because this is what gets shown by the CLI and the API;
    use `get_user` when the hash is really needed.
    """
    return [{k: v for k, v in user.items() if k != "password_hash"}
            for user in store.table_snapshot(TABLE)]


def count_users(store: Store) -> int:
    return len(store.table_snapshot(TABLE))


def verify_credentials(store: Store, username: str, password: str,
                       params: ScryptParams | None = None) -> dict[str, Any] | None:
    """The user's record if the password is right and the account active, else None.

    Every path runs one scrypt verification (against a dummy hash made with the
    current parameters when the user is unknown or the input is invalid), so the
    response time does not reveal whether a username exists or is deactivated.
    """
    user = None
    valid_input = isinstance(password, str) and len(password) <= PASSWORD_MAX
    if valid_input:
        try:
            validate_username(username)
        except ValueError:
            valid_input = False
        else:
            user = get_user(store, username)
    stored = user.get("password_hash") if user is not None else None
    if not valid_input or not isinstance(stored, str):
        verify_password(password if isinstance(password, str) else "", dummy_hash(params))
        return None
    if not verify_password(password, stored):
        return None
    if not user.get("active", True):
        return None
    return user


def rehash_if_needed(store: Store, username: str, password: str, old_hash: str,
                     params: ScryptParams | None = None) -> bool:
    """After a successful login: store a hash with the current parameters if the stored
    one was made with others. Compare-and-set on the old hash, so a password changed
    meanwhile is never overwritten; the token version is not touched."""
    if not needs_rehash(old_hash, params):
        return False
    new_hash = hash_password(password, params)
    with store.transaction() as db:
        user = db.table(TABLE).get(Query().username == username)
        if user is None or user.get("password_hash") != old_hash:
            return False
        db.table(TABLE).update({"password_hash": new_hash}, doc_ids=[user.doc_id])
    return True


def role_grants(role: str, required: str) -> bool:
    """True when `role` is at least as privileged as `required`.

    An unknown `role` (e.g. from an old or edited record) grants nothing; an unknown
    `required` is a programming error and raises ValueError.
    """
    if required not in ROLES:
        raise ValueError(f"unknown required role {required!r}")
    if role not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(required)


def highest_role(roles: Any) -> str | None:
    """The most privileged known role in `roles` (a list of strings), or None."""
    if isinstance(roles, str):
        roles = [roles]
    if not isinstance(roles, list):
        return None
    known = [r for r in roles if isinstance(r, str) and r in ROLES]
    return max(known, key=ROLES.index) if known else None
