"""The compiled lookahead planner: `planner.LookaheadPlanner` as numba kernels.

`plan_kernel.run_chunk` feeds every move of a file through `add_move`, and flushes with
`plan_queue(True, ...)` where the Python path flushes. The planner's queue of
`_QueuedMove` objects is one float64 array with a row per move (`Q_*` columns),
its counters and carried velocities two small arrays (`I_*`, `P_*`), and every
planned move is written straight into the output rows whose columns `plan_ops`
defines, so no object is created per move.

The result must be bit-identical to `LookaheadPlanner`, so each kernel is a port
of its counterpart, operation for operation: the same floating-point operations in
the same order, Python's `min`/`max` tie rules (`pmin`, `pmax`) and libm `pow`
where Python uses `**` (`square`). The same holds for the emission points: the
lazy "certain moves" emission after every move, and the forced emission when the
queue outgrows `max_queue_moves`.

numba's cache checks only the file a function is defined in: after editing this
module, the cached `plan_kernel.run_chunk` still holds the old code inlined, so clear
the cache (see `printhost.control.kernels`).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from printhost.control.kernels.plan_ops import (ACCEL, ACCEL_T, CF_CORNER_V, CF_JD_NUMERATOR,
                                                CF_MAX_ACCEL, CF_MAX_EO_ACCEL, CF_MAX_EO_DISTANCE,
                                                CF_MAX_EO_VELOCITY, CF_MAX_EXTRUDE_RATIO,
                                                CF_MAX_VELOCITY, CF_MAX_Z_ACCEL, CF_MAX_Z_VELOCITY,
                                                CF_MIN_CRUISE_RATIO, CF_MIN_LENGTH, CF_NOZZLE,
                                                CF_TWO, CF_UNLIMITED_ACCEL, CRUISE_T, CRUISE_V,
                                                DECEL_T, DISTANCE, END_V, END_X,
                                                ERR_EXTRUDE_ONLY_LENGTH, ERR_EXTRUSION, ERR_NONE,
                                                N_MOVE_COLUMNS, START_V, START_X)

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


# ------------------------------------------------------------------ compiled kernels

@numba.njit(cache=True, nogil=True)
def pmin(a: float, b: float) -> float:
    """Python's min(a, b): b only if strictly smaller (ties and -0.0 keep a)."""
    return b if b < a else a


@numba.njit(cache=True, nogil=True)
def pmax(a: float, b: float) -> float:
    """Python's max(a, b): b only if strictly greater."""
    return b if b > a else a


@numba.njit(cache=True, nogil=True)
def square(x: float, two: float) -> float:
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
    sin_half = pmin(1.0, 0.5 * math.sqrt(sum_x * sum_x + sum_y * sum_y + sum_z * sum_z))
    cos_half = 0.5 * math.sqrt(dif_x * dif_x + dif_y * dif_y + dif_z * dif_z)
    if sin_half >= 1.0 or cos_half <= 0.0:
        return math.inf
    radius_factor = sin_half / (1.0 - sin_half)
    quarter_tan = 0.25 * sin_half / cos_half
    limit = pmin(radius_factor * prev_jd_accel, radius_factor * next_jd_accel)
    limit = pmin(limit, quarter_tan * prev_delta_v2)
    return pmin(limit, quarter_tan * next_delta_v2)


@numba.njit(cache=True, nogil=True)
def _emit_profile(q: np.ndarray, i: int, start_v2: float, cruise_v2: float, end_v2: float,
                  out: np.ndarray, out_line: np.ndarray, ist: np.ndarray) -> None:
    """planner._profile for queue row i, written as the next output row."""
    start_v = math.sqrt(start_v2)
    end_v = math.sqrt(end_v2)
    cruise_v = pmax(pmax(math.sqrt(cruise_v2), start_v), end_v)
    a = q[i, Q_ACCEL]
    accel_t = (cruise_v - start_v) / a
    decel_t = (cruise_v - end_v) / a
    accel_d = 0.5 * (start_v + cruise_v) * accel_t
    decel_d = 0.5 * (end_v + cruise_v) * decel_t
    cruise_d = pmax(0.0, q[i, Q_DISTANCE] - accel_d - decel_d)
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
def emit_dwell(pos: np.ndarray, seconds: float, line: int, out: np.ndarray,
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
    out[k, CRUISE_T] = pmax(0.0, seconds)
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
        q[j, Q_MAX_START_V2] = pmin(q[j, Q_MAX_START_V2], limit)
        q[j, Q_MAX_MCR_START_V2] = pmin(pmin(q[j, Q_MAX_MCR_START_V2], mcr_limit),
                                        q[j, Q_MAX_START_V2])
        prev = j


@numba.njit(cache=True, nogil=True)
def plan_queue(final: bool, q: np.ndarray, ist: np.ndarray, pst: np.ndarray,
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
        start = pmin(max_start_v2, reach_v2)
        reach_mcr_v2 = next_mcr_v2 + mcr_delta_v2
        mcr = pmin(max_mcr_start_v2, reach_mcr_v2)
        pending += 1
        has_cruise[i] = False
        if mcr < reach_mcr_v2:
            if mcr_delta_v2 + mcr > next_mcr_v2 or pending > 1:
                peak_v2 = (mcr + reach_mcr_v2) * 0.5
                if 0 <= i and i < settled and certain == 0:
                    certain = i + pending
            cruise_v2[i] = pmin(pmin((start + reach_v2) * 0.5, q[i, Q_MAX_CRUISE_V2]),
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
            cruise = pmin(prev_cruise, start_v2[i])
        begin = pmin(start_v2[i], cruise)
        if i == 0:
            begin = head_start_v2
            cruise = pmax(cruise, begin)
        end = pmin(start_v2[i + 1], cruise)
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
def add_move(start: np.ndarray, end: np.ndarray, speed: float, accel: float, line: int,
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
    toolhead_accel = pmin(accel, cfg[CF_MAX_ACCEL])
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
        velocity = pmin(speed, cfg[CF_MAX_VELOCITY])
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
        move_accel = pmin(move_accel, limit_accel)
        delta_v2 = 2.0 * length * move_accel
        mcr_delta_v2 = pmin(mcr_delta_v2, delta_v2)
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
                extruder_v2 = square(cfg[CF_CORNER_V] / abs(e_change), cfg[CF_TWO])
            else:
                extruder_v2 = max_cruise_v2
            corner = _junction_limit_v2(
                q[p, Q_DIR], q[p, Q_DIR + 1], q[p, Q_DIR + 2], q[p, Q_JD] * q[p, Q_ACCEL],
                q[p, Q_DELTA_V2], dir_x, dir_y, dir_z, jd * move_accel, delta_v2)
            max_start_v2 = pmin(max_cruise_v2, q[p, Q_MAX_CRUISE_V2])
            max_start_v2 = pmin(max_start_v2, q[p, Q_MAX_START_V2] + q[p, Q_DELTA_V2])
            max_start_v2 = pmin(max_start_v2, extruder_v2)
            max_start_v2 = pmin(max_start_v2, corner)
            max_mcr_start_v2 = pmin(max_start_v2,
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
    plan_queue(False, q, ist, pst, start_v2, cruise_v2, has_cruise, out, out_line, max_queue_moves)
    return ERR_NONE
