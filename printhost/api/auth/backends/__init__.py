"""Authentication backends, chosen with `auth.backend`.

`BACKENDS` maps each configuration value to a factory taking the settings and the
store; `create_backend` builds the configured one. A new backend is a subclass of
`AuthBackend` (base.py) registered here and listed in the choices of
`AuthSettings.backend` (docs/extending.md, "Adding an authentication backend").
"""

from __future__ import annotations

from collections.abc import Callable

from printhost.api.auth.backends.base import (Account, AuthBackend, BackendUnavailable,
                                              ReadOnlyBackend)
from printhost.api.auth.backends.file import FileBackend
from printhost.api.auth.backends.http import HttpBackend, read_token_file
from printhost.api.auth.backends.store import StoreBackend
from printhost.api.auth.passwords import ScryptParams
from printhost.config import Settings
from printhost.store.db import Store

__all__ = ["Account", "AuthBackend", "BackendUnavailable", "ReadOnlyBackend", "BACKENDS",
           "create_backend", "scrypt_params"]


def scrypt_params(settings: Settings) -> ScryptParams:
    a = settings.auth
    return ScryptParams.from_log2(a.password_scrypt_log2_n, a.password_scrypt_r,
                                  a.password_scrypt_p)


BACKENDS: dict[str, Callable[[Settings, Store], AuthBackend]] = {
    "store": lambda s, store: StoreBackend(store, scrypt_params(s)),
    "file": lambda s, store: FileBackend(store, s.auth.users_file, scrypt_params(s)),
    "http": lambda s, store: HttpBackend(store, s.auth.http_url, s.auth.http_timeout_s,
                                         read_token_file(s.auth.http_token_file)),
}


def create_backend(settings: Settings, store: Store) -> AuthBackend:
    """The backend `auth.backend` names; ValueError (fit for the operator) if it cannot
    be set up, e.g. a users file that does not check out."""
    try:
        factory = BACKENDS[settings.auth.backend]
    except KeyError:
        raise ValueError(f"auth.backend: unknown backend {settings.auth.backend!r}") from None
    return factory(settings, store)
