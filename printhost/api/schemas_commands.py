"""Request and response schemas of the printer commands (`api/routes/commands.py`).

Declared like those in schemas.py and added to `schemas.ALL_SCHEMAS` on import, so the
OpenAPI document's components list them next to the others.
"""

from __future__ import annotations

from printhost.api.schemas import ALL_SCHEMAS, PRINTER, Field, Schema

COMMAND_STATES = ("pending", "acknowledged", "running", "completed", "failed")
COMMAND_KINDS = ("heat", "cool", "home", "move", "extrude", "fan", "factors", "gcode",
                 "output", "filament_load", "filament_unload")

COMMAND_RECORD = Schema("CommandRecord", {
    "id": Field("string", "The command's id (`cmd_` and 16 hex digits)"),
    "kind": Field("string", "What was asked", enum=COMMAND_KINDS),
    "args": Field("object", "The request's arguments, as sent"),
    "user": Field("string", "Who sent it: a user or `api-key:<name>`"),
    "state": Field("string", "pending (checked, not yet at the printer), acknowledged "
                   "(queued by the printer), running, completed (done; for a command that "
                   "moves, the motion has ended) or failed (refused or stopped; `message` "
                   "says why)", enum=COMMAND_STATES),
    "message": Field("string", "How it ended: the reason of a failure, the printer's "
                     "answer (M114's position), or `done`", nullable=True),
    "responses": Field("array", "What the printer answered while running it (M114), "
                       "oldest first", items=Field("string")),
    "created_at": Field("string", "UTC ISO 8601 time it was sent"),
    "updated_at": Field("string", "UTC ISO 8601 time of its last change"),
}, "One printer command and how it ended")

COMMAND_LIST = Schema("CommandList", {
    "commands": Field("array", "Newest first", items=COMMAND_RECORD),
})

HEAT_REQUEST = Schema("HeatRequest", {
    "extruder": Field("number", "Hotend target, C (0 turns it off)", required=False,
                      minimum=0),
    "heater_bed": Field("number", "Bed target, C", required=False, minimum=0),
    "chamber": Field("number", "Chamber target, C (only with a chamber heater)",
                     required=False, minimum=0),
}, "Targets to set; at least one")

HOME_REQUEST = Schema("HomeRequest", {
    "axes": Field("string", "Axes to home, in any order: a combination of x, y and z "
                  "(default all)", required=False, pattern=r"^[xyzXYZ]{1,3}$"),
})

MOVE_REQUEST = Schema("ToolheadMoveRequest", {
    "x": Field("number", "mm (a distance when relative, else a G-code coordinate)",
               required=False, minimum=-100000, maximum=100000),
    "y": Field("number", "mm", required=False, minimum=-100000, maximum=100000),
    "z": Field("number", "mm", required=False, minimum=-100000, maximum=100000),
    "e": Field("number", "Filament to push (negative: retract), mm; always relative; "
               "needs a hot extruder", required=False, minimum=-100000, maximum=100000),
    "relative": Field("boolean", "A jog by the given distances (default true), or a move "
                      "to G-code coordinates", required=False),
    "speed": Field("number", "mm/s (default 50, 10 when Z moves, 5 for E alone; capped by "
                   "the printer's limits)", required=False, minimum=0.1, maximum=10000),
}, "A jog or a move; every axis named must be homed, and the end must be inside the "
   "axis limits")

EXTRUDE_REQUEST = Schema("ExtrudeRequest", {
    "length": Field("number", "mm of filament; negative retracts. At most "
                    "extruder.max_extrude_only_distance", minimum=-100000, maximum=100000),
    "speed": Field("number", "mm/s of filament (default 5)", required=False, minimum=0.1,
                   maximum=1000),
})

FAN_REQUEST = Schema("FanRequest", {
    "speed": Field("number", "Part fan speed 0..1 (0 is off)", minimum=0, maximum=1),
})

FACTORS_REQUEST = Schema("FactorsRequest", {
    "speed": Field("number", "Speed factor, percent (M220; 100 is as sliced)",
                   required=False, minimum=1, maximum=1000),
    "flow": Field("number", "Flow (extrusion) factor, percent (M221)", required=False,
                  minimum=1, maximum=1000),
}, "At least one of speed and flow")

GCODE_REQUEST = Schema("GCodeRequest", {
    "script": Field("string", "G-code, one command per line (at most 200 lines); every "
                    "command must be one printhost executes", min_length=1,
                    max_length=20000),
})

OUTPUT_REQUEST = Schema("OutputRequest", {
    "value": Field("number", "light: brightness 0..1; psu: 1 on, 0 off", minimum=0,
                   maximum=1),
})

CONSOLE_STATUS = Schema("ConsoleStatus", {
    "busy": Field("boolean", "Commands are queued or running"),
    "current": Field("string", "The running command's id", nullable=True),
    "queued": Field("integer", "Commands queued or running"),
    "seq": Field("integer", "Number of the last result (grows by one per ended command; "
                 "starts again at 0 when the control process restarts)"),
    "results": Field("array", "The last 32 ended commands: seq, id, kind, state, message, "
                     "responses", items=Field("object")),
}, "The printer's command queue")

PRINTER.fields["console"] = Field("object", "Printer commands (POST /api/v1/printer/...) "
                                  "queued, running and ended", required=False,
                                  ref=CONSOLE_STATUS)

COMMAND_SCHEMAS = [COMMAND_RECORD, COMMAND_LIST, HEAT_REQUEST, HOME_REQUEST, MOVE_REQUEST,
                   EXTRUDE_REQUEST, FAN_REQUEST, FACTORS_REQUEST, GCODE_REQUEST,
                   OUTPUT_REQUEST, CONSOLE_STATUS]
_published = {s.name for s in ALL_SCHEMAS}
ALL_SCHEMAS.extend(s for s in COMMAND_SCHEMAS if s.name not in _published)
