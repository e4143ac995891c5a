"""`create_app`: the Starlette application with its routes, middleware and error handling.

The app holds no printer logic: it validates, authenticates and forwards. Everything
it needs comes in as arguments (settings, the control link, the store, the token
service), so tests and the service build it the same way.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp, Scope

from printhost.api.auth.throttle import LoginThrottle
from printhost.api.auth.tokens import TokenService
from printhost.api.endpoint import Endpoint
from printhost.api.errors import EXCEPTION_HANDLERS
from printhost.api.middleware import BodyLimitMiddleware, ErrorBoundaryMiddleware
from printhost.api.openapi import build_openapi
from printhost.api.routes import auth, files, heaters, meta, printer
from printhost.config import Settings
from printhost.store.db import Store
from printhost.store.files import GCodeFiles
from printhost.store.jobs import JobHistory

ROUTE_MODULES = (meta, auth, printer, files, heaters)


def all_endpoints() -> list[Endpoint]:
    return [ep for module in ROUTE_MODULES for ep in module.endpoints.endpoints]


def create_app(settings: Settings, *, link: Any, store: Store, tokens: TokenService,
               files: GCodeFiles, jobs: JobHistory) -> ASGIApp:
    routes = [r for module in ROUTE_MODULES for r in module.endpoints.starlette_routes()]
    app = Starlette(routes=routes, exception_handlers=dict(EXCEPTION_HANDLERS))
    app.state.settings = settings
    app.state.link = link
    app.state.store = store
    app.state.tokens = tokens
    app.state.files = files
    app.state.jobs = jobs
    app.state.throttle = LoginThrottle(settings.auth.login_max_failures,
                                       settings.auth.login_window_s,
                                       settings.auth.login_lockout_s)
    app.state.openapi = build_openapi(all_endpoints())

    upload_limit = settings.server.max_upload_bytes
    body_limit = settings.server.max_body_bytes

    def limit_for(scope: Scope) -> int:
        if scope.get("method") == "POST" and scope.get("path") == "/api/v1/files":
            return upload_limit
        return body_limit

    wrapped = BodyLimitMiddleware(app, limit_for)
    outer = ErrorBoundaryMiddleware(wrapped)
    outer.state = app.state  # type: ignore[attr-defined]
    return outer
