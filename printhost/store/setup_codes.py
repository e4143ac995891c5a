"""The first-boot setup code: how the first admin is created without a default password.

While no user exists, the service holds one setup code: 16 characters from an
alphabet without look-alikes (no 0/O, 1/I/L), shown as four groups of four, about 78
bits of randomness. The store keeps only its SHA-256 digest and expiry, in table
"setup_code"; the code itself is written to `<state_dir>/setup_code.json` (mode 0600)
for a touchscreen or a person with shell access to read, and logged once by the
service. `POST /api/v1/auth/setup` with the code creates the first admin; in the same
store transaction the code is deleted, so it works once. Adding any user (also with
`printhost user add`) ends setup the same way. An expired code is replaced by a new
one the next time the service looks (at start and on `GET /api/v1/auth/setup`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from printhost.store.atomic import write_private_file
from printhost.store.db import Store
from printhost.store.users import SETUP_TABLE, TABLE as USERS_TABLE, insert_user

__all__ = ["TABLE", "FILENAME", "ALPHABET", "SetupDone", "InvalidSetupCode", "ensure_code",
           "setup_status", "complete_setup", "normalize", "discard_file"]

TABLE = SETUP_TABLE
FILENAME = "setup_code.json"
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 16


class SetupDone(Exception):
    """A user exists already; setup is over."""


class InvalidSetupCode(Exception):
    """Wrong, expired or already used code."""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def normalize(code: str) -> str:
    """Upper case without dashes and spaces, as people type codes."""
    if not isinstance(code, str):
        return ""
    return "".join(ch for ch in code.upper() if ch not in "- ")


def _digest(code: str) -> str:
    return hashlib.sha256(b"printhost setup code\0" + normalize(code).encode("utf-8")).hexdigest()


def _new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return "-".join(raw[i:i + 4] for i in range(0, CODE_LENGTH, 4))


def code_path(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / FILENAME


def discard_file(state_dir: str | os.PathLike[str]) -> None:
    try:
        os.unlink(code_path(state_dir))
    except FileNotFoundError:
        pass


def ensure_code(store: Store, state_dir: str | os.PathLike[str], ttl_s: float,
                now: float) -> tuple[str | None, float | None]:
    """Make sure a valid code exists while there are no users.

    Returns (the new code, its expiry) when one was created now, (None, expiry) when
    a valid one exists already, (None, None) when users exist (setup is over, and any
    leftover code file is removed).
    """
    path = code_path(state_dir)
    with store.transaction() as db:
        if len(db.table(USERS_TABLE)) > 0:
            db.drop_table(TABLE)
            code = None
            expires = None
        else:
            current = db.table(TABLE).all()
            if current and float(current[0].get("expires_at", 0)) > now and path.exists():
                return None, float(current[0]["expires_at"])
            code = _new_code()
            expires = now + ttl_s
            # The file is written before the record commits: if writing fails, no code
            # exists that nobody can read.
            write_private_file(path, (json.dumps({
                "code": code, "expires_at": _iso(expires),
                "endpoint": "/api/v1/auth/setup"}) + "\n").encode("utf-8"))
            db.drop_table(TABLE)
            db.table(TABLE).insert({"digest": _digest(code), "expires_at": expires,
                                    "created_at": _iso(now)})
    if code is None:
        discard_file(state_dir)
    return code, expires


def setup_status(store: Store, now: float) -> dict[str, Any]:
    """Whether setup is pending, and until when the current code is valid."""
    if store.table_snapshot(USERS_TABLE):
        return {"setup_required": False, "expires_at": None}
    current = store.table_snapshot(TABLE)
    valid = [doc for doc in current if float(doc.get("expires_at", 0)) > now]
    return {"setup_required": True,
            "expires_at": _iso(float(valid[0]["expires_at"])) if valid else None}


def complete_setup(store: Store, state_dir: str | os.PathLike[str], code: str,
                   record: dict[str, Any], now: float) -> None:
    """Create the first admin (`record`, from `users.new_user_record`) if `code` is the
    valid pending code; the code is consumed in the same transaction.

    Raises SetupDone when a user exists, InvalidSetupCode otherwise.
    """
    offered = _digest(code)
    with store.transaction() as db:
        if len(db.table(USERS_TABLE)) > 0:
            raise SetupDone("a user exists already")
        current = db.table(TABLE).all()
        expected = current[0].get("digest") if current else None
        if not isinstance(expected, str):
            hmac.compare_digest(offered, offered)
            raise InvalidSetupCode("no pending setup code")
        if not hmac.compare_digest(offered, expected):
            raise InvalidSetupCode("wrong setup code")
        if float(current[0].get("expires_at", 0)) <= now:
            raise InvalidSetupCode("setup code expired")
        insert_user(db, record)        # also drops the setup table
    discard_file(state_dir)
