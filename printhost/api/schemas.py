"""Request and response schemas, defined once for validation and for the OpenAPI document.

A schema is a small declarative object. `validate()` turns a decoded JSON body into
checked values or raises a 400 `ApiError` whose `fields` map names every problem;
`json_schema()` renders the same declaration into the OpenAPI document. Keeping both in
one place means the documentation cannot drift from what the server enforces.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from starlette.requests import Request

from printhost.api.errors import ApiError
from printhost.store.files import MAX_DEPTH, MAX_PATH_BYTES, FileNameError, check_name, check_path

_JSON_TYPES = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


@dataclass(frozen=True)
class Field:
    type: str
    description: str = ""
    required: bool = True
    nullable: bool = False
    min_length: int | None = None
    max_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[str, ...] | None = None
    items: "Field | Schema | None" = None
    ref: "Schema | None" = None
    # A regular expression the whole string must match, written in the subset shared by
    # Python and ECMA-262 (JSON Schema's dialect); `explain` turns a refused value into
    # the problem reported to the client (default: "must match the pattern ...").
    pattern: str | None = None
    explain: Callable[[str], str] | None = field(default=None, compare=False, repr=False)
    # A further check of a string that fits the pattern: the problem, or None. For rules
    # the pattern can only approximate (letters of every script in file names).
    verify: Callable[[str], str | None] | None = field(default=None, compare=False, repr=False)
    examples: tuple[Any, ...] | None = None
    values: "Field | None" = None            # for a map: the type of every member
    media_type: str | None = None            # contentMediaType of a string (a file part)

    def check(self, value: Any) -> str | None:
        """Return a problem description, or None if the value fits."""
        if value is None:
            return None if self.nullable else "must not be null"
        allowed = _JSON_TYPES[self.type]
        if isinstance(value, bool) and self.type != "boolean":
            return f"expected {self.type}"
        if not isinstance(value, allowed):
            return f"expected {self.type}"
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if isinstance(value, int) and self.type == "number" and abs(value) > _LARGEST_FLOAT:
            # JSON allows integers of any length; one that no float can hold is not a
            # usable number (and would overflow wherever it is converted).
            return "must be a finite number"
        if isinstance(value, str):
            if self.min_length is not None and len(value) < self.min_length:
                return f"must be at least {self.min_length} characters"
            if self.max_length is not None and len(value) > self.max_length:
                return f"must be at most {self.max_length} characters"
            if self.pattern is not None and not re.fullmatch(self.pattern, value):
                return self.explain(value) if self.explain else f"must match {self.pattern}"
            if self.verify is not None:
                problem = self.verify(value)
                if problem is not None:
                    return problem
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                return f"must be at least {self.minimum:g}"
            if self.maximum is not None and value > self.maximum:
                return f"must be at most {self.maximum:g}"
        if self.enum is not None and value not in self.enum:
            return f"must be one of {', '.join(self.enum)}"
        return None

    def json_schema(self) -> dict[str, Any]:
        if self.ref is not None:
            out: dict[str, Any] = {"$ref": f"#/components/schemas/{self.ref.name}"}
            if self.nullable:
                return {"oneOf": [out, {"type": "null"}], "description": self.description}
            return out
        out = {"type": [self.type, "null"] if self.nullable else self.type}
        if self.description:
            out["description"] = self.description
        for key, value in (("minLength", self.min_length), ("maxLength", self.max_length),
                           ("minimum", self.minimum), ("maximum", self.maximum),
                           ("pattern", self.pattern)):
            if value is not None:
                out[key] = value
        if self.enum is not None:
            out["enum"] = list(self.enum)
        if self.examples is not None:
            out["examples"] = list(self.examples)
        if self.values is not None:
            out["additionalProperties"] = self.values.json_schema()
        if self.media_type is not None:
            out["contentMediaType"] = self.media_type
        if self.items is not None:
            out["items"] = (self.items.json_schema() if isinstance(self.items, Field)
                            else {"$ref": f"#/components/schemas/{self.items.name}"})
        return out


@dataclass(frozen=True)
class Schema:
    name: str
    fields: dict[str, Field] = field(default_factory=dict)
    description: str = ""
    additional: bool = False

    def validate(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ApiError(400, "Request body must be a JSON object")
        problems: dict[str, str] = {}
        if not self.additional:
            for key in data:
                if key not in self.fields:
                    problems[str(key)[:64]] = "unknown field"
        for name, f in self.fields.items():
            if name not in data:
                if f.required:
                    problems[name] = "required"
                continue
            problem = f.check(data[name])
            if problem:
                problems[name] = problem
        if problems:
            raise ApiError(400, "Invalid request body", fields=problems)
        return data

    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "object",
            "properties": {k: f.json_schema() for k, f in self.fields.items()},
            "additionalProperties": self.additional,
        }
        required = [k for k, f in self.fields.items() if f.required]
        if required:
            out["required"] = required
        if self.description:
            out["description"] = self.description
        return out


_LARGEST_FLOAT = 1.7976931348623157e308


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


DEFAULT_MAX_JSON_DEPTH = 16
# A JSON string: the opening quote, escapes or plain characters, and the closing quote
# if there is one. Brackets inside strings do not nest anything. The closing quote is
# optional so that a match never fails once started: the scan stays linear even for
# a body of thousands of unterminated strings.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text, without decoding it.

    Used before `json.loads` so that a small body of 60 000 `[` never recurses deep
    inside the decoder. The scan is linear in the body's length. Counting is exact for
    valid JSON; broken JSON is refused by the decoder afterwards (or, if it looks
    deeper than the limit, with 413 first).
    """
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
        else:
            depth -= 1
    return deepest


JSON_WHITESPACE = b" \t\n\r"


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_json(request: Request, schema: Schema, *, allow_empty: bool = False) -> dict[str, Any]:
    """Read, decode and validate a JSON body (415 wrong type, 413 nested too deeply,
    400 malformed or invalid)."""
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    # Only a body of no bytes at all is an omitted one; whitespace alone is not JSON
    # (a JSON text needs a value) and is refused like any other malformed body.
    if not body.strip(JSON_WHITESPACE):
        if allow_empty and not body and (not content_type or _is_json(content_type)):
            return schema.validate({})
        if not content_type or _is_json(content_type):
            raise ApiError(400, "Request body must be a JSON object")
    if not _is_json(content_type):
        raise ApiError(415, "Content-Type must be application/json")
    limit = getattr(request.app.state, "max_json_depth", DEFAULT_MAX_JSON_DEPTH)
    if json_depth(body) > limit:
        raise ApiError(413, f"JSON body nested too deeply (limit {limit} levels)")
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "Malformed JSON body") from None
    return schema.validate(data)


# --------------------------------------------------------------------------- shared schemas

# The names `store.files.check_name` accepts, as one regular expression for the OpenAPI
# document, written in the subset of Python and ECMA-262 regular expressions both
# understand. On ASCII it is exact (a unit test compares the two): a letter, digit or
# underscore first; then letters, digits and `_ ( ) + , -` and spaces, with single dots
# between them; then the suffix .gcode, .gco or .g in any case. Beyond ASCII it lets
# every character from U+00A0 on through, because that subset has no Unicode classes;
# the server refuses those that are not letters, combining marks or digits (and checks
# the name after normalising it to NFC). At most 255 characters (maxLength) and 255
# bytes in UTF-8.
_NAME_FIRST = r"(?:[A-Za-z0-9_]|[^\x00-\x9f])"
_NAME_INSIDE = r"(?:[A-Za-z0-9_ ()+,-]|[^\x00-\x9f])"
FILE_NAME_PATTERN = (rf"^{_NAME_FIRST}(?:{_NAME_INSIDE}|\.{_NAME_INSIDE})*"
                     r"\.(?:[gG][cC][oO][dD][eE]|[gG][cC][oO]|[gG])$")


_SEGMENT = rf"{_NAME_FIRST}(?:{_NAME_INSIDE}|\.{_NAME_INSIDE})*"
# A relative path: up to MAX_DEPTH folders (the same characters, no suffix needed), then
# a G-code file name; a folder's path is one to MAX_DEPTH + 1 segments.
FILE_PATH_PATTERN = (rf"^(?:{_SEGMENT}/){{0,{MAX_DEPTH}}}{_SEGMENT}"
                     r"\.(?:[gG][cC][oO][dD][eE]|[gG][cC][oO]|[gG])$")
FOLDER_PATH_PATTERN = rf"^{_SEGMENT}(?:/{_SEGMENT}){{0,{MAX_DEPTH - 1}}}$"


def _file_path_check(value: str) -> str | None:
    try:
        check_path(value)
    except FileNameError as exc:
        return str(exc)
    return None


def _folder_path_check(value: str) -> str | None:
    try:
        check_path(value, folder=True)
    except FileNameError as exc:
        return str(exc)
    return None


def file_path_field(description: str) -> Field:
    return Field("string", description + ": a file name, optionally after folders "
                 "(`parts/left.gcode`). Letters and digits of any script are allowed; "
                 "paths are compared after Unicode NFC normalisation", min_length=3,
                 max_length=MAX_PATH_BYTES, pattern=FILE_PATH_PATTERN,
                 explain=lambda v: _file_path_check(v) or "must be a G-code file's path",
                 verify=_file_path_check, examples=("cube.gcode", "parts/würfel.gcode"))


def folder_path_field(description: str) -> Field:
    return Field("string", description + " (`parts/brackets`): names of letters, digits, "
                 "spaces and . _ - ( ) + , separated by /", min_length=1,
                 max_length=MAX_PATH_BYTES, pattern=FOLDER_PATH_PATTERN,
                 explain=lambda v: _folder_path_check(v) or "must be a folder's path",
                 verify=_folder_path_check, examples=("parts", "parts/brackets"))


def _file_name_problem(value: str) -> str:
    return _file_name_check(value) or "must be a G-code file name"


def _file_name_check(value: str) -> str | None:
    try:
        check_name(value)
    except FileNameError as exc:
        return str(exc)
    return None


def file_name_field(description: str) -> Field:
    return Field("string", description + ". Letters and digits of any script are allowed; "
                 "the name is compared after Unicode NFC normalisation", min_length=3,
                 max_length=255, pattern=FILE_NAME_PATTERN, explain=_file_name_problem,
                 verify=_file_name_check, examples=("cube.gcode", "würfel.gcode"))


HEATER_NAME = Field("string", "The heater's name in the configuration, e.g. extruder",
                    min_length=1, max_length=64, examples=("extruder", "heater_bed"))

ERROR = Schema("Error", {
    "error": Field("string", "One clear, human-readable sentence"),
    "fields": Field("object", "On 400: each offending field and its problem", required=False,
                    values=Field("string")),
    "retry_after": Field("integer", "On 429: seconds to wait (also in Retry-After)",
                         required=False, minimum=1),
    "job_id": Field("string", "On 409 for a second job of the same file: the job that has "
                    "it already", required=False),
    "command_id": Field("string", "On a refused printer command (400, 409, 503): the "
                        "command's record, state failed (GET /api/v1/commands/{command_id})",
                        required=False),
}, "The error object returned by every failing request")

EMPTY = Schema("Empty", {}, "An empty JSON object; the body may also be omitted")

RESULT_OK = Schema("ResultOk", {"result": Field("string", "Always \"ok\"", enum=("ok",))})

LOGIN_REQUEST = Schema("LoginRequest", {
    "username": Field("string", "User name", min_length=1, max_length=64),
    "password": Field("string", "Password", min_length=1, max_length=1024),
})

LOGIN_RESPONSE = Schema("LoginResponse", {
    "token": Field("string", "JWT to send as `Authorization: Bearer <token>`"),
    "token_type": Field("string", "Always \"bearer\"", enum=("bearer",)),
    "expires_at": Field("string", "UTC ISO 8601 expiry time of the token"),
})

AUTH_CHECK = Schema("AuthCheck", {
    "valid": Field("boolean", "Always true (an invalid token gets 401)"),
    "username": Field("string", "The token's user"),
    "roles": Field("array", "Roles granted, e.g. [\"operator\"]", items=Field("string")),
    "expires_at": Field("string", "UTC ISO 8601 expiry time of the token"),
})

JOB = Schema("Job", {
    "id": Field("string", "Job id"),
    "file": Field("string", "G-code file name"),
    "state": Field("string", "Job state", enum=("printing", "pausing", "paused", "cancelling",
                                                 "completed", "cancelled", "error", "interrupted")),
    "progress": Field("number", "Fraction of the file read, 0..1", minimum=0, maximum=1),
    "started_at": Field("string", "UTC ISO 8601 start time"),
    "ended_at": Field("string", "UTC ISO 8601 end time, null while running", nullable=True),
    "print_duration": Field("number", "Seconds spent printing, pauses excluded"),
    "total_duration": Field("number", "Seconds since the start, pauses included"),
    "estimated_remaining": Field("number", "Estimated seconds left, null when unknown: the "
                                 "file's own estimate (M73 R) counted down while printing, "
                                 "else from the rate of progress so far", nullable=True),
    "filament_used_mm": Field("number", "Filament fed so far, mm"),
    "line": Field("integer", "Last G-code line read"),
    "error": Field("string", "Why the job stopped, for state error", nullable=True),
    "resume_point": Field("object", "While the job is in progress: where it could be "
                          "restarted after a power loss (saved by the service every 5 s "
                          "while it changes; POST /api/v1/jobs/{job_id}/resume); null "
                          "before the first, and once the job has ended", nullable=True,
                          required=False),
}, "The current or most recent print job", additional=True)

PID_TUNE_RESULT = Schema("PidTuneResult", {
    "pid_kp": Field("number", "Proportional gain, Klipper units (as in the config)"),
    "pid_ki": Field("number", "Integral gain, Klipper units"),
    "pid_kd": Field("number", "Derivative gain, Klipper units"),
    "ku": Field("number", "Ultimate gain Ku = 4*P/(pi*a), heater duty per C"),
    "tu": Field("number", "Ultimate period Tu, s"),
    "amplitude": Field("number", "Mean oscillation amplitude a (first harmonic), C"),
    "cycles": Field("integer", "Oscillation cycles averaged (the first one is discarded)"),
    "spread": Field("number", "(max - min) / mean of the per-cycle Ku estimates"),
}, "Gains from a relay autotune (Ziegler-Nichols: Kp = 0.6 Ku, Ti = Tu/2, Td = Tu/8)")

PID_TUNE = Schema("PidTune", {
    "heater": Field("string", "Heater being tuned"),
    "target": Field("number", "Tune target, C; null when no tune has run", nullable=True),
    "state": Field("string", "idle (no tune since the service started), running, done, "
                   "failed or cancelled",
                   enum=("idle", "running", "done", "failed", "cancelled")),
    "progress": Field("number", "Share of the measured cycles completed, 0..1",
                      minimum=0, maximum=1),
    "cycles": Field("integer", "Measured cycles completed"),
    "cycles_needed": Field("integer", "Measured cycles the result averages"),
    "elapsed": Field("number", "Seconds since the tune started, on the printer's clock"),
    "result": Field("object", "The gains once state is done", nullable=True,
                    ref=PID_TUNE_RESULT),
    "error": Field("string", "Why the tune failed or was cancelled", nullable=True),
}, "A PID tune: progress while running, gains when done", additional=True)

PID_TUNE_REQUEST = Schema("PidTuneRequest", {
    "target": Field("number", "Temperature to tune at, C: above the heater's min_temp and "
                    "at most its max_temp"),
})

TARGET_REQUEST = Schema("HeaterTargetRequest", {
    "target": Field("number", "Target temperature, C; 0 turns the heater off; at most the "
                    "heater's max_temp"),
})

TARGET_SET = Schema("HeaterTargetSet", {
    "heater": Field("string", "Heater name"),
    "target": Field("number", "The target now in force, C"),
})

PID_TUNE_SAVED = Schema("PidTuneSaved", {
    "result": Field("string", "Always \"ok\"", enum=("ok",)),
    "heater": Field("string", "Heater whose gains were written"),
    "pid_kp": Field("number", "Written proportional gain"),
    "pid_ki": Field("number", "Written integral gain"),
    "pid_kd": Field("number", "Written derivative gain"),
    "restart_required": Field("boolean", "Always true: the running heaters keep their "
                              "gains until the service restarts"),
})

DEVICES = Schema("Devices", {
    "backend": Field("string", "pi: the Pi's own pins and I2C bus; simulated: mock pins "
                     "and a simulated bus (devices.backend)", enum=("pi", "simulated")),
    "warning": Field("string", "Set when a real printer (control.backend = mcu) runs "
                     "simulated Pi devices: which ones, and that they do nothing",
                     nullable=True),
    "psu_on": Field("boolean", "PSU relay on; null without one", nullable=True),
    "estop_pressed": Field("boolean", "Emergency-stop button pressed; null without one",
                           nullable=True),
    "filament_present": Field("boolean", "Runout switch sees filament; null without one",
                              nullable=True),
    "hotend_fan": Field("number", "Hotend fan speed 0..1; null without one", nullable=True),
    "controller_fan": Field("number", "Controller fan speed 0..1; null without one",
                            nullable=True),
    "light": Field("number", "Light brightness 0..1; null without one", nullable=True),
    "chamber": Field("object", "Chamber sensor: temperature (C), humidity (%) and "
                     "sensor_error, null values while there is no fresh reading; null "
                     "without a sensor", nullable=True),
}, "Devices wired to the Pi itself (docs/devices.md)", additional=True)

CONTROL_LOOP = Schema("ControlLoop", {
    "period_ms": Field("number", "Period of the control loop, ms"),
    "passes": Field("integer", "Passes since the control process started"),
    "overruns": Field("integer", "Passes that ended after the next one was due"),
    "late_wakes": Field("integer", "Overruns because the process woke late"),
    "tick_p50_ms": Field("number", "Median work of a pass, ms", nullable=True),
    "tick_p99_ms": Field("number", "99th percentile of the work of a pass, ms", nullable=True),
    "tick_max_ms": Field("number", "Longest pass, ms", nullable=True),
    "latency_p99_ms": Field("number", "99th percentile from due time to the end of a pass, "
                            "ms", nullable=True),
    "last_overrun_cause": Field("string", "Why the latest overrun happened", nullable=True),
    "realtime": Field("object", "Real-time scheduling obtained: policy, priority, "
                      "memory_locked, gc_frozen, realtime, notes", nullable=True),
}, "The control loop's deadlines (docs/architecture.md)", additional=True)

PRINTER = Schema("Printer", {
    "position": Field("array", "Commanded toolhead position [x, y, z] in mm: where the "
                      "toolhead goes once the queued moves have run", items=Field("number")),
    "live_position": Field("array", "Where the toolhead is now [x, y, z] in mm; null when "
                           "the MCU is shut down or lost (see unavailable)",
                           items=Field("number"), nullable=True),
    "extruder_position": Field("number", "Commanded extruder position in mm"),
    "hotend_temp": Field("number", "Hotend temperature, C; null when unknown or stale "
                         "(see unavailable)", nullable=True),
    "target_hotend_temp": Field("number", "Hotend target, C (0 = off); null when unknown",
                                nullable=True),
    "hotend_power": Field("number", "Hotend heater duty 0..1; null when unknown", nullable=True),
    "bed_temp": Field("number", "Bed temperature, C; null when unknown or stale (see "
                      "unavailable)", nullable=True),
    "target_bed_temp": Field("number", "Bed target, C (0 = off); null when unknown",
                             nullable=True),
    "bed_power": Field("number", "Bed heater duty 0..1; null when unknown", nullable=True),
    "fan_speed": Field("number", "Part fan 0..1; null when unknown", nullable=True),
    "speed_factor": Field("number", "M220 factor (1.0 = 100 %)"),
    "extrude_factor": Field("number", "M221 factor (1.0 = 100 %)"),
    "homed_axes": Field("string", "Homed axes, e.g. \"xyz\""),
    "print_time": Field("number", "Seconds on the control process's print clock"),
    "autotune": Field("object", "The latest PID tune since the control process started; "
                      "null if none", required=False, nullable=True, ref=PID_TUNE),
    "chamber_temp": Field("number", "Chamber temperature, C; null without a sensor or "
                          "a fresh reading", required=False, nullable=True),
    "target_chamber_temp": Field("number", "Chamber heater target, C; null without one",
                                 required=False, nullable=True),
    "chamber_power": Field("number", "Chamber heater on (1) or off (0); null without one",
                           required=False, nullable=True),
    "chamber_humidity": Field("number", "Chamber relative humidity, %; null without a "
                              "humidity sensor", required=False, nullable=True),
    "paused_by_runout": Field("boolean", "The job was paused by the filament runout switch",
                              required=False),
    "devices": Field("object", "Pi-local devices; null when none are configured",
                     required=False, nullable=True, ref=DEVICES),
    "control": Field("object", "The control loop's timing", required=False,
                     ref=CONTROL_LOOP),
    "heaters": Field("object", "Every heater by name: temperature (null when unknown or "
                     "stale), target, power, fault (why it was shut down, or null) and "
                     "unavailable (why temperature is null, or null)", required=False,
                     values=Field("object")),
    "unavailable": Field("object", "For each live member that is null because its source "
                         "is gone or stale (hotend_temp, bed_temp, live_position, ...): "
                         "why; empty when every reading is current", required=False,
                         values=Field("string")),
}, "Live printer state", additional=True)

STATUS = Schema("Status", {
    "state": Field("string", "Printer state", enum=("idle", "printing", "paused", "error")),
    "job": Field("object", "Current or last job", nullable=True, ref=JOB),
    "printer": Field("object", "Printer state; null before the control process first "
                     "reports", nullable=True, ref=PRINTER),
    "error": Field("string", "Reason for state error", nullable=True),
}, "Printer and job status")

FIRMWARE_RESTARTED = Schema("FirmwareRestarted", {
    "result": Field("string", "Always \"ok\"", enum=("ok",)),
    "state": Field("string", "The printer's state after the restart (idle)",
                   enum=STATUS.fields["state"].enum),
})

PRINT_REQUEST = Schema("PrintRequest", {
    "file": file_path_field("Path of an uploaded G-code file"),
})

FILE_UPLOAD = Schema("FileUpload", {
    "file": Field("string", "The G-code file: plain text with G, M or T commands (an "
                  "empty, binary or other text file is refused with 400). The part's file "
                  "name (in its Content-Disposition) is the name it is stored under, in "
                  "Unicode NFC, and must be one that `POST /api/v1/print` accepts",
                  media_type="application/octet-stream"),
}, "A multipart/form-data upload with one file part named `file`")

OVERWRITE_PARAM = Field("boolean", "true replaces a stored file of the same name (not "
                        "while it is being printed); without it, or with false, an upload "
                        "of a name that exists is refused with 409", required=False)

PRINT_RESPONSE = Schema("PrintStarted", {
    "result": Field("string", "Always \"ok\"", enum=("ok",)),
    "job_id": Field("string", "Id of the new job"),
})

FILE_INFO = Schema("FileInfo", {
    "name": Field("string", "File name"),
    "path": Field("string", "Path below the files' root: folders, then the name"),
    "size": Field("integer", "Size in bytes"),
    "modified": Field("string", "UTC ISO 8601 modification time"),
})

JOB_RECORD = Schema("JobRecord", {
    "id": Field("string", "Job id"),
    "file": Field("string", "G-code file name"),
    "state": Field("string", "Last recorded state", enum=("queued",) + JOB.fields["state"].enum),
    "user": Field("string", "Who submitted or started the job", required=False, nullable=True),
    "sha256": Field("string", "The file's SHA-256 when the job was created; a job starts "
                    "only if the file still has it", required=False, nullable=True),
    "created_at": Field("string", "UTC ISO 8601 time the job was created", required=False),
    "started_at": Field("string", "UTC ISO 8601 start time", required=False, nullable=True),
    "ended_at": Field("string", "UTC ISO 8601 end time", required=False, nullable=True),
    "progress": Field("number", "Fraction of the file read when last recorded", required=False),
    "print_duration": Field("number", "Seconds printing, pauses excluded", required=False),
    "total_duration": Field("number", "Seconds since the start", required=False),
    "filament_used_mm": Field("number", "Filament fed, mm", required=False),
    "line": Field("integer", "Last G-code line read", required=False),
    "error": Field("string", "Why the job stopped", required=False, nullable=True),
}, "A job in the history; progress is recorded in steps of 5 %", additional=True)

HEALTH_LEVELS = ("ok", "degraded", "down")

COMPONENT = Schema("HealthComponent", {
    "status": Field("string", "ok; degraded (works, with a problem worth a look); down "
                    "(does not work)", enum=HEALTH_LEVELS),
    "reason": Field("string", "Why it is not ok, in a few words; null when ok",
                    nullable=True),
}, "One part of the service and its health")

HEALTH = Schema("Health", {
    "status": Field("string", "Overall: down (503) when the printer cannot print; "
                    "degraded when it can but a component is not ok; ok otherwise",
                    enum=HEALTH_LEVELS),
    "version": Field("string", "printhost version"),
    "state": Field("string", "The printer's state, as in GET /api/v1/status",
                   enum=("idle", "printing", "paused", "error")),
    "control": Field("string", "running, or why the control process is unavailable"),
    "components": Field("object", "control, mcu, heaters, store and disk, each with its "
                        "status and reason", values=Field("object", ref=COMPONENT)),
    "error": Field("string", "On 503: \"Printer not ready: <reason>\"", required=False),
}, "The health of the service and the printer")

HEALTHZ = Schema("Liveness", {
    "status": Field("string", "Always \"ok\": the API process answers", enum=("ok",)),
}, "Liveness: the API process runs")

ALL_SCHEMAS = [ERROR, EMPTY, RESULT_OK, LOGIN_REQUEST, LOGIN_RESPONSE, AUTH_CHECK, JOB, PRINTER,
               STATUS, PRINT_REQUEST, PRINT_RESPONSE, FILE_INFO, FILE_UPLOAD,
               JOB_RECORD, HEALTH, COMPONENT, HEALTHZ, FIRMWARE_RESTARTED,
               PID_TUNE_RESULT, PID_TUNE, PID_TUNE_REQUEST, PID_TUNE_SAVED, TARGET_REQUEST,
               TARGET_SET, DEVICES, CONTROL_LOOP]
