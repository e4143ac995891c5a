"""Health, the OpenAPI document and job history."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from printhost import __version__
from printhost.api.auth.guard import Principal
from printhost.api.endpoint import EndpointSet
from printhost.api.schemas import HEALTH, JOB_LIST

endpoints = EndpointSet()


@endpoints.route("GET", "/api/v1/health", summary="Liveness and readiness", role=None,
                 response=HEALTH, errors=(503,), error_bodies={503: HEALTH})
async def health(request: Request, _: Principal | None) -> JSONResponse:
    """No authentication. 200 when the control process runs, 503 (with the same body) when not."""
    reason = request.app.state.link.unavailable_reason()
    body = {"status": "ok" if reason is None else "degraded", "version": __version__,
            "control": "running" if reason is None else reason}
    if reason is not None:
        body["error"] = f"Printer not ready: {reason}"
    return JSONResponse(body, status_code=200 if reason is None else 503)


@endpoints.route("GET", "/api/v1/jobs", summary="Job history", role="viewer", response=JOB_LIST)
async def jobs(request: Request, _: Principal | None) -> dict:
    """The last 100 jobs, newest first, with their final or current state."""
    return {"jobs": await run_in_threadpool(request.app.state.jobs.list)}


@endpoints.route("GET", "/api/v1/openapi.json", summary="This API's OpenAPI 3.1 document",
                 role=None, response=None)
async def openapi(request: Request, _: Principal | None) -> JSONResponse:
    """No authentication. Generated from the route declarations in the code."""
    return Response(request.app.state.openapi_json, media_type="application/json")
