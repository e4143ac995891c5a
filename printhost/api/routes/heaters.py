"""PID autotune of a heater: start it, watch it, save the gains into the config file.

The tune itself runs in the control process (`Command.PID_TUNE`); these routes only
validate, forward and read the status block. Starting a tune heats the printer, and
saving rewrites the service's config file, so both need the admin role; watching is
open to every logged-in user, like the status it comes from.
"""

from __future__ import annotations

from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from printhost.api.auth.guard import Principal
from printhost.api.endpoint import EndpointSet
from printhost.api.errors import ApiError
from printhost.api.routes.printer import send_command
from printhost.api.schemas import (EMPTY, HEATER_NAME, PID_TUNE, PID_TUNE_REQUEST,
                                   PID_TUNE_SAVED, TARGET_REQUEST, TARGET_SET, read_json)
from printhost.control.autotune import ConfigWriteError, write_pid_to_config
from printhost.ipc.channel import Command

endpoints = EndpointSet()

NAME = {"name": HEATER_NAME}


def _heater(request: Request):
    """The heater's settings for the `{name}` in the path, or 404."""
    name = request.path_params["name"]
    heaters = request.app.state.settings.heater_settings()
    if name not in heaters:
        raise ApiError(404, f"Unknown heater: {name[:64]}")
    return name, heaters[name]


def _tune_status(request: Request, name: str) -> dict:
    printer = request.app.state.link.status().get("printer") or {}
    tune = printer.get("autotune")
    if tune and tune.get("heater") == name:
        return tune
    return {"heater": name, "target": None, "state": "idle", "progress": 0.0, "cycles": 0,
            "cycles_needed": 0, "elapsed": 0.0, "result": None, "error": None}


@endpoints.route("POST", "/api/v1/heaters/{name}/target", summary="Set a heater's target",
                 role="operator", request=TARGET_REQUEST, response=TARGET_SET,
                 errors=(404, 409, 503), path_params=NAME)
async def set_target(request: Request, _: Principal | None) -> dict:
    """Sets the target of `extruder`, `heater_bed` or (when fitted) `chamber` as
    M104/M140/M141 would (0 turns it off).
    400 with `fields` for a target that is not a number, negative or above the heater's
    max_temp (NaN and infinities are not JSON numbers here); 409 while a PID tune runs;
    503 while the printer is shut down after a fault (turning off is always accepted)."""
    name, settings = _heater(request)
    body = await read_json(request, TARGET_REQUEST)
    target = float(body["target"])
    if not 0.0 <= target <= settings.max_temp:
        raise ApiError(400, "Invalid request body", fields={
            "target": f"must be between 0 and {settings.max_temp:g}"})
    reply = await send_command(request, Command.SET_TARGET, {"heater": name, "target": target})
    return reply.result


@endpoints.route("POST", "/api/v1/heaters/{name}/pid_tune", summary="Start a PID autotune",
                 role="admin", request=PID_TUNE_REQUEST, response=PID_TUNE, status=202,
                 errors=(404, 409, 503), path_params=NAME, rate_limited=True)
async def start_tune(request: Request, _: Principal | None) -> dict:
    """Runs a relay autotune on the live heater (`extruder` or `heater_bed`) at `target`:
    the heater is switched fully on below and off above the target for several cycles,
    with every heater safety check active. Follow it with `GET` on the same path or in
    `printer.autotune` of the status; `POST /api/v1/cancel` stops it and turns the heater
    off. 409 while a job is in progress or another tune runs; 503 after a fault."""
    name, settings = _heater(request)
    if settings.control != "pid":
        raise ApiError(409, f"Heater {name} uses {settings.control} control; PID tuning "
                            "does not apply")
    body = await read_json(request, PID_TUNE_REQUEST)
    target = float(body["target"])
    if not settings.min_temp < target <= settings.max_temp:
        raise ApiError(400, "Invalid request body", fields={
            "target": f"must be above {settings.min_temp:g} and at most {settings.max_temp:g}"})
    reply = await send_command(request, Command.PID_TUNE, {"heater": name, "target": target})
    return reply.result


@endpoints.route("GET", "/api/v1/heaters/{name}/pid_tune", summary="PID autotune progress",
                 role="viewer", response=PID_TUNE, errors=(404,), path_params=NAME)
async def get_tune(request: Request, _: Principal | None) -> dict:
    """The latest tune of this heater since the control process started: progress while
    running, the gains (Klipper units) when done; `state` is `idle` if there was none."""
    name, _settings = _heater(request)
    return _tune_status(request, name)


@endpoints.route("POST", "/api/v1/heaters/{name}/pid_tune/save",
                 summary="Save the tuned PID gains to the config file", role="admin",
                 request=EMPTY, response=PID_TUNE_SAVED, errors=(404, 409),
                 path_params=NAME, rate_limited=True)
async def save_tune(request: Request, _: Principal | None) -> dict:
    """Writes `pid_kp`, `pid_ki` and `pid_kd` of the finished tune into the heater's table of
    the service's config file (the table is appended if absent); nothing else in the file
    changes, and the file is replaced atomically only if it still validates. The running
    heater keeps its gains until the service restarts. 409 when no finished tune exists for
    this heater, when the service runs without a config file, or when the file cannot be
    edited safely."""
    name, _settings = _heater(request)
    await read_json(request, EMPTY, allow_empty=True)
    tune = _tune_status(request, name)
    result = tune.get("result")
    if tune.get("state") != "done" or not result:
        raise ApiError(409, f"No finished PID tune of {name} to save")
    source = request.app.state.settings.source
    if not source or source.startswith("<") or not Path(source).is_file():
        raise ApiError(409, "The service was started without a config file, so there is no "
                            "file to save the gains to")
    gains = {k: float(result[k]) for k in ("pid_kp", "pid_ki", "pid_kd")}
    try:
        await run_in_threadpool(write_pid_to_config, source, name, gains)
    except ConfigWriteError as exc:
        raise ApiError(409, f"The gains were not saved: {exc}") from None
    return {"result": "ok", "heater": name, **gains, "restart_required": True}
