"""The default backend: users in the store (`store/users.py`), managed with the API and
with `printhost user`. Passwords are checked with scrypt; a hash made with other
parameters than the configured ones is replaced after the next successful login."""

from __future__ import annotations

import logging
from typing import Any

from anyio import to_thread

from printhost.api.auth.backends.base import Account, AuthBackend
from printhost.api.auth.passwords import ScryptParams
from printhost.store import users
from printhost.store.db import Store

log = logging.getLogger(__name__)


def _account(record: dict[str, Any]) -> Account:
    return Account(record["username"], str(record.get("role")),
                   int(record.get("token_version", 0)), bool(record.get("active", True)),
                   record.get("created_at"))


class StoreBackend(AuthBackend):
    name = "store"
    writable = True

    def __init__(self, store: Store, params: ScryptParams) -> None:
        self.store = store
        self.params = params

    async def verify(self, username: str, password: str) -> Account | None:
        record = await to_thread.run_sync(users.verify_credentials, self.store, username,
                                          password, self.params)
        if record is None:
            return None
        if await to_thread.run_sync(users.rehash_if_needed, self.store, record["username"],
                                    password, record["password_hash"], self.params):
            log.info("password hash of %s renewed with the current scrypt parameters",
                     record["username"])
        return _account(record)

    async def account(self, username: str) -> Account | None:
        # Asked on every request: from the index when the store has not changed (a
        # stat on the loop), else read in a worker thread.
        current, record = users.get_user_if_current(self.store, username)
        if not current:
            record = await to_thread.run_sync(users.get_user, self.store, username)
        return None if record is None else _account(record)

    async def revoke_all(self, username: str) -> int:
        return await to_thread.run_sync(users.revoke_tokens, self.store, username)

    async def list_accounts(self) -> list[dict[str, Any]]:
        listed = await to_thread.run_sync(users.list_users, self.store)
        return [users.public_record(u) for u in listed]

    async def user_count(self) -> int:
        return await to_thread.run_sync(users.count_users, self.store)

    async def add_user(self, username: str, role: str, password: str) -> dict[str, Any]:
        record = await to_thread.run_sync(users.add_user, self.store, username, role, password,
                                          self.params)
        return users.public_record(record)

    async def update_user(self, username: str, *, role: str | None = None,
                          active: bool | None = None) -> dict[str, Any]:
        return await to_thread.run_sync(lambda: users.update_user(self.store, username,
                                                                  role=role, active=active))

    async def set_password(self, username: str, password: str) -> int:
        return await to_thread.run_sync(users.set_password, self.store, username, password,
                                        self.params)
