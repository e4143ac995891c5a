"""API building blocks in isolation: schemas, errors, middleware (request ids, access log,
CORS, body limits), the rate limiter, the login throttle, file
names and storage, and the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
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
from printhost.api.middleware import (
    BodyLimitMiddleware,
    CorsMiddleware,
    ErrorBoundaryMiddleware,
    RequestContextMiddleware,
)
from printhost.api.openapi import build_openapi
from printhost.api.ratelimit import MAX_BUCKETS, RateLimiter
from printhost.api.schemas import (
    ALL_SCHEMAS,
    EMPTY,
    ERROR,
    FILE_NAME_PATTERN,
    FILE_PATH_PATTERN,
    FOLDER_PATH_PATTERN,
    JOB,
    PRINT_REQUEST,
    STATUS,
    Field,
    Schema,
    json_depth,
    read_json,
)
from printhost.store.files import (MAX_DEPTH, FileExists, FileNameError, GCodeFiles,
                                   check_name, check_path)

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
    app.state.max_json_depth = 4

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
    # Only no bytes at all is an omitted body: whitespace alone is not a JSON text...
    for blank in (b" \t\r\n", b"\n"):
        r = client.post("/empty", content=blank, headers={"content-type": "application/json"})
        assert (r.status_code, r.json()["error"]) == (400, "Request body must be a JSON object")
    # ...and other control bytes are not even whitespace to JSON.
    for junk in (b"\x0b", b"\x0c", b"\x1c", b" \x0b "):
        r = client.post("/empty", content=junk, headers={"content-type": "application/json"})
        assert (r.status_code, r.json()["error"]) == (400, "Malformed JSON body"), junk


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
    "würfel.gcode", "Ölwanne (2).gcode", "立方体.gcode", "кубик.g", "हिंदी.gcode", "x٣.gco",
    "ü" * 124 + ".gcode",
])
def test_check_name_accepts(name):
    assert check_name(name) == name


def test_check_name_normalises_to_nfc():
    decomposed = "wu\u0308rfel.gcode"          # u + COMBINING DIAERESIS
    assert len(decomposed) == len("würfel.gcode") + 1
    assert check_name(decomposed) == "würfel.gcode" == "w\u00fcrfel.gcode"


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
    ("tab\t.gcode", "control characters"),
    ("new\nline.gcode", "control characters"),
    ("a\u0085b.gcode", "control characters"),       # C1 NEXT LINE
    ("a\u00a0b.gcode", "letters, digits"),          # NO-BREAK SPACE
    ("a\u202eb.gcode", "letters, digits"),          # RIGHT-TO-LEFT OVERRIDE
    ("cube\U0001f680.gcode", "letters, digits"),    # an emoji
    ("a;b.gcode", "letters, digits"),
    ("a\u037eb.gcode", "letters, digits"),          # GREEK QUESTION MARK: ';' in NFC
    ("\u0301a.gcode", "must start with a letter"),  # a combining mark first
    ("\ud800.gcode", "valid Unicode"),
    ("ü" * 125 + ".gcode", "at most 255 bytes"),
    ("x.stl", "must end in .gcode"),
    ("x.gcode.stl", "must end in .gcode"),
    ("gcode", "must end in .gcode"),
    ("x.gcode\n", "control characters"),
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
    assert sorted(os.listdir(files.root)) == [".meta", "a.gcode", "b part (1).gcode"]
    assert files.exists("a.gcode") and not files.exists("zzz.gcode")

    # committing under an existing name replaces the file
    assert _upload(files, "a.gcode", b"G28\nG28\n")["size"] == 8
    assert (files.root / "a.gcode").read_bytes() == b"G28\nG28\n"

    files.delete("a.gcode")
    assert [f["name"] for f in files.list()] == ["b part (1).gcode"]
    with pytest.raises(FileNotFoundError):
        files.delete("a.gcode")


def test_gcode_files_commit_without_replace_keeps_the_stored_file(tmp_path):
    files = GCodeFiles(tmp_path)
    _upload(files, "a.gcode", b"G28\n")
    fh, tmp = files.open_temp()
    with fh:
        fh.write(b"G28\nG1 X5\n")
    with pytest.raises(FileExists):
        files.commit(tmp, "a.gcode", replace=False)
    assert (files.root / "a.gcode").read_bytes() == b"G28\n"
    # A new name is linked into place and the temp file is gone.
    info = files.commit(tmp, "b.gcode", replace=False)
    assert info["size"] == 10
    assert sorted(os.listdir(files.root)) == [".meta", "a.gcode", "b.gcode"]
    # Either normal form of a name is the same file.
    fh, tmp = files.open_temp()
    fh.close()
    assert files.commit(tmp, "wu\u0308rfel.gcode", replace=False)["name"] == "w\u00fcrfel.gcode"
    fh, tmp = files.open_temp()
    fh.close()
    with pytest.raises(FileExists):
        files.commit(tmp, "w\u00fcrfel.gcode", replace=False)
    files.discard(tmp)


def test_gcode_files_list_skips_a_file_deleted_while_listing(tmp_path):
    class Racing(GCodeFiles):
        def info(self, path):
            if path.name == "b.gcode":
                path.unlink()  # a concurrent DELETE between the directory read and the stat
            return super().info(path)

    files = Racing(tmp_path)
    for name in ("a.gcode", "b.gcode", "c.gcode"):
        (files.root / name).write_text("G28\n")
    assert [f["name"] for f in files.list()] == ["a.gcode", "c.gcode"]


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
        if ep.rate_limited:
            assert "429" in codes and "Rate limited" in op["description"], ep.path
        shared = openapi["components"]["responses"]
        for code, response in op["responses"].items():
            if code == str(ep.status):
                assert response["headers"]["X-Request-Id"] == {
                    "$ref": "#/components/headers/RequestId"}
                continue
            if int(code) in ep.error_bodies:
                schema = ep.error_bodies[int(code)]
            else:
                assert response == {"$ref": f"#/components/responses/Error{code}"}
                response = shared[f"Error{code}"]
                schema = ERROR
            assert response["content"]["application/json"]["schema"] == {
                "$ref": f"#/components/schemas/{schema.name}"}
            assert response["description"] == STATUS_DESCRIPTIONS[int(code)]
            assert "X-Request-Id" in response["headers"]


def test_openapi_path_parameters(openapi):
    op = openapi["paths"]["/api/v1/files/{path}"]["delete"]
    [param] = op["parameters"]
    assert (param["name"], param["in"], param["required"]) == ("path", "path", True)
    assert param["schema"]["pattern"] == FILE_PATH_PATTERN
    assert param["schema"]["maxLength"] == 1024
    for path, ops in openapi["paths"].items():
        declared = {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}
        for op in ops.values():
            assert {p["name"] for p in op.get("parameters", [])
                    if p["in"] == "path"} == declared, path


def test_openapi_upload_declares_the_overwrite_query_parameter(openapi):
    op = openapi["paths"]["/api/v1/files"]["post"]
    param, folder = op["parameters"]
    assert (folder["name"], folder["in"], folder["required"]) == ("folder", "query", False)
    assert (param["name"], param["in"], param["required"]) == ("overwrite", "query", False)
    assert param["schema"] == {"type": "boolean"}
    assert "409" in param["description"]
    assert {"400", "409"} <= set(op["responses"])


def test_openapi_home_page_is_public_html(openapi):
    op = openapi["paths"]["/"]["get"]
    assert op["security"] == [] and op["operationId"] == "get_home"
    assert op["responses"]["200"]["content"] == {"text/html": {"schema": {"type": "string"}}}


def test_openapi_rate_limited_endpoints_document_429_and_retry_after(openapi):
    limited = {(ep.method, ep.path) for ep in all_endpoints() if ep.rate_limited}
    assert {("POST", "/api/v1/files"), ("POST", "/api/v1/print"),
            ("POST", "/api/v1/heaters/{name}/pid_tune")} <= limited
    too_many = openapi["components"]["responses"]["Error429"]
    assert too_many["headers"]["Retry-After"] == {"$ref": "#/components/headers/RetryAfter"}
    assert openapi["components"]["headers"]["RetryAfter"]["required"] is True
    unauthorized = openapi["components"]["responses"]["Error401"]
    assert "WWW-Authenticate" in unauthorized["headers"]


def test_openapi_health_503_has_the_health_body(openapi):
    health = openapi["paths"]["/api/v1/health"]["get"]["responses"]["503"]
    assert health["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Health"}


def test_openapi_upload_body_is_a_published_schema(openapi):
    body = openapi["paths"]["/api/v1/files"]["post"]["requestBody"]
    assert body["required"] is True
    assert body["content"]["multipart/form-data"]["schema"] == {
        "$ref": "#/components/schemas/FileUpload"}
    upload = openapi["components"]["schemas"]["FileUpload"]
    assert upload["required"] == ["file"]
    assert upload["properties"]["file"]["contentMediaType"] == "application/octet-stream"


def test_openapi_login_is_public_and_status_is_protected(openapi):
    login = openapi["paths"]["/api/v1/auth/login"]["post"]
    assert login["security"] == [] and {"401", "429"} <= set(login["responses"])
    assert "security" not in openapi["paths"]["/api/v1/status"]["get"]
    assert openapi["security"] == [{"bearer": []}, {"apiKey": []}]
    schemes = openapi["components"]["securitySchemes"]
    assert schemes["bearer"]["type"] == "http" and schemes["bearer"]["scheme"] == "bearer"
    assert (schemes["apiKey"]["type"], schemes["apiKey"]["in"],
            schemes["apiKey"]["name"]) == ("apiKey", "header", "X-Api-Key")


def test_openapi_every_ref_resolves(openapi):
    schemas = openapi["components"]["schemas"]
    refs = set(_refs(openapi))
    assert refs
    for ref in refs:
        _, components, kind, name = ref.split("/")
        assert components == "components", ref
        assert name in openapi["components"][kind], ref
    # every schema the endpoints use is published
    for ep in all_endpoints():
        for schema in (ep.request, ep.response):
            if isinstance(schema, Schema):
                assert schemas[schema.name] == schema.json_schema()


# --------------------------------------------------------------------------- file name pattern

def _pattern_accepts(name: str) -> bool:
    return re.fullmatch(FILE_NAME_PATTERN, name) is not None and len(name) <= 255


def _check_name_accepts(name: str) -> bool:
    try:
        check_name(name)
    except FileNameError:
        return False
    return True


@pytest.mark.parametrize("name", ["cube.gcode", "a.g", "A.GCO", "my cube (v2).gcode",
                                  "x+y,z-1_2.gCoDe", "_.g", "a.b.c.gcode", "x" * 249 + ".gcode",
                                  "..gcode", ".a.gcode", "a..gcode", "a/b.gcode", "a.gcode.",
                                  "a.gcode ", "a.gcode\n", "a.stl", "x" * 250 + ".gcode", "",
                                  "a\\b.gcode", "a\x00.gcode", "caf\u00e9.gcode", "a .gcode"])
def test_file_name_pattern_agrees_with_check_name(name):
    assert _pattern_accepts(name) == _check_name_accepts(name)


# The pattern without its non-ASCII alternative: on ASCII it is exact.
ASCII_FILE_NAME_PATTERN = FILE_NAME_PATTERN.replace("|[^\\x00-\\x9f]", "")


def test_the_ascii_part_of_the_pattern_is_ascii_only():
    assert ASCII_FILE_NAME_PATTERN != FILE_NAME_PATTERN
    assert "x9f" not in ASCII_FILE_NAME_PATTERN


@hsettings(max_examples=300, deadline=None, database=None)
@given(st.from_regex(ASCII_FILE_NAME_PATTERN, fullmatch=True))
def test_every_ascii_name_the_pattern_generates_is_accepted(name):
    if len(name) <= 255:
        assert _check_name_accepts(name), name


@hsettings(max_examples=300, deadline=None, database=None)
@given(st.from_regex(FILE_NAME_PATTERN, fullmatch=True))
def test_the_pattern_only_overstates_what_is_allowed_beyond_ascii(name):
    """Names the full pattern generates that the server refuses have a character
    beyond ASCII (the pattern cannot tell letters from other characters there)."""
    if len(name.encode("utf-8", "surrogatepass")) <= 255 and not _check_name_accepts(name):
        assert not name.isascii(), name


@hsettings(max_examples=500, deadline=None, database=None)
@given(st.text(alphabet=st.sampled_from(list("aZ9_ .()+,-gcode") + [
    "\u00fc", "u", "\u0308", "\u0301", "\u00a0", "\u0085", "\u037e", "\u212a", "\u7acb",
    "\u0939", "\u093f", "\U0001f680", "\u0663", "/", "\n"]), max_size=14))
def test_every_name_check_name_accepts_fits_the_pattern(name):
    for candidate in (name, name + ".gcode"):
        if _check_name_accepts(candidate):
            assert _pattern_accepts(candidate), repr(candidate)


@hsettings(max_examples=500, deadline=None, database=None)
@given(st.text(alphabet="aZ9_ .()+,-/\\gGcoOdeE\n\x00", max_size=12))
def test_pattern_and_check_name_agree_on_arbitrary_strings(name):
    assert _pattern_accepts(name) == _check_name_accepts(name), repr(name)


def _path_pattern_accepts(path: str, folder: bool = False) -> bool:
    pattern = FOLDER_PATH_PATTERN if folder else FILE_PATH_PATTERN
    return re.fullmatch(pattern, path) is not None and len(path) <= 1024


def _check_path_accepts(path: str, folder: bool = False) -> bool:
    try:
        check_path(path, folder=folder)
    except FileNameError:
        return False
    return path != "" or not folder


@hsettings(max_examples=500, deadline=None, database=None)
@given(st.text(alphabet="aZ9_ .()+,-/\\gGcoOdeE\n\x00", max_size=40))
def test_path_patterns_and_check_path_agree_on_arbitrary_strings(path):
    assert _path_pattern_accepts(path) == _check_path_accepts(path), repr(path)
    assert (_path_pattern_accepts(path, folder=True)
            == _check_path_accepts(path, folder=True)), repr(path)


def test_path_patterns_limit_the_depth_like_the_file_store():
    for depth in (MAX_DEPTH, MAX_DEPTH + 1):
        file_path = "/".join(["f"] * depth) + "/x.gcode"
        assert _path_pattern_accepts(file_path) == _check_path_accepts(file_path)
        folder = "/".join(["f"] * depth)
        assert (_path_pattern_accepts(folder, folder=True)
                == _check_path_accepts(folder, folder=True))
    assert _check_path_accepts("/".join(["f"] * MAX_DEPTH) + "/x.gcode")
    assert not _check_path_accepts("/".join(["f"] * (MAX_DEPTH + 1)), folder=True)


def test_file_fields_explain_refusals_like_the_file_store():
    field = PRINT_REQUEST.fields["file"]
    assert field.check("cube.gcode") is None
    assert field.check("würfel.gcode") is None
    # Fits the pattern (every character beyond ASCII does), refused by the file store.
    assert re.fullmatch(FILE_NAME_PATTERN, "a\u00a0b.gcode")
    assert "letters, digits" in field.check("a\u00a0b.gcode")
    assert field.check("notes.txt") == "must end in .gcode, .gco or .g"
    assert field.check("../x.gcode") == "file name must not contain a path"
    assert field.check("parts/würfel.gcode") is None
    assert field.check("parts//x.gcode").startswith("path must be relative")
    assert field.json_schema()["pattern"] == FILE_PATH_PATTERN
    with pytest.raises(ApiError) as info:
        PRINT_REQUEST.validate({"file": ".hidden.gcode"})
    assert "must not start with a dot" in info.value.fields["file"]


def test_pattern_field_without_explanation_names_the_pattern():
    assert Field("string", pattern=r"[a-z]+").check("ABC") == "must match [a-z]+"
    assert Field("string", pattern=r"[a-z]+").check("abc") is None


def test_number_fields_refuse_integers_no_float_can_hold():
    assert Field("number").check(10 ** 400) == "must be a finite number"
    assert Field("number").check(-(10 ** 400)) == "must be a finite number"
    assert Field("number").check(10 ** 300) is None
    assert Field("integer").check(10 ** 400) is None


def test_field_renders_maps_examples_and_media_types():
    assert Field("object", values=Field("string")).json_schema() == {
        "type": "object", "additionalProperties": {"type": "string"}}
    assert Field("string", examples=("a",), media_type="text/plain").json_schema() == {
        "type": "string", "examples": ["a"], "contentMediaType": "text/plain"}


# --------------------------------------------------------------------------- JSON depth


@pytest.mark.parametrize("body, depth", [
    (b"5", 0), (b'"[{"', 0), (b"{}", 1), (b"[]", 1), (b'{"a": [1, {"b": "[[[["}]}', 3),
    (b'["\\"[", ["x"]]', 2), (b"[" * 50 + b"]" * 50, 50), (b'{"a": "}}}}"}', 1),
])
def test_json_depth(body, depth):
    assert json_depth(body) == depth
    if depth:
        # Agrees with the decoder's idea of the structure.
        def nesting(value):
            if isinstance(value, dict):
                return 1 + max((nesting(v) for v in value.values()), default=0)
            if isinstance(value, list):
                return 1 + max((nesting(v) for v in value), default=0)
            return 0
        assert nesting(json.loads(body)) == depth


@hsettings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=64) | st.text(alphabet='"\\[]{}ab', max_size=64).map(str.encode))
def test_json_string_scan_never_fails_once_started(body):
    """The depth scan stays linear only if a string match that starts at a quote always
    succeeds: a failing match would make the scanner retry from the next quote and
    rescan the rest of the body, which is quadratic for `"\\"\\"\\"...`."""
    from printhost.api.schemas import _JSON_STRING
    for pos, byte in enumerate(body):
        if byte == ord('"'):
            assert _JSON_STRING.match(body, pos) is not None


def test_json_depth_of_hostile_bodies():
    assert json_depth(b'"' + b'\\"' * 30000) == 0
    assert json_depth(b'["' * 30000) == 15000
    assert json_depth(b"\\" * 60000) == 0
    assert json_depth(b"[" * 60000) == 60000


def test_read_json_refuses_deep_nesting_with_413(client):
    ok = client.post("/echo", content=b'{"name": "n", "extra": [[[1]]]}',
                     headers={"content-type": "application/json"})
    assert ok.status_code == 400 and ok.json()["fields"] == {"extra": "unknown field"}
    deep = client.post("/echo", content=b'{"name": "n", "extra": [[[[1]]]]}',
                       headers={"content-type": "application/json"})
    assert deep.status_code == 413
    assert deep.json() == {"error": "JSON body nested too deeply (limit 4 levels)"}
    bomb = client.post("/echo", content=b"[" * 1000, headers={"content-type": "application/json"})
    assert bomb.status_code == 413


# --------------------------------------------------------------------------- rate limiter


def test_rate_limiter_allows_a_burst_then_refills(clock):
    limiter = RateLimiter(per_min=6.0, burst=3, clock=clock)   # one token every 10 s
    assert [limiter.acquire("10.0.0.1", "POST /x") for _ in range(3)] == [None] * 3
    assert limiter.acquire("10.0.0.1", "POST /x") == 10
    clock.now += 4.0
    assert limiter.acquire("10.0.0.1", "POST /x") == 6
    clock.now += 6.0
    assert limiter.acquire("10.0.0.1", "POST /x") is None
    assert limiter.acquire("10.0.0.1", "POST /x") == 10


def test_rate_limiter_counts_clients_and_endpoints_apart(clock):
    limiter = RateLimiter(per_min=60.0, burst=1, clock=clock)
    assert limiter.acquire("a", "POST /x") is None
    assert limiter.acquire("a", "POST /x") == 1
    assert limiter.acquire("b", "POST /x") is None
    assert limiter.acquire("a", "POST /y") is None


def test_rate_limiter_never_exceeds_the_burst_after_a_long_pause(clock):
    limiter = RateLimiter(per_min=60.0, burst=2, clock=clock)
    limiter.acquire("a", "e")
    clock.now += 3600.0
    assert [limiter.acquire("a", "e") for _ in range(3)] == [None, None, 1]


def test_rate_limiter_off_when_the_rate_is_zero(clock):
    limiter = RateLimiter(per_min=0.0, burst=1, clock=clock)
    assert not limiter.enabled
    assert all(limiter.acquire("a", "e") is None for _ in range(100))
    assert len(limiter) == 0


def test_rate_limiter_memory_is_bounded(clock):
    limiter = RateLimiter(per_min=60.0, burst=5, clock=clock)
    for i in range(MAX_BUCKETS * 2):
        limiter.acquire(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", "e")
    assert len(limiter) <= MAX_BUCKETS + 1
    # The most recent client still has its (used) bucket.
    last = f"10.{(MAX_BUCKETS * 2 - 1) // 65536}.{(MAX_BUCKETS * 2 - 1) // 256 % 256}." \
           f"{(MAX_BUCKETS * 2 - 1) % 256}"
    assert [limiter.acquire(last, "e") for _ in range(5)][-1] == 1


def _limited_app(per_min: float, burst: int, clock=lambda: 1000.0):
    from printhost.api.endpoint import EndpointSet
    endpoints = EndpointSet()

    @endpoints.route("POST", "/costly", summary="costly", role=None, response=None,
                     rate_limited=True)
    async def costly(request, principal):
        return {"ok": True}

    @endpoints.route("GET", "/cheap", summary="cheap", role=None, response=None)
    async def cheap(request, principal):
        return {"ok": True}

    app = Starlette(routes=endpoints.starlette_routes(),
                    exception_handlers=dict(EXCEPTION_HANDLERS))
    # A frozen clock by default: the wait quoted must not depend on how long a busy
    # machine takes between two requests (a second there made it 59 s).
    app.state.rate_limiter = RateLimiter(per_min, burst, clock=clock)
    return RequestContextMiddleware(app)


def test_dispatcher_applies_the_rate_limit_to_declared_endpoints_only():
    with TestClient(_limited_app(per_min=1.0, burst=2)) as c:
        assert [c.post("/costly").status_code for _ in range(2)] == [200, 200]
        r = c.post("/costly")
        assert r.status_code == 429
        assert r.json() == {"error": "Too many requests; try again in 60 s", "retry_after": 60}
        assert r.headers["retry-after"] == "60"
        assert all(c.get("/cheap").status_code == 200 for _ in range(5))


def test_openapi_marks_deprecated_operations_only():
    from printhost.api.endpoint import EndpointSet
    endpoints = EndpointSet()

    @endpoints.route("GET", "/api/v1/old", summary="old", role=None, response=None,
                     deprecated=True)
    async def old(request, principal):
        return {}

    @endpoints.route("GET", "/api/v1/new", summary="new", role=None, response=None)
    async def new(request, principal):
        return {}

    doc = build_openapi(endpoints.endpoints)
    assert doc["paths"]["/api/v1/old"]["get"]["deprecated"] is True
    assert "deprecated" not in doc["paths"]["/api/v1/new"]["get"]
    assert not any(op.get("deprecated") for ops in build_openapi(all_endpoints())["paths"].values()
                   for op in ops.values())


def test_route_refuses_path_params_that_are_not_in_the_path():
    from printhost.api.endpoint import EndpointSet
    with pytest.raises(ValueError, match="nme"):
        EndpointSet().route("GET", "/x/{name}", summary="x", role=None, response=None,
                            path_params={"nme": Field("string")})


# --------------------------------------------------------------------------- request ids, access log


def _context_app():
    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"hello": request.path_params["who"]})

    async def crash(request: Request) -> JSONResponse:
        raise RuntimeError("secret detail")

    app = Starlette(routes=[Route("/hello/{who}", hello), Route("/crash", crash)],
                    exception_handlers=dict(EXCEPTION_HANDLERS))
    return RequestContextMiddleware(ErrorBoundaryMiddleware(app))


@pytest.mark.parametrize("incoming, kept", [
    ("abc-123", True), ("0f8fad5b-d9cb-469f-a165-70867728950e", True),
    ("Root=1-5759e988:x/y+z.w_v", True), ("x" * 128, True), ("x" * 129, False),
    ("has space", False), ("-leading-dash", False), ("semi;colon", False), ("", False),
    ("quote\"", False),
])
def test_request_id_is_kept_when_sane_else_replaced(incoming, kept):
    with TestClient(_context_app()) as c:
        r = c.get("/hello/you", headers={"X-Request-Id": incoming})
    assert r.status_code == 200
    if kept:
        assert r.headers["x-request-id"] == incoming
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])


def test_every_response_gets_a_fresh_request_id_even_a_500():
    with TestClient(_context_app(), raise_server_exceptions=False) as c:
        ids = {c.get("/hello/you").headers["x-request-id"] for _ in range(5)}
        crash = c.get("/crash")
        missing = c.get("/nowhere")
    assert len(ids) == 5
    assert crash.status_code == 500 and re.fullmatch(r"[0-9a-f]{32}", crash.headers["x-request-id"])
    assert missing.status_code == 404 and missing.headers["x-request-id"] not in ids
    assert len(crash.headers.get_list("x-request-id")) == 1


def test_access_log_has_one_json_record_per_request_without_raw_paths_or_queries(caplog):
    caplog.set_level(logging.INFO, logger="printhost.api.access")
    with TestClient(_context_app(), raise_server_exceptions=False) as c:
        c.get("/hello/secret-file.gcode?token=hunter2", headers={"X-Request-Id": "req-1"})
        c.get("/crash", headers={"X-Request-Id": "req-2"})
        c.get("/nowhere/else", headers={"X-Request-Id": "req-3"})
    records = [r for r in caplog.records if r.name == "printhost.api.access"]
    assert len(records) == 3
    parsed = [json.loads(r.getMessage()) for r in records]
    assert [r.access for r in records] == parsed
    hello, crash, missing = parsed
    assert hello["request_id"] == "req-1" and hello["method"] == "GET"
    assert hello["route"] == "/hello/{who}" and hello["status"] == 200
    assert hello["user"] is None and hello["client"] == "testclient"
    assert isinstance(hello["duration_ms"], float) and hello["duration_ms"] >= 0
    assert (crash["route"], crash["status"]) == ("/crash", 500)
    assert (missing["route"], missing["status"]) == (None, 404)
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert "hunter2" not in everything and "secret-file" not in everything


@pytest.mark.parametrize("setting, logged", [
    ("all", [200, 404, 500]), ("errors", [404, 500]), ("off", []),
])
def test_access_log_setting_selects_the_records(caplog, setting, logged):
    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({})

    async def crash(request: Request) -> JSONResponse:
        raise RuntimeError("boom")

    app = Starlette(routes=[Route("/hello", hello), Route("/crash", crash)],
                    exception_handlers=dict(EXCEPTION_HANDLERS))
    caplog.set_level(logging.INFO, logger="printhost.api.access")
    with TestClient(RequestContextMiddleware(ErrorBoundaryMiddleware(app), setting),
                    raise_server_exceptions=False) as c:
        assert [c.get(path).status_code for path in ("/hello", "/nope", "/crash")] == [200, 404, 500]
    assert [r.access["status"] for r in caplog.records
            if r.name == "printhost.api.access"] == logged


def test_error_logs_carry_the_request_id(caplog):
    caplog.set_level(logging.ERROR, logger="printhost.api")
    with TestClient(_context_app(), raise_server_exceptions=False) as c:
        c.get("/crash", headers={"X-Request-Id": "trace-me"})
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and all("trace-me" in r.getMessage() for r in errors)
    assert all("/crash" in r.getMessage() for r in errors)


def test_access_log_names_the_authenticated_user(caplog):
    async def who(request: Request) -> JSONResponse:
        request.state.principal = type("P", (), {"username": "alice"})()
        return JSONResponse({})

    app = RequestContextMiddleware(Starlette(routes=[Route("/who", who)]))
    caplog.set_level(logging.INFO, logger="printhost.api.access")
    with TestClient(app) as c:
        c.get("/who")
    [record] = [r for r in caplog.records if r.name == "printhost.api.access"]
    assert record.access["user"] == "alice"


# --------------------------------------------------------------------------- CORS


def _cors_app(origins=("http://allowed.example:8080",)):
    async def ping(request: Request) -> JSONResponse:
        return JSONResponse({"pong": True})

    app = Starlette(routes=[Route("/ping", ping, methods=["GET", "POST"])],
                    exception_handlers=dict(EXCEPTION_HANDLERS))
    return RequestContextMiddleware(CorsMiddleware(app, origins, {"GET", "POST", "DELETE"}, 600))


def _preflight(c, origin, method="POST", headers="authorization, content-type"):
    return c.options("/ping", headers={"Origin": origin, "Access-Control-Request-Method": method,
                                       "Access-Control-Request-Headers": headers})


def test_cors_preflight_from_a_listed_origin():
    with TestClient(_cors_app()) as c:
        r = _preflight(c, "http://allowed.example:8080")
    assert r.status_code == 204 and r.content == b""
    assert r.headers["access-control-allow-origin"] == "http://allowed.example:8080"
    assert r.headers["access-control-allow-methods"] == "DELETE, GET, HEAD, POST"
    assert "authorization" in r.headers["access-control-allow-headers"]
    assert "x-api-key" in r.headers["access-control-allow-headers"]
    assert r.headers["access-control-max-age"] == "600"
    assert r.headers["vary"] == "Origin"
    assert "x-request-id" in r.headers


@pytest.mark.parametrize("origin, method, headers, message", [
    ("http://evil.example", "POST", "", "Cross-origin requests from this origin are not allowed"),
    ("http://allowed.example:8081", "GET", "", "Cross-origin requests from this origin are not allowed"),
    ("null", "GET", "", "Cross-origin requests from this origin are not allowed"),
    ("http://allowed.example:8080", "PATCH", "", "Method 'PATCH' is not allowed for cross-origin requests"),
    ("http://allowed.example:8080", "POST", "authorization, x-custom",
     "Header 'x-custom' is not allowed for cross-origin requests"),
])
def test_cors_preflight_refused(origin, method, headers, message):
    with TestClient(_cors_app()) as c:
        r = _preflight(c, origin, method, headers)
    assert r.status_code == 403 and r.json() == {"error": message}
    assert "access-control-allow-origin" not in r.headers


def test_cors_headers_on_real_requests_only_for_listed_origins():
    with TestClient(_cors_app()) as c:
        allowed = c.get("/ping", headers={"Origin": "HTTP://ALLOWED.example:8080"})
        other = c.get("/ping", headers={"Origin": "http://evil.example"})
        plain = c.get("/ping")
        missing = c.get("/nothing", headers={"Origin": "http://allowed.example:8080"})
    assert allowed.headers["access-control-allow-origin"] == "HTTP://ALLOWED.example:8080"
    assert "X-Request-Id" in allowed.headers["access-control-expose-headers"]
    assert "Retry-After" in allowed.headers["access-control-expose-headers"]
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
    assert other.headers["vary"] == "Origin"
    assert "access-control-allow-origin" not in plain.headers and "vary" not in plain.headers
    # Errors carry the CORS headers too, so a page can read the error object.
    assert missing.status_code == 404
    assert missing.headers["access-control-allow-origin"] == "http://allowed.example:8080"


def test_cors_with_no_origins_refuses_every_preflight():
    with TestClient(_cors_app(origins=())) as c:
        r = _preflight(c, "http://localhost:3000", "GET", "")
        plain_options = c.options("/ping")
    assert r.status_code == 403
    # OPTIONS that is not a preflight is an ordinary request for a method the path lacks.
    assert plain_options.status_code == 405 and plain_options.json() == {"error": "Method not allowed"}


# --------------------------------------------------------------------------- server settings


@pytest.mark.parametrize("origins, ok", [
    ([], True), (["http://octo.local:8080"], True), (["https://example.net"], True),
    (["http://10.0.0.5:8080", "http://[fe80::1]:80"], True),
    (["http://octo.local/"], False), (["*"], False), (["octo.local"], False),
    (["ftp://octo.local"], False), (["http://octo.local:8080/path"], False), ([5], False),
])
def test_server_cors_origins_are_checked(origins, ok):
    from printhost.config import ConfigError, parse_settings
    data = {"server": {"cors_origins": origins}}
    if ok:
        assert parse_settings(data).server.cors_origins == origins
    else:
        with pytest.raises(ConfigError, match="server.cors_origins"):
            parse_settings(data)


def test_server_defaults_allow_no_cross_origin_access_and_limit_expensive_routes():
    from printhost.config import Settings
    server = Settings().server
    assert server.cors_origins == []
    assert server.rate_limit_per_min > 0 and server.rate_limit_burst >= 1
    assert 2 <= server.max_json_depth <= 256
