"""Authentication through the real application (`create_app`), in this process.

Everything but the control process is real: the Starlette app with its middleware and
every route module, the tinydb store in a temporary state directory, the token service
with its keyring on disk, the deny-list, API keys, the setup code. The control link is
a stand-in (these tests never print). The token clock and the throttle clock are
steerable, so expiry and lockout schedules are checked exactly; the end-to-end tests
(tests/e2e/test_auth_flows.py) repeat the important cases against the running service.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import stat
import time
from pathlib import Path

import httpx
import jwt
import pytest
from starlette.testclient import TestClient

from printhost.api.app import all_endpoints, create_app
from printhost.api.auth.core import AuthService
from printhost.api.auth.passwords import ScryptParams
from printhost.api.auth.secrets import KeyRingSource, load_jwt_secret, rotate_signing_key
from printhost.api.auth.tokens import TokenService, key_id
from printhost.config import parse_settings
from printhost.store import revocations
from printhost.store.db import Store
from printhost.store.files import GCodeFiles
from printhost.store.jobs import JobHistory
from printhost.store.users import add_user, get_user
from tests.auth_support import b64json as _b64, forge_hs256 as _hs256

PASSWORDS = {"admin": "admin-pass-123", "operator": "operator-pass-123",
             "viewer": "viewer-pass-123"}
T0 = 1_800_000_000.0
LIGHT = ScryptParams(2 ** 10, 8, 1)     # the harness's auth.password_scrypt_log2_n = 10


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeLink:
    """The control process is not part of these tests."""

    def unavailable_reason(self):
        return None

    def status(self):
        return {"state": "idle", "job": None, "printer": None, "error": None}

    async def request(self, command, args=None):
        raise AssertionError("no printer commands in auth tests")


class Harness:
    """The app on a fresh state directory, with steerable clocks."""

    def __init__(self, root: Path, users: bool = True, **auth: object) -> None:
        self.root = root
        self.state = root / "state"
        self.settings = parse_settings({"server": {"state_dir": str(self.state)},
                                        "auth": {"password_scrypt_log2_n": 10,
                                                 "login_max_failures": 3,
                                                 "login_window_s": 60.0,
                                                 "login_lockout_s": 10.0,
                                                 "login_lockout_max_s": 40.0, **auth}})
        self.clock = Clock(T0)
        self.throttle_clock = Clock(5000.0)
        self.store = Store(self.state)
        if users:
            for role, password in PASSWORDS.items():
                add_user(self.store, role, role, password, params=LIGHT)
        self.build()

    def build(self) -> None:
        """(Re)create the app on the same state directory, as a service restart does."""
        s = self.settings
        self.keys = KeyRingSource(s, self.state, recheck_s=0.0, clock=self.clock)
        self.tokens = TokenService(self.keys, s.auth.issuer, s.auth.token_ttl_s,
                                   clock=self.clock, refresh_ttl_s=s.auth.refresh_ttl_s)
        self.app = create_app(s, link=FakeLink(), store=self.store, tokens=self.tokens,
                              files=GCodeFiles(self.state), jobs=JobHistory(self.store))
        # The same service with a steerable throttle clock.
        self.app.state.auth = AuthService(s, self.store, self.tokens,
                                          throttle_clock=self.throttle_clock)
        self.app.state.throttle = self.app.state.auth.throttle
        self.auth: AuthService = self.app.state.auth
        self.client = TestClient(self.app, raise_server_exceptions=False)

    def login(self, user: str = "operator", password: str | None = None) -> httpx.Response:
        return self.client.post("/api/v1/auth/login",
                                json={"username": user, "password": password or PASSWORDS[user]})

    def pair(self, user: str = "operator") -> dict:
        r = self.login(user)
        assert r.status_code == 200, r.text
        return r.json()

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def check(self, token: str) -> httpx.Response:
        return self.client.get("/api/v1/auth/check", headers=self.bearer(token))

    def secret(self) -> bytes:
        return load_jwt_secret(self.settings, self.state)

    def forge(self, claims: dict | None = None, *, header: dict | None = None,
              key: bytes | None = None, **overrides) -> str:
        """A token made by hand with the service's own key (unless told otherwise)."""
        key = key or self.secret()
        user = get_user(self.store, "operator")
        body = {"sub": "operator", "roles": ["operator"], "ver": user["token_version"],
                "iss": "printhost", "aud": "printhost", "iat": int(self.clock.now),
                "nbf": int(self.clock.now), "exp": int(self.clock.now) + 600,
                "jti": "forged-jti-1", "sid": "forged-sid-1", "typ": "access"}
        body.update(claims or {})
        body.update(overrides)
        hdr = {"alg": "HS256", "typ": "JWT", "kid": key_id(key)}
        hdr.update(header or {})
        return _hs256(hdr, body, key)


@pytest.fixture
def h(tmp_path) -> Harness:
    return Harness(tmp_path)


def assert_invalid_token(r: httpx.Response, what: str = "") -> None:
    assert r.status_code == 401, (what, r.status_code, r.text)
    assert r.json() == {"error": "Invalid token"}, what
    assert r.headers["www-authenticate"] == 'Bearer realm="printhost"'


# --------------------------------------------------------------------------- the JWT attack suite


def test_forged_control_token_is_accepted(h):
    """Every attack below differs from this token only in the defect it adds."""
    r = h.check(h.forge())
    assert r.status_code == 200 and r.json()["username"] == "operator"


def test_jwt_attack_suite_each_gets_401(h):
    # A token of a key that has been rotated out and whose grace period has passed.
    old_token = h.pair("operator")["token"]
    rotate_signing_key(h.settings, h.state, accept_for_s=60, now=h.clock.now)
    assert h.check(old_token).status_code == 200          # still inside the grace period
    h.clock.now += 61
    assert h.check(h.forge()).status_code == 200          # the new key signs and verifies

    good = h.forge()
    head, payload, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    pair = h.pair("operator")
    revoked = h.pair("operator")["token"]
    assert h.client.post("/api/v1/auth/logout", headers=h.bearer(revoked)).status_code == 200

    attacks = {
        "rotated-out key": old_token,
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': key_id(h.secret())})}."
                    f"{payload}.",
        "alg none keeping the signature": f"{_b64({'alg': 'none'})}.{payload}.{sig}",
        "algorithm confusion RS256": h.forge(header={"alg": "RS256"}),
        "algorithm confusion HS512": jwt.encode(claims, h.secret(), algorithm="HS512",
                                                headers={"kid": key_id(h.secret())}),
        "expired": h.forge(exp=int(h.clock.now) - 1, iat=int(h.clock.now) - 700,
                           nbf=int(h.clock.now) - 700),
        "not yet valid": h.forge(nbf=int(h.clock.now) + 60),
        "issued in the future": h.forge(iat=int(h.clock.now) + 60),
        "wrong aud": h.forge(aud="fleet"),
        "aud list": h.forge(aud=["printhost", "fleet"]),
        "wrong iss": h.forge(iss="evil"),
        "unknown kid": h.forge(header={"kid": "k0123456789abcdef"}),
        "no kid": h.forge(header={"kid": None}),
        "key of another printer": h.forge(key=b"x" * 64),
        "refresh used as access": pair["refresh_token"],
        "typ missing": h.forge(typ=None),
        "tampered payload": f"{head}.{_b64({**claims, 'roles': ['admin'], 'sub': 'admin'})}.{sig}",
        "tampered signature": f"{head}.{payload}.{'A' if sig[0] != 'A' else 'B'}{sig[1:]}",
        "revoked (logged out)": revoked,
        "old token version": h.forge(ver=claims["ver"] - 1),
        "unknown user": h.forge(sub="ghost"),
        "garbage": "not.a.jwt",
    }
    for what, token in attacks.items():
        for path in ("/api/v1/auth/check", "/api/v1/status", "/api/v1/users"):
            assert_invalid_token(h.client.get(path, headers=h.bearer(token)), f"{what} {path}")
    # and the current key still works
    assert h.check(h.pair("operator")["token"]).status_code == 200


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic abc", "bearer a b",
                                    "Token abc"])
def test_malformed_authorization_headers(h, header):
    headers = {} if header is None else {"Authorization": header}
    assert_invalid_token(h.client.get("/api/v1/auth/check", headers=headers), repr(header))


def test_token_expiry_follows_the_clock(h):
    pair = h.pair("viewer")
    h.clock.now += 3599
    assert h.check(pair["token"]).status_code == 200
    h.clock.now += 1
    assert_invalid_token(h.check(pair["token"]))


# --------------------------------------------------------------------------- login, refresh, logout


def test_login_answers_the_contract_shape_plus_refresh(h):
    r = h.login("admin")
    body = r.json()
    assert r.status_code == 200
    assert set(body) == {"token", "token_type", "expires_at", "refresh_token",
                         "refresh_expires_at"}
    assert body["token_type"] == "bearer"
    for key in ("expires_at", "refresh_expires_at"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body[key])
    check = h.check(body["token"]).json()
    assert check == {"valid": True, "username": "admin", "roles": ["admin"],
                     "expires_at": body["expires_at"]}


def test_wrong_password_and_unknown_user_look_the_same(h):
    a = h.login("operator", "wrong-password")
    b = h.login("nobody-here", "wrong-password")
    c = h.login("bad name!", "wrong-password")
    for r in (a, b, c):
        assert r.status_code == 401 and r.json() == {"error": "Invalid credentials"}
    assert a.headers.keys() == b.headers.keys()


def test_refresh_rotates_and_a_reused_refresh_token_kills_the_session(h):
    first = h.pair("operator")
    r = h.client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 200
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert h.check(second["token"]).status_code == 200
    assert h.check(first["token"]).status_code == 200      # rotation alone revokes nothing
    # The first refresh token again: a copy is in use somewhere; the session dies.
    r = h.client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert_invalid_token(r)
    for token in (first["token"], second["token"]):
        assert_invalid_token(h.check(token))
    r = h.client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert_invalid_token(r)
    # Other sessions of the user are untouched.
    assert h.check(h.pair("operator")["token"]).status_code == 200


def test_refresh_refuses_access_tokens_and_expired_refresh_tokens(h):
    pair = h.pair("viewer")
    assert_invalid_token(h.client.post("/api/v1/auth/refresh",
                                       json={"refresh_token": pair["token"]}))
    h.clock.now += h.settings.auth.refresh_ttl_s
    assert_invalid_token(h.client.post("/api/v1/auth/refresh",
                                       json={"refresh_token": pair["refresh_token"]}))
    r = h.client.post("/api/v1/auth/refresh", json={"refresh_token": 5})
    assert r.status_code == 400 and r.json()["fields"] == {"refresh_token": "expected string"}


def test_refresh_picks_up_the_current_role(h):
    pair = h.pair("viewer")
    admin = h.pair("admin")["token"]
    r = h.client.patch("/api/v1/users/viewer", headers=h.bearer(admin), json={"role": "operator"})
    assert r.status_code == 200 and r.json()["role"] == "operator"
    # A role change revokes the user's tokens, refresh tokens included.
    assert_invalid_token(h.check(pair["token"]))
    assert_invalid_token(h.client.post("/api/v1/auth/refresh",
                                       json={"refresh_token": pair["refresh_token"]}))
    assert h.check(h.pair("viewer")["token"]).json()["roles"] == ["operator"]


def test_logout_revokes_the_session_and_survives_a_restart(h):
    a = h.pair("operator")
    b = h.pair("operator")
    r = h.client.post("/api/v1/auth/logout", headers=h.bearer(a["token"]))
    assert r.status_code == 200 and r.json() == {"result": "ok"}
    assert_invalid_token(h.check(a["token"]))
    assert_invalid_token(h.client.post("/api/v1/auth/refresh",
                                       json={"refresh_token": a["refresh_token"]}))
    assert h.check(b["token"]).status_code == 200
    h.build()                                   # a service restart on the same state
    assert_invalid_token(h.check(a["token"]))
    assert h.check(b["token"]).status_code == 200
    assert_invalid_token(h.client.post("/api/v1/auth/logout", headers=h.bearer(a["token"])))


def test_deny_list_entries_are_dropped_once_their_tokens_expired(h):
    pair = h.pair("operator")
    h.client.post("/api/v1/auth/logout", headers=h.bearer(pair["token"]))
    assert revocations.count(h.store) == 2          # the jti and the session
    h.clock.now += h.settings.auth.refresh_ttl_s + 2
    other = h.pair("viewer")
    h.client.post("/api/v1/auth/logout", headers=h.bearer(other["token"]))
    assert revocations.count(h.store) == 2          # the old two were pruned


def test_logout_everywhere(h):
    sessions = [h.pair("operator") for _ in range(3)]
    viewer = h.pair("viewer")
    r = h.client.post("/api/v1/auth/logout_all", headers=h.bearer(sessions[0]["token"]),
                      json={})
    assert r.status_code == 200
    for s in sessions:
        assert_invalid_token(h.check(s["token"]))
        assert_invalid_token(h.client.post("/api/v1/auth/refresh",
                                           json={"refresh_token": s["refresh_token"]}))
    assert h.check(viewer["token"]).status_code == 200
    assert h.check(h.pair("operator")["token"]).status_code == 200


def test_password_change_revokes_every_token_and_returns_a_new_pair(h):
    old = [h.pair("operator") for _ in range(2)]
    url = "/api/v1/auth/password"
    r = h.client.post(url, headers=h.bearer(old[0]["token"]),
                      json={"current_password": "wrong-one", "new_password": "brand-new-pass"})
    assert r.status_code == 401 and r.json() == {"error": "Invalid credentials"}
    r = h.client.post(url, headers=h.bearer(old[0]["token"]),
                      json={"current_password": PASSWORDS["operator"], "new_password": "short"})
    assert r.status_code == 400 and "new_password" in r.json()["fields"]
    r = h.client.post(url, headers=h.bearer(old[0]["token"]),
                      json={"current_password": PASSWORDS["operator"],
                            "new_password": "brand-new-pass"})
    assert r.status_code == 200, r.text
    fresh = r.json()
    for s in old:
        assert_invalid_token(h.check(s["token"]))
    assert h.check(fresh["token"]).status_code == 200
    assert h.login("operator").status_code == 401
    assert h.login("operator", "brand-new-pass").status_code == 200


def test_token_only_endpoints_refuse_api_keys(h):
    admin = h.pair("admin")["token"]
    key = h.client.post("/api/v1/api_keys", headers=h.bearer(admin),
                        json={"name": "ha", "role": "admin"}).json()["key"]
    for path, body in (("/api/v1/auth/logout", {}), ("/api/v1/auth/logout_all", {}),
                       ("/api/v1/auth/password", {"current_password": "x" * 8,
                                                  "new_password": "y" * 8})):
        r = h.client.post(path, headers={"X-Api-Key": key}, json=body)
        assert r.status_code == 403, path
        assert r.json() == {"error": "This endpoint needs a user's token, not an API key"}


# --------------------------------------------------------------------------- roles


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_every_route_enforces_its_declared_role(h):
    """One declaration per route: a lower role gets 403 and no credentials 401, on every
    route, before the handler runs (no body is even sent)."""
    tokens = {role: h.pair(role)["token"] for role in PASSWORDS}
    order = ["viewer", "operator", "admin"]
    checked = 0
    for ep in all_endpoints():
        if ep.role is None:
            continue
        path = _fill(ep.path)
        r = h.client.request(ep.method, path)
        assert r.status_code == 401, (ep.method, ep.path)
        for role in order[:order.index(ep.role)]:
            r = h.client.request(ep.method, path, headers=h.bearer(tokens[role]))
            assert r.status_code == 403, (ep.method, ep.path, role)
            assert r.json() == {"error": "Insufficient permissions"}
            checked += 1
    assert checked >= 10


def test_demotion_takes_effect_on_the_next_request(h):
    admin = h.pair("admin")
    other_admin = h.client.post("/api/v1/users", headers=h.bearer(admin["token"]),
                                json={"username": "boss", "role": "admin",
                                      "password": "boss-pass-123"})
    assert other_admin.status_code == 201
    boss = h.login("boss", "boss-pass-123").json()
    assert h.client.get("/api/v1/users", headers=h.bearer(boss["token"])).status_code == 200
    h.client.patch("/api/v1/users/boss", headers=h.bearer(admin["token"]),
                   json={"role": "viewer"})
    assert_invalid_token(h.client.get("/api/v1/users", headers=h.bearer(boss["token"])))
    boss = h.login("boss", "boss-pass-123").json()
    r = h.client.get("/api/v1/users", headers=h.bearer(boss["token"]))
    assert r.status_code == 403


# --------------------------------------------------------------------------- user management


def test_user_management(h):
    admin = h.bearer(h.pair("admin")["token"])
    r = h.client.get("/api/v1/users", headers=admin)
    assert r.status_code == 200
    users = r.json()["users"]
    assert [u["username"] for u in users] == ["admin", "operator", "viewer"]
    assert all(set(u) == {"username", "role", "active", "created_at"} for u in users)
    assert "hash" not in r.text and "scrypt" not in r.text

    r = h.client.post("/api/v1/users", headers=admin,
                      json={"username": "carol", "role": "operator", "password": "carol-pass-1"})
    assert r.status_code == 201 and r.json()["role"] == "operator" and r.json()["active"]
    r = h.client.post("/api/v1/users", headers=admin,
                      json={"username": "CAROL", "role": "viewer", "password": "carol-pass-1"})
    assert r.status_code == 409 and r.json() == {"error": "User already exists"}
    r = h.client.post("/api/v1/users", headers=admin,
                      json={"username": "bad name", "role": "viewer", "password": "carol-pass-1"})
    assert r.status_code == 400 and "username" in r.json()["fields"]
    r = h.client.post("/api/v1/users", headers=admin,
                      json={"username": "dave", "role": "root", "password": "carol-pass-1"})
    assert r.status_code == 400 and r.json()["fields"] == {"role": "must be one of viewer, "
                                                                   "operator, admin"}
    carol = h.login("carol", "carol-pass-1").json()

    # deactivate: no login (same answer as a wrong password), tokens dead
    r = h.client.patch("/api/v1/users/carol", headers=admin, json={"active": False})
    assert r.status_code == 200 and r.json()["active"] is False
    assert_invalid_token(h.check(carol["token"]))
    r = h.login("carol", "carol-pass-1")
    assert r.status_code == 401 and r.json() == {"error": "Invalid credentials"}
    r = h.client.patch("/api/v1/users/carol", headers=admin, json={"active": True})
    assert r.json()["active"] is True
    assert h.login("carol", "carol-pass-1").status_code == 200

    # reset password
    carol = h.login("carol", "carol-pass-1").json()
    r = h.client.post("/api/v1/users/carol/password", headers=admin,
                      json={"password": "reset-pass-22"})
    assert r.status_code == 200 and r.json() == {"result": "ok"}
    assert_invalid_token(h.check(carol["token"]))
    assert h.login("carol", "carol-pass-1").status_code == 401
    assert h.login("carol", "reset-pass-22").status_code == 200

    # errors
    assert h.client.patch("/api/v1/users/ghost", headers=admin,
                          json={"role": "viewer"}).status_code == 404
    assert h.client.post("/api/v1/users/ghost/password", headers=admin,
                         json={"password": "whatever-1"}).json() == {"error": "User not found"}
    r = h.client.patch("/api/v1/users/carol", headers=admin, json={})
    assert r.status_code == 400 and "role" in r.json()["fields"]
    r = h.client.patch("/api/v1/users/admin", headers=admin, json={"role": "operator"})
    assert r.status_code == 409
    assert r.json() == {"error": "The last active admin cannot be demoted or deactivated"}
    r = h.client.patch("/api/v1/users/admin", headers=admin, json={"active": "no"})
    assert r.status_code == 400 and r.json()["fields"] == {"active": "expected boolean"}


# --------------------------------------------------------------------------- API keys


def test_api_keys(h):
    admin = h.bearer(h.pair("admin")["token"])
    r = h.client.post("/api/v1/api_keys", headers=admin,
                      json={"name": "prusaslicer", "role": "operator", "expires_in_days": 30})
    assert r.status_code == 201
    created = r.json()
    key = created["key"]
    assert re.fullmatch(r"phk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key)
    assert created["id"] == key[4:16] and created["created_by"] == "admin"
    # shown once: neither the list nor the store has it
    listed = h.client.get("/api/v1/api_keys", headers=admin).json()["api_keys"]
    assert listed == [{k: v for k, v in created.items() if k != "key"}]
    assert key not in (h.state / "printhost.json").read_text()
    assert key[17:] not in (h.state / "printhost.json").read_text()

    as_key = {"X-Api-Key": key}
    r = h.client.get("/api/v1/auth/check", headers=as_key)
    assert r.status_code == 200
    assert r.json()["username"] == "api-key:prusaslicer" and r.json()["roles"] == ["operator"]
    assert h.client.get("/api/v1/status", headers=as_key).status_code == 200
    # scoped to its role
    assert h.client.get("/api/v1/users", headers=as_key).status_code == 403

    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    for headers, message in (({"X-Api-Key": wrong}, "Invalid API key"),
                             ({"X-Api-Key": "phk_" + "0" * 12 + "_" + "a" * 43}, "Invalid API key"),
                             ({"X-Api-Key": "nonsense"}, "Invalid API key"),
                             ({"X-Api-Key": ""}, "Invalid API key"),
                             ({**as_key, **admin},
                              "Send either a bearer token or an API key, not both")):
        r = h.client.get("/api/v1/status", headers=headers)
        assert r.status_code == 401 and r.json() == {"error": message}

    # expiry follows the clock
    h.clock.now += 30 * 86400
    assert h.client.get("/api/v1/status", headers=as_key).status_code == 401
    h.clock.now -= 30 * 86400

    # revocation
    r = h.client.delete(f"/api/v1/api_keys/{created['id']}", headers=admin)
    assert r.status_code == 200
    assert h.client.get("/api/v1/status", headers=as_key).json() == {"error": "Invalid API key"}
    r = h.client.delete(f"/api/v1/api_keys/{created['id']}", headers=admin)
    assert r.status_code == 404 and r.json() == {"error": "API key not found"}
    assert h.client.get("/api/v1/api_keys", headers=admin).json() == {"api_keys": []}


def test_api_key_defaults_and_validation(h):
    admin = h.bearer(h.pair("admin")["token"])
    r = h.client.post("/api/v1/api_keys", headers=admin, json={"name": "ha", "role": "viewer"})
    expires = r.json()["expires_at"]
    expected = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(h.clock.now + 365 * 86400))
    assert expires == expected
    for body, field in (({"name": "", "role": "viewer"}, "name"),
                        ({"name": "x\ny", "role": "viewer"}, "name"),
                        ({"name": "ok", "role": "god"}, "role"),
                        ({"name": "ok", "role": "viewer", "expires_in_days": 0},
                         "expires_in_days"),
                        ({"name": "ok", "role": "viewer", "key": "mine"}, "key")):
        r = h.client.post("/api/v1/api_keys", headers=admin, json=body)
        assert r.status_code == 400 and field in r.json()["fields"], body


# --------------------------------------------------------------------------- first boot


def _setup_file(h: Harness) -> dict:
    return json.loads((h.state / "setup_code.json").read_text())


def test_first_boot_setup_code(tmp_path, caplog):
    h = Harness(tmp_path, users=False, setup_code_ttl_s=600)
    with caplog.at_level("WARNING", logger="printhost.auth"):
        code = asyncio.run(h.auth.ensure_setup_code())
    assert code and re.fullmatch(r"([2-9A-HJKMNP-Z]{4}-){3}[2-9A-HJKMNP-Z]{4}", code)
    assert any(code in r.getMessage() for r in caplog.records)
    path = h.state / "setup_code.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _setup_file(h)["code"] == code
    assert code not in (h.state / "printhost.json").read_text()
    # A second start within the lifetime keeps the same code.
    assert asyncio.run(h.auth.ensure_setup_code()) is None and _setup_file(h)["code"] == code

    status = h.client.get("/api/v1/auth/setup").json()
    assert status["setup_required"] is True and status["expires_at"].endswith("Z")
    assert code not in json.dumps(status)
    # Nobody can log in yet, and there is no default account.
    assert h.login("admin", "admin").status_code == 401

    body = {"code": "AAAA-BBBB-CCCC-DDDD", "username": "root", "password": "root-pass-123"}
    r = h.client.post("/api/v1/auth/setup", json=body)
    assert r.status_code == 401 and r.json() == {"error": "Invalid setup code"}
    r = h.client.post("/api/v1/auth/setup", json={**body, "code": code.lower().replace("-", " ")})
    assert r.status_code == 201
    assert h.check(r.json()["token"]).json()["roles"] == ["admin"]
    assert not path.exists()
    # Single use.
    r = h.client.post("/api/v1/auth/setup", json={**body, "code": code, "username": "root2"})
    assert r.status_code == 409 and r.json() == {"error": "Setup is already complete"}
    assert h.client.get("/api/v1/auth/setup").json() == {"setup_required": False,
                                                          "expires_at": None}
    assert h.login("root", "root-pass-123").status_code == 200


def test_setup_code_expires_and_is_replaced(tmp_path):
    h = Harness(tmp_path, users=False, setup_code_ttl_s=600)
    old = asyncio.run(h.auth.ensure_setup_code())
    h.clock.now += 600
    body = {"code": old, "username": "root", "password": "root-pass-123"}
    r = h.client.post("/api/v1/auth/setup", json=body)
    assert r.status_code == 401 and r.json() == {"error": "Invalid setup code"}
    status = h.client.get("/api/v1/auth/setup").json()     # replaces the expired code
    new = _setup_file(h)["code"]
    assert new != old and status["setup_required"] is True
    assert h.client.post("/api/v1/auth/setup", json=body).status_code == 401
    assert h.client.post("/api/v1/auth/setup", json={**body, "code": new}).status_code == 201


def test_setup_code_works_once_under_concurrency(tmp_path):
    h = Harness(tmp_path, users=False)
    code = asyncio.run(h.auth.ensure_setup_code())

    async def race():
        transport = httpx.ASGITransport(app=h.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await asyncio.gather(*(client.post("/api/v1/auth/setup", json={
                "code": code, "username": f"admin{i}", "password": "root-pass-123"})
                for i in range(8)))

    statuses = [r.status_code for r in asyncio.run(race())]
    # One wins; the others find setup done, or are held back while attempts are running.
    assert statuses.count(201) == 1 and set(statuses) <= {201, 409, 429}
    assert statuses.count(409) >= 1
    assert len(h.store.table_snapshot("users")) == 1


def test_setup_attempts_are_throttled(tmp_path):
    h = Harness(tmp_path, users=False)
    asyncio.run(h.auth.ensure_setup_code())
    body = {"code": "WRONG-CODE", "username": "root", "password": "root-pass-123"}
    for _ in range(3):
        assert h.client.post("/api/v1/auth/setup", json=body).status_code == 401
    r = h.client.post("/api/v1/auth/setup", json={**body, "code": _setup_file(h)["code"]})
    assert r.status_code == 429 and r.headers["retry-after"] == "10"
    assert r.json() == {"error": "Too many failed setup attempts; try again in 10 s",
                        "retry_after": 10}
    h.throttle_clock.now += 10
    r = h.client.post("/api/v1/auth/setup", json={**body, "code": _setup_file(h)["code"]})
    assert r.status_code == 201


def test_adding_a_user_another_way_ends_setup(tmp_path):
    h = Harness(tmp_path, users=False)
    code = asyncio.run(h.auth.ensure_setup_code())
    add_user(h.store, "alice", "admin", "alice-pass-1")      # what `printhost user add` does
    r = h.client.post("/api/v1/auth/setup", json={"code": code, "username": "root",
                                                  "password": "root-pass-123"})
    assert r.status_code == 409
    assert asyncio.run(h.auth.ensure_setup_code()) is None
    assert not (h.state / "setup_code.json").exists()


# --------------------------------------------------------------------------- brute force


def test_brute_force_locks_and_unlocks_on_schedule(h):
    """3 failures lock the user at this address for 10 s, then 20 s, then 40 s (the
    maximum); the right password does not get through a lockout."""
    for expected in (10, 20, 40, 40):
        for _ in range(3):
            assert h.login("admin", "guess-guess").status_code == 401
        r = h.login("admin")
        assert r.status_code == 429
        assert r.json() == {"error": f"Too many failed logins; try again in {expected} s",
                            "retry_after": expected}
        assert r.headers["retry-after"] == str(expected)
        h.throttle_clock.now += expected - 1
        assert h.login("admin").status_code == 429
        h.throttle_clock.now += 1
    assert h.login("admin").status_code == 200
    # The success cleared the strikes: the next lockout is the first one again.
    for _ in range(3):
        h.login("admin", "guess-guess")
    assert h.login("admin").json()["retry_after"] == 10


def test_lockout_does_not_reveal_which_users_exist(h):
    for name in ("operator", "no-such-user"):
        answers = [h.login(name, "guess-guess").status_code for _ in range(4)]
        assert answers == [401, 401, 401, 429], name


def test_existing_tokens_work_during_a_lockout(h):
    token = h.pair("admin")["token"]
    for _ in range(3):
        h.login("admin", "guess-guess")
    assert h.login("admin").status_code == 429
    assert h.check(token).status_code == 200


# --------------------------------------------------------------------------- concurrency


def test_concurrent_logins_and_revocations_stay_consistent(tmp_path):
    """Many tasks at once on one event loop, as the service runs them. (The failure limit
    is raised: attempts in flight count against it, and this is not about lockouts.)"""
    h = Harness(tmp_path, login_max_failures=50)

    async def scenario():
        transport = httpx.ASGITransport(app=h.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            async def login(user):
                r = await client.post("/api/v1/auth/login",
                                      json={"username": user, "password": PASSWORDS[user]})
                assert r.status_code == 200, r.text
                return r.json()

            async def check(token):
                return (await client.get("/api/v1/auth/check",
                                         headers=h.bearer(token))).status_code

            pairs = await asyncio.gather(*(login(u) for u in ["operator"] * 12 + ["viewer"] * 4))
            sids = {jwt.decode(p["token"], options={"verify_signature": False})["sid"]
                    for p in pairs}
            assert len(sids) == 16
            ops, viewers = pairs[:12], pairs[12:]
            # Half the operator sessions log out while the other half refresh, all at once.
            outs, refreshed = ops[:6], ops[6:]
            results = await asyncio.gather(
                *(client.post("/api/v1/auth/logout", headers=h.bearer(p["token"]))
                  for p in outs),
                *(client.post("/api/v1/auth/refresh", json={"refresh_token": p["refresh_token"]})
                  for p in refreshed),
                *(client.get("/api/v1/auth/check", headers=h.bearer(p["token"]))
                  for p in viewers))
            assert all(r.status_code == 200 for r in results)
            new_pairs = [r.json() for r in results[6:12]]
            statuses = await asyncio.gather(*(check(p["token"]) for p in outs),
                                            *(check(p["token"]) for p in new_pairs),
                                            *(check(p["token"]) for p in viewers))
            assert statuses == [401] * 6 + [200] * 6 + [200] * 4
            # The same refresh token from eight tasks at once: exactly one wins.
            target = new_pairs[0]["refresh_token"]
            race = await asyncio.gather(*(client.post("/api/v1/auth/refresh",
                                                      json={"refresh_token": target})
                                          for _ in range(8)))
            assert sorted(r.status_code for r in race) == [200] + [401] * 7
            # Logout everywhere racing new logins of the same user: afterwards no token
            # issued before it works, and every later login does.
            before = new_pairs[1:]
            await asyncio.gather(client.post("/api/v1/auth/logout_all",
                                             headers=h.bearer(before[0]["token"])),
                                 *(check(p["token"]) for p in viewers))
            after = await asyncio.gather(*(login("operator") for _ in range(4)))
            statuses = await asyncio.gather(*(check(p["token"]) for p in before),
                                            *(check(p["token"]) for p in after))
            assert statuses == [401] * len(before) + [200] * 4

    asyncio.run(scenario())
    # Every logout reached the store: six sessions and their six token ids (the jti of
    # the refreshed tokens and the reused session make up the rest).
    entries = h.store.table_snapshot("revoked_tokens")
    assert len({(e["kind"], e["id"]) for e in entries}) == len(entries)
    assert sum(1 for e in entries if e["kind"] == "sid") == 6 + 1


def test_concurrent_wrong_passwords_get_exactly_the_allowed_tries(h):
    async def scenario():
        transport = httpx.ASGITransport(app=h.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answers = await asyncio.gather(*(client.post(
                "/api/v1/auth/login", json={"username": "admin", "password": f"guess-{i}"})
                for i in range(12)))
            after = await client.post("/api/v1/auth/login",
                                      json={"username": "admin", "password": PASSWORDS["admin"]})
            return answers, after

    answers, after = asyncio.run(scenario())
    statuses = [r.status_code for r in answers]
    assert statuses.count(401) == 3 and statuses.count(429) == 9
    held = [r.json()["error"] for r in answers if r.status_code == 429]
    assert set(held) <= {"Too many login attempts at once; try again in 1 s",
                         "Too many failed logins; try again in 10 s"}
    assert after.status_code == 429 and after.json()["retry_after"] == 10
