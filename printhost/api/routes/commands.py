"""Printer commands: heat, cool, home, move/jog, extrude, fan, speed and flow factors,
raw G-code, lights and the PSU, loading and unloading filament; and their records.

Each route checks its body's shape and ranges, then hands the command to the command
log (`api/commands.py`), which records it and sends it to the control process, where
`control/console.py` decides whether the printer may do it now (409 if not) and runs
it. The answer (202) is the command's record: `acknowledged` while it waits or runs,
or already `completed` for what takes no time (a fan speed, a target). Follow it with
`GET /api/v1/commands/{command_id}` or the WebSocket's `command` events.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from printhost.api.auth.guard import Principal
from printhost.api.endpoint import EndpointSet, query_values
from printhost.api.errors import ApiError
from printhost.api.schemas import EMPTY, Field, Schema, read_json
from printhost.api.schemas_commands import (COMMAND_KINDS, COMMAND_LIST, COMMAND_RECORD,
                                            COMMAND_STATES, EXTRUDE_REQUEST, FACTORS_REQUEST,
                                            FAN_REQUEST, GCODE_REQUEST, HEAT_REQUEST,
                                            HOME_REQUEST, MOVE_REQUEST, OUTPUT_REQUEST)

endpoints = EndpointSet()

ERRORS = (409, 503)
OUTPUT_NAME = {"name": Field("string", "light or psu", enum=("light", "psu"))}
COMMAND_ID = {"command_id": Field("string", "The command's id", max_length=64)}
LIST_PARAMS = {
    "state": Field("string", "Only commands in this state", required=False,
                   enum=COMMAND_STATES),
    "kind": Field("string", "Only commands of this kind", required=False, enum=COMMAND_KINDS),
    "user": Field("string", "Only commands of this user", required=False, max_length=128),
    "limit": Field("integer", "At most this many (100 by default)", required=False,
                   minimum=1, maximum=500),
}


async def _send(request: Request, principal: Principal | None, kind: str,
                args: dict[str, Any]) -> dict:
    assert principal is not None
    return await request.app.state.commands.submit(kind, args, principal.username)


def _command_route(path: str, kind: str, summary: str, schema: Schema, doc: str,
                   path_params: dict[str, Field] | None = None):
    @endpoints.route("POST", path, summary=summary, role="operator", request=schema,
                     response=COMMAND_RECORD, status=202, errors=ERRORS, description=doc,
                     path_params=path_params)
    async def handler(request: Request, principal: Principal | None) -> dict:
        body = await read_json(request, schema, allow_empty=schema is EMPTY)
        return await _send(request, principal, kind, _CHECKS.get(kind, _as_is)(request, body))
    return handler


def _as_is(_request: Request, body: dict[str, Any]) -> dict[str, Any]:
    return dict(body)


def _heat(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    heaters = request.app.state.settings.heater_settings()
    problems = {}
    for name, target in body.items():
        if name not in heaters:
            problems[name] = "no such heater on this printer"
        elif target > heaters[name].max_temp:
            problems[name] = f"must be between 0 and {heaters[name].max_temp:g}"
    if not body:
        problems["extruder"] = "give at least one target"
    if problems:
        raise ApiError(400, "Invalid request body", fields=problems)
    return {"targets": dict(body)}


def _factors(_request: Request, body: dict[str, Any]) -> dict[str, Any]:
    if not body:
        raise ApiError(400, "Invalid request body", fields={"speed": "give speed, flow or both"})
    return dict(body)


def _move(_request: Request, body: dict[str, Any]) -> dict[str, Any]:
    if not any(body.get(k) is not None for k in "xyze"):
        raise ApiError(400, "Invalid request body", fields={"x": "give at least one of x, y, "
                                                                 "z and e"})
    return dict(body)


def _home(_request: Request, body: dict[str, Any]) -> dict[str, Any]:
    return {"axes": str(body.get("axes") or "xyz").lower()}


def _output(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    return {"name": request.path_params["name"], "value": body["value"]}


_CHECKS = {"heat": _heat, "factors": _factors, "move": _move, "home": _home,
           "output": _output}

heat = _command_route(
    "/api/v1/printer/heat", "heat", "Set heater targets", HEAT_REQUEST,
    "Sets the targets given (`extruder`, `heater_bed`, `chamber` when fitted) as "
    "M104/M140/M141 would, without waiting for them. Allowed while printing. 400 for a "
    "heater the printer does not have or a target above its max_temp.")
cool = _command_route(
    "/api/v1/printer/cool", "cool", "Turn every heater off", EMPTY,
    "Every heater's target to 0. Allowed in every state, also after a fault.")
home = _command_route(
    "/api/v1/printer/home", "home", "Home axes", HOME_REQUEST,
    "G28 on the axes given (all by default). Completed when homing has ended. 409 while a "
    "job prints or is paused (homing would lose its position).")
move = _command_route(
    "/api/v1/printer/move", "move", "Move or jog the toolhead", MOVE_REQUEST,
    "A jog by distances (`relative`, the default) or a move to G-code coordinates, at "
    "`speed`. Every axis that moves must be homed (409) and the end must lie inside the "
    "axis limits (400). `e` moves filament and needs the hotend at min_extrude_temp "
    "(409). Refused while a job prints (409); allowed while it is paused (the resume "
    "returns to where the print stopped). The printer's G-code modes are left as they "
    "were. Completed when the move has ended.")
extrude = _command_route(
    "/api/v1/printer/extrude", "extrude", "Extrude or retract filament", EXTRUDE_REQUEST,
    "Pushes `length` mm of filament (negative retracts) at `speed`. 409 while the hotend "
    "is below min_extrude_temp or a job prints; 400 beyond "
    "extruder.max_extrude_only_distance.")
fan = _command_route(
    "/api/v1/printer/fan", "fan", "Set the part fan's speed", FAN_REQUEST,
    "M106/M107. Allowed while printing (the file's next M106 sets it again).")
factors = _command_route(
    "/api/v1/printer/factors", "factors", "Set the speed and flow factors", FACTORS_REQUEST,
    "M220/M221, in percent. Allowed while printing: moves planned after it use the new "
    "factors; a change while paused is kept when the job resumes.")
gcode = _command_route(
    "/api/v1/printer/gcode", "gcode", "Run raw G-code", GCODE_REQUEST,
    "Runs the script's lines in order, each on the printer's interpreter; logged with the "
    "user. Every command must be one printhost executes (400 names the first that is "
    "not; `M112` stops the printer at once). While a job prints only commands that do "
    "not move are allowed (M104, M140, M141, M106, M107, M220, M221, M114); while it is "
    "paused G28, G92, M84, M18 and M81 are refused (409). M114's answer is in "
    "`responses` and in the WebSocket's `gcode_response` events. Completed when its "
    "motion has ended; a failing line fails the command and the lines after it do not "
    "run.")
output = _command_route(
    "/api/v1/printer/outputs/{name}", "output", "Switch a Pi output: the light or the PSU",
    OUTPUT_REQUEST,
    "`light`: brightness 0..1 of the light on `devices.light.pin`. `psu`: 1 switches the "
    "printer's power on (M80), 0 off (M81: heaters off, then power off once the motion "
    "has ended; refused while a job is in progress). 400 when the output is not fitted.",
    path_params=OUTPUT_NAME)
filament_load = _command_route(
    "/api/v1/printer/filament/load", "filament_load", "Load filament", EMPTY,
    "Runs `filament.load_gcode` (relative E). 409 while the hotend is below "
    "min_extrude_temp or a job prints; allowed while it is paused (a filament change), "
    "and the job then continues from where the extruder is.")
filament_unload = _command_route(
    "/api/v1/printer/filament/unload", "filament_unload", "Unload filament", EMPTY,
    "Runs `filament.unload_gcode` (relative E); the same rules as loading.")


@endpoints.route("GET", "/api/v1/commands", summary="Printer commands, newest first",
                 role="viewer", response=COMMAND_LIST, query_params=LIST_PARAMS)
async def list_commands(request: Request, _: Principal | None) -> dict:
    """The last 500 commands kept in memory (the full record is in
    `<state_dir>/commands.jsonl`), filtered by `state`, `kind` and `user`."""
    query = query_values(request, LIST_PARAMS)
    return {"commands": request.app.state.commands.list(**query)}


@endpoints.route("GET", "/api/v1/commands/{command_id}", summary="One printer command",
                 role="viewer", response=COMMAND_RECORD, errors=(404,),
                 path_params=COMMAND_ID)
async def get_command(request: Request, _: Principal | None) -> dict:
    """A command's record: its state and, once ended, its message and responses."""
    record = request.app.state.commands.get(request.path_params["command_id"])
    if record is None:
        raise ApiError(404, "Command not found")
    return record
