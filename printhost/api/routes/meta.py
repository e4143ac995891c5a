"""Health, liveness and the OpenAPI document."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from printhost import __version__
from printhost.api.auth.guard import Principal
from printhost.api.endpoint import EndpointSet
from printhost.api.health import assess
from printhost.api.schemas import HEALTH, HEALTHZ

endpoints = EndpointSet()


@endpoints.route("GET", "/api/v1/health", summary="Health of the service and the printer",
                 role=None, response=HEALTH, errors=(503,), error_bodies={503: HEALTH})
async def health(request: Request, _: Principal | None) -> JSONResponse:
    """No authentication. Each component (control process, MCU link, heaters, store, disk
    space) is `ok`, `degraded` or `down` with a short reason. 200 while the printer can
    print (overall `ok` or `degraded`); 503, with the same body plus `error`, when it
    cannot (overall `down`: the control process, the MCU or a heater is down, or the
    printer is latched in `error`)."""
    body, can_print = await assess(request.app.state.link, request.app.state.health_probe)
    return JSONResponse({"status": body.pop("status"), "version": __version__, **body},
                        status_code=200 if can_print else 503)


@endpoints.route("GET", "/healthz", summary="Liveness probe", role=None, response=HEALTHZ)
async def healthz(request: Request, _: Principal | None) -> dict:
    """No authentication. 200 `{"status": "ok"}` while the API process runs, whatever the
    printer's state: for a supervisor (systemd, a container runtime) deciding whether to
    restart the service. Readiness and the printer's health: `GET /api/v1/health`."""
    return {"status": "ok"}


@endpoints.route("GET", "/api/v1/openapi.json", summary="This API's OpenAPI 3.1 document",
                 role=None, response=None)
async def openapi(request: Request, _: Principal | None) -> JSONResponse:
    """No authentication. Generated from the route declarations in the code."""
    return Response(request.app.state.openapi_json, media_type="application/json")
