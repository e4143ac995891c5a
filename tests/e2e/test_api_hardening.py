"""The API's outer layer against the running service: one error form for every status
the layer itself produces (404, 405, 413, 415, 429, 500), request ids, the structured
access log, CORS and the JSON depth limit."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from conftest import Api, Service

pytestmark = pytest.mark.e2e

UI_ORIGIN = "http://ui.example:8080"
LEAKS = ("traceback", "exception", "/tmp/", "printhost/", ".py", "secret")


# [server] keys of this module: one listed CORS origin and a rate limit small enough to
# reach (a burst of 3, then one request every 2 s).
HARDENED_SERVER = (f'cors_origins = ["{UI_ORIGIN}"]\n'
                   "rate_limit_per_min = 30.0\n"
                   "rate_limit_burst = 3\n"
                   "max_json_depth = 8\n")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    svc = Service(tmp_path_factory.mktemp("hardened"), server_extra=HARDENED_SERVER)
    svc.start()
    yield svc
    svc.kill_all()


@pytest.fixture(scope="module")
def api(service):
    client = Api(service)
    yield client
    client.close()


def _error(r: httpx.Response, status: int) -> dict:
    """The response is `status` in the contract's error form, with a request id."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"]
    assert set(body) <= {"error", "fields", "retry_after"}, body
    lowered = r.text.lower()
    for leak in LEAKS:
        assert leak not in lowered, r.text
    assert r.headers.get("x-request-id")
    return body


def _access_records(service: Service) -> list[dict]:
    records = []
    for line in service.log_path.read_text(errors="replace").splitlines():
        if "printhost.api.access: " in line:
            records.append(json.loads(line.split("printhost.api.access: ", 1)[1]))
    return records


def _wait_for_record(service: Service, request_id: str) -> dict:
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        for record in _access_records(service):
            if record["request_id"] == request_id:
                return record
        time.sleep(0.05)
    raise AssertionError(f"no access record for {request_id}:\n{service.log()}")


# ----------------------------------------------------------------------------- 404 / 405


def test_404_unknown_routes_in_error_form(api):
    assert _error(api.get("/api/v1/nope"), 404) == {"error": "Not found"}
    assert _error(api.http.get("/nope"), 404) == {"error": "Not found"}
    assert _error(api.http.get("/api/v2/status"), 404) == {"error": "Not found"}
    # A path into a folder is a file's path: an unknown file, in the same error form.
    assert _error(api.http.delete("/api/v1/files/a/b.gcode", headers=api.auth("operator")),
                  404) == {"error": "File not found"}


def test_trailing_slash_is_another_path_404_not_a_redirect(api):
    for path in ("/api/v1/status/", "/api/v1/health/", "/api/v1/files/"):
        r = api.http.get(path, headers=api.auth("viewer"), follow_redirects=False)
        assert _error(r, 404) == {"error": "Not found"}, path
        assert "location" not in r.headers
    r = api.http.post("/api/v1/auth/login/", json={"username": "viewer",
                                                    "password": "viewer-pass-123"},
                      follow_redirects=False)
    assert r.status_code == 404


def test_405_with_allow_header(api):
    r = api.http.put("/api/v1/print", json={})
    assert _error(r, 405) == {"error": "Method not allowed"}
    assert "POST" in r.headers["allow"]
    r = api.http.delete("/api/v1/status")
    assert _error(r, 405) == {"error": "Method not allowed"}
    assert "GET" in r.headers["allow"]


# ----------------------------------------------------------------------------- 413


def test_413_by_content_length_before_authentication(api):
    r = api.http.post("/api/v1/print", content=b"{" + b" " * 9000 + b"}",
                      headers={"Content-Type": "application/json"})
    assert _error(r, 413) == {"error": "Request body too large (limit 8192 bytes)"}


def test_413_for_json_nested_too_deeply(api):
    def nested(depth: int) -> bytes:
        return b'{"file": "cube.gcode", "x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"

    # Within the limit (8 levels) the body is decoded and refused for its content...
    r = api.post("/api/v1/print", content=nested(8), headers={"Content-Type": "application/json"})
    assert _error(r, 400)["fields"] == {"x": "unknown field"}
    # ...one level more is refused before decoding.
    r = api.post("/api/v1/print", content=nested(9), headers={"Content-Type": "application/json"})
    assert _error(r, 413) == {"error": "JSON body nested too deeply (limit 8 levels)"}
    # A small body that would recurse deep inside a JSON decoder.
    r = api.post("/api/v1/pause", content=b"[" * 8000, headers={"Content-Type": "application/json"})
    assert _error(r, 413) == {"error": "JSON body nested too deeply (limit 8 levels)"}
    r = api.http.post("/api/v1/auth/login", content=b'{"username": ' + b"[" * 5000 + b"}",
                      headers={"Content-Type": "application/json"})
    assert _error(r, 413)["error"].startswith("JSON body nested too deeply")


# ----------------------------------------------------------------------------- 415


def test_415_wrong_content_types(api):
    r = api.post("/api/v1/print", content=b'{"file": "cube.gcode"}',
                 headers={"Content-Type": "text/plain"})
    assert _error(r, 415) == {"error": "Content-Type must be application/json"}
    r = api.post("/api/v1/files", json={"file": "cube.gcode"})
    assert _error(r, 415) == {"error": "Content-Type must be multipart/form-data"}


# ----------------------------------------------------------------------------- 429


def test_429_rate_limit_on_expensive_routes_with_retry_after(api, tmp_path):
    gcode = tmp_path / "tiny.gcode"
    gcode.write_text("G28\nG1 X10 Y10 F3000\n")
    # The burst is 3 requests; every authenticated request counts, whatever its answer
    # (an earlier test of this module sent one to this endpoint).
    codes = [api.upload(gcode, overwrite=True).status_code for _ in range(3)]
    allowed = codes.count(201)
    assert allowed >= 2 and codes == [201] * allowed + [429] * (3 - allowed), codes
    r = api.upload(gcode, overwrite=True)
    body = _error(r, 429)
    assert body["error"] == f"Too many requests; try again in {body['retry_after']} s"
    assert 1 <= body["retry_after"] <= 2
    assert r.headers["retry-after"] == str(body["retry_after"])
    # Each expensive endpoint has its own budget, and cheap endpoints have none.
    save = "/api/v1/heaters/extruder/pid_tune/save"
    assert api.post(save, role="admin", json={}).status_code == 409
    assert all(api.get("/api/v1/files").status_code == 200 for _ in range(10))
    # Waiting as told makes the next upload go through.
    time.sleep(body["retry_after"] + 0.2)
    assert api.upload(gcode, overwrite=True).status_code == 201


def test_429_is_checked_after_authentication_and_before_the_body(api):
    """Unauthenticated requests stop at 401 and do not use up a client's budget; the
    limit applies before the body is read."""
    for _ in range(6):
        r = api.http.post("/api/v1/heaters/extruder/pid_tune", json={"target": 100})
        assert _error(r, 401) == {"error": "Invalid token"}
    tune = "/api/v1/heaters/extruder/pid_tune"
    codes = [api.post(tune, role="admin", json={"target": 5000}).status_code for _ in range(3)]
    assert codes == [400, 400, 400]
    r = api.post(tune, role="admin", json={"target": 5000})
    assert _error(r, 429)["retry_after"] >= 1


# ----------------------------------------------------------------------------- races


def test_concurrent_deletes_of_one_file_give_one_200_and_404s(service, api, tmp_path):
    import concurrent.futures
    gcode = tmp_path / "race.gcode"
    gcode.write_text("G28\n")
    headers = api.auth("operator")
    for _ in range(2):
        r = api.upload(gcode)
        if r.status_code == 429:
            time.sleep(r.json()["retry_after"] + 0.1)
            r = api.upload(gcode)
        assert r.status_code == 201, r.text

        def delete(_):
            with httpx.Client(base_url=service.url, timeout=15) as c:
                return c.delete("/api/v1/files/race.gcode", headers=headers).status_code

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            codes = sorted(pool.map(delete, range(6)))
        assert codes == [200] + [404] * 5, codes


# ----------------------------------------------------------------------------- 500


def test_500_in_error_form_with_the_request_id_in_the_log(service_factory, api_for):
    svc = service_factory().start()
    api = api_for(svc)
    headers = api.auth("viewer")
    (svc.state_dir / "printhost.json").write_text("{ this is not json")
    r = api.http.get("/api/v1/jobs", headers={**headers, "X-Request-Id": "crash-1"})
    assert _error(r, 500) == {"error": "Internal error"}
    assert r.headers["x-request-id"] == "crash-1"
    record = _wait_for_record(svc, "crash-1")
    assert record["status"] == 500 and record["route"] == "/api/v1/jobs"
    error_lines = [line for line in svc.log_path.read_text().splitlines()
                   if "ERROR" in line and "crash-1" in line]
    assert error_lines, svc.log()
    assert api.http.get("/api/v1/health").status_code == 200


# ----------------------------------------------------------------------------- request ids


def test_request_id_echoed_when_sane_and_generated_otherwise(api):
    r = api.get("/api/v1/status", headers={"X-Request-Id": "client-abc.123"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "client-abc.123"
    for bad in ("x" * 200, "two words", "semi;colon", ""):
        r = api.get("/api/v1/status", headers={"X-Request-Id": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), bad
    ids = {api.http.get("/api/v1/health").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5
    # Errors produced before any route runs carry one as well.
    r = api.http.post("/api/v1/print", content=b"x" * 9000, headers={"X-Request-Id": "big-1"})
    assert r.status_code == 413 and r.headers["x-request-id"] == "big-1"


def test_access_log_record_per_request_without_secrets(service, api):
    token = api.token("operator")
    r = api.http.delete("/api/v1/files/private%20plans.gcode",
                        params={"token": "query-secret-123"},
                        headers={"Authorization": f"Bearer {token}", "X-Request-Id": "log-1"})
    assert r.status_code == 404
    record = _wait_for_record(service, "log-1")
    assert record["method"] == "DELETE" and record["route"] == "/api/v1/files/{path}"
    assert record["status"] == 404 and record["user"] == "operator"
    assert record["client"] == "127.0.0.1"
    assert isinstance(record["duration_ms"], (int, float)) and record["duration_ms"] >= 0
    r = api.http.get("/api/v1/status", headers={"X-Request-Id": "log-2"})
    record = _wait_for_record(service, "log-2")
    assert (record["status"], record["user"], record["route"]) == (401, None, "/api/v1/status")
    r = api.http.get("/no/such/place", headers={"X-Request-Id": "log-3"})
    assert _wait_for_record(service, "log-3")["route"] is None
    log = service.log_path.read_text()
    for secret in ("query-secret-123", "private plans", token, "no/such/place"):
        assert secret not in log, secret
    # Every record is one JSON object with the same members.
    keys = {"event", "request_id", "method", "route", "status", "duration_ms", "user", "client"}
    assert all(set(rec) == keys for rec in _access_records(service))


# ----------------------------------------------------------------------------- CORS


def _preflight(api: Api, origin: str, method: str = "POST",
               headers: str = "authorization, content-type") -> httpx.Response:
    return api.http.options("/api/v1/print", headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers})


def test_cors_preflight_allowed_for_a_listed_origin(api):
    r = _preflight(api, UI_ORIGIN)
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == UI_ORIGIN
    assert "POST" in r.headers["access-control-allow-methods"]
    assert {"authorization", "content-type", "x-api-key"} <= {
        h.strip() for h in r.headers["access-control-allow-headers"].split(",")}
    assert r.headers["access-control-max-age"] == "600"
    # The real request from that origin gets the CORS headers, errors included.
    r = api.post("/api/v1/pause", json={}, headers={"Origin": UI_ORIGIN})
    assert r.status_code == 409
    assert r.headers["access-control-allow-origin"] == UI_ORIGIN
    assert "X-Request-Id" in r.headers["access-control-expose-headers"]


@pytest.mark.parametrize("origin, method, headers", [
    ("http://evil.example", "POST", "authorization"),
    ("http://ui.example:8081", "POST", "authorization"),
    (UI_ORIGIN, "PUT", "authorization"),
    (UI_ORIGIN, "POST", "authorization, x-forwarded-host"),
])
def test_cors_preflight_denied(api, origin, method, headers):
    r = _preflight(api, origin, method, headers)
    _error(r, 403)
    assert "access-control-allow-origin" not in r.headers


def test_cors_unlisted_origin_gets_no_cors_headers(api):
    r = api.get("/api/v1/status", headers={"Origin": "http://evil.example"})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers


# ----------------------------------------------------------------------------- the document


def test_openapi_document_is_served_and_matches_the_routes(api):
    r = api.http.get("/api/v1/openapi.json")
    assert r.status_code == 200 and r.headers.get("x-request-id")
    doc = r.json()
    assert doc["openapi"] == "3.1.0"
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    ops = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    assert {("POST", "/api/v1/files"), ("DELETE", "/api/v1/files/{path}"),
            ("POST", "/api/v1/print"), ("GET", "/api/v1/status")} <= ops
    # Each declared operation without path parameters is routed on the live service.
    for method, path in ops:
        if "{" not in path:
            status = api.http.request(method, path).status_code
            assert status not in (404, 405), (method, path, status)

