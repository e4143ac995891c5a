"""The interface every authentication backend implements.

A backend answers two questions: "is this the right password for this user?" at login
(`verify`), and "who is this user now?" on every authenticated request (`account`),
so that a deactivated user, a changed role or a "log out everywhere" take effect on
tokens already issued. It also owns the user's token version (`revoke_all`), because
that lives next to the user record where there is one.

Backends are async: the API calls them from the event loop. Anything that blocks
(file reads, the store, password hashing, network I/O) must run in a worker thread
(`anyio.to_thread.run_sync`) or be natively async, and the methods must be safe to
call from many tasks at once. docs/extending.md ("Adding an authentication backend")
walks through writing one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["Account", "AuthBackend", "BackendUnavailable", "ReadOnlyBackend"]


@dataclass(frozen=True)
class Account:
    """What the API needs to know about a user on each request."""
    username: str
    role: str
    token_version: int
    active: bool = True
    # When the account was created, if the backend knows.
    created_at: str | None = None


class BackendUnavailable(Exception):
    """The backend could not answer (an external service down, a file unreadable);
    the API answers 503 without saying anything about the user."""


class ReadOnlyBackend(Exception):
    """The backend cannot change users (they are managed in its own source)."""


class AuthBackend(ABC):
    """Base class of authentication backends; see the module docstring."""

    #: the value of `auth.backend` that selects this backend
    name: ClassVar[str]
    #: True if users can be added and changed through the API and the CLI
    writable: ClassVar[bool] = False

    @abstractmethod
    async def verify(self, username: str, password: str) -> Account | None:
        """The account if `password` is right and the account active, else None.

        Must take about the same time whether or not the user exists (run a dummy
        password check for unknown users) and must never raise for a wrong user or
        password. Raise BackendUnavailable when it cannot decide."""

    @abstractmethod
    async def account(self, username: str) -> Account | None:
        """The user's current state, or None if the user no longer exists."""

    @abstractmethod
    async def revoke_all(self, username: str) -> int:
        """Invalidate every token of the user (bump the token version); returns the
        new version. Raises LookupError for an unknown user."""

    async def list_accounts(self) -> list[dict[str, Any]]:
        """Public records (username, role, active, created_at) of the users it knows."""
        return []

    # Writable backends override these; the defaults refuse.

    async def add_user(self, username: str, role: str, password: str) -> dict[str, Any]:
        raise ReadOnlyBackend(self.name)

    async def update_user(self, username: str, *, role: str | None = None,
                          active: bool | None = None) -> dict[str, Any]:
        raise ReadOnlyBackend(self.name)

    async def set_password(self, username: str, password: str) -> int:
        raise ReadOnlyBackend(self.name)

    async def user_count(self) -> int:
        """How many users exist; a writable backend with none starts first-boot setup."""
        return len(await self.list_accounts())

    async def close(self) -> None:
        """Release connections or files; called when the service stops."""
