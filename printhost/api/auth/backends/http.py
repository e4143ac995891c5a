"""An external service decides: logins are checked by POSTing to a configured URL.

Request (`auth.http_url`, with `Authorization: Bearer <token>` when
`auth.http_token_file` is set)::

    POST /check  {"username": "alice", "password": "..."}

Answers:

* 200 with a JSON object holding `role` (a string) or `roles` (a list; the most
  privileged of viewer, operator, admin is taken): the login succeeds with that role.
  `"active": false` in the object, or no known role, refuses it;
* 401, 403 or 404: wrong user name or password;
* anything else, a redirect, a body that is not such an object, a timeout
  (`auth.http_timeout_s`) or a network error: the service is unavailable, and the
  login gets 503 (never a 401 that would look like a wrong password).

The granted role and the user's token version are kept in the store
(`store/accounts.py`); requests with a token are authorised from that record without
asking the service again, so a role change at the service takes effect at the user's
next login (or at once with `printhost user revoke NAME`). No proxy from the
environment is used and redirects are not followed, so the password goes only to the
configured URL.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from anyio import CapacityLimiter, to_thread

from printhost import __version__
from printhost.api.auth.backends.base import Account, AuthBackend, BackendUnavailable
from printhost.store import accounts
from printhost.store.db import Store
from printhost.store.users import PASSWORD_MAX, UserNotFound, highest_role, validate_username

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024
REJECT_STATUSES = (401, 403, 404)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401
        return None


def read_token_file(path: str) -> str | None:
    if not path:
        return None
    p = Path(os.path.expanduser(path))
    try:
        token = p.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"auth.http_token_file: cannot read {p} ({exc.strerror or exc})") from None
    if not token:
        raise ValueError(f"auth.http_token_file: {p} is empty")
    return token


class HttpBackend(AuthBackend):
    name = "http"
    writable = False

    def __init__(self, store: Store, url: str, timeout_s: float, token: str | None = None,
                 max_concurrent: int = 4) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("auth.http_url: must be an http:// or https:// URL")
        self.store = store
        self.url = url
        self.timeout_s = timeout_s
        self._token = token
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        self._limiter = CapacityLimiter(max_concurrent)

    def _ask(self, username: str, password: str) -> str | None:
        """The granted role, None for a refusal; BackendUnavailable if there is no answer."""
        body = json.dumps({"username": username, "password": password}).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": f"printhost/{__version__}"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                status = response.status
                raw = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code in REJECT_STATUSES:
                return None
            raise BackendUnavailable(f"the auth service answered {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise BackendUnavailable(f"the auth service did not answer: "
                                     f"{getattr(exc, 'reason', exc)}") from None
        if status != 200:
            raise BackendUnavailable(f"the auth service answered {status}")
        if len(raw) > MAX_RESPONSE_BYTES:
            raise BackendUnavailable("the auth service's answer is too large")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise BackendUnavailable("the auth service's answer is not JSON") from None
        if not isinstance(data, dict):
            raise BackendUnavailable("the auth service's answer is not a JSON object")
        if data.get("active", True) is False:
            return None
        role = highest_role(data.get("roles", data.get("role")))
        if role is None:
            log.warning("the auth service accepted %s without a known role; login refused",
                        username)
        return role

    def _verify(self, username: str, password: str) -> Account | None:
        try:
            validate_username(username)
        except ValueError:
            return None
        if not isinstance(password, str) or len(password) > PASSWORD_MAX:
            return None
        role = self._ask(username, password)
        if role is None:
            return None
        state = accounts.record_login(self.store, self.name, username, role)
        return Account(username, role, int(state["token_version"]), True)

    async def verify(self, username: str, password: str) -> Account | None:
        try:
            return await to_thread.run_sync(self._verify, username, password,
                                            limiter=self._limiter)
        except BackendUnavailable as exc:
            log.error("login of %r: %s", username, exc)
            raise

    async def account(self, username: str) -> Account | None:
        state = await to_thread.run_sync(accounts.get_account, self.store, self.name, username)
        if state is None or state.get("role") is None:
            return None
        return Account(username, state["role"], int(state["token_version"]), True)

    async def revoke_all(self, username: str) -> int:
        if await self.account(username) is None:
            raise UserNotFound(f"no such user: {username!r}")
        return await to_thread.run_sync(accounts.bump_version, self.store, self.name, username)

    async def list_accounts(self) -> list[dict[str, Any]]:
        known = await to_thread.run_sync(accounts.list_accounts, self.store, self.name)
        return [{"username": a["username"], "role": a.get("role"), "active": True,
                 "created_at": None} for a in known if a.get("role")]
