"""The authentication backends: the store (default), a read-only TOML file of users, and an
external HTTP service (a real HTTP server on a loopback port), alone and behind the app."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from printhost.api.auth.backends import (BACKENDS, AuthBackend, BackendUnavailable,
                                         create_backend)
from printhost.api.auth.backends.file import FileBackend, parse_users_file
from printhost.api.auth.backends.http import HttpBackend
from printhost.api.auth.backends.store import StoreBackend
from printhost.api.auth.passwords import ScryptParams, hash_password
from printhost.config import ConfigError, parse_settings
from printhost.store import accounts
from printhost.store.db import Store
from printhost.store.users import add_user, get_user

from test_auth_api import Harness, assert_invalid_token

LIGHT = ScryptParams(2 ** 10, 8, 1)


def run(coro):
    return asyncio.run(coro)


# --------------------------------------------------------------------------- choice by config


def test_every_configurable_backend_is_registered():
    from printhost.config import AuthSettings
    import dataclasses
    choices = {f.name: f.metadata["choices"] for f in dataclasses.fields(AuthSettings)}["backend"]
    assert set(choices) == set(BACKENDS) == {"store", "file", "http"}


@pytest.mark.parametrize("auth, message", [
    ({"backend": "file"}, "auth.users_file"),
    ({"backend": "http"}, "auth.http_url"),
    ({"backend": "http", "http_url": "ftp://x"}, "auth.http_url"),
    ({"backend": "ldap"}, "auth.backend"),
    ({"password_scrypt_log2_n": 20, "password_scrypt_r": 16}, "256 MiB"),
    ({"login_lockout_s": 100.0, "login_lockout_max_s": 50.0}, "login_lockout_max_s"),
])
def test_auth_settings_are_checked(auth, message):
    with pytest.raises(ConfigError, match=message):
        parse_settings({"auth": auth})


def test_default_backend_is_the_store(tmp_path):
    backend = create_backend(parse_settings({}), Store(tmp_path))
    assert isinstance(backend, StoreBackend) and backend.writable
    assert backend.params == ScryptParams()


# --------------------------------------------------------------------------- store


def test_store_backend_rehashes_on_login_when_parameters_change(tmp_path):
    store = Store(tmp_path)
    add_user(store, "alice", "operator", "alice-pass-1", params=LIGHT)
    backend = StoreBackend(store, ScryptParams(2 ** 11, 8, 1))
    account = run(backend.verify("alice", "alice-pass-1"))
    assert account is not None and account.role == "operator"
    assert get_user(store, "alice")["password_hash"].startswith("scrypt$2048$8$1$")
    assert run(backend.verify("alice", "wrong-pass")) is None
    assert run(backend.verify("alice", "alice-pass-1")) is not None


# --------------------------------------------------------------------------- file


def _users_file(tmp_path, body: str):
    path = tmp_path / "users.toml"
    path.write_text(body)
    path.chmod(0o600)
    return path


def _entry(name: str, role: str, password: str, extra: str = "") -> str:
    return (f'[users.{name}]\nrole = "{role}"\npassword_hash = "{hash_password(password, LIGHT)}"\n'
            f"{extra}\n")


def test_file_backend_verifies_and_reloads(tmp_path):
    path = _users_file(tmp_path, _entry("alice", "admin", "alice-pass-1")
                       + _entry("bob", "viewer", "bob-pass-12", "active = false"))
    store = Store(tmp_path / "state")
    backend = FileBackend(store, path, LIGHT, recheck_s=0.0)
    alice = run(backend.verify("alice", "alice-pass-1"))
    assert alice is not None and alice.role == "admin" and alice.active
    assert run(backend.verify("alice", "wrong-pass")) is None
    assert run(backend.verify("bob", "bob-pass-12")) is None          # deactivated
    assert run(backend.verify("nobody", "bob-pass-12")) is None
    assert run(backend.account("bob")).active is False
    # Revocation lives in the store.
    version = run(backend.account("alice")).token_version
    assert run(backend.revoke_all("alice")) == version + 1
    assert accounts.get_account(store, "file", "alice")["token_version"] == version + 1
    with pytest.raises(LookupError):
        run(backend.revoke_all("nobody"))
    assert not backend.writable
    listed = run(backend.list_accounts())
    assert [(u["username"], u["role"], u["active"]) for u in listed] == [
        ("alice", "admin", True), ("bob", "viewer", False)]
    # An edit is picked up; a broken edit keeps the last good file.
    time.sleep(0.01)
    path.write_text(_entry("alice", "operator", "alice-pass-2"))
    assert run(backend.account("alice")).role == "operator"
    assert run(backend.account("bob")) is None
    path.write_text("[users.alice\n")
    assert run(backend.account("alice")).role == "operator"


@pytest.mark.parametrize("body, problem", [
    ("[users\n", "invalid TOML"),
    ("[people.alice]\n", "unknown top-level key"),
    ('[users."bad name"]\nrole = "admin"\npassword_hash = "x"\n', "may only contain"),
    ('[users.alice]\nrole = "root"\npassword_hash = "x"\n', "users.alice.role"),
    ('[users.alice]\nrole = "admin"\npassword_hash = "plain"\n', "users.alice.password_hash"),
    ('[users.alice]\nrole = "admin"\npassword = "plain"\n', "users.alice.password"),
])
def test_file_backend_refuses_a_bad_file(tmp_path, body, problem):
    path = _users_file(tmp_path, body)
    with pytest.raises(ValueError, match=problem):
        parse_users_file(path)
    with pytest.raises(ValueError):
        create_backend(parse_settings({"auth": {"backend": "file", "users_file": str(path)}}),
                       Store(tmp_path / "state"))


def test_file_backend_behind_the_app(tmp_path):
    path = _users_file(tmp_path, _entry("alice", "admin", "alice-pass-1")
                       + _entry("bob", "operator", "bob-pass-12"))
    h = Harness(tmp_path, users=False, backend="file", users_file=str(path))
    # No setup code: users are managed in the file.
    assert run(h.auth.ensure_setup_code()) is None
    assert h.client.get("/api/v1/auth/setup").json()["setup_required"] is False
    alice = h.login("alice", "alice-pass-1").json()
    admin = h.bearer(alice["token"])
    assert h.check(alice["token"]).json()["roles"] == ["admin"]
    assert [u["username"] for u in h.client.get("/api/v1/users", headers=admin).json()["users"]] \
        == ["alice", "bob"]
    message = ("Users are managed outside printhost (auth.backend = file); change them there")
    for method, url, body in (
            ("POST", "/api/v1/users", {"username": "c", "role": "viewer", "password": "x" * 8}),
            ("PATCH", "/api/v1/users/bob", {"role": "viewer"}),
            ("POST", "/api/v1/users/bob/password", {"password": "x" * 8}),
            ("POST", "/api/v1/auth/password", {"current_password": "alice-pass-1",
                                               "new_password": "x" * 8})):
        r = h.client.request(method, url, headers=admin, json=body)
        assert r.status_code == 409 and r.json() == {"error": message}, url
    bob = h.login("bob", "bob-pass-12").json()
    assert h.client.post("/api/v1/auth/logout_all", headers=h.bearer(bob["token"])).status_code == 200
    assert_invalid_token(h.check(bob["token"]))
    assert h.check(alice["token"]).status_code == 200
    # Taking a user out of the file ends their tokens at the next look at the file.
    bob = h.login("bob", "bob-pass-12").json()
    assert h.check(bob["token"]).status_code == 200
    h.auth.backend.recheck_s = 0.0
    path.write_text(_entry("alice", "admin", "alice-pass-1"))
    assert_invalid_token(h.check(bob["token"]))
    assert h.login("bob", "bob-pass-12").status_code == 401
    assert h.check(alice["token"]).status_code == 200


# --------------------------------------------------------------------------- http


class AuthServer:
    """A small external auth service: answers per user, records what it was asked."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.answers: dict[str, tuple[int, object]] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                outer.requests.append({"body": body, "auth": self.headers.get("Authorization"),
                                       "type": self.headers.get("Content-Type"),
                                       "path": self.path})
                status, answer = outer.answers.get(body["username"], (401, {"error": "no"}))
                if status == "slow":
                    time.sleep(3)
                    status = 200
                if status == "redirect":
                    self.send_response(302)
                    self.send_header("Location", "http://127.0.0.1:1/steal")
                    self.end_headers()
                    return
                if isinstance(answer, dict) and answer.get("password") not in (None,
                                                                               body["password"]):
                    status, answer = 401, {"error": "wrong password"}
                raw = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/check"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def auth_server():
    server = AuthServer()
    yield server
    server.close()


def test_http_backend_protocol(tmp_path, auth_server):
    s = auth_server
    s.answers = {"alice": (200, {"password": "alice-pass-1", "roles": ["viewer", "operator"]}),
                 "carl": (200, {"password": "carl-pass-12", "role": "admin", "active": False}),
                 "dora": (200, {"password": "dora-pass-12", "roles": ["guest"]}),
                 "erin": (500, {"error": "db down"}),
                 "fred": (200, b"<html>"),
                 "gina": ("redirect", None),
                 "hank": ("slow", {"role": "admin"})}
    store = Store(tmp_path)
    backend = HttpBackend(store, s.url, timeout_s=1.0, token="shared-secret")
    alice = run(backend.verify("alice", "alice-pass-1"))
    assert alice is not None and alice.role == "operator"
    assert s.requests[-1] == {"body": {"username": "alice", "password": "alice-pass-1"},
                              "auth": "Bearer shared-secret", "type": "application/json",
                              "path": "/check"}
    assert run(backend.verify("alice", "wrong-pass")) is None
    assert run(backend.verify("carl", "carl-pass-12")) is None        # inactive
    assert run(backend.verify("dora", "dora-pass-12")) is None        # no known role
    assert run(backend.verify("nobody", "whatever-1")) is None        # 401
    for user in ("erin", "fred", "gina", "hank"):
        with pytest.raises(BackendUnavailable):
            run(backend.verify(user, "whatever-1"))
    # Requests are authorised from the stored state, without asking the service.
    asked = len(s.requests)
    account = run(backend.account("alice"))
    assert account.role == "operator" and len(s.requests) == asked
    assert run(backend.account("nobody")) is None
    # A new role at the next login revokes tokens issued under the old one.
    s.answers["alice"] = (200, {"password": "alice-pass-1", "role": "admin"})
    again = run(backend.verify("alice", "alice-pass-1"))
    assert again.role == "admin" and again.token_version == account.token_version + 1
    assert [u["username"] for u in run(backend.list_accounts())] == ["alice"]


def test_http_backend_down(tmp_path):
    backend = HttpBackend(Store(tmp_path), "http://127.0.0.1:9/check", timeout_s=0.5)
    with pytest.raises(BackendUnavailable):
        run(backend.verify("alice", "alice-pass-1"))


def test_http_backend_behind_the_app(tmp_path, auth_server):
    token_file = tmp_path / "token"
    token_file.write_text("fleet-token\n")
    auth_server.answers = {"alice": (200, {"password": "alice-pass-1", "role": "operator"}),
                           "erin": (503, {})}
    h = Harness(tmp_path, users=False, backend="http", http_url=auth_server.url,
                http_timeout_s=1.0, http_token_file=str(token_file))
    r = h.login("alice", "alice-pass-1")
    assert r.status_code == 200
    assert auth_server.requests[-1]["auth"] == "Bearer fleet-token"
    token = r.json()["token"]
    assert h.client.get("/api/v1/status", headers=h.bearer(token)).status_code == 200
    assert h.client.get("/api/v1/users", headers=h.bearer(token)).status_code == 403
    r = h.login("alice", "wrong-pass")
    assert r.status_code == 401 and r.json() == {"error": "Invalid credentials"}
    r = h.login("erin", "whatever-1")
    assert r.status_code == 503 and r.json() == {"error": "Authentication service unavailable"}
    assert "fleet-token" not in r.text
    # An unavailable service is nobody's failed guess: no lockout builds up.
    for _ in range(5):
        assert h.login("erin", "whatever-1").status_code == 503
    assert h.client.post("/api/v1/auth/logout_all", headers=h.bearer(token)).status_code == 200
    assert_invalid_token(h.check(token))


# --------------------------------------------------------------------------- a new backend


def test_a_new_backend_plugs_in(tmp_path, monkeypatch):
    """What docs/extending.md describes: subclass, register, select by name."""
    from printhost.api.auth.backends.base import Account

    class FixedBackend(AuthBackend):
        name = "fixed"

        def __init__(self) -> None:
            self.version = 1

        async def verify(self, username, password):
            ok = username == "kiosk" and password == "kiosk-pass-1"
            return Account("kiosk", "viewer", self.version) if ok else None

        async def account(self, username):
            return Account("kiosk", "viewer", self.version) if username == "kiosk" else None

        async def revoke_all(self, username):
            self.version += 1
            return self.version

    backend = FixedBackend()
    monkeypatch.setitem(BACKENDS, "store", lambda settings, store: backend)
    h = Harness(tmp_path, users=False)
    token = h.login("kiosk", "kiosk-pass-1").json()["token"]
    assert h.check(token).json()["username"] == "kiosk"
    h.client.post("/api/v1/auth/logout_all", headers=h.bearer(token))
    assert backend.version == 2
    assert_invalid_token(h.check(token))
