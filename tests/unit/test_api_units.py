"""API building blocks in isolation: schemas, errors, middleware, login throttle, file
names and storage, and the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
import os
import re

import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from printhost.api.app import all_endpoints
from printhost.api.auth.throttle import LoginThrottle
from printhost.api.endpoint import MULTIPART
from printhost.api.errors import (
    EXCEPTION_HANDLERS,
    INTERNAL_ERROR,
    STATUS_DESCRIPTIONS,
    ApiError,
    error_response,
)
from printhost.api.middleware import BodyLimitMiddleware, ErrorBoundaryMiddleware
from printhost.api.openapi import build_openapi
from printhost.api.schemas import (
    ALL_SCHEMAS,
    EMPTY,
    ERROR,
    JOB,
    STATUS,
    Field,
    Schema,
    read_json,
)
from printhost.store.files import FileNameError, GCodeFiles, check_name

# --------------------------------------------------------------------------- Field / Schema


@pytest.mark.parametrize("field, value, problem", [
    (Field("string"), "x", None),
    (Field("string"), 1, "expected string"),
    (Field("string"), None, "must not be null"),
    (Field("string", nullable=True), None, None),
    (Field("integer"), 3, None),
    (Field("integer"), 3.0, "expected integer"),
    (Field("integer"), True, "expected integer"),
    (Field("number"), 3, None),
    (Field("number"), 2.5, None),
    (Field("number"), False, "expected number"),
    (Field("number"), "1", "expected number"),
    (Field("number"), float("nan"), "must be a finite number"),
    (Field("number"), float("inf"), "must be a finite number"),
    (Field("boolean"), True, None),
    (Field("boolean"), 1, "expected boolean"),
    (Field("object"), {}, None),
    (Field("object"), [], "expected object"),
    (Field("array"), [], None),
    (Field("array"), {}, "expected array"),
    (Field("string", min_length=2), "a", "must be at least 2 characters"),
    (Field("string", max_length=3), "abcd", "must be at most 3 characters"),
    (Field("string", min_length=1, max_length=3), "abc", None),
    (Field("number", minimum=0, maximum=1), -0.1, "must be at least 0"),
    (Field("number", minimum=0, maximum=1), 1.5, "must be at most 1"),
    (Field("number", minimum=0, maximum=1), 1, None),
    (Field("string", enum=("a", "b")), "c", "must be one of a, b"),
    (Field("string", enum=("a", "b")), "b", None),
])
def test_field_check(field, value, problem):
    assert field.check(value) == problem


SAMPLE = Schema("Sample", {
    "name": Field("string", min_length=1),
    "count": Field("integer", required=False, minimum=1),
})


def test_schema_validate_accepts_and_returns_the_data():
    assert SAMPLE.validate({"name": "x"}) == {"name": "x"}
    assert SAMPLE.validate({"name": "x", "count": 2}) == {"name": "x", "count": 2}


def test_schema_validate_reports_every_problem_at_once():
    with pytest.raises(ApiError) as info:
        SAMPLE.validate({"count": 0, "extra": 1, "y" * 100: 2})
    err = info.value
    assert err.status == 400 and err.message == "Invalid request body"
    assert err.fields == {"name": "required", "count": "must be at least 1",
                          "extra": "unknown field", "y" * 64: "unknown field"}


@pytest.mark.parametrize("data", [None, [], "x", 3])
def test_schema_validate_needs_an_object(data):
    with pytest.raises(ApiError) as info:
        SAMPLE.validate(data)
    assert info.value.status == 400 and info.value.fields is None


def test_schema_with_additional_fields_allows_unknown_keys():
    assert JOB.validate({**_job(), "new_field": 1})["new_field"] == 1


def _job() -> dict:
    return {"id": "j", "file": "a.gcode", "state": "printing", "progress": 0.5,
            "started_at": "2024-01-01T00:00:00Z", "ended_at": None, "print_duration": 1.0,
            "total_duration": 1.0, "estimated_remaining": None, "filament_used_mm": 0.0,
            "line": 3, "error": None}


def test_json_schema_rendering():
    out = SAMPLE.json_schema()
    assert out == {"type": "object", "additionalProperties": False, "required": ["name"],
                   "properties": {"name": {"type": "string", "minLength": 1},
                                  "count": {"type": "integer", "minimum": 1}}}
    assert Field("string", "d", nullable=True).json_schema() == {"type": ["string", "null"],
                                                                 "description": "d"}
    status = STATUS.json_schema()
    assert status["properties"]["job"] == {
        "oneOf": [{"$ref": "#/components/schemas/Job"}, {"type": "null"}],
        "description": "Current or last job"}
    assert status["properties"]["printer"]["oneOf"] == [{"$ref": "#/components/schemas/Printer"},
                                                        {"type": "null"}]
    empty = EMPTY.json_schema()
    assert empty["properties"] == {} and empty["additionalProperties"] is False
    assert "required" not in empty


def test_schema_names_are_unique():
    names = [s.name for s in ALL_SCHEMAS]
    assert len(names) == len(set(names))


# --------------------------------------------------------------------------- a tiny app


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse(await read_json(request, SAMPLE))


async def _echo_empty(request: Request) -> JSONResponse:
    return JSONResponse(await read_json(request, EMPTY, allow_empty=True))


async def _boom(request: Request) -> JSONResponse:
    raise RuntimeError("secret detail /etc/shadow")


async def _throttled(request: Request) -> JSONResponse:
    raise ApiError(429, "Slow down", retry_after=7)


async def _teapot(request: Request) -> JSONResponse:
    raise HTTPException(404, headers={"X-Leak": "1"})


async def _upload_route(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"size": len(body)})


def tiny_app(body_limit: int = 1024, upload_limit: int = 4096):
    app = Starlette(routes=[
        Route("/echo", _echo, methods=["POST"]),
        Route("/empty", _echo_empty, methods=["POST"]),
        Route("/boom", _boom, methods=["GET"]),
        Route("/throttled", _throttled, methods=["GET"]),
        Route("/gone", _teapot, methods=["GET"]),
        Route("/upload", _upload_route, methods=["POST"]),
    ], exception_handlers=dict(EXCEPTION_HANDLERS))

    def limit_for(scope) -> int:
        return upload_limit if scope.get("path") == "/upload" else body_limit

    return ErrorBoundaryMiddleware(BodyLimitMiddleware(app, limit_for))


@pytest.fixture(scope="module")
def client():
    with TestClient(tiny_app()) as c:
        yield c


def test_read_json_valid(client):
    r = client.post("/echo", json={"name": "n", "count": 3})
    assert r.status_code == 200 and r.json() == {"name": "n", "count": 3}
    r = client.post("/echo", content=b'{"name": "n"}',
                    headers={"content-type": "application/merge-patch+json; charset=utf-8"})
    assert r.status_code == 200


@pytest.mark.parametrize("body, content_type, status, message", [
    (b'{"name": "n"}', "text/plain", 415, "Content-Type must be application/json"),
    (b'{"name": "n"}', None, 415, "Content-Type must be application/json"),
    (b"{not json", "application/json", 400, "Malformed JSON body"),
    (b'{"name": NaN}', "application/json", 400, "Malformed JSON body"),
    (b'{"name": Infinity}', "application/json", 400, "Malformed JSON body"),
    (b"\xff\xfe{", "application/json", 400, "Malformed JSON body"),
    (b"", "application/json", 400, "Request body must be a JSON object"),
    (b"", None, 400, "Request body must be a JSON object"),
    (b"   ", "application/json", 400, "Request body must be a JSON object"),
    (b"[1, 2]", "application/json", 400, "Request body must be a JSON object"),
    (b"null", "application/json", 400, "Request body must be a JSON object"),
])
def test_read_json_refusals(client, body, content_type, status, message):
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/echo", content=body, headers=headers)
    assert r.status_code == status
    assert r.json() == {"error": message}


def test_read_json_overflowing_number_is_caught_by_the_schema(client):
    r = client.post("/echo", content=b'{"name": "n", "count": 1e400}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["fields"] == {"count": "expected integer"}


def test_read_json_field_problems(client):
    r = client.post("/echo", json={"name": "", "bogus": True})
    assert r.status_code == 400
    assert r.json() == {"error": "Invalid request body",
                        "fields": {"name": "must be at least 1 characters",
                                   "bogus": "unknown field"}}


def test_read_json_allow_empty(client):
    assert client.post("/empty").json() == {}
    assert client.post("/empty", content=b"", headers={"content-type": "application/json"}
                       ).json() == {}
    assert client.post("/empty", json={}).json() == {}
    r = client.post("/empty", json={"x": 1})
    assert r.status_code == 400 and r.json()["fields"] == {"x": "unknown field"}
    r = client.post("/empty", content=b"", headers={"content-type": "text/plain"})
    assert r.status_code == 415


# --------------------------------------------------------------------------- errors


def test_error_response_shapes():
    r = error_response(400, fields={"a": "required"})
    assert json.loads(r.body) == {"error": "Bad request", "fields": {"a": "required"}}
    r = error_response(429, "Wait", retry_after=12)
    assert json.loads(r.body) == {"error": "Wait", "retry_after": 12}
    assert r.headers["retry-after"] == "12"
    r = error_response(401)
    assert json.loads(r.body) == {"error": "Invalid token"}
    assert r.headers["www-authenticate"] == 'Bearer realm="printhost"'
    r = error_response(404)
    assert "www-authenticate" not in r.headers and json.loads(r.body) == {"error": "Not found"}
    assert json.loads(error_response(418).body) == {"error": "Error"}


def test_api_error_defaults():
    assert ApiError(403).message == "Insufficient permissions"
    assert ApiError(503).message == "Service unavailable"
    assert ApiError(409, "Busy").message == "Busy"
    assert str(ApiError(500)) == INTERNAL_ERROR


def test_every_documented_status_has_a_default_message():
    for status in STATUS_DESCRIPTIONS:
        assert ApiError(status).message != "Error"


def test_api_error_in_a_route_becomes_an_error_object(client):
    r = client.get("/throttled")
    assert r.status_code == 429
    assert r.json() == {"error": "Slow down", "retry_after": 7}
    assert r.headers["retry-after"] == "7"


def test_router_404_and_405_use_the_error_shape(client):
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json() == {"error": "Not found"}
    r = client.delete("/echo")
    assert r.status_code == 405 and r.json() == {"error": "Method not allowed"}
    assert "POST" in r.headers["allow"]


def test_http_exception_headers_other_than_allow_are_dropped(client):
    r = client.get("/gone")
    assert r.status_code == 404 and r.json() == {"error": "Not found"}
    assert "x-leak" not in r.headers


def test_unexpected_exception_is_a_bare_500_without_details(client):
    r = client.get("/boom")
    assert r.status_code == 500
    assert r.json() == {"error": INTERNAL_ERROR}
    assert "secret" not in r.text and "Traceback" not in r.text


# --------------------------------------------------------------------------- middleware


def test_body_limit_by_content_length_and_per_route(client):
    r = client.post("/echo", content=b"x" * 1025, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json() == {"error": "Request body too large (limit 1024 bytes)"}
    r = client.post("/upload", content=b"x" * 4000)
    assert r.status_code == 200 and r.json() == {"size": 4000}
    r = client.post("/upload", content=b"x" * 4097)
    assert r.status_code == 413 and "limit 4096 bytes" in r.json()["error"]


def test_body_limit_while_streaming_without_content_length(client):
    def chunks():
        for _ in range(5):
            yield b"x" * 300

    r = client.post("/upload", content=chunks())
    assert r.status_code == 200 and r.json() == {"size": 1500}
    r = client.post("/echo", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json() == {"error": "Request body too large (limit 1024 bytes)"}


def _scope(path: str, headers: list[tuple[bytes, bytes]], method: str = "POST") -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "root_path": "", "query_string": b"", "headers": headers,
            "server": ("testserver", 80), "client": ("10.0.0.9", 5555)}


def _call(app, scope: dict, chunks: list[bytes]) -> list[dict]:
    """Drive an ASGI app directly; returns the messages it sent."""
    sent: list[dict] = []
    pending = list(chunks)

    async def receive():
        if pending:
            body = pending.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(pending)}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def _status_and_body(sent: list[dict]) -> tuple[int, dict]:
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return starts[0]["status"], json.loads(body)


def test_body_limit_refuses_before_calling_the_app():
    calls = []

    async def inner(scope, receive, send):
        calls.append(scope["path"])

    app = BodyLimitMiddleware(inner, lambda scope: 100)
    sent = _call(app, _scope("/x", [(b"content-length", b"101")]), [b"x" * 101])
    assert _status_and_body(sent) == (413, {"error": "Request body too large (limit 100 bytes)"})
    sent = _call(app, _scope("/x", [(b"content-length", b"ten")]), [b"x"])
    assert _status_and_body(sent) == (400, {"error": "Invalid Content-Length header"})
    assert calls == []


def test_body_limit_counts_chunks_even_when_content_length_lies():
    app = tiny_app(body_limit=1024)
    headers = [(b"content-length", b"10"), (b"content-type", b"application/json")]
    sent = _call(app, _scope("/echo", headers), [b"x" * 600, b"x" * 600])
    assert _status_and_body(sent) == (413, {"error": "Request body too large (limit 1024 bytes)"})


def test_body_limit_passes_other_scope_types_through():
    seen = []

    async def inner(scope, receive, send):
        seen.append(scope["type"])

    asyncio.run(BodyLimitMiddleware(inner, lambda scope: 0)({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]


def test_error_boundary_answers_500_when_nothing_was_sent():
    async def inner(scope, receive, send):
        raise KeyError("internal detail")

    sent = _call(ErrorBoundaryMiddleware(inner), _scope("/x", [], "GET"), [])
    assert _status_and_body(sent) == (500, {"error": INTERNAL_ERROR})


def test_error_boundary_does_not_start_a_second_response():
    async def inner(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}", "more_body": True})
        raise RuntimeError("failed half-way")

    sent = _call(ErrorBoundaryMiddleware(inner), _scope("/x", [], "GET"), [])
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 200


def test_error_boundary_re_raises_outside_http():
    async def inner(scope, receive, send):
        raise RuntimeError("startup failed")

    with pytest.raises(RuntimeError, match="startup failed"):
        asyncio.run(ErrorBoundaryMiddleware(inner)({"type": "lifespan"}, None, None))


# --------------------------------------------------------------------------- login throttle


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def throttle(clock) -> LoginThrottle:
    return LoginThrottle(max_failures=3, window_s=60.0, lockout_s=30.0, clock=clock)


def test_keys_fold_the_user_name(throttle):
    assert throttle.keys("Alice", "10.0.0.1") == ["pair:alice@10.0.0.1", "addr:10.0.0.1"]


def test_lockout_after_max_failures_for_a_user_at_an_address(throttle, clock):
    keys = throttle.keys("alice", "10.0.0.1")
    for _ in range(2):
        throttle.record_failure(keys)
        assert throttle.retry_after(keys) is None
    throttle.record_failure(keys)
    assert throttle.retry_after(keys) == 30
    # Guesses from one address do not lock the same user out everywhere...
    assert throttle.retry_after(throttle.keys("ALICE", "10.9.9.9")) is None
    # ...nor other users at that address, until the address's own (higher) limit.
    assert throttle.retry_after(throttle.keys("bob", "10.0.0.1")) is None


def test_lockout_per_address_across_user_names(throttle):
    from printhost.api.auth.throttle import ADDRESS_FACTOR
    names = [f"user{i}" for i in range(3 * ADDRESS_FACTOR)]
    for name in names[:-1]:
        throttle.record_failure(throttle.keys(name, "192.0.2.7"))
    assert throttle.retry_after(throttle.keys("d", "192.0.2.7")) is None
    throttle.record_failure(throttle.keys(names[-1], "192.0.2.7"))
    assert throttle.retry_after(throttle.keys("d", "192.0.2.7")) == 30
    assert throttle.retry_after(throttle.keys("a", "192.0.2.8")) is None


def test_retry_after_rounds_up_and_lockout_expires(throttle, clock):
    keys = throttle.keys("alice", "10.0.0.1")
    for _ in range(3):
        throttle.record_failure(keys)
    clock.now += 0.5
    assert throttle.retry_after(keys) == 30      # 29.5 s left
    clock.now += 29.0
    assert throttle.retry_after(keys) == 1       # 0.5 s left, never 0
    clock.now += 0.49
    assert throttle.retry_after(keys) == 1       # 0.01 s left
    clock.now += 0.01
    assert throttle.retry_after(keys) is None    # exactly expired
    # the counter restarted with the lockout: one more failure does not lock again
    throttle.record_failure(keys)
    assert throttle.retry_after(keys) is None


def test_retry_after_is_the_longest_of_the_keys(clock):
    t = LoginThrottle(max_failures=1, window_s=60.0, lockout_s=10.0, clock=clock)
    t.record_failure(["pair:a@x"])
    clock.now += 4
    for _ in range(4):
        t.record_failure(["addr:x"])
    assert t.retry_after(["pair:a@x", "addr:x"]) == 10
    assert t.retry_after(["pair:a@x"]) == 6


def test_success_clears_the_failure_count(throttle):
    keys = throttle.keys("alice", "10.0.0.1")
    throttle.record_failure(keys)
    throttle.record_failure(keys)
    throttle.record_success(keys)
    throttle.record_failure(keys)
    throttle.record_failure(keys)
    assert throttle.retry_after(keys) is None
    throttle.record_failure(keys)
    assert throttle.retry_after(keys) == 30


def test_success_for_one_user_keeps_other_users_counts(throttle):
    throttle.record_failure(throttle.keys("alice", "10.0.0.1"))
    throttle.record_failure(throttle.keys("alice", "10.0.0.1"))
    throttle.record_success(throttle.keys("bob", "10.0.0.1"))
    throttle.record_failure(throttle.keys("alice", "10.0.0.1"))
    assert throttle.retry_after(throttle.keys("alice", "10.0.0.1")) == 30


def test_failures_leave_the_window(throttle, clock):
    keys = throttle.keys("alice", "10.0.0.1")
    throttle.record_failure(keys)          # t = 1000
    clock.now += 1
    throttle.record_failure(keys)          # t = 1001
    clock.now += 60.5                      # both are now older than 60 s
    throttle.record_failure(keys)
    clock.now += 1
    throttle.record_failure(keys)
    assert throttle.retry_after(keys) is None
    clock.now += 1
    throttle.record_failure(keys)
    assert throttle.retry_after(keys) == 30


def test_failure_exactly_at_the_window_edge_still_counts(throttle, clock):
    keys = ["user:edge"]
    throttle.record_failure(keys)
    clock.now += 30
    throttle.record_failure(keys)
    clock.now += 30                        # the first one is exactly 60 s old
    throttle.record_failure(keys)
    assert throttle.retry_after(keys) == 30


def test_failure_counters_are_bounded(clock):
    t = LoginThrottle(max_failures=100, window_s=10.0, lockout_s=10.0, clock=clock)
    for i in range(5001):
        t.record_failure([f"user:u{i}", f"addr:a{i}"])
    clock.now += 11
    t.record_failure(["user:late", "addr:late"])
    assert sorted(t._failures) == ["addr:late", "user:late"]


# --------------------------------------------------------------------------- file names


@pytest.mark.parametrize("name", [
    "cube.gcode", "Benchy (0.2mm) v2.gcode", "my part, final+1.gcode", "a.GCODE", "b.gco", "c.g",
    "_under.gcode", "9.gcode", "a" * 249 + ".gcode",
])
def test_check_name_accepts(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name, reason", [
    ("../x.gcode", "path"),
    ("sub/x.gcode", "path"),
    ("/abs.gcode", "path"),
    ("a\\b.gcode", "path"),
    ("x\x00.gcode", "path"),
    (".hidden.gcode", "must not start with a dot"),
    ("..gcode", "must not start with a dot"),
    ("a..b.gcode", "letters, digits"),
    (" lead.gcode", "letters, digits"),
    ("tab\t.gcode", "letters, digits"),
    ("new\nline.gcode", "letters, digits"),
    ("ü.gcode", "letters, digits"),
    ("x.stl", "must end in .gcode"),
    ("x.gcode.stl", "must end in .gcode"),
    ("gcode", "must end in .gcode"),
    ("x.gcode\n", "must end in .gcode"),
    ("x.gcode ", "must end in .gcode"),
    ("a" * 250 + ".gcode", "at most 255"),
    ("", "must not be empty"),
    (".", "path"),
    ("..", "path"),
])
def test_check_name_refuses(name, reason):
    with pytest.raises(FileNameError, match=re.escape(reason)):
        check_name(name)


def test_check_name_refuses_non_strings():
    with pytest.raises(FileNameError):
        check_name(None)  # type: ignore[arg-type]
    assert issubclass(FileNameError, ValueError)


# --------------------------------------------------------------------------- GCodeFiles


def _upload(files: GCodeFiles, name: str, data: bytes) -> dict:
    fh, tmp = files.open_temp()
    with fh:
        fh.write(data)
    return files.commit(tmp, name)


def test_gcode_files_commit_list_delete(tmp_path):
    files = GCodeFiles(tmp_path)
    assert files.root == tmp_path / "gcodes" and files.root.is_dir()
    assert files.list() == []
    info = _upload(files, "b part (1).gcode", b"G28\nG1 X10\n")
    assert info["name"] == "b part (1).gcode" and info["size"] == 11
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["modified"])
    _upload(files, "a.gcode", b"G28\n")
    # an upload in progress (a dot-file temp) is not listed
    fh, tmp = files.open_temp()
    fh.close()
    assert [f["name"] for f in files.list()] == ["a.gcode", "b part (1).gcode"]
    files.discard(tmp)
    files.discard(tmp)  # twice is harmless
    assert sorted(os.listdir(files.root)) == ["a.gcode", "b part (1).gcode"]
    assert files.exists("a.gcode") and not files.exists("zzz.gcode")

    # committing under an existing name replaces the file
    assert _upload(files, "a.gcode", b"G28\nG28\n")["size"] == 8
    assert (files.root / "a.gcode").read_bytes() == b"G28\nG28\n"

    files.delete("a.gcode")
    assert [f["name"] for f in files.list()] == ["b part (1).gcode"]
    with pytest.raises(FileNotFoundError):
        files.delete("a.gcode")


def test_gcode_files_refuse_bad_names_everywhere(tmp_path):
    files = GCodeFiles(tmp_path)
    (tmp_path / "secret.gcode").write_text("outside")
    fh, tmp = files.open_temp()
    fh.close()
    with pytest.raises(FileNameError):
        files.commit(tmp, "../secret.gcode")
    assert (tmp_path / "secret.gcode").read_text() == "outside"
    with pytest.raises(FileNameError):
        files.delete("../secret.gcode")
    assert (tmp_path / "secret.gcode").exists()
    with pytest.raises(FileNameError):
        files.exists("x.stl")


def test_gcode_files_refuse_a_symlink_leading_out(tmp_path):
    files = GCodeFiles(tmp_path)
    outside = tmp_path / "outside.gcode"
    outside.write_text("keep me")
    (files.root / "link.gcode").symlink_to(outside)
    with pytest.raises(FileNameError):
        files.path_for("link.gcode")
    with pytest.raises(FileNameError):
        files.delete("link.gcode")
    assert outside.read_text() == "keep me"


# --------------------------------------------------------------------------- OpenAPI


@pytest.fixture(scope="module")
def openapi() -> dict:
    return build_openapi(all_endpoints())


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_openapi_lists_every_endpoint(openapi):
    endpoints = all_endpoints()
    assert len(endpoints) >= 10
    for ep in endpoints:
        assert ep.method.lower() in openapi["paths"][ep.path], (ep.method, ep.path)
    assert sum(len(ops) for ops in openapi["paths"].values()) == len(endpoints)
    assert openapi["openapi"].startswith("3.1")
    json.dumps(openapi)  # serialisable as served


def test_openapi_operation_ids_are_unique(openapi):
    ids = [op["operationId"] for ops in openapi["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_openapi_documents_the_error_statuses(openapi):
    for ep in all_endpoints():
        op = openapi["paths"][ep.path][ep.method.lower()]
        codes = set(op["responses"])
        assert "500" in codes
        assert str(ep.status) in codes
        if ep.role is not None:
            assert {"401", "403"} <= codes, ep.path
            assert "security" not in op  # inherits the global bearer requirement
            assert "Requires role" in op["description"]
        else:
            assert op["security"] == []
        if isinstance(ep.request, Schema):
            assert {"400", "413", "415"} <= codes, ep.path
            assert op["requestBody"]["content"]["application/json"]["schema"] == {
                "$ref": f"#/components/schemas/{ep.request.name}"}
        elif ep.request == MULTIPART:
            assert "multipart/form-data" in op["requestBody"]["content"]
            assert {"400", "413", "415"} <= codes
        else:
            assert "requestBody" not in op
        for code, response in op["responses"].items():
            if code != str(ep.status):
                assert response["content"]["application/json"]["schema"] == {
                    "$ref": f"#/components/schemas/{ERROR.name}"}
                assert response["description"] == STATUS_DESCRIPTIONS[int(code)]


def test_openapi_path_parameters(openapi):
    op = openapi["paths"]["/api/v1/files/{name}"]["delete"]
    assert op["parameters"] == [{"name": "name", "in": "path", "required": True,
                                 "schema": {"type": "string"}}]


def test_openapi_login_is_public_and_status_is_protected(openapi):
    login = openapi["paths"]["/api/v1/auth/login"]["post"]
    assert login["security"] == [] and {"401", "429"} <= set(login["responses"])
    assert "security" not in openapi["paths"]["/api/v1/status"]["get"]
    assert openapi["security"] == [{"bearer": []}]
    assert openapi["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_openapi_every_ref_resolves(openapi):
    schemas = openapi["components"]["schemas"]
    refs = set(_refs(openapi))
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in schemas, ref
    # every schema the endpoints use is published
    for ep in all_endpoints():
        for schema in (ep.request, ep.response):
            if isinstance(schema, Schema):
                assert schemas[schema.name] == schema.json_schema()
