"""The compiled planner's vocabulary: how a parsed file and the settings reach the kernel.

The kernel (`plan_kernel`, `plan_lookahead`) cannot take `GCodeCommand` objects or a
`Settings` tree, only numbers in arrays. This module fixes that encoding, which the
Python side (`plan`) and the compiled side must agree on:

- the operation code of every supported G-code command, and `operations`, which
  turns the rows of a `gcode_bulk.BulkGCode` into one code per row (or refuses a
  file that uses anything outside the supported subset);
- the parameter columns the kernel reads (`PX` ... `PT`, into `PARAM_LETTERS`);
- the settings-derived constants, packed by `pack_constants` into one float64
  array with the reference's own expressions, so no derived value can differ;
- the layout of the state the kernel hands back (`S_*`) for the error replay, the
  columns of the planned-move rows it writes, and its error codes.

Nothing here is compiled: the kernels read these names as compile-time constants.
(numba freezes a global's value into the cached code and its cache only notices
edits to the file a kernel is defined in, so after changing a number here, clear
the cache, see `printhost.control.kernels`.)
"""

from __future__ import annotations

import math

import numpy as np

from printhost.config import Settings
from printhost.control.gcode import GCodeError
from printhost.control.gcode_bulk import COMMAND_NAMES, PARAM_LETTERS, BulkGCode
from printhost.control.interpreter import DEFAULT_SPEED_MM_S, MAX_FACTOR_PERCENT
from printhost.control.planner import _MIN_LENGTH_MM, _UNLIMITED_ACCEL
from printhost.control.toolhead import _RANGE_TOLERANCE_MM

# ------------------------------------------------------------------ public layout

# Columns of `PlanResult.moves`, one row per PlannedMove (a dwell is a row with
# start == end, zero distance and velocities, and only CRUISE_T set).
START_X, START_Y, START_Z, START_E = 0, 1, 2, 3
END_X, END_Y, END_Z, END_E = 4, 5, 6, 7
DISTANCE = 8
START_V = 9
CRUISE_V = 10
END_V = 11
ACCEL = 12
ACCEL_T = 13
CRUISE_T = 14
DECEL_T = 15
N_MOVE_COLUMNS = 16

# ------------------------------------------------------------------ operations

OP_SKIP = 0          # empty line, comment, unknown command (the interpreter skips it)
OP_MOVE = 1          # G0, G1
OP_DWELL = 2         # G4
OP_HOME = 3          # G28
OP_ABSOLUTE = 4      # G90
OP_RELATIVE = 5      # G91
OP_E_ABSOLUTE = 6    # M82
OP_E_RELATIVE = 7    # M83
OP_SET_POSITION = 8  # G92
OP_MOTORS_OFF = 9    # M84, M18
OP_HOTEND = 10       # M104
OP_HOTEND_WAIT = 11  # M109
OP_BED = 12          # M140
OP_BED_WAIT = 13     # M190
OP_FAN = 14          # M106
OP_ACCEL = 15        # M204
OP_SPEED_FACTOR = 16  # M220
OP_EXTRUDE_FACTOR = 17  # M221
OP_FLUSH = 18        # M400
OP_NOTHING = 19      # M107, M114, G17, G21: no effect on motion and cannot fail
OP_UNSUPPORTED = 20  # anything else: run by the interpreter at its place (plan.PlanStream)
OP_MACHINE_MOVE = 21  # a move the interpreter queued for such a command: X Y Z E the
                      # machine target, F the speed in mm/s (after the speed factor)

_OPS = {
    "G0": OP_MOVE, "G1": OP_MOVE, "G4": OP_DWELL, "G28": OP_HOME,
    "G90": OP_ABSOLUTE, "G91": OP_RELATIVE, "M82": OP_E_ABSOLUTE, "M83": OP_E_RELATIVE,
    "G92": OP_SET_POSITION, "M84": OP_MOTORS_OFF, "M18": OP_MOTORS_OFF,
    "M104": OP_HOTEND, "M109": OP_HOTEND_WAIT, "M140": OP_BED, "M190": OP_BED_WAIT,
    "M106": OP_FAN, "M204": OP_ACCEL, "M220": OP_SPEED_FACTOR, "M221": OP_EXTRUDE_FACTOR,
    "M400": OP_FLUSH, "M107": OP_NOTHING, "M114": OP_NOTHING, "G17": OP_NOTHING,
    "G21": OP_NOTHING,
}
_OP_OF_CODE = np.array([_OPS.get(name, OP_UNSUPPORTED) for name in COMMAND_NAMES],
                       dtype=np.int8)

PX, PY, PZ, PE, PF = (PARAM_LETTERS.index(c) for c in "XYZEF")
PR, PS, PP, PT = (PARAM_LETTERS.index(c) for c in "RSPT")
AXIS_COLUMNS = (PX, PY, PZ)

# ------------------------------------------------------------------ kernel constants

# Settings-derived numbers, one float64 array so the kernels take a single argument.
CF_MAX_VELOCITY = 0
CF_MAX_ACCEL = 1
CF_MAX_Z_VELOCITY = 2
CF_MAX_Z_ACCEL = 3
CF_MIN_CRUISE_RATIO = 4
CF_JD_NUMERATOR = 5         # square_corner_velocity ** 2 * (sqrt(2) - 1)
CF_MAX_EO_VELOCITY = 6
CF_MAX_EO_ACCEL = 7
CF_MAX_EO_DISTANCE = 8
CF_MAX_EXTRUDE_RATIO = 9
CF_NOZZLE = 10
CF_CORNER_V = 11            # extruder instantaneous_corner_velocity
CF_TWO = 12                 # 2.0, opaque to the compiler (see square)
CF_MIN_LENGTH = 13
CF_UNLIMITED_ACCEL = 14
CF_LOW = 15                 # 3 values: position_min - tolerance
CF_HIGH = 18                # 3 values: position_max + tolerance
CF_ENDSTOP = 21             # 3 values
CF_HOMING_SPEED = 24        # 3 values
CF_MAX_TEMP_HOTEND = 27
CF_MAX_TEMP_BED = 28
CF_DEFAULT_SPEED = 29
CF_MAX_FACTOR = 30
N_CF = 31

# Kernel state handed back at the end or at the failing line (for the replay).
S_POSITION = 0              # 4 values: the toolhead's commanded position
S_HOMED = 4                 # 3 values, 1.0 = homed
S_ACCEL = 7
S_ABSOLUTE = 8
S_E_ABSOLUTE = 9
S_SPEED = 10
S_SPEED_FACTOR = 11
S_EXTRUDE_FACTOR = 12
S_GCODE_POS = 13            # 4 values
S_OFFSET = 17               # 3 values (the E offset is always 0)
N_S = 20

# Why the kernel stopped. Only "which line" matters to the caller; the message
# comes from replaying the line through the reference.
ERR_NONE = 0
ERR_FEED = 1
ERR_TARGET = 2
ERR_SPEED = 3
ERR_UNHOMED = 4
ERR_RANGE = 5
ERR_EXTRUDE_ONLY_LENGTH = 6
ERR_EXTRUSION = 7
ERR_DWELL = 8
ERR_ACCEL = 9
ERR_FACTOR = 10
ERR_FAN = 11
ERR_TEMPERATURE = 12
ERR_UNSUPPORTED = 13


def pack_constants(settings: Settings) -> np.ndarray:
    """The settings as the kernel reads them, each derived value by the reference's expression."""
    p = settings.printer
    ex = settings.extruder
    cfg = np.zeros(N_CF, dtype=np.float64)
    cfg[CF_MAX_VELOCITY] = p.max_velocity
    cfg[CF_MAX_ACCEL] = p.max_accel
    cfg[CF_MAX_Z_VELOCITY] = p.max_z_velocity
    cfg[CF_MAX_Z_ACCEL] = p.max_z_accel
    cfg[CF_MIN_CRUISE_RATIO] = p.minimum_cruise_ratio
    # planner.junction_deviation_mm evaluates scv ** 2 * (sqrt(2) - 1) before dividing.
    cfg[CF_JD_NUMERATOR] = p.square_corner_velocity ** 2 * (math.sqrt(2.0) - 1.0)
    cfg[CF_MAX_EO_VELOCITY] = p.max_extrude_only_velocity
    cfg[CF_MAX_EO_ACCEL] = p.max_extrude_only_accel
    cfg[CF_MAX_EO_DISTANCE] = ex.max_extrude_only_distance
    filament_area = math.pi * (ex.filament_diameter * 0.5) ** 2
    cfg[CF_MAX_EXTRUDE_RATIO] = ex.cross_section_limit_mm2 / filament_area
    cfg[CF_NOZZLE] = ex.nozzle_diameter
    cfg[CF_CORNER_V] = ex.instantaneous_corner_velocity
    cfg[CF_TWO] = 2.0
    cfg[CF_MIN_LENGTH] = _MIN_LENGTH_MM
    cfg[CF_UNLIMITED_ACCEL] = _UNLIMITED_ACCEL
    for i, name in enumerate("xyz"):
        axis = getattr(p.axes, name)
        cfg[CF_LOW + i] = axis.position_min - _RANGE_TOLERANCE_MM
        cfg[CF_HIGH + i] = axis.position_max + _RANGE_TOLERANCE_MM
        cfg[CF_ENDSTOP + i] = axis.position_endstop
        cfg[CF_HOMING_SPEED + i] = axis.homing_speed
    cfg[CF_MAX_TEMP_HOTEND] = settings.heaters.extruder.max_temp
    cfg[CF_MAX_TEMP_BED] = settings.heaters.heater_bed.max_temp
    cfg[CF_DEFAULT_SPEED] = DEFAULT_SPEED_MM_S
    cfg[CF_MAX_FACTOR] = MAX_FACTOR_PERCENT
    return cfg


def operations(parsed: BulkGCode) -> tuple[np.ndarray, np.ndarray, int, GCodeError | None]:
    """Per-row operation codes and parameters for the kernel, the row to stop at, and
    the parse error found there. Rows of known commands the kernel does not port are
    OP_UNSUPPORTED: the caller has the interpreter run them (`plan.PlanStream`).

    Rows the bulk parser left to `parse_line` are skipped when they hold an unknown
    command (as the interpreter does) and copied into the arrays when they hold a
    supported known command. Letters without a column are dropped: every interpreter
    handler reads its own letters by name, all of which have columns, and ignores the
    rest (PrusaSlicer's `G28 W`, "home without mesh levelling" on its printers, homes
    all axes here as in the interpreter).
    """
    code = parsed.code
    ops = np.full(len(parsed), OP_SKIP, dtype=np.int8)
    known = code >= 0
    ops[known] = _OP_OF_CODE[code[known]]
    params = parsed.params
    stop_row = len(parsed)
    parse_error: GCodeError | None = None
    patches = []
    for row in sorted(parsed.fallback):
        result = parsed.fallback[row]
        if isinstance(result, GCodeError):
            stop_row = row
            parse_error = result
            break
        if result is None or not result.known:
            continue
        patches.append((row, _OPS.get(result.name, OP_UNSUPPORTED), result.params))
    if patches:
        params = params.copy()
        for row, op, values in patches:
            ops[row] = op
            params[row, :] = np.nan
            for letter, value in values.items():
                if letter in PARAM_LETTERS:
                    params[row, PARAM_LETTERS.index(letter)] = value
    return ops, np.ascontiguousarray(params, dtype=np.float64), stop_row, parse_error
