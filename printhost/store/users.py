"""User accounts: roles, password hashes and the token version used for revocation.

A record in table "users" looks like::

    {"username": "alice", "role": "operator", "password_hash": "scrypt$...",
     "token_version": 3, "created_at": "2024-05-01T12:00:00+00:00"}

Issued tokens carry the `token_version` they were issued with; changing the
password or revoking tokens bumps it, which invalidates every older token at once
without keeping a deny-list.

Password hashing is slow on purpose, so it is done before the store lock is taken:
a login must not hold up the CLI or other requests for the length of a scrypt run.
"""

from __future__ import annotations

import os
import re
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tinydb import Query

from printhost.api.auth.passwords import dummy_hash, hash_password, verify_password
from printhost.store.atomic import write_private_file
from printhost.store.db import Store

__all__ = ["ROLES", "TABLE", "INITIAL_ADMIN", "INITIAL_PASSWORD_FILE", "UserNotFound",
           "validate_username", "validate_password", "add_user", "set_password",
           "revoke_tokens", "delete_user", "get_user", "list_users",
           "verify_credentials", "role_grants", "ensure_initial_admin"]

TABLE = "users"
# Ordered from least to most privileged; `role_grants` relies on the order.
ROLES: tuple[str, ...] = ("viewer", "operator", "admin")
INITIAL_ADMIN = "admin"
INITIAL_PASSWORD_FILE = "initial_admin_password"

USERNAME_MAX = 32
PASSWORD_MIN = 8
PASSWORD_MAX = 1024
_USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")


class UserNotFound(LookupError, ValueError):
    """The named user does not exist.

    Also a ValueError, so callers that report bad input uniformly (the CLI) need no
    extra case, while the API can still tell "not found" apart.
    """


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


def _validate_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return role


def add_user(store: Store, username: str, role: str, password: str) -> dict[str, Any]:
    """Create a user and return the new record.

    Raises ValueError for invalid input or when the name is taken. Names differing
    only in case are treated as taken too, so "Admin" cannot pose as "admin".
    """
    validate_username(username)
    _validate_role(role)
    validate_password(password)
    password_hash = hash_password(password)
    with store.transaction() as db:
        table = db.table(TABLE)
        folded = username.casefold()
        for existing in table.all():
            if str(existing.get("username", "")).casefold() == folded:
                raise ValueError(f"user {existing['username']!r} already exists")
        record = {"username": username, "role": role, "password_hash": password_hash,
                  "token_version": initial_token_version(), "created_at": _now_iso()}
        table.insert(record)
    return dict(record)


def initial_token_version() -> int:
    """A random starting version, so a deleted and re-created user does not accept the
    tokens of the old account (which carried the old account's versions)."""
    return secrets.randbelow(2 ** 31)


def _bump_version(db: Any, username: str, **changes: Any) -> int:
    table = db.table(TABLE)
    user = table.get(Query().username == username)
    if user is None:
        raise UserNotFound(f"no such user: {username!r}")
    version = int(user.get("token_version", 0)) + 1
    table.update({**changes, "token_version": version}, doc_ids=[user.doc_id])
    return version


def set_password(store: Store, username: str, password: str) -> int:
    """Replace the password and invalidate every token issued so far.

    Returns the new token version; raises UserNotFound or ValueError.
    """
    validate_password(password)
    password_hash = hash_password(password)
    with store.transaction() as db:
        return _bump_version(db, username, password_hash=password_hash)


def revoke_tokens(store: Store, username: str) -> int:
    """Invalidate every token issued to `username` so far; returns the new version."""
    with store.transaction() as db:
        return _bump_version(db, username)


def delete_user(store: Store, username: str) -> None:
    """Remove a user. Refuses to remove the last admin, which would leave nobody
    able to manage accounts through the API."""
    with store.transaction() as db:
        table = db.table(TABLE)
        user = table.get(Query().username == username)
        if user is None:
            raise UserNotFound(f"no such user: {username!r}")
        if user.get("role") == "admin" and table.count(Query().role == "admin") <= 1:
            raise ValueError(f"{username!r} is the last admin and cannot be deleted")
        table.remove(doc_ids=[user.doc_id])


def get_user(store: Store, username: str) -> dict[str, Any] | None:
    """The full record, including the password hash, or None."""
    for user in store.table_snapshot(TABLE):
        if user.get("username") == username:
            return user
    return None


def list_users(store: Store) -> list[dict[str, Any]]:
    """Every user without the password hash, in creation order.

    The hash is left out because this is what gets shown by the CLI and the API;
    use `get_user` when the hash is really needed.
    """
    return [{k: v for k, v in user.items() if k != "password_hash"}
            for user in store.table_snapshot(TABLE)]


def verify_credentials(store: Store, username: str, password: str) -> dict[str, Any] | None:
    """The user's record if the password is right, else None.

    Every path runs one scrypt verification (against a dummy hash when the user is
    unknown or the input is invalid), so the response time does not reveal whether
    a username exists.
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
        verify_password(password if isinstance(password, str) else "", dummy_hash())
        return None
    if not verify_password(password, stored):
        return None
    return user


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


def ensure_initial_admin(store: Store, state_dir: str | os.PathLike[str]) -> str | None:
    """On first start, create "admin" with a random password; return the password file.

    The password goes to `<state_dir>/initial_admin_password` (mode 0600) rather
    than the log, which may be collected and kept elsewhere. The file is written
    before the user is inserted: if writing it fails, no account exists whose
    password nobody knows. The store lock is held throughout, so two processes
    starting at once create exactly one admin. Returns None when users exist.
    """
    path = Path(state_dir) / INITIAL_PASSWORD_FILE
    with store.transaction() as db:
        table = db.table(TABLE)
        if len(table) > 0:
            return None
        password = secrets.token_urlsafe(12)
        record = {"username": INITIAL_ADMIN, "role": "admin",
                  "password_hash": hash_password(password),
                  "token_version": initial_token_version(),
                  "created_at": _now_iso()}
        write_private_file(path, (password + "\n").encode())
        table.insert(record)
    return str(path)


