"""A read-only TOML file of users, for installations that manage accounts elsewhere
(configuration management, an image build) and want nothing written by the API.

    # /etc/printhost/users.toml  (chmod 600; owned by the service's user)
    [users.alice]
    role = "admin"
    password_hash = "scrypt$16384$8$1$...$..."   # from `printhost user hash`

    [users.bob]
    role = "viewer"
    password_hash = "scrypt$..."
    active = false                               # optional, default true

The file is checked when the service starts (a bad file stops it with the file, the
user and the problem) and re-read when it changes; a changed file that does not
check out is logged and ignored, keeping the last good one. Token versions ("log out
everywhere", `printhost user revoke`) are kept in the store (`store/accounts.py`).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

from anyio import to_thread

from printhost.api.auth.backends.base import Account, AuthBackend
from printhost.api.auth.passwords import (ScryptParams, dummy_hash, needs_rehash, params_of,
                                          verify_password)
from printhost.store import accounts
from printhost.store.db import Store
from printhost.store.users import PASSWORD_MAX, UserNotFound, validate_role, validate_username

log = logging.getLogger(__name__)

_KEYS = {"role", "password_hash", "active"}


def parse_users_file(path: Path) -> dict[str, dict[str, Any]]:
    """Read and check the file; ValueError names the file, the user and the problem."""
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ValueError(f"auth.users_file: {path} does not exist") from None
    except OSError as exc:
        raise ValueError(f"auth.users_file: cannot read {path} ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: invalid TOML: {exc}") from None
    if stat.S_IMODE(mode) & stat.S_IROTH:
        log.warning("users file %s is readable by others (mode %o): chmod 600 it",
                    path, stat.S_IMODE(mode))
    unknown = sorted(set(data) - {"users"})
    if unknown:
        raise ValueError(f"{path}: unknown top-level key {unknown[0]!r} (expected [users.NAME])")
    table = data.get("users", {})
    if not isinstance(table, dict):
        raise ValueError(f"{path}: users must be a table of [users.NAME] tables")
    out: dict[str, dict[str, Any]] = {}
    for name, entry in table.items():
        where = f"{path}: users.{name}"
        try:
            validate_username(name)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: must be a table")
        extra = sorted(set(entry) - _KEYS)
        if extra:
            raise ValueError(f"{where}.{extra[0]}: unknown key (known: {', '.join(sorted(_KEYS))})")
        try:
            validate_role(entry.get("role"))
        except ValueError as exc:
            raise ValueError(f"{where}.role: {exc}") from None
        if params_of(entry.get("password_hash")) is None:
            raise ValueError(f"{where}.password_hash: not a scrypt hash made by "
                             "`printhost user hash`")
        active = entry.get("active", True)
        if not isinstance(active, bool):
            raise ValueError(f"{where}.active: expected a boolean")
        out[name] = {"role": entry["role"], "password_hash": entry["password_hash"],
                     "active": active}
    return out


class FileBackend(AuthBackend):
    name = "file"
    writable = False

    def __init__(self, store: Store, path: str | os.PathLike[str], params: ScryptParams,
                 recheck_s: float = 1.0) -> None:
        self.store = store
        self.path = Path(os.path.expanduser(str(path)))
        self.params = params
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._users = parse_users_file(self.path)
        self._signature = self._stat()
        self._checked = time.monotonic()
        self._warned: set[str] = set()

    def _stat(self) -> tuple | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _current(self) -> dict[str, dict[str, Any]]:
        """The users, re-read if the file changed (checked at most once per recheck_s)."""
        with self._lock:
            if time.monotonic() - self._checked >= self.recheck_s:
                self._checked = time.monotonic()
                signature = self._stat()
                if signature != self._signature:
                    try:
                        self._users = parse_users_file(self.path)
                        self._signature = signature
                        log.info("users file %s reloaded (%d users)", self.path, len(self._users))
                    except ValueError as exc:
                        log.error("users file not reloaded, keeping the previous one: %s", exc)
            return self._users

    def _verify(self, username: str, password: str) -> Account | None:
        entry = None
        valid = isinstance(password, str) and len(password) <= PASSWORD_MAX
        if valid:
            entry = self._current().get(username)
        if entry is None:
            verify_password(password if isinstance(password, str) else "", dummy_hash(self.params))
            return None
        if not verify_password(password, entry["password_hash"]) or not entry["active"]:
            return None
        if needs_rehash(entry["password_hash"], self.params) and username not in self._warned:
            self._warned.add(username)
            log.warning("the password hash of %s in %s uses other scrypt parameters than "
                        "configured; regenerate it with `printhost user hash`", username, self.path)
        return self._account(username, entry)

    def _account(self, username: str, entry: dict[str, Any]) -> Account:
        state = accounts.get_account(self.store, self.name, username)
        if state is None:
            state = accounts.record_login(self.store, self.name, username)
        return Account(username, entry["role"], int(state["token_version"]), entry["active"])

    def _lookup(self, username: str) -> Account | None:
        entry = self._current().get(username)
        return None if entry is None else self._account(username, entry)

    async def verify(self, username: str, password: str) -> Account | None:
        return await to_thread.run_sync(self._verify, username, password)

    async def account(self, username: str) -> Account | None:
        return await to_thread.run_sync(self._lookup, username)

    async def revoke_all(self, username: str) -> int:
        if username not in await to_thread.run_sync(self._current):
            raise UserNotFound(f"no such user: {username!r}")
        return await to_thread.run_sync(accounts.bump_version, self.store, self.name, username)

    async def list_accounts(self) -> list[dict[str, Any]]:
        current = await to_thread.run_sync(self._current)
        return [{"username": name, "role": entry["role"], "active": entry["active"],
                 "created_at": None} for name, entry in current.items()]
