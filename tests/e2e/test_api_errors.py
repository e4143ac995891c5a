"""Every error row of the API contract, against the running service."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest

from conftest import DATA, PASSWORDS

pytestmark = pytest.mark.e2e


def _no_leak(r: httpx.Response) -> dict:
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"]
    text = r.text.lower()
    for leak in ("traceback", "exception", "/tmp/", "printhost/", ".py", "secret"):
        assert leak not in text, r.text
    return body


@pytest.fixture(scope="module")
def api(shared_service):
    from conftest import Api
    client = Api(shared_service)
    yield client
    client.close()


# ----------------------------------------------------------------------------- 400

@pytest.mark.parametrize("body,content,fields", [
    (b"{not json", "application/json", None),
    (b'{"username": "a", "password": NaN}', "application/json", None),
    (b"[1, 2]", "application/json", None),
    (b'{"username": 5, "password": "x"}', "application/json", {"username": "expected string"}),
    (b'{"username": "a"}', "application/json", {"password": "required"}),
    (b'{"username": "a", "password": "b", "admin": true}', "application/json", {"admin": "unknown field"}),
])
def test_400_bad_login_bodies(api, body, content, fields):
    r = api.http.post("/api/v1/auth/login", content=body, headers={"Content-Type": content})
    assert r.status_code == 400
    err = _no_leak(r)
    if fields:
        assert err["fields"] == fields
        assert err["error"] == "Invalid request body"


def test_400_print_wrong_type_and_path_tricks(api):
    r = api.post("/api/v1/print", json={"file": 5})
    assert r.status_code == 400 and _no_leak(r)["fields"] == {"file": "expected string"}
    for name in ("../printhost.json", "/etc/passwd", "..\\x.gcode", ".hidden.gcode",
                 "a/../b.gcode", "a//b.gcode", "a/.meta/b.gcode"):
        r = api.post("/api/v1/print", json={"file": name})
        assert r.status_code == 400, name
        assert "file" in _no_leak(r)["fields"]
    # A path into a folder is allowed: a file that is not there.
    r = api.post("/api/v1/print", json={"file": "a/b.gcode"})
    assert r.status_code == 404 and _no_leak(r) == {"error": "File not found"}
    r = api.post("/api/v1/pause", json={"force": True})
    assert r.status_code == 400 and _no_leak(r)["fields"] == {"force": "unknown field"}


def test_400_upload_path_tricks_and_binary(api, tmp_path):
    f = tmp_path / "x.gcode"
    f.write_text("G28\n")
    for name in ("../../evil.gcode", "evil.sh", ".gcode", "dir/evil.gcode"):
        r = api.upload(f, name=name)
        assert r.status_code == 400, (name, r.text)
        assert "file" in _no_leak(r)["fields"]
    binary = tmp_path / "bin.gcode"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    r = api.upload(binary)
    assert r.status_code == 400
    names = [f["name"] for f in api.get("/api/v1/files").json()["files"]]
    assert "bin.gcode" not in names and "evil.gcode" not in names


# ----------------------------------------------------------------------------- 401

def test_401_bad_credentials_same_message(api):
    r1 = api.http.post("/api/v1/auth/login", json={"username": "operator", "password": "wrong-one"})
    r2 = api.http.post("/api/v1/auth/login", json={"username": "nobody", "password": "wrong-one"})
    assert r1.status_code == r2.status_code == 401
    assert _no_leak(r1) == _no_leak(r2) == {"error": "Invalid credentials"}


def _forge(service, **claims_clock) -> str:
    from printhost.api.auth.secrets import load_jwt_secret
    from printhost.api.auth.tokens import TokenService
    from printhost.config import load_settings
    settings = load_settings(service.config_path)
    secret = load_jwt_secret(settings, service.state_dir)
    offset = claims_clock.get("offset", 0.0)
    tokens = TokenService(claims_clock.get("secret", secret), settings.auth.issuer,
                          settings.auth.token_ttl_s, clock=lambda: time.time() + offset)
    from printhost.store.db import Store
    from printhost.store.users import get_user
    version = get_user(Store(service.state_dir), "operator")["token_version"]
    return tokens.issue("operator", ["operator"], version)[0]


def test_401_token_variants(api, shared_service):
    good = api.token("operator")
    header_variants = {
        "missing": None,
        "no scheme": good,
        "basic": "Basic " + good,
        "bearer without token": "Bearer",
        "garbage": "Bearer not.a.jwt",
        "tampered": "Bearer " + good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "expired": "Bearer " + _forge(shared_service, offset=-7 * 86400),
        "not yet valid": "Bearer " + _forge(shared_service, offset=+86400),
        "wrong key": "Bearer " + _forge(shared_service, secret=b"k" * 64),
    }
    for what, value in header_variants.items():
        headers = {"Authorization": value} if value is not None else {}
        for path in ("/api/v1/status", "/api/v1/auth/check"):
            r = api.http.get(path, headers=headers)
            assert r.status_code == 401, (what, path, r.text)
            assert _no_leak(r) == {"error": "Invalid token"}, what
    # The forged-but-valid control: the same key and clock give a working token.
    ok = api.http.get("/api/v1/auth/check",
                      headers={"Authorization": "Bearer " + _forge(shared_service)})
    assert ok.status_code == 200 and ok.json()["username"] == "operator"


def test_401_deleted_and_recreated_user_does_not_inherit_tokens(api, shared_service):
    assert shared_service.cli("user", "add", "again", "--role", "viewer",
                              stdin="again-pass-123\n").returncode == 0
    token = api.http.post("/api/v1/auth/login", json={"username": "again",
                                                      "password": "again-pass-123"}).json()["token"]
    assert shared_service.cli("user", "delete", "again").returncode == 0
    assert shared_service.cli("user", "add", "again", "--role", "viewer",
                              stdin="other-pass-123\n").returncode == 0
    r = api.http.get("/api/v1/auth/check", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and _no_leak(r) == {"error": "Invalid token"}


def test_401_revoked_token(api, shared_service):
    r = shared_service.cli("user", "add", "temp", "--role", "viewer", stdin="temp-pass-123\n")
    assert r.returncode == 0, r.stderr
    login = api.http.post("/api/v1/auth/login", json={"username": "temp", "password": "temp-pass-123"})
    token = login.json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert api.http.get("/api/v1/auth/check", headers=headers).status_code == 200
    assert shared_service.cli("user", "revoke", "temp").returncode == 0
    r = api.http.get("/api/v1/auth/check", headers=headers)
    assert r.status_code == 401 and _no_leak(r) == {"error": "Invalid token"}


def test_auth_check_ok(api):
    r = api.get("/api/v1/auth/check", role="admin")
    assert r.status_code == 200
    body = r.json()
    assert body["valid"] is True and body["username"] == "admin" and body["roles"] == ["admin"]
    assert body["expires_at"].endswith("Z")


# ----------------------------------------------------------------------------- 403

def test_403_viewer_cannot_control(api):
    for path in ("/api/v1/pause", "/api/v1/resume", "/api/v1/cancel", "/api/v1/print"):
        r = api.post(path, role="viewer", json={})
        assert r.status_code == 403, path
        assert _no_leak(r) == {"error": "Insufficient permissions"}
    assert api.get("/api/v1/status", role="viewer").status_code == 200


# ----------------------------------------------------------------------------- 404 / 405

def test_404_and_405(api):
    r = api.get("/api/v1/nope")
    assert r.status_code == 404 and _no_leak(r) == {"error": "Not found"}
    r = api.http.get("/nothing-here")
    assert r.status_code == 404 and _no_leak(r) == {"error": "Not found"}
    r = api.post("/api/v1/print", json={"file": "missing.gcode"})
    assert r.status_code == 404 and _no_leak(r) == {"error": "File not found"}
    r = api.get("/api/v1/pause")
    assert r.status_code == 405 and _no_leak(r) == {"error": "Method not allowed"}
    assert "POST" in r.headers["allow"]
    r = api.http.delete("/api/v1/status")
    assert r.status_code == 405


# ----------------------------------------------------------------------------- 409

def test_409_when_idle(api):
    assert api.status()["state"] == "idle"
    for path, message in (("/api/v1/pause", "No job in progress"),
                          ("/api/v1/resume", "Job not paused"),
                          ("/api/v1/cancel", "No job to cancel")):
        r = api.post(path, json={})
        assert r.status_code == 409, path
        assert _no_leak(r) == {"error": message}


# ----------------------------------------------------------------------------- 413 / 415

def test_413_body_and_upload_limits(api, shared_service, tmp_path):
    r = api.http.post("/api/v1/auth/login", content=b'{"username": "' + b"a" * 20000 + b'"}',
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "too large" in _no_leak(r)["error"]
    big = tmp_path / "big.gcode"
    big.write_bytes(b"G1 X1 Y1\n" * (shared_service.max_upload // 9 + 10))
    r = api.upload(big)
    assert r.status_code == 413
    _no_leak(r)
    assert "big.gcode" not in [f["name"] for f in api.get("/api/v1/files").json()["files"]]


def test_413_chunked_body_without_length(api):
    def chunks():
        for _ in range(20):
            yield b" " * 1024
    r = api.http.post("/api/v1/pause", content=chunks(),
                      headers={**api.auth("operator"), "Content-Type": "application/json"})
    assert r.status_code == 413


def test_415_wrong_content_type(api, tmp_path):
    r = api.http.post("/api/v1/auth/login", content=b"username=a&password=b",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and _no_leak(r) == {"error": "Content-Type must be application/json"}
    r = api.post("/api/v1/pause", content=b"pause please", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = api.post("/api/v1/files", json={"file": "x.gcode"})
    assert r.status_code == 415
    assert _no_leak(r) == {"error": "Content-Type must be multipart/form-data"}


# ----------------------------------------------------------------------------- 429

def test_429_login_lockout(service_factory, api_for):
    svc = service_factory(login_max_failures=3).start()
    api = api_for(svc)
    for _ in range(3):
        r = api.http.post("/api/v1/auth/login", json={"username": "admin", "password": "nope-nope"})
        assert r.status_code == 401
    # Locked now, even with the right password.
    r = api.http.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORDS["admin"]})
    assert r.status_code == 429
    body = _no_leak(r)
    assert body["retry_after"] >= 1
    assert r.headers["Retry-After"] == str(body["retry_after"])


# ----------------------------------------------------------------------------- 500

def test_500_internal_error_is_opaque(service_factory, api_for):
    svc = service_factory().start()
    api = api_for(svc)
    (svc.state_dir / "printhost.json").write_text("{ this is not json")
    r = api.http.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORDS["admin"]})
    assert r.status_code == 500
    assert _no_leak(r) == {"error": "Internal error"}
    # The service is still alive and answers other requests.
    assert api.http.get("/api/v1/health").status_code == 200


# ----------------------------------------------------------------------------- 503

def test_503_and_error_status_when_control_process_dies(service_factory, api_for):
    svc = service_factory().start()
    api = api_for(svc)
    api.token("operator")
    api.token("viewer")
    os.kill(svc.control_pid(), signal.SIGKILL)
    t0 = time.monotonic()
    st = api.wait_for(lambda s: s["state"] == "error", timeout_s=5, what="error state")
    noticed = time.monotonic() - t0
    assert noticed < 1.0, noticed
    assert "killed" in st["error"] and "SIGKILL" in st["error"]
    # Nobody measures the heaters any more: their values are unknown, not stale.
    assert st["printer"]["hotend_temp"] is None and st["printer"]["hotend_power"] is None
    r = api.post("/api/v1/pause", json={})
    assert r.status_code == 503
    assert _no_leak(r)["error"].startswith("Printer not ready: control process was killed")
    r = api.http.get("/api/v1/health")
    body = r.json()
    assert r.status_code == 503 and body["status"] == "down", body
    assert body["components"]["control"]["status"] == "down"
    assert body["components"]["control"]["reason"].startswith("control process was killed")
    assert body["components"]["mcu"]["status"] == "down"
    assert body["error"].startswith("Printer not ready: control process was killed")
    # The API process itself still runs.
    assert api.http.get("/healthz").status_code == 200
    assert st["printer"]["unavailable"]["hotend_temp"] == st["error"]


def test_concurrent_pauses_one_wins(service_factory, api_for, tmp_path):
    import concurrent.futures
    svc = service_factory(time_factor=20.0).start()
    api = api_for(svc)
    gcode = tmp_path / "long.gcode"
    lines = ["G28", "G90", "G1 Z1 F600"]
    for i in range(400):
        lines.append(f"G1 X{20 + (i % 2) * 150} Y{20 + (i % 7) * 20} F3000")
    gcode.write_text("\n".join(lines) + "\n")
    assert api.upload(gcode).status_code == 201
    assert api.post("/api/v1/print", json={"file": "long.gcode"}).status_code == 200
    api.wait_for(lambda s: s["state"] == "printing" and s["job"]["line"] > 5, timeout_s=30)
    token = api.token("operator")

    def pause() -> int:
        with httpx.Client(base_url=svc.url, timeout=15) as c:
            return c.post("/api/v1/pause", json={},
                          headers={"Authorization": f"Bearer {token}"}).status_code

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        codes = sorted(pool.map(lambda _: pause(), range(2)))
    assert codes == [200, 409]
    api.wait_for(lambda s: s["state"] == "paused", timeout_s=30)
    # Two cancels: one wins, then the job is gone.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        codes = sorted(pool.map(lambda _: httpx.post(
            svc.url + "/api/v1/cancel", headers={"Authorization": f"Bearer {token}"},
            json={}, timeout=15).status_code, range(2)))
    assert codes == [200, 409]
    st = api.wait_for(lambda s: s["state"] == "idle", timeout_s=30)
    assert st["job"]["state"] == "cancelled"
