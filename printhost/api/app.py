"""`create_app`: the Starlette application with its routes, middleware and error handling.

The app holds no printer logic: it validates, authenticates and forwards. Everything
it needs comes in as arguments (settings, the control link, the store, the token
service), so tests and the service build it the same way.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp, Scope

from printhost.api.auth.core import AuthService
from printhost.api.auth.tokens import TokenService
from printhost.api.endpoint import Endpoint
from printhost.api.errors import EXCEPTION_HANDLERS
from printhost.api.health import HealthProbe
from printhost.api.middleware import (BodyLimitMiddleware, CorsMiddleware,
                                      ErrorBoundaryMiddleware, RequestContextMiddleware,
                                      StartupGate)
from printhost.api.openapi import build_openapi
from printhost.api.ratelimit import RateLimiter
from printhost.api.onetime import OneTimeTokens
from printhost.api.commands import CommandLog
from printhost.api.jobqueue import JobQueue
from printhost.api.live import LiveStatus
from printhost.api.routes import (admin, api_keys, auth, commands, files, heaters, home, live,
                                  meta, printer, stats, users)
from printhost.api.routes import jobs as job_routes
from printhost.config import Settings
from printhost.store.checkpoints import CheckpointStore
from printhost.store.db import Store
from printhost.store.files import GCodeFiles
from printhost.store.jobs import JobHistory

ROUTE_MODULES = (home, meta, auth, users, api_keys, printer, commands, job_routes, files,
                 heaters, live, stats, admin)


def all_endpoints() -> list[Endpoint]:
    return [ep for module in ROUTE_MODULES for ep in module.endpoints.endpoints]


def create_app(settings: Settings, *, link: Any, store: Store, tokens: TokenService,
               files: GCodeFiles, jobs: JobHistory, starting: str | None = None) -> ASGIApp:
    """The app; with `starting`, it answers 503 "starting: <phase>" until
    `app.state.startup.phase` is set to None (the supervisor does at `ready`)."""
    routes = [r for module in ROUTE_MODULES for r in module.endpoints.starlette_routes()]
    routes += [r for module in ROUTE_MODULES for r in getattr(module, "websocket_routes", [])]
    app = Starlette(routes=routes, exception_handlers=dict(EXCEPTION_HANDLERS))
    # A path with a trailing slash is another path: 404, not a 307 to the path without.
    app.router.redirect_slashes = False
    app.state.settings = settings
    app.state.link = link
    app.state.store = store
    app.state.tokens = tokens
    app.state.files = files
    app.state.download_tokens = OneTimeTokens(settings.server.download_token_ttl_s)
    app.state.ws_tickets = OneTimeTokens(live.TICKET_TTL_S)
    # Sampled by a task the supervisor starts (LiveStatus.run).
    app.state.live = LiveStatus(link.status, settings.server.ws_status_hz)
    app.state.jobs = jobs
    app.state.checkpoints = CheckpointStore(store.state_dir)
    app.state.commands = CommandLog(link, store.state_dir, app.state.live.broadcast)
    app.state.live.observers.append(app.state.commands.observe)
    app.state.queue = JobQueue(link, files, jobs, settings, app.state.checkpoints)
    app.state.health_probe = HealthProbe(store, store.state_dir,
                                         settings.server.health_min_free_mb)
    app.state.auth = AuthService(settings, store, tokens)
    app.state.throttle = app.state.auth.throttle
    app.state.openapi = build_openapi(all_endpoints())
    # Served as is: the document never changes while the service runs.
    app.state.openapi_json = json.dumps(app.state.openapi, separators=(",", ":")).encode()
    server = settings.server
    app.state.max_json_depth = server.max_json_depth
    app.state.rate_limiter = RateLimiter(server.rate_limit_per_min, server.rate_limit_burst)

    upload_limit = settings.server.max_upload_bytes
    body_limit = settings.server.max_body_bytes

    def limit_for(scope: Scope) -> int:
        if scope.get("method") == "POST" and scope.get("path") == "/api/v1/files":
            return upload_limit
        return body_limit

    # From the inside out: body limits, the last-resort 500, the start-up gate, CORS (so
    # that errors, too, carry CORS headers for a listed origin), then request ids and
    # the access log around everything, so that every response, even a 500, has an
    # X-Request-Id.
    wrapped: ASGIApp = BodyLimitMiddleware(app, limit_for)
    wrapped = ErrorBoundaryMiddleware(wrapped)
    wrapped = app.state.startup = StartupGate(wrapped, starting)
    wrapped = CorsMiddleware(wrapped, server.cors_origins,
                             {ep.method for ep in all_endpoints()}, server.cors_max_age_s)
    outer = RequestContextMiddleware(wrapped, server.access_log)
    outer.state = app.state  # type: ignore[attr-defined]
    return outer
