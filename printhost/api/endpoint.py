"""Declaring endpoints once: route, role, schemas and error statuses in one place.

`EndpointSet.route(...)` wraps a handler with authentication, role checks and (for
expensive endpoints) the per-client rate limit, and records everything the OpenAPI
generator needs, so each route is described exactly once and the published document
lists what the code really does.

A path parameter named `path` spans segments (`{path}` is Starlette's `{path:path}`, but
never empty):
files live in folders, and `/api/v1/files/parts/left.gcode` names one file. Routes
that add a suffix after such a parameter must be declared before the bare one.

Every successful GET answer carries an `ETag` (a hash of the JSON body; Starlette's
own for files), and a request whose `If-None-Match` names it gets 304 without a body.

The dispatcher checks, in this order: token and role (401, 403), the rate limit
(429), then runs the handler, which reads and validates its body (415, 413, 400).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import orjson
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from printhost.api.auth.guard import Principal, authenticate
from printhost.api.context import context_of
from printhost.api.errors import ApiError
from printhost.api.schemas import Field, Schema

Handler = Callable[[Request, "Principal | None"], Awaitable[Any]]


class FilePathConvertor(Convertor[str]):
    """Starlette's `path` convertor, but never empty: `/api/v1/files/` is not a file
    (404 as an unknown route, not a 400 for an empty path)."""
    regex = ".+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return str(value)


register_url_convertor("filepath", FilePathConvertor())

MULTIPART = "multipart"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    summary: str
    description: str
    role: str | None
    request: Schema | str | None
    response: Schema | None
    status: int
    errors: tuple[int, ...]
    handler: Handler
    # Schemas of the `{...}` segments of the path (a plain string when not declared).
    path_params: dict[str, Field] = field(default_factory=dict)
    # Expensive endpoints share the per-client, per-endpoint rate limit (429).
    rate_limited: bool = False
    # Error statuses whose body is not the plain error object (health's 503).
    error_bodies: dict[int, Schema] = field(default_factory=dict)
    # Marked for removal in the next major version (docs/api.md, Versioning).
    deprecated: bool = False
    # Optional query parameters the handler reads (none by default).
    query_params: dict[str, Field] = field(default_factory=dict)
    # The success body's media type; anything but JSON is a string in the OpenAPI document.
    media_type: str = "application/json"

    def all_errors(self) -> list[int]:
        codes = set(self.errors) | {500}
        if self.role is not None:
            codes |= {401, 403}
        if self.request is not None:
            codes |= {400, 413, 415}
        if self.query_params:
            codes.add(400)
        if self.rate_limited:
            codes.add(429)
        return sorted(codes)

    def path_param(self, name: str) -> Field:
        return self.path_params.get(name) or Field("string")


class EndpointSet:
    def __init__(self) -> None:
        self.endpoints: list[Endpoint] = []

    def route(self, method: str, path: str, *, summary: str, role: str | None,
              response: Schema | None, request: Schema | str | None = None,
              errors: tuple[int, ...] = (), status: int = 200,
              description: str = "", path_params: dict[str, Field] | None = None,
              rate_limited: bool = False, error_bodies: dict[int, Schema] | None = None,
              deprecated: bool = False, query_params: dict[str, Field] | None = None,
              media_type: str = "application/json") -> Callable[[Handler], Handler]:
        declared = [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]
        unknown = set(path_params or {}) - set(declared)
        if unknown:
            raise ValueError(f"{method} {path}: path_params not in the path: {sorted(unknown)}")

        def decorate(fn: Handler) -> Handler:
            self.endpoints.append(Endpoint(method, path, summary, description or (fn.__doc__ or ""),
                                           role, request, response, status, errors, fn,
                                           dict(path_params or {}), rate_limited,
                                           dict(error_bodies or {}), deprecated,
                                           dict(query_params or {}), media_type))
            return fn
        return decorate

    def starlette_routes(self) -> list[Route]:
        by_path: dict[str, dict[str, Endpoint]] = {}
        for ep in self.endpoints:
            by_path.setdefault(ep.path, {})[ep.method] = ep
        return [Route(path.replace("{path}", "{path:filepath}"), _dispatcher(methods),
                      methods=list(methods))
                for path, methods in by_path.items()]


def query_values(request: Request, params: dict[str, Field]) -> dict[str, Any]:
    """The query parameters given, checked against `params` (integers parsed); 400 for
    an unknown parameter, one given twice, or a value that does not fit."""
    unknown = set(request.query_params) - set(params)
    if unknown:
        raise ApiError(400, "Invalid query parameter",
                       fields={k[:64]: "unknown parameter" for k in sorted(unknown)})
    out: dict[str, Any] = {}
    for name, spec in params.items():
        values = request.query_params.getlist(name)
        if not values:
            continue
        if len(values) > 1:
            raise ApiError(400, "Invalid query parameter", fields={name: "given more than once"})
        value: Any = values[0]
        if spec.type == "integer":
            try:
                value = int(value)
            except ValueError:
                raise ApiError(400, "Invalid query parameter",
                               fields={name: "must be a whole number"}) from None
        problem = spec.check(value)
        if problem:
            raise ApiError(400, "Invalid query parameter", fields={name: problem})
        out[name] = value
    return out


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _check_rate_limit(request: Request, ep: Endpoint) -> None:
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is None:
        return
    wait = limiter.acquire(client_address(request), f"{ep.method} {ep.path}")
    if wait is not None:
        raise ApiError(429, f"Too many requests; try again in {wait} s", retry_after=wait)


class FastJSONResponse(JSONResponse):
    """JSON rendered by orjson: the status document, served to every poll of every
    app, costs a fifth of what the json module takes. A value orjson refuses (a
    non-string key) falls back to the json module's rendering; a non-finite number is
    written as null (JSON has none)."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError:
            return super().render(content)


def _dispatcher(methods: dict[str, Endpoint]) -> Callable[[Request], Awaitable[Response]]:
    async def dispatch(request: Request) -> Response:
        ep = methods[request.method if request.method != "HEAD" else "GET"]
        ctx = context_of(request.scope)
        if ctx is not None:
            ctx.route = ep.path
        principal = await authenticate(request, ep.role) if ep.role is not None else None
        if ctx is not None and principal is not None:
            ctx.user = getattr(principal, "username", None)
        if ep.rate_limited:
            _check_rate_limit(request, ep)
        result = await ep.handler(request, principal)
        if isinstance(result, Response):
            return _conditional(request, result) if ep.method == "GET" else result
        response = FastJSONResponse(result, status_code=ep.status)
        if ep.method == "GET" and ep.status == 200:
            response.headers["etag"] = etag_of(response.body)
            return _conditional(request, response)
        return response
    return dispatch


def etag_of(body: bytes) -> str:
    """A strong validator for a JSON body: its hash (the same content, the same tag, in
    any process and after a restart)."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def _conditional(request: Request, response: Response) -> Response:
    """304 Not Modified, without a body, when the request's If-None-Match names the
    response's ETag (or is `*`): a client polling a list or a status that has not changed
    gets a few bytes instead of the document."""
    tag = response.headers.get("etag")
    wanted = request.headers.get("if-none-match")
    if not tag or not wanted or response.status_code != 200:
        return response
    # Weak comparison (RFC 9110 13.1.2): W/"x" matches "x".
    tags = {t.strip().removeprefix("W/") for t in wanted.split(",")}
    if "*" in tags or tag.removeprefix("W/") in tags:
        return Response(status_code=304, headers={"etag": tag})
    return response
