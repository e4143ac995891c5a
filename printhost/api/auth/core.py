"""`AuthService`: every authentication decision of the API in one place.

The routes (routes/auth.py, routes/users.py, routes/api_keys.py) and the request guard
(guard.py) only translate HTTP to calls here. The service combines

* the configured backend (backends/), which knows users and passwords,
* the token service (tokens.py) with its keyring,
* the deny-list (store/revocations.py) and API keys (store/api_keys.py),
* the login throttle (throttle.py) and the first-boot setup code
  (store/setup_codes.py).

It is used from the event loop only; blocking work runs in worker threads inside the
backends and the `to_thread` calls here, and the throttle's counters are changed only
between awaits, so many concurrent tasks see consistent state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from anyio import to_thread

from printhost.api.auth.backends import (Account, AuthBackend, BackendUnavailable,
                                         ReadOnlyBackend, create_backend, scrypt_params)
from printhost.api.auth.guard import API_KEY, Principal
from printhost.api.auth.throttle import LoginThrottle
from printhost.api.auth.tokens import REFRESH, InvalidToken, TokenPair, TokenService
from printhost.api.errors import INVALID_CREDENTIALS, INVALID_TOKEN, ApiError
from printhost.config import Settings
from printhost.store import api_keys, revocations, setup_codes
from printhost.store.db import Store
from printhost.store.users import LastAdmin, UserExists, UserNotFound, new_user_record

log = logging.getLogger("printhost.auth")

INVALID_API_KEY = "Invalid API key"
INVALID_SETUP_CODE = "Invalid setup code"
SETUP_DONE = "Setup is already complete"
BACKEND_UNAVAILABLE = "Authentication service unavailable"
USER_EXISTS = "User already exists"
USER_NOT_FOUND = "User not found"
LAST_ADMIN = "The last active admin cannot be demoted or deactivated"
API_KEY_NOT_FOUND = "API key not found"
NEEDS_USER_TOKEN = "This endpoint needs a user's token, not an API key"


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def read_only_message(backend: AuthBackend) -> str:
    return (f"Users are managed outside printhost (auth.backend = {backend.name}); "
            "change them there")


class AuthService:
    def __init__(self, settings: Settings, store: Store, tokens: TokenService, *,
                 backend: AuthBackend | None = None,
                 throttle_clock: Callable[[], float] = time.monotonic) -> None:
        a = settings.auth
        self.settings = settings
        self.store = store
        self.tokens = tokens
        self.backend = backend if backend is not None else create_backend(settings, store)
        self.params = scrypt_params(settings)
        self.throttle = LoginThrottle(a.login_max_failures, a.login_window_s, a.login_lockout_s,
                                      clock=throttle_clock, max_lockout_s=a.login_lockout_max_s)

    def now(self) -> float:
        return self.tokens.now()

    # ------------------------------------------------------------------ throttling

    def _admit(self, keys: list[str], what: str = "login") -> None:
        wait = self.throttle.begin(keys)
        if wait is None:
            return
        if self.throttle.retry_after(keys) is None:
            # Not locked: refused because as many attempts as may still fail are running.
            raise ApiError(429, f"Too many {what} attempts at once; try again in {wait} s",
                           retry_after=wait)
        failed = "failed logins" if what == "login" else f"failed {what} attempts"
        raise ApiError(429, f"Too many {failed}; try again in {wait} s", retry_after=wait)

    def _finish(self, keys: list[str], success: bool, clear: list[str] | None = None) -> None:
        self.throttle.end(keys, success, clear)
        if not success:
            wait = self.throttle.retry_after(keys)
            if wait is not None:
                log.warning("failed attempts: %r locked for %d s", keys, wait)

    async def _checked_password(self, username: str, password: str, client: str) -> Account:
        """The account if the password is right; 429 while locked out, 401 otherwise."""
        keys = self.throttle.login_keys(username, client)
        self._admit(keys)
        success = False
        try:
            account = await self.backend.verify(username, password)
            success = account is not None
        except BackendUnavailable:
            # Not the user's fault: neither a failure nor a success for the counters.
            self.throttle.end(keys, True, clear=[])
            raise ApiError(503, BACKEND_UNAVAILABLE) from None
        except BaseException:
            self.throttle.end(keys, True, clear=[])
            raise
        # The pair and the user name are cleared on success; the address keeps its
        # failures, so logging in to an account one owns does not reset a guessing
        # address's count.
        self._finish(keys, success, clear=keys[:2])
        if account is None:
            log.info("failed login for %r from %s", username[:64], client)
            raise ApiError(401, INVALID_CREDENTIALS)
        return account

    # ------------------------------------------------------------------ tokens

    def _pair(self, account: Account, sid: str | None = None) -> TokenPair:
        return self.tokens.issue_pair(account.username, [account.role], account.token_version,
                                      sid=sid)

    async def login(self, username: str, password: str, client: str) -> TokenPair:
        account = await self._checked_password(username, password, client)
        log.info("login of %s from %s", account.username, client)
        return self._pair(account)

    async def _current_account(self, claims: dict[str, Any]) -> Account:
        account = await self.backend.account(claims["sub"])
        if account is None or not account.active or account.token_version != claims["ver"]:
            raise InvalidToken("user gone, deactivated or tokens revoked")
        return account

    async def principal_from_token(self, token: str) -> Principal:
        try:
            claims = self.tokens.decode(token)
            account = await self._current_account(claims)
            revoked = revocations.is_revoked_if_current(self.store, claims["jti"],
                                                        claims["sid"])
            if revoked is None:
                revoked = await to_thread.run_sync(revocations.is_revoked, self.store,
                                                   claims["jti"], claims["sid"])
            if revoked:
                raise InvalidToken("token revoked")
        except InvalidToken as exc:
            log.debug("token refused: %s", exc)
            raise ApiError(401, INVALID_TOKEN) from None
        return Principal(account.username, account.role, _utc(claims["exp"]), claims)

    async def principal_from_api_key(self, key: str) -> Principal:
        doc = await to_thread.run_sync(api_keys.find_key, self.store, key, self.now())
        if doc is None:
            raise ApiError(401, INVALID_API_KEY)
        return Principal(f"api-key:{doc['name']}", doc["role"], _utc(doc["expires_at"]), {},
                         kind=API_KEY, key_id=doc["id"])

    async def refresh(self, refresh_token: str) -> TokenPair:
        """A new token pair for a refresh token, which is used up (rotation). A refresh
        token presented a second time revokes its whole session."""
        try:
            claims = self.tokens.decode(refresh_token, REFRESH)
            account = await self._current_account(claims)
            now = self.now()
            fresh = await to_thread.run_sync(
                revocations.consume, self.store, claims["jti"], claims["sid"], claims["exp"],
                now + self.tokens.refresh_ttl_s, now)
            if not fresh:
                log.warning("refresh token of %s presented again (copied, or its session "
                            "logged out): session revoked", claims["sub"])
                raise InvalidToken("refresh token reused")
        except InvalidToken as exc:
            log.debug("refresh refused: %s", exc)
            raise ApiError(401, INVALID_TOKEN) from None
        return self._pair(account, sid=claims["sid"])

    @staticmethod
    def _user_principal(principal: Principal) -> Principal:
        if principal.kind == API_KEY:
            raise ApiError(403, NEEDS_USER_TOKEN)
        return principal

    async def logout(self, principal: Principal) -> None:
        """Revoke the presented token and its session (the refresh token included)."""
        claims = self._user_principal(principal).claims
        now = self.now()
        await to_thread.run_sync(revocations.revoke, self.store, [
            (revocations.JTI, claims["jti"], claims["exp"]),
            (revocations.SID, claims["sid"], now + self.tokens.refresh_ttl_s)], now)
        log.info("logout of %s", principal.username)

    async def logout_all(self, principal: Principal) -> None:
        """Revoke every token of the principal's user, on every device."""
        self._user_principal(principal)
        await self.backend.revoke_all(principal.username)
        log.info("%s logged out everywhere", principal.username)

    async def change_password(self, principal: Principal, current: str, new: str,
                              client: str) -> TokenPair:
        """Check the current password (throttled like a login), set the new one, which
        revokes every token of the user, and return a fresh pair for this client."""
        self._user_principal(principal)
        if not self.backend.writable:
            raise ApiError(409, read_only_message(self.backend))
        await self._checked_password(principal.username, current, client)
        try:
            await self.backend.set_password(principal.username, new)
        except UserNotFound:
            raise ApiError(401, INVALID_TOKEN) from None
        except ValueError as exc:
            raise ApiError(400, "Invalid request body", fields={"new_password": str(exc)}) from None
        account = await self.backend.account(principal.username)
        if account is None:
            raise ApiError(401, INVALID_TOKEN)
        log.info("%s changed their password; their other tokens are revoked", principal.username)
        return self._pair(account)

    # ------------------------------------------------------------------ first boot

    async def ensure_setup_code(self) -> str | None:
        """While a writable backend has no users: make sure a valid setup code exists,
        and log a new one. Returns the new code, if one was made."""
        if not self.backend.writable:
            return None
        code, expires = await to_thread.run_sync(
            setup_codes.ensure_code, self.store, self.store.state_dir,
            self.settings.auth.setup_code_ttl_s, self.now())
        if code is not None and expires is not None:
            # Printed to the journal on purpose: whoever can read the service's log on
            # the printer is trusted to create the first admin.
            log.warning("no user exists: first-boot setup code %s, valid until %s; create "
                        "the first admin with POST /api/v1/auth/setup (also in %s)", code,
                        _utc(expires).strftime("%Y-%m-%d %H:%M:%SZ"),
                        setup_codes.code_path(self.store.state_dir))
        return code

    async def setup_status(self) -> dict[str, Any]:
        if not self.backend.writable:
            return {"setup_required": False, "expires_at": None}
        await self.ensure_setup_code()
        return await to_thread.run_sync(setup_codes.setup_status, self.store, self.now())

    async def complete_setup(self, code: str, username: str, password: str,
                             client: str) -> TokenPair:
        if not self.backend.writable:
            raise ApiError(409, SETUP_DONE)
        keys = [f"setup@{client}", f"addr:{client}"]
        self._admit(keys, "setup")
        try:
            record = await to_thread.run_sync(new_user_record, username, "admin", password,
                                              self.params)
        except ValueError as exc:
            self.throttle.end(keys, True, clear=[])
            field = "username" if "username" in str(exc) else "password"
            raise ApiError(400, "Invalid request body", fields={field: str(exc)}) from None
        try:
            await to_thread.run_sync(setup_codes.complete_setup, self.store,
                                     self.store.state_dir, code, record, self.now())
        except setup_codes.SetupDone:
            self.throttle.end(keys, True, clear=[])
            raise ApiError(409, SETUP_DONE) from None
        except setup_codes.InvalidSetupCode as exc:
            self._finish(keys, False)
            log.warning("setup attempt from %s refused: %s", client, exc)
            raise ApiError(401, INVALID_SETUP_CODE) from None
        except BaseException:
            self.throttle.end(keys, True, clear=[])
            raise
        self._finish(keys, True, clear=keys[:1])
        log.warning("first-boot setup complete: admin %s created from %s", username, client)
        account = await self.backend.account(username)
        assert account is not None
        return self._pair(account)

    # ------------------------------------------------------------------ users (admin)

    def _writable(self) -> None:
        if not self.backend.writable:
            raise ApiError(409, read_only_message(self.backend))

    async def list_users(self) -> list[dict[str, Any]]:
        return await self.backend.list_accounts()

    async def add_user(self, username: str, role: str, password: str, by: str) -> dict[str, Any]:
        self._writable()
        try:
            record = await self.backend.add_user(username, role, password)
        except UserExists:
            raise ApiError(409, USER_EXISTS) from None
        except ValueError as exc:
            raise ApiError(400, "Invalid request body", fields=_field_of(exc)) from None
        except ReadOnlyBackend:
            raise ApiError(409, read_only_message(self.backend)) from None
        log.info("%s added user %s (%s)", by, username, role)
        return record

    async def update_user(self, username: str, role: str | None, active: bool | None,
                          by: str) -> dict[str, Any]:
        self._writable()
        try:
            record = await self.backend.update_user(username, role=role, active=active)
        except UserNotFound:
            raise ApiError(404, USER_NOT_FOUND) from None
        except LastAdmin:
            raise ApiError(409, LAST_ADMIN) from None
        log.info("%s changed user %r: role %s, active %s", by, username, role, active)
        return record

    async def reset_password(self, username: str, password: str, by: str) -> None:
        self._writable()
        try:
            await self.backend.set_password(username, password)
        except UserNotFound:
            raise ApiError(404, USER_NOT_FOUND) from None
        except ValueError as exc:
            raise ApiError(400, "Invalid request body", fields={"password": str(exc)}) from None
        log.info("%s reset the password of %r; their tokens are revoked", by, username)

    # ------------------------------------------------------------------ API keys (admin)

    async def create_api_key(self, name: str, role: str, ttl_days: int | None,
                             by: str) -> tuple[str, dict[str, Any]]:
        days = ttl_days if ttl_days is not None else self.settings.auth.api_key_ttl_days
        try:
            key, record = await to_thread.run_sync(api_keys.create_key, self.store, name, role,
                                                   by, days * 86400.0, self.now())
        except ValueError as exc:
            field = "role" if "role" in str(exc) else "name"
            raise ApiError(400, "Invalid request body", fields={field: str(exc)}) from None
        log.info("%s created API key %s (%s, role %s)", by, record["id"], name, role)
        return key, record

    async def list_api_keys(self) -> list[dict[str, Any]]:
        return await to_thread.run_sync(api_keys.list_keys, self.store)

    async def revoke_api_key(self, ident: str, by: str) -> None:
        try:
            await to_thread.run_sync(api_keys.revoke_key, self.store, ident)
        except api_keys.ApiKeyNotFound:
            raise ApiError(404, API_KEY_NOT_FOUND) from None
        log.info("%s revoked API key %r", by, ident)


def _field_of(exc: ValueError) -> dict[str, str]:
    text = str(exc)
    for name in ("username", "password", "role"):
        if name in text:
            return {name: text}
    return {"username": text}
