"""Authentication against the running service: first boot, tokens, the JWT attack suite,
key rotation, users, API keys, lockouts on schedule, and many concurrent clients."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import stat
import time
from dataclasses import dataclass, field

import httpx
import pytest

from conftest import PASSWORDS, Service
from tests.auth_support import b64json as _b64, forge_hs256 as _hs256

pytestmark = pytest.mark.e2e


@dataclass
class AuthTunedService(Service):
    """A service with some keys of its [auth] table set or replaced."""
    auth: dict = field(default_factory=dict)

    def write_config(self) -> None:
        super().write_config()
        text = self.config_path.read_text()
        for key, value in self.auth.items():
            line = f"{key} = {value}"
            pattern = re.compile(rf"^{key} = .*$", re.M)
            if pattern.search(text):
                text = pattern.sub(line, text, count=1)
            else:
                text = text.replace("[auth]\n", f"[auth]\n{line}\n", 1)
        self.config_path.write_text(text)


def _no_leak(r: httpx.Response) -> dict:
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"]
    for leak in ("traceback", "exception", "/tmp/", ".py", "secret"):
        assert leak not in r.text.lower(), r.text
    return body


def _login(http: httpx.Client, user: str, password: str | None = None) -> httpx.Response:
    return http.post("/api/v1/auth/login",
                     json={"username": user, "password": password or PASSWORDS[user]})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _check(http: httpx.Client, token: str) -> int:
    return http.get("/api/v1/auth/check", headers=_bearer(token)).status_code


@pytest.fixture(scope="module")
def svc(shared_service):
    return shared_service


@pytest.fixture(scope="module")
def http(svc):
    with httpx.Client(base_url=svc.url, timeout=15.0) as client:
        yield client


# ----------------------------------------------------------------------------- first boot


def test_first_boot_has_no_default_password_and_a_one_time_setup_code(service_factory):
    svc = service_factory()
    svc.state_dir.mkdir(parents=True)
    (svc.state_dir / "printhost.json").write_text("{}")     # an empty store: no users
    svc.start()
    full_log = svc.log_path.read_text(errors="replace")
    match = re.search(r"first-boot setup code ([2-9A-Z]{4}(?:-[2-9A-Z]{4}){3})", full_log)
    assert match, svc.log()
    code = match.group(1)
    path = svc.state_dir / "setup_code.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["code"] == code
    assert not (svc.state_dir / "initial_admin_password").exists()
    with httpx.Client(base_url=svc.url, timeout=15.0) as http:
        assert _login(http, "admin", "admin").status_code == 401
        status = http.get("/api/v1/auth/setup").json()
        assert status["setup_required"] is True and code not in json.dumps(status)
        body = {"code": "2222-3333-4444-5555", "username": "maker", "password": "maker-pass-1"}
        r = http.post("/api/v1/auth/setup", json=body)
        assert r.status_code == 401 and _no_leak(r) == {"error": "Invalid setup code"}
        r = http.post("/api/v1/auth/setup", json={**body, "code": code})
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        check = http.get("/api/v1/auth/check", headers=_bearer(token)).json()
        assert check["username"] == "maker" and check["roles"] == ["admin"]
        r = http.post("/api/v1/auth/setup", json={**body, "code": code, "username": "other"})
        assert r.status_code == 409 and _no_leak(r) == {"error": "Setup is already complete"}
        assert not path.exists()
        assert http.get("/api/v1/auth/setup").json()["setup_required"] is False
        assert _login(http, "maker", "maker-pass-1").status_code == 200
    listed = svc.cli("user", "list")
    assert listed.stdout.split("\t")[:2] == ["maker", "admin"]


# ----------------------------------------------------------------------------- the attack suite


def _secret(svc) -> bytes:
    from printhost.api.auth.secrets import load_jwt_secret
    from printhost.config import load_settings
    return load_jwt_secret(load_settings(svc.config_path), svc.state_dir)


def _forge(svc, key: bytes | None = None, header: dict | None = None, **overrides) -> str:
    from printhost.api.auth.tokens import key_id
    from printhost.store.db import Store
    from printhost.store.users import get_user
    key = key or _secret(svc)
    now = int(time.time())
    claims = {"sub": "operator", "roles": ["operator"],
              "ver": get_user(Store(svc.state_dir), "operator")["token_version"],
              "iss": "printhost", "aud": "printhost", "iat": now - 5, "nbf": now - 5,
              "exp": now + 600, "jti": f"e2e-{now}-{len(overrides)}", "sid": "e2e-session",
              "typ": "access"}
    claims.update(overrides)
    hdr = {"alg": "HS256", "typ": "JWT", "kid": key_id(key), **(header or {})}
    hdr = {k: v for k, v in hdr.items() if v is not None}
    return _hs256(hdr, claims, key)


def test_jwt_attack_suite_against_the_service(svc, http):
    assert _check(http, _forge(svc)) == 200            # the control: a well-formed token
    pair = _login(http, "operator").json()
    revoked = _login(http, "operator").json()["token"]
    assert http.post("/api/v1/auth/logout", headers=_bearer(revoked)).status_code == 200
    from printhost.api.auth.tokens import key_id
    kid = key_id(_secret(svc))
    good = _forge(svc)
    head, payload, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    now = int(time.time())
    attacks = {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{payload}.",
        "alg none, signature kept": f"{_b64({'alg': 'none', 'kid': kid})}.{payload}.{sig}",
        "algorithm confusion RS256": _forge(svc, header={"alg": "RS256"}),
        "algorithm confusion ES256": _forge(svc, header={"alg": "ES256"}),
        "expired": _forge(svc, exp=now - 1, iat=now - 700, nbf=now - 700),
        "not yet valid": _forge(svc, nbf=now + 120),
        "wrong aud": _forge(svc, aud="someone-else"),
        "wrong iss": _forge(svc, iss="someone-else"),
        "unknown kid": _forge(svc, header={"kid": "kffffffffffffffff"}),
        "kid of the service, other key": _forge(svc, key=b"q" * 64, header={"kid": kid}),
        "refresh used as access": pair["refresh_token"],
        "tampered payload": f"{head}.{_b64({**claims, 'sub': 'admin', 'roles': ['admin']})}.{sig}",
        "revoked": revoked,
    }
    for what, token in attacks.items():
        for path in ("/api/v1/auth/check", "/api/v1/status"):
            r = http.get(path, headers=_bearer(token))
            assert r.status_code == 401, (what, path, r.text)
            assert _no_leak(r) == {"error": "Invalid token"}, what
            assert r.headers["www-authenticate"] == 'Bearer realm="printhost"'
    assert _check(http, pair["token"]) == 200


def test_key_rotation_while_running_and_a_rotated_out_key(svc, http):
    from printhost.api.auth.tokens import key_id
    before = _login(http, "viewer").json()
    old_kid = key_id(_secret(svc))
    r = svc.cli("auth", "rotate-key")
    assert r.returncode == 0, r.stderr
    assert old_kid in r.stdout and "accepted until" in r.stdout
    new_kid = key_id(_secret(svc))
    assert new_kid != old_kid and new_kid in r.stdout
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:          # the service looks at the key files each second
        after = _login(http, "viewer").json()
        if json.loads(base64.urlsafe_b64decode(after["token"].split(".")[0] + "=="))["kid"] == new_kid:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the service did not pick up the new key")
    # Old tokens keep working until they expire; new ones use the new key.
    assert _check(http, before["token"]) == 200 and _check(http, after["token"]) == 200
    r = http.post("/api/v1/auth/refresh", json={"refresh_token": before["refresh_token"]})
    assert r.status_code == 200
    # Once the old key's grace period is over, its tokens are refused.
    retired = svc.state_dir / "jwt_retired_keys.json"
    data = json.loads(retired.read_text())
    for entry in data["keys"]:
        entry["accept_until"] = time.time() - 1
    retired.write_text(json.dumps(data))
    deadline = time.monotonic() + 10
    while _check(http, before["token"]) == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _check(http, before["token"]) == 401
    assert _check(http, after["token"]) == 200


# ----------------------------------------------------------------------------- sessions


def test_refresh_logout_and_logout_everywhere(svc, http):
    a = _login(http, "viewer").json()
    b = _login(http, "viewer").json()
    assert set(a) == {"token", "token_type", "expires_at", "refresh_token", "refresh_expires_at"}
    r = http.post("/api/v1/auth/refresh", json={"refresh_token": a["refresh_token"]})
    assert r.status_code == 200
    a2 = r.json()
    r = http.post("/api/v1/auth/refresh", json={"refresh_token": a["refresh_token"]})
    assert r.status_code == 401                                  # used twice: session gone
    assert _check(http, a2["token"]) == 401 and _check(http, b["token"]) == 200
    assert http.post("/api/v1/auth/logout", headers=_bearer(b["token"])).status_code == 200
    assert _check(http, b["token"]) == 401
    c, d = _login(http, "viewer").json(), _login(http, "viewer").json()
    assert http.post("/api/v1/auth/logout_all", headers=_bearer(c["token"])).status_code == 200
    assert _check(http, c["token"]) == 401 and _check(http, d["token"]) == 401
    assert http.post("/api/v1/auth/refresh",
                     json={"refresh_token": d["refresh_token"]}).status_code == 401
    assert _check(http, _login(http, "viewer").json()["token"]) == 200


def test_users_api_keys_and_the_cli_agree(svc, http):
    admin = _bearer(_login(http, "admin").json()["token"])
    r = http.post("/api/v1/users", headers=admin,
                  json={"username": "e2e-op", "role": "operator", "password": "e2e-op-pass1"})
    assert r.status_code == 201
    token = _login(http, "e2e-op", "e2e-op-pass1").json()["token"]
    assert http.get("/api/v1/users", headers=_bearer(token)).status_code == 403
    # The command line changes the same accounts while the service runs.
    assert svc.cli("user", "role", "e2e-op", "admin").returncode == 0
    assert _check(http, token) == 401
    token = _login(http, "e2e-op", "e2e-op-pass1").json()["token"]
    assert http.get("/api/v1/users", headers=_bearer(token)).status_code == 200
    r = http.patch("/api/v1/users/e2e-op", headers=admin, json={"active": False})
    assert r.status_code == 200 and r.json()["active"] is False
    assert "deactivated" in svc.cli("user", "list").stdout
    assert _login(http, "e2e-op", "e2e-op-pass1").status_code == 401

    r = http.post("/api/v1/api_keys", headers=admin, json={"name": "slicer", "role": "operator"})
    assert r.status_code == 201
    key = r.json()
    with_key = {"X-Api-Key": key["key"]}
    r = http.get("/api/v1/auth/check", headers=with_key)
    assert r.json()["username"] == "api-key:slicer" and r.json()["roles"] == ["operator"]
    assert http.get("/api/v1/files", headers=with_key).status_code == 200
    assert http.get("/api/v1/api_keys", headers=with_key).status_code == 403
    assert key["key"] not in http.get("/api/v1/api_keys", headers=admin).text
    assert http.delete(f"/api/v1/api_keys/{key['id']}", headers=admin).status_code == 200
    r = http.get("/api/v1/files", headers=with_key)
    assert r.status_code == 401 and _no_leak(r) == {"error": "Invalid API key"}
    # Nothing secret went to the log.
    log = svc.log()
    for secret in (key["key"], "e2e-op-pass1", PASSWORDS["admin"]):
        assert secret not in log


# ----------------------------------------------------------------------------- brute force


def test_brute_force_locks_and_unlocks_on_schedule(tmp_path):
    svc = AuthTunedService(tmp_path, login_max_failures=2,
                           auth={"login_lockout_s": "1.0", "login_lockout_max_s": "2.0"})
    try:
        svc.start()
        with httpx.Client(base_url=svc.url, timeout=15.0) as http:
            waits = []
            # Doubling from 1 s, capped at the 2 s maximum.
            for expected in (1, 2, 2):
                for _ in range(2):
                    r = _login(http, "admin", "wrong-guess")
                    assert r.status_code == 401, r.text
                r = _login(http, "admin")
                assert r.status_code == 429
                body = _no_leak(r)
                assert body["retry_after"] == expected
                assert r.headers["Retry-After"] == str(expected)
                assert body["error"] == f"Too many failed logins; try again in {expected} s"
                waits.append(expected)
                time.sleep(expected + 0.2)
            assert waits == [1, 2, 2]
            assert _login(http, "admin").status_code == 200
            # The same answers for a user name that does not exist.
            answers = [_login(http, "ghost", "wrong-guess").status_code for _ in range(3)]
            assert answers == [401, 401, 429]
            assert _no_leak(_login(http, "ghost", "wrong-guess"))["retry_after"] == 1
    finally:
        svc.kill_all()


# ----------------------------------------------------------------------------- concurrency


def test_many_concurrent_clients_stay_consistent(svc):
    async def scenario():
        async with httpx.AsyncClient(base_url=svc.url, timeout=30.0) as client:
            async def login(user):
                r = await client.post("/api/v1/auth/login",
                                      json={"username": user, "password": PASSWORDS[user]})
                assert r.status_code == 200, r.text
                return r.json()

            async def status(token):
                r = await client.get("/api/v1/auth/check", headers=_bearer(token))
                return r.status_code

            pairs = await asyncio.gather(*(login("operator") for _ in range(10)),
                                         *(login("viewer") for _ in range(6)))
            assert len({p["refresh_token"] for p in pairs}) == 16
            outs, keep = pairs[:8], pairs[8:]
            results = await asyncio.gather(
                *(client.post("/api/v1/auth/logout", headers=_bearer(p["token"])) for p in outs),
                *(client.post("/api/v1/auth/refresh", json={"refresh_token": p["refresh_token"]})
                  for p in keep))
            assert [r.status_code for r in results] == [200] * 16
            refreshed = [r.json() for r in results[8:]]
            codes = await asyncio.gather(*(status(p["token"]) for p in outs),
                                         *(status(p["token"]) for p in refreshed))
            assert codes == [401] * 8 + [200] * 8
            race = await asyncio.gather(*(client.post("/api/v1/auth/refresh", json={
                "refresh_token": refreshed[0]["refresh_token"]}) for _ in range(6)))
            assert sorted(r.status_code for r in race) == [200] + [401] * 5

    asyncio.run(scenario())
