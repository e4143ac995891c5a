"""Declaring endpoints once: route, role, schemas and error statuses in one place.

`EndpointSet.route(...)` wraps a handler with authentication and role checks and
records everything the OpenAPI generator needs, so each route is described exactly
once and the published document lists what the code really does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from printhost.api.auth.guard import Principal, authenticate
from printhost.api.schemas import Schema

Handler = Callable[[Request, "Principal | None"], Awaitable[Any]]

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

    def all_errors(self) -> list[int]:
        codes = set(self.errors) | {500}
        if self.role is not None:
            codes |= {401, 403}
        if self.request is not None:
            codes |= {400, 413, 415}
        return sorted(codes)


class EndpointSet:
    def __init__(self) -> None:
        self.endpoints: list[Endpoint] = []

    def route(self, method: str, path: str, *, summary: str, role: str | None,
              response: Schema | None, request: Schema | str | None = None,
              errors: tuple[int, ...] = (), status: int = 200,
              description: str = "") -> Callable[[Handler], Handler]:
        def decorate(fn: Handler) -> Handler:
            self.endpoints.append(Endpoint(method, path, summary, description or (fn.__doc__ or ""),
                                           role, request, response, status, errors, fn))
            return fn
        return decorate

    def starlette_routes(self) -> list[Route]:
        by_path: dict[str, dict[str, Endpoint]] = {}
        for ep in self.endpoints:
            by_path.setdefault(ep.path, {})[ep.method] = ep
        return [Route(path, _dispatcher(methods), methods=list(methods))
                for path, methods in by_path.items()]


def _dispatcher(methods: dict[str, Endpoint]) -> Callable[[Request], Awaitable[Response]]:
    async def dispatch(request: Request) -> Response:
        ep = methods[request.method if request.method != "HEAD" else "GET"]
        principal = await authenticate(request, ep.role) if ep.role is not None else None
        result = await ep.handler(request, principal)
        if isinstance(result, Response):
            return result
        return JSONResponse(result, status_code=ep.status)
    return dispatch
