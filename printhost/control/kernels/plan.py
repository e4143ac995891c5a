"""Compiled batch planning: a whole parsed file through interpreter, toolhead and planner.

`printhost batch` knows the entire file before it starts, so the per-line Python
objects of the interactive path (a `GCodeCommand` per line, a `_QueuedMove` and a
`PlannedMove` per move, a dict of parameters per command) are pure overhead there:
they cost tens of microseconds per move, more than everything after the planner.
`plan_file` runs the same semantics as one compiled loop over the arrays of
`gcode_bulk.BulkGCode` and returns the planned moves as one float64 array.

The result must be *bit-identical* to what `GCodeInterpreter` + `Toolhead` +
`LookaheadPlanner` emit for the same file, because the batch output is compared
with the interactive path and with Klipper move for move. So the kernels below are
a line-by-line port of those three modules: the same floating-point operations in
the same order (Python's left-to-right evaluation, its `min`/`max` tie rules, libm
`pow` where Python uses `**`), and the same emission points: the lazy "certain
moves" emission after every move, the forced emission when the queue outgrows
`max_queue_moves`, and the flushes of G28 (after every axis), G4, M84/M18, M400,
M109 and M190. Constants derived from the settings are computed here in Python
with the same expressions the reference evaluates, and passed in.

Only a subset of G-code is ported: the commands real slicer output consists of.
Anything else in the file (arcs, firmware retraction, inch units, unsupported
planes, M112, or a line the bulk parser left to `parse_line` that turned out to be
a known command with a parameter letter outside its columns) makes `plan_file`
return None, and the caller runs the Python path, which remains the reference.

Errors: the kernel stops at the first failing line exactly where the Python path
would raise, with the moves emitted up to there. The message is not rebuilt from a
copy of the reference's format strings: the failing command is replayed through a
fresh interpreter and toolhead put into the kernel's state at that line, so the
text is the reference's own. (If the replay does not fail, the two implementations
disagree; `plan_file` then returns None so the reference decides.) Heater targets
and fan speeds move nothing but are checked all the same: the interpreter refuses
an out-of-range M104/M140/M106 with an error, so a file the Python path rejects
must not pass here.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

from printhost.config import Settings
from printhost.control.gcode import GCodeError
from printhost.control.gcode_bulk import COMMAND_NAMES, PARAM_LETTERS, BulkGCode
from printhost.control.interpreter import (DEFAULT_SPEED_MM_S, MAX_FACTOR_PERCENT,
                                          CommandError, GCodeInterpreter, GCodeState, PartFan)
from printhost.control.motion import PlannedMove, Vec4
from printhost.control.planner import _MIN_LENGTH_MM, _UNLIMITED_ACCEL, LookaheadPlanner
from printhost.control.toolhead import _RANGE_TOLERANCE_MM, Toolhead

log = logging.getLogger(__name__)

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
OP_UNSUPPORTED = 20  # anything else: the Python path must run the file

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

_PX, _PY, _PZ, _PE, _PF = (PARAM_LETTERS.index(c) for c in "XYZEF")
_PR, _PS, _PP, _PT = (PARAM_LETTERS.index(c) for c in "RSPT")
_AXIS_COLUMNS = (_PX, _PY, _PZ)

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
CF_TWO = 12                 # 2.0, opaque to the compiler (see _square)
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

# A queued move (planner._QueuedMove), one row of the queue array.
Q_START = 0                 # 4 values
Q_END = 4                   # 4 values
Q_DISTANCE = 8
Q_ACCEL = 9
Q_MAX_CRUISE_V2 = 10
Q_DELTA_V2 = 11
Q_MCR_DELTA_V2 = 12
Q_MAX_START_V2 = 13
Q_MAX_MCR_START_V2 = 14
Q_DIR = 15                  # 3 values
Q_HAS_DIR = 18              # 1.0, or 0.0 for an extrude-only move (direction None)
Q_E_RATIO = 19
Q_JD = 20
Q_LINE = 21
N_Q = 22

# Integer and float planner state.
I_QUEUED = 0
I_EMITTED = 1
N_I = 2
P_HEAD_START_V2 = 0
P_PREV_CRUISE_V2 = 1
N_P = 2

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

_MAX_QUEUE_MOVES = inspect.signature(LookaheadPlanner).parameters["max_queue_moves"].default


# ------------------------------------------------------------------ compiled kernels

@numba.njit(cache=True, nogil=True)
def _pmin(a: float, b: float) -> float:
    """Python's min(a, b): b only if strictly smaller (ties and -0.0 keep a)."""
    return b if b < a else a


@numba.njit(cache=True, nogil=True)
def _pmax(a: float, b: float) -> float:
    """Python's max(a, b): b only if strictly greater."""
    return b if b > a else a


@numba.njit(cache=True, nogil=True)
def _square(x: float, two: float) -> float:
    """Python's `x ** 2` for a float: CPython calls libm pow(x, 2.0), which is not
    always the correctly rounded x * x. With the exponent a run-time value the
    compiler cannot rewrite the call into a multiplication, so the same libm pow
    runs here."""
    return math.pow(x, two)


@numba.njit(cache=True, nogil=True)
def _junction_limit_v2(px: float, py: float, pz: float, prev_jd_accel: float,
                       prev_delta_v2: float, nx: float, ny: float, nz: float,
                       next_jd_accel: float, next_delta_v2: float) -> float:
    """planner.junction_limit_v2, operation for operation."""
    sum_x = px + nx
    sum_y = py + ny
    sum_z = pz + nz
    dif_x = nx - px
    dif_y = ny - py
    dif_z = nz - pz
    sin_half = _pmin(1.0, 0.5 * math.sqrt(sum_x * sum_x + sum_y * sum_y + sum_z * sum_z))
    cos_half = 0.5 * math.sqrt(dif_x * dif_x + dif_y * dif_y + dif_z * dif_z)
    if sin_half >= 1.0 or cos_half <= 0.0:
        return math.inf
    radius_factor = sin_half / (1.0 - sin_half)
    quarter_tan = 0.25 * sin_half / cos_half
    limit = _pmin(radius_factor * prev_jd_accel, radius_factor * next_jd_accel)
    limit = _pmin(limit, quarter_tan * prev_delta_v2)
    return _pmin(limit, quarter_tan * next_delta_v2)


@numba.njit(cache=True, nogil=True)
def _emit_profile(q: np.ndarray, i: int, start_v2: float, cruise_v2: float, end_v2: float,
                  out: np.ndarray, out_line: np.ndarray, ist: np.ndarray) -> None:
    """planner._profile for queue row i, written as the next output row."""
    start_v = math.sqrt(start_v2)
    end_v = math.sqrt(end_v2)
    cruise_v = _pmax(_pmax(math.sqrt(cruise_v2), start_v), end_v)
    a = q[i, Q_ACCEL]
    accel_t = (cruise_v - start_v) / a
    decel_t = (cruise_v - end_v) / a
    accel_d = 0.5 * (start_v + cruise_v) * accel_t
    decel_d = 0.5 * (end_v + cruise_v) * decel_t
    cruise_d = _pmax(0.0, q[i, Q_DISTANCE] - accel_d - decel_d)
    cruise_t = cruise_d / cruise_v
    k = ist[I_EMITTED]
    if k >= out.shape[0]:
        raise RuntimeError("more planned moves than the output array holds")
    for c in range(8):
        out[k, START_X + c] = q[i, Q_START + c]
    out[k, DISTANCE] = q[i, Q_DISTANCE]
    out[k, START_V] = start_v
    out[k, CRUISE_V] = cruise_v
    out[k, END_V] = end_v
    out[k, ACCEL] = a
    out[k, ACCEL_T] = accel_t
    out[k, CRUISE_T] = cruise_t
    out[k, DECEL_T] = decel_t
    out_line[k] = np.int64(q[i, Q_LINE])
    ist[I_EMITTED] = k + 1


@numba.njit(cache=True, nogil=True)
def _emit_dwell(pos: np.ndarray, seconds: float, line: int, out: np.ndarray,
                out_line: np.ndarray, ist: np.ndarray) -> None:
    """PlannedMove.dwell(pos, seconds) as the next output row."""
    k = ist[I_EMITTED]
    if k >= out.shape[0]:
        raise RuntimeError("more planned moves than the output array holds")
    for c in range(4):
        out[k, START_X + c] = pos[c]
        out[k, END_X + c] = pos[c]
    for c in range(DISTANCE, N_MOVE_COLUMNS):
        out[k, c] = 0.0
    out[k, CRUISE_T] = _pmax(0.0, seconds)
    out_line[k] = line
    ist[I_EMITTED] = k + 1


@numba.njit(cache=True, nogil=True)
def _pin_head(q: np.ndarray, queued: int, start_v2: float) -> None:
    """planner._pin_head: after a forced early emission, bound the rest of the queue."""
    prev = -1
    for j in range(queued):
        if prev < 0:
            limit = start_v2
            mcr_limit = start_v2
        else:
            limit = q[prev, Q_MAX_START_V2] + q[prev, Q_DELTA_V2]
            mcr_limit = q[prev, Q_MAX_MCR_START_V2] + q[prev, Q_MCR_DELTA_V2]
        if q[j, Q_MAX_START_V2] <= limit and q[j, Q_MAX_MCR_START_V2] <= mcr_limit:
            break
        q[j, Q_MAX_START_V2] = _pmin(q[j, Q_MAX_START_V2], limit)
        q[j, Q_MAX_MCR_START_V2] = _pmin(_pmin(q[j, Q_MAX_MCR_START_V2], mcr_limit),
                                         q[j, Q_MAX_START_V2])
        prev = j


@numba.njit(cache=True, nogil=True)
def _plan(final: bool, q: np.ndarray, ist: np.ndarray, pst: np.ndarray,
          start_v2: np.ndarray, cruise_v2: np.ndarray, has_cruise: np.ndarray,
          out: np.ndarray, out_line: np.ndarray, max_queue_moves: int) -> None:
    """LookaheadPlanner._plan: backward pass, then emit the certain moves (all if final)."""
    n = ist[I_QUEUED]
    if n == 0:
        return
    start_v2[n] = 0.0
    next_mcr_v2 = 0.0
    peak_v2 = 0.0
    pending = 0
    settled = -1
    certain = 0
    for i in range(n - 1, -1, -1):
        delta_v2 = q[i, Q_DELTA_V2]
        mcr_delta_v2 = q[i, Q_MCR_DELTA_V2]
        max_start_v2 = q[i, Q_MAX_START_V2]
        max_mcr_start_v2 = q[i, Q_MAX_MCR_START_V2]
        reach_v2 = start_v2[i + 1] + delta_v2
        start = _pmin(max_start_v2, reach_v2)
        reach_mcr_v2 = next_mcr_v2 + mcr_delta_v2
        mcr = _pmin(max_mcr_start_v2, reach_mcr_v2)
        pending += 1
        has_cruise[i] = False
        if mcr < reach_mcr_v2:
            if mcr_delta_v2 + mcr > next_mcr_v2 or pending > 1:
                peak_v2 = (mcr + reach_mcr_v2) * 0.5
                if 0 <= i and i < settled and certain == 0:
                    certain = i + pending
            cruise_v2[i] = _pmin(_pmin((start + reach_v2) * 0.5, q[i, Q_MAX_CRUISE_V2]),
                                 peak_v2)
            has_cruise[i] = True
            pending = 0
        if settled < 0 and max_start_v2 <= reach_v2 and max_mcr_start_v2 < reach_mcr_v2:
            settled = i
        start_v2[i] = start
        next_mcr_v2 = mcr
    if final:
        count = n
    elif certain > 0:
        count = certain
    elif n > max_queue_moves:
        count = n - max_queue_moves // 2
    else:
        return
    head_start_v2 = pst[P_HEAD_START_V2]
    prev_cruise = pst[P_PREV_CRUISE_V2]
    end = head_start_v2
    for i in range(count):
        if has_cruise[i]:
            cruise = cruise_v2[i]
        else:
            cruise = _pmin(prev_cruise, start_v2[i])
        begin = _pmin(start_v2[i], cruise)
        if i == 0:
            begin = head_start_v2
            cruise = _pmax(cruise, begin)
        end = _pmin(start_v2[i + 1], cruise)
        _emit_profile(q, i, begin, cruise, end, out, out_line, ist)
        prev_cruise = cruise
    rest = n - count
    for j in range(rest):
        for c in range(N_Q):
            q[j, c] = q[count + j, c]
    ist[I_QUEUED] = rest
    pst[P_HEAD_START_V2] = end
    pst[P_PREV_CRUISE_V2] = prev_cruise
    if rest > 0 and count != certain and not final:
        _pin_head(q, rest, end)


@numba.njit(cache=True, nogil=True)
def _add_move(start: np.ndarray, end: np.ndarray, speed: float, accel: float, line: int,
              cfg: np.ndarray, q: np.ndarray, ist: np.ndarray, pst: np.ndarray,
              start_v2: np.ndarray, cruise_v2: np.ndarray, has_cruise: np.ndarray,
              out: np.ndarray, out_line: np.ndarray, max_queue_moves: int) -> int:
    """LookaheadPlanner.add_move (with _check_extrusion and _set_start_limits).

    Returns ERR_NONE, or the extruder-limit error; then nothing was queued. The
    argument checks of the reference cannot fail here: the toolhead checks the
    same things first, and homing passes configured (validated) values.
    """
    dx = end[0] - start[0]
    dy = end[1] - start[1]
    dz = end[2] - start[2]
    de = end[3] - start[3]
    length = math.sqrt(dx * dx + dy * dy + dz * dz)
    toolhead_accel = _pmin(accel, cfg[CF_MAX_ACCEL])
    jd = cfg[CF_JD_NUMERATOR] / toolhead_accel
    mcr_accel = toolhead_accel * (1.0 - cfg[CF_MIN_CRUISE_RATIO])
    dir_x = 0.0
    dir_y = 0.0
    dir_z = 0.0
    if length < cfg[CF_MIN_LENGTH]:
        length = abs(de)
        if length < cfg[CF_MIN_LENGTH]:
            return ERR_NONE
        has_dir = False
        e_ratio = 1.0 if de > 0.0 else -1.0
        velocity = speed
        move_accel = cfg[CF_UNLIMITED_ACCEL]
    else:
        has_dir = True
        dir_x = dx / length
        dir_y = dy / length
        dir_z = dz / length
        e_ratio = de / length
        velocity = _pmin(speed, cfg[CF_MAX_VELOCITY])
        move_accel = toolhead_accel
    max_cruise_v2 = velocity * velocity
    # The reference's `limits` list: at most a Z limit, then an extruder limit.
    n_limits = 0
    limit_v0 = 0.0
    limit_a0 = 0.0
    limit_v1 = 0.0
    limit_a1 = 0.0
    if has_dir and dz != 0.0:
        z_ratio = length / abs(dz)
        limit_v0 = cfg[CF_MAX_Z_VELOCITY] * z_ratio
        limit_a0 = cfg[CF_MAX_Z_ACCEL] * z_ratio
        n_limits = 1
    if de != 0.0:
        extrude_only = (not has_dir) or (dx == 0.0 and dy == 0.0)
        if extrude_only or e_ratio < 0.0:
            if abs(de) > cfg[CF_MAX_EO_DISTANCE]:
                return ERR_EXTRUDE_ONLY_LENGTH
            inverse = 1.0 / abs(e_ratio)
            ev = cfg[CF_MAX_EO_VELOCITY] * inverse
            ea = cfg[CF_MAX_EO_ACCEL] * inverse
            if n_limits == 0:
                limit_v0 = ev
                limit_a0 = ea
            else:
                limit_v1 = ev
                limit_a1 = ea
            n_limits += 1
        elif e_ratio > cfg[CF_MAX_EXTRUDE_RATIO]:
            if not de <= cfg[CF_NOZZLE] * cfg[CF_MAX_EXTRUDE_RATIO]:
                return ERR_EXTRUSION
    delta_v2 = 2.0 * length * move_accel
    mcr_delta_v2 = 2.0 * length * mcr_accel
    for k in range(n_limits):
        limit_v = limit_v0 if k == 0 else limit_v1
        limit_accel = limit_a0 if k == 0 else limit_a1
        if limit_v * limit_v < max_cruise_v2:
            max_cruise_v2 = limit_v * limit_v
        move_accel = _pmin(move_accel, limit_accel)
        delta_v2 = 2.0 * length * move_accel
        mcr_delta_v2 = _pmin(mcr_delta_v2, delta_v2)
    # _set_start_limits: against the last queued move; an empty queue starts at rest.
    max_start_v2 = 0.0
    max_mcr_start_v2 = 0.0
    n = ist[I_QUEUED]
    if n >= q.shape[0]:
        raise RuntimeError("planner queue longer than max_queue_moves + 1")
    if n > 0:
        p = n - 1
        if q[p, Q_HAS_DIR] != 0.0 and has_dir:
            e_change = e_ratio - q[p, Q_E_RATIO]
            if e_change != 0.0:
                extruder_v2 = _square(cfg[CF_CORNER_V] / abs(e_change), cfg[CF_TWO])
            else:
                extruder_v2 = max_cruise_v2
            corner = _junction_limit_v2(
                q[p, Q_DIR], q[p, Q_DIR + 1], q[p, Q_DIR + 2], q[p, Q_JD] * q[p, Q_ACCEL],
                q[p, Q_DELTA_V2], dir_x, dir_y, dir_z, jd * move_accel, delta_v2)
            max_start_v2 = _pmin(max_cruise_v2, q[p, Q_MAX_CRUISE_V2])
            max_start_v2 = _pmin(max_start_v2, q[p, Q_MAX_START_V2] + q[p, Q_DELTA_V2])
            max_start_v2 = _pmin(max_start_v2, extruder_v2)
            max_start_v2 = _pmin(max_start_v2, corner)
            max_mcr_start_v2 = _pmin(max_start_v2,
                                     q[p, Q_MAX_MCR_START_V2] + q[p, Q_MCR_DELTA_V2])
    for c in range(4):
        q[n, Q_START + c] = start[c]
        q[n, Q_END + c] = end[c]
    q[n, Q_DISTANCE] = length
    q[n, Q_ACCEL] = move_accel
    q[n, Q_MAX_CRUISE_V2] = max_cruise_v2
    q[n, Q_DELTA_V2] = delta_v2
    q[n, Q_MCR_DELTA_V2] = mcr_delta_v2
    q[n, Q_MAX_START_V2] = max_start_v2
    q[n, Q_MAX_MCR_START_V2] = max_mcr_start_v2
    q[n, Q_DIR] = dir_x
    q[n, Q_DIR + 1] = dir_y
    q[n, Q_DIR + 2] = dir_z
    q[n, Q_HAS_DIR] = 1.0 if has_dir else 0.0
    q[n, Q_E_RATIO] = e_ratio
    q[n, Q_JD] = jd
    q[n, Q_LINE] = line
    ist[I_QUEUED] = n + 1
    _plan(False, q, ist, pst, start_v2, cruise_v2, has_cruise, out, out_line, max_queue_moves)
    return ERR_NONE


@numba.njit(cache=True, nogil=True)
def _run(ops: np.ndarray, params: np.ndarray, stop_row: int, final_flush: bool,
         cfg: np.ndarray, start_position: np.ndarray, max_queue_moves: int,
         out: np.ndarray, out_line: np.ndarray, state: np.ndarray) -> tuple[int, int, int]:
    """Execute rows [0, stop_row) as GCodeInterpreter + Toolhead + planner would.

    Returns (moves emitted, error code, failing row or -1); `state` receives the
    interpreter and toolhead state after the last successful row.
    """
    q = np.empty((max_queue_moves + 2, N_Q), dtype=np.float64)
    start_v2 = np.empty(max_queue_moves + 3, dtype=np.float64)
    cruise_v2 = np.empty(max_queue_moves + 2, dtype=np.float64)
    has_cruise = np.zeros(max_queue_moves + 2, dtype=np.bool_)
    ist = np.zeros(N_I, dtype=np.int64)
    pst = np.zeros(N_P, dtype=np.float64)
    # Toolhead.
    pos = np.empty(4, dtype=np.float64)
    for c in range(4):
        pos[c] = start_position[c]
    homed = np.zeros(3, dtype=np.bool_)
    accel = cfg[CF_MAX_ACCEL]
    target = np.empty(4, dtype=np.float64)
    # Interpreter (GCodeState after sync_from_toolhead).
    absolute = True
    e_absolute = True
    speed_state = cfg[CF_DEFAULT_SPEED]
    speed_factor = 1.0
    extrude_factor = 1.0
    offset = np.zeros(3, dtype=np.float64)
    gpos = np.empty(4, dtype=np.float64)
    for c in range(3):
        gpos[c] = pos[c] - offset[c]
    gpos[3] = 0.0

    err = ERR_NONE
    err_row = -1
    for row in range(stop_row):
        op = ops[row]
        line = row + 1
        if op == OP_SKIP or op == OP_NOTHING:
            continue
        if op == OP_MOVE:
            # _move and _linear_move.
            x = gpos[0]
            y = gpos[1]
            z = gpos[2]
            v = params[row, _PX]
            if not math.isnan(v):
                x = v if absolute else x + v
            v = params[row, _PY]
            if not math.isnan(v):
                y = v if absolute else y + v
            v = params[row, _PZ]
            if not math.isnan(v):
                z = v if absolute else z + v
            gcode_e = gpos[3]
            e_delta = 0.0
            v = params[row, _PE]
            if not math.isnan(v):
                new_e = v if (absolute and e_absolute) else gcode_e + v
                e_delta = (new_e - gcode_e) * extrude_factor
                gcode_e = new_e
            speed = speed_state
            f = params[row, _PF]
            if not math.isnan(f):
                if f <= 0.0:
                    err = ERR_FEED
                    err_row = row
                    break
                speed = f / 60.0
            target[0] = x + offset[0]
            target[1] = y + offset[1]
            target[2] = z + offset[2]
            target[3] = pos[3] + e_delta
            move_speed = speed * speed_factor
            # Toolhead.move_to.
            if not (math.isfinite(target[0]) and math.isfinite(target[1])
                    and math.isfinite(target[2]) and math.isfinite(target[3])):
                err = ERR_TARGET
            elif not (math.isfinite(move_speed) and move_speed > 0.0):
                err = ERR_SPEED
            else:
                for i in range(3):
                    if target[i] == pos[i]:
                        continue
                    if not homed[i]:
                        err = ERR_UNHOMED
                        break
                    if not (cfg[CF_LOW + i] <= target[i] and target[i] <= cfg[CF_HIGH + i]):
                        err = ERR_RANGE
                        break
            if err == ERR_NONE:
                err = _add_move(pos, target, move_speed, accel, line, cfg, q, ist, pst,
                                start_v2, cruise_v2, has_cruise, out, out_line,
                                max_queue_moves)
            if err != ERR_NONE:
                err_row = row
                break
            for c in range(4):
                pos[c] = target[c]
            gpos[0] = x
            gpos[1] = y
            gpos[2] = z
            gpos[3] = gcode_e
            speed_state = speed
        elif op == OP_SET_POSITION:
            px = params[row, _PX]
            py = params[row, _PY]
            pz = params[row, _PZ]
            pe = params[row, _PE]
            if math.isnan(px) and math.isnan(py) and math.isnan(pz) and math.isnan(pe):
                px = 0.0
                py = 0.0
                pz = 0.0
                pe = 0.0
            if not math.isnan(px):
                gpos[0] = px
                offset[0] = pos[0] - px
            if not math.isnan(py):
                gpos[1] = py
                offset[1] = pos[1] - py
            if not math.isnan(pz):
                gpos[2] = pz
                offset[2] = pos[2] - pz
            if not math.isnan(pe):
                gpos[3] = pe
        elif op == OP_HOME:
            any_named = False
            named = np.zeros(3, dtype=np.bool_)
            for i in range(3):
                if not math.isnan(params[row, _AXIS_COLUMNS[i]]):
                    named[i] = True
                    any_named = True
            # Toolhead.home: stop first, then per axis a move to the endstop, flushed.
            _plan(True, q, ist, pst, start_v2, cruise_v2, has_cruise, out, out_line,
                  max_queue_moves)
            for i in range(3):
                if any_named and not named[i]:
                    continue
                for c in range(4):
                    target[c] = pos[c]
                target[i] = cfg[CF_ENDSTOP + i]
                _add_move(pos, target, cfg[CF_HOMING_SPEED + i], accel, line, cfg, q, ist,
                          pst, start_v2, cruise_v2, has_cruise, out, out_line,
                          max_queue_moves)
                _plan(True, q, ist, pst, start_v2, cruise_v2, has_cruise, out, out_line,
                      max_queue_moves)
                for c in range(4):
                    pos[c] = target[c]
                homed[i] = True
            for i in range(3):
                if not any_named or named[i]:
                    offset[i] = 0.0
            for i in range(3):
                gpos[i] = pos[i] - offset[i]
        elif op == OP_DWELL:
            s = params[row, _PS]
            if math.isnan(s):
                p = params[row, _PP]
                s = (0.0 if math.isnan(p) else p) / 1000.0
            if s < 0.0:
                err = ERR_DWELL
                err_row = row
                break
            _plan(True, q, ist, pst, start_v2, cruise_v2, has_cruise, out, out_line,
                  max_queue_moves)
            if s > 0.0:
                _emit_dwell(pos, s, line, out, out_line, ist)
        elif op == OP_ABSOLUTE:
            absolute = True
        elif op == OP_RELATIVE:
            absolute = False
        elif op == OP_E_ABSOLUTE:
            e_absolute = True
        elif op == OP_E_RELATIVE:
            e_absolute = False
        elif op == OP_MOTORS_OFF:
            _plan(True, q, ist, pst, start_v2, cruise_v2, has_cruise, out, out_line,
                  max_queue_moves)
            for i in range(3):
                homed[i] = False
        elif op == OP_FLUSH:
            _plan(True, q, ist, pst, start_v2, cruise_v2, has_cruise, out, out_line,
                  max_queue_moves)
        elif (op == OP_HOTEND or op == OP_HOTEND_WAIT or op == OP_BED
              or op == OP_BED_WAIT):
            t = params[row, _PS]
            if math.isnan(t):
                t = params[row, _PR]
                if math.isnan(t):
                    t = 0.0
            hotend = op == OP_HOTEND or op == OP_HOTEND_WAIT
            max_temp = cfg[CF_MAX_TEMP_HOTEND] if hotend else cfg[CF_MAX_TEMP_BED]
            if t < 0.0 or t > max_temp:
                err = ERR_TEMPERATURE
                err_row = row
                break
            if op == OP_HOTEND_WAIT or op == OP_BED_WAIT:
                _plan(True, q, ist, pst, start_v2, cruise_v2, has_cruise, out, out_line,
                      max_queue_moves)
        elif op == OP_FAN:
            v = params[row, _PS]
            if math.isnan(v):
                v = 255.0
            if not (0.0 <= v and v <= 255.0):
                err = ERR_FAN
                err_row = row
                break
        elif op == OP_ACCEL:
            # _set_accel: S, or else the lower of P and T when both are given.
            s = params[row, _PS]
            p = params[row, _PP]
            t = params[row, _PT]
            requested = math.nan
            if not math.isnan(s):
                if not s > 0.0:
                    err = ERR_ACCEL
                requested = s
            elif not math.isnan(p) and not p > 0.0:
                err = ERR_ACCEL
            elif not math.isnan(t) and not t > 0.0:
                err = ERR_ACCEL
            elif not math.isnan(p) and not math.isnan(t):
                requested = _pmin(p, t)
            if err == ERR_NONE and not math.isnan(requested):
                # Toolhead.set_accel (its check cannot fail on parsed numbers).
                if not (math.isfinite(requested) and requested > 0.0):
                    err = ERR_ACCEL
                else:
                    accel = _pmin(requested, cfg[CF_MAX_ACCEL])
            if err != ERR_NONE:
                err_row = row
                break
        elif op == OP_SPEED_FACTOR or op == OP_EXTRUDE_FACTOR:
            v = params[row, _PS]
            if math.isnan(v):
                v = 100.0
            if not (0.0 < v and v <= cfg[CF_MAX_FACTOR]):
                err = ERR_FACTOR
                err_row = row
                break
            if op == OP_SPEED_FACTOR:
                speed_factor = v / 100.0
            else:
                extrude_factor = v / 100.0
        else:
            # OP_UNSUPPORTED never reaches the kernel (plan_file checks first).
            err = ERR_UNSUPPORTED
            err_row = row
            break
    if err == ERR_NONE and final_flush:
        _plan(True, q, ist, pst, start_v2, cruise_v2, has_cruise, out, out_line,
              max_queue_moves)
    for c in range(4):
        state[S_POSITION + c] = pos[c]
        state[S_GCODE_POS + c] = gpos[c]
    for i in range(3):
        state[S_HOMED + i] = 1.0 if homed[i] else 0.0
        state[S_OFFSET + i] = offset[i]
    state[S_ACCEL] = accel
    state[S_ABSOLUTE] = 1.0 if absolute else 0.0
    state[S_E_ABSOLUTE] = 1.0 if e_absolute else 0.0
    state[S_SPEED] = speed_state
    state[S_SPEED_FACTOR] = speed_factor
    state[S_EXTRUDE_FACTOR] = extrude_factor
    return ist[I_EMITTED], err, err_row


# ------------------------------------------------------------------ wrapper

@dataclass(frozen=True)
class PlanError:
    """Where and why the file stops, as the Python path would report it.

    `message` is the text of the reference's CommandError for that line, or, for a
    line that cannot be parsed, `parse_error.message`; the caller raises
    `parse_error` itself in that case (the Python path lets GCodeError through).
    """
    lineno: int
    message: str
    parse_error: GCodeError | None = None


@dataclass(frozen=True)
class PlanResult:
    """The planned moves of a file, in emission order.

    `moves[k]` holds the k-th PlannedMove the Python path would schedule (columns
    START_X ... DECEL_T); `lineno[k]` is the line whose command queued it. With an
    `error`, these are the moves scheduled before the failing line, without the
    final flush (the Python path raises before it). `position` and `homed_axes` are
    the toolhead's commanded position and homed axes afterwards.
    """
    moves: np.ndarray
    lineno: np.ndarray
    position: Vec4
    homed_axes: str
    error: PlanError | None

    def __len__(self) -> int:
        return int(self.moves.shape[0])

    def planned_moves(self) -> list[PlannedMove]:
        """The moves as PlannedMove objects (for consumers of the Python interface)."""
        result = []
        for r in self.moves.tolist():
            result.append(PlannedMove((r[0], r[1], r[2], r[3]), (r[4], r[5], r[6], r[7]),
                                      r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]))
        return result


def _constants(settings: Settings) -> np.ndarray:
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


class _DiscardExecutor:
    """A MotionExecutor for the error replay: it only has to hold a position."""

    def __init__(self, position: Vec4) -> None:
        self._pos = position

    def now(self) -> float:
        return 0.0

    def schedule(self, move: PlannedMove) -> None:
        self._pos = move.end

    def update(self) -> None:
        return None

    def queue_end_time(self) -> float:
        return 0.0

    def position(self) -> Vec4:
        return self._pos

    def set_position(self, pos: Vec4) -> None:
        self._pos = pos

    def is_idle(self) -> bool:
        return True

    def abort(self) -> Vec4:
        return self._pos


def _replay_error(parsed: BulkGCode, row: int, settings: Settings,
                  state: np.ndarray) -> str | None:
    """The reference's message for the failing line, or None if the reference accepts it.

    A fresh interpreter and toolhead are put into the kernel's state at that line
    (commanded position, homed axes, acceleration, G-code modes, offsets, factors)
    and the line is executed. The planner's queue is not rebuilt: every refusal
    happens before a move touches the queue.
    """
    from printhost.control.heaters import build_simulated_heaters
    from printhost.sim.clock import ManualClock

    s = state.tolist()
    position: Vec4 = (s[S_POSITION], s[S_POSITION + 1], s[S_POSITION + 2], s[S_POSITION + 3])
    executor = _DiscardExecutor(position)
    toolhead = Toolhead(settings.printer, executor, settings.extruder)
    homed = "".join(a for i, a in enumerate("xyz") if s[S_HOMED + i])
    if homed:
        toolhead.home(homed)
    toolhead.commanded_position = position
    toolhead.set_accel(s[S_ACCEL])
    heaters, _ = build_simulated_heaters(settings, ManualClock())
    interp = GCodeInterpreter(toolhead, heaters, PartFan(), executor.now, settings.gcode,
                              settings.firmware_retraction)
    g = S_GCODE_POS
    o = S_OFFSET
    interp.restore_state(GCodeState(
        absolute_coords=bool(s[S_ABSOLUTE]), absolute_extrude=bool(s[S_E_ABSOLUTE]),
        speed_mm_s=s[S_SPEED], speed_factor=s[S_SPEED_FACTOR],
        extrude_factor=s[S_EXTRUDE_FACTOR], gcode_pos=(s[g], s[g + 1], s[g + 2], s[g + 3]),
        offset=(s[o], s[o + 1], s[o + 2], 0.0), inch_units=False))
    cmd = parsed.command(row)
    if cmd is None:
        return None
    try:
        interp.execute(cmd)
    except CommandError as exc:
        return str(exc)
    return None


def _operations(parsed: BulkGCode) -> tuple[np.ndarray, np.ndarray, int, GCodeError | None] | None:
    """Per-row operation codes and parameters for the kernel, the row to stop at, and
    the parse error found there; None if a row before it is outside the supported subset.

    Rows the bulk parser left to `parse_line` are skipped when they hold an unknown
    command (as the interpreter does) and copied into the arrays when they hold a
    supported known command whose parameters all have a column.
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
        op = _OPS.get(result.name, OP_UNSUPPORTED)
        if op == OP_UNSUPPORTED or not all(k in PARAM_LETTERS for k in result.params):
            return None
        patches.append((row, op, result.params))
    if np.any(ops[:stop_row] == OP_UNSUPPORTED):
        return None
    if patches:
        params = params.copy()
        for row, op, values in patches:
            ops[row] = op
            params[row, :] = np.nan
            for letter, value in values.items():
                params[row, PARAM_LETTERS.index(letter)] = value
    return ops, np.ascontiguousarray(params, dtype=np.float64), stop_row, parse_error


def plan_file(parsed: BulkGCode, settings: Settings,
              start_position: Sequence[float]) -> PlanResult | None:
    """Plan a parsed file as `printhost batch`'s Python path would; None if the file
    uses anything the kernel does not cover (the caller then runs the Python path).

    `start_position` is the toolhead position before the file, (x, y, z) or
    (x, y, z, e); E defaults to 0. Homing state and offsets start cleared, the
    acceleration at `printer.max_accel`, as for a fresh Toolhead and interpreter.
    """
    prepared = _operations(parsed)
    if prepared is None:
        return None
    ops, params, stop_row, parse_error = prepared
    start = [float(v) for v in start_position]
    if len(start) == 3:
        start.append(0.0)
    if len(start) != 4:
        raise ValueError(f"start_position needs 3 or 4 values, got {len(start)}")
    head = ops[:stop_row]
    capacity = (int(np.count_nonzero(head == OP_MOVE)) + 3 * int(np.count_nonzero(head == OP_HOME))
                + int(np.count_nonzero(head == OP_DWELL)))
    out = np.empty((capacity, N_MOVE_COLUMNS), dtype=np.float64)
    out_line = np.empty(capacity, dtype=np.int64)
    state = np.zeros(N_S, dtype=np.float64)
    count, err, err_row = _run(ops, params, stop_row, parse_error is None, _constants(settings),
                               np.array(start, dtype=np.float64), _MAX_QUEUE_MOVES, out,
                               out_line, state)
    error: PlanError | None = None
    if err != ERR_NONE:
        message = _replay_error(parsed, err_row, settings, state)
        if message is None:
            log.warning("line %d: the compiled planner refused a line the interpreter accepts "
                        "(error code %d); using the interpreter", err_row + 1, err)
            return None
        error = PlanError(err_row + 1, message)
    elif parse_error is not None:
        error = PlanError(parse_error.lineno, parse_error.message, parse_error)
    s = state.tolist()
    return PlanResult(
        moves=out[:count], lineno=out_line[:count],
        position=(s[S_POSITION], s[S_POSITION + 1], s[S_POSITION + 2], s[S_POSITION + 3]),
        homed_axes="".join(a for i, a in enumerate("xyz") if s[S_HOMED + i]), error=error)


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernels, so the first file does not wait."""
    from printhost.control.gcode_bulk import parse_bytes

    program = b"G28\nG1 X10 Y10 F6000\nG1 X20 E1\nG4 P10\nM204 S1000\nG1 Y20\nM84\n"
    plan_file(parse_bytes(program), Settings(), (0.0, 0.0, 0.0))
