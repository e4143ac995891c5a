"""The compiled batch planner's main loop: interpreter and toolhead over a file.

One call of `run_chunk` executes the operation rows of a file, or of a piece of one
(`plan_ops.operations`), as `GCodeInterpreter` and `Toolhead` would, keeping their
state in local variables instead of objects, and hands every move to the lookahead
planner (`plan_lookahead`). Between pieces the state lives in a float64 array
(`plan_ops.S_*`) and the lookahead queue in its own arrays (`new_queue`), so a file
run piece by piece gives exactly the moves of running it whole. It is a line-by-line
port of those two classes, for the same reason the planner kernels are one of
theirs: the moves must come out bit-identical to the Python path. That covers the
same checks in the same order (a line the Python path refuses stops the loop at that
line, with the error code and row returned for the replay in `plan`), and the same
flushes: G28 (after every axis), G4, M84/M18, M400, M109 and M190. Heater targets and
fan speeds move nothing but are checked all the same, so a file the Python path
rejects does not pass here.

numba's cache checks only the file a function is defined in: after editing
`plan_lookahead` or a number in `plan_ops`, clear the cache (see
`printhost.control.kernels`), or `run_chunk` keeps the old code.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from printhost.control.kernels.plan_lookahead import (I_EMITTED, N_I, N_P, N_Q, add_move,
                                                      emit_dwell, plan_queue, pmin)
from printhost.control.kernels.plan_ops import (AXIS_COLUMNS, CF_DEFAULT_SPEED, CF_ENDSTOP,
                                                CF_HIGH, CF_HOMING_SPEED, CF_LOW, CF_MAX_ACCEL,
                                                CF_MAX_FACTOR, CF_MAX_TEMP_BED,
                                                CF_MAX_TEMP_HOTEND, ERR_ACCEL, ERR_DWELL,
                                                ERR_FACTOR, ERR_FAN, ERR_FEED, ERR_NONE,
                                                ERR_RANGE, ERR_SPEED, ERR_TARGET,
                                                ERR_TEMPERATURE, ERR_UNHOMED, ERR_UNSUPPORTED,
                                                OP_ABSOLUTE, OP_ACCEL, OP_BED, OP_BED_WAIT,
                                                OP_DWELL, OP_E_ABSOLUTE, OP_E_RELATIVE,
                                                OP_EXTRUDE_FACTOR, OP_FAN, OP_FLUSH, OP_HOME,
                                                OP_HOTEND, OP_HOTEND_WAIT, OP_MACHINE_MOVE, OP_MOTORS_OFF, OP_MOVE,
                                                OP_NOTHING, OP_RELATIVE, OP_SET_POSITION,
                                                OP_SKIP, OP_SPEED_FACTOR, PE, PF, PP, PR, PS, PT,
                                                PX, PY, PZ, S_ABSOLUTE, S_ACCEL, S_E_ABSOLUTE,
                                                S_EXTRUDE_FACTOR, S_GCODE_POS, S_HOMED, S_OFFSET,
                                                S_POSITION, S_SPEED, S_SPEED_FACTOR)


@numba.njit(cache=True, nogil=True)
def initial_state(start_position: np.ndarray, cfg: np.ndarray, state: np.ndarray) -> None:
    """`state` as a fresh Toolhead at `start_position` and a GCodeInterpreter synced to
    it: nothing homed, no offsets, absolute coordinates, the default speed, factors 1
    and the acceleration at `printer.max_accel`."""
    for c in range(4):
        state[S_POSITION + c] = start_position[c]
        state[S_GCODE_POS + c] = start_position[c] if c < 3 else 0.0
    for i in range(3):
        state[S_HOMED + i] = 0.0
        state[S_OFFSET + i] = 0.0
    state[S_ACCEL] = cfg[CF_MAX_ACCEL]
    state[S_ABSOLUTE] = 1.0
    state[S_E_ABSOLUTE] = 1.0
    state[S_SPEED] = cfg[CF_DEFAULT_SPEED]
    state[S_SPEED_FACTOR] = 1.0
    state[S_EXTRUDE_FACTOR] = 1.0


@numba.njit(cache=True, nogil=True)
def new_queue(max_queue_moves: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An empty lookahead queue: its rows, counters and carried velocities."""
    return (np.empty((max_queue_moves + 2, N_Q), dtype=np.float64),
            np.zeros(N_I, dtype=np.int64), np.zeros(N_P, dtype=np.float64))


@numba.njit(cache=True, nogil=True)
def run_chunk(ops: np.ndarray, params: np.ndarray, stop_row: int, final_flush: bool,
              cfg: np.ndarray, lines: np.ndarray, max_queue_moves: int, out: np.ndarray,
              out_line: np.ndarray, state: np.ndarray, q: np.ndarray, ist: np.ndarray,
              pst: np.ndarray) -> tuple[int, int, int]:
    """Execute rows [0, stop_row) of a piece of a file, row k being the file's line
    `lines[k]` (rows a lent command queued share its line),
    continuing from `state` and the lookahead queue (`q`, `ist`, `pst`) the previous
    piece left; both are updated. Moves come out in `out` from row 0; moves still in
    the queue stay there for the next piece unless `final_flush`. Running a file in
    pieces emits exactly the moves of running it whole.

    Returns (moves emitted by this call, error code, failing row or -1); `state`
    holds the interpreter and toolhead state after the last successful row.
    """
    start_v2 = np.empty(max_queue_moves + 3, dtype=np.float64)
    cruise_v2 = np.empty(max_queue_moves + 2, dtype=np.float64)
    has_cruise = np.zeros(max_queue_moves + 2, dtype=np.bool_)
    ist[I_EMITTED] = 0
    # Toolhead.
    pos = np.empty(4, dtype=np.float64)
    gpos = np.empty(4, dtype=np.float64)
    for c in range(4):
        pos[c] = state[S_POSITION + c]
        gpos[c] = state[S_GCODE_POS + c]
    homed = np.zeros(3, dtype=np.bool_)
    offset = np.zeros(3, dtype=np.float64)
    for i in range(3):
        homed[i] = state[S_HOMED + i] != 0.0
        offset[i] = state[S_OFFSET + i]
    accel = state[S_ACCEL]
    target = np.empty(4, dtype=np.float64)
    # Interpreter.
    absolute = state[S_ABSOLUTE] != 0.0
    e_absolute = state[S_E_ABSOLUTE] != 0.0
    speed_state = state[S_SPEED]
    speed_factor = state[S_SPEED_FACTOR]
    extrude_factor = state[S_EXTRUDE_FACTOR]

    err = ERR_NONE
    err_row = -1
    for row in range(stop_row):
        op = ops[row]
        line = lines[row]
        if op == OP_SKIP or op == OP_NOTHING:
            continue
        if op == OP_MOVE:
            # _move and _linear_move.
            x = gpos[0]
            y = gpos[1]
            z = gpos[2]
            v = params[row, PX]
            if not math.isnan(v):
                x = v if absolute else x + v
            v = params[row, PY]
            if not math.isnan(v):
                y = v if absolute else y + v
            v = params[row, PZ]
            if not math.isnan(v):
                z = v if absolute else z + v
            gcode_e = gpos[3]
            e_delta = 0.0
            v = params[row, PE]
            if not math.isnan(v):
                new_e = v if (absolute and e_absolute) else gcode_e + v
                e_delta = (new_e - gcode_e) * extrude_factor
                gcode_e = new_e
            speed = speed_state
            f = params[row, PF]
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
                err = add_move(pos, target, move_speed, accel, line, cfg, q, ist, pst,
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
        elif op == OP_MACHINE_MOVE:
            # Toolhead.move_to's planner call for a move the interpreter made (and
            # checked): the G-code state is set from the interpreter afterwards.
            for c in range(4):
                target[c] = params[row, PX + c]
            err = add_move(pos, target, params[row, PF], accel, line, cfg, q, ist, pst,
                           start_v2, cruise_v2, has_cruise, out, out_line, max_queue_moves)
            if err != ERR_NONE:
                err_row = row
                break
            for c in range(4):
                pos[c] = target[c]
        elif op == OP_SET_POSITION:
            px = params[row, PX]
            py = params[row, PY]
            pz = params[row, PZ]
            pe = params[row, PE]
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
                if not math.isnan(params[row, AXIS_COLUMNS[i]]):
                    named[i] = True
                    any_named = True
            # Toolhead.home: stop first, then per axis a move to the endstop, flushed.
            plan_queue(True, q, ist, pst, start_v2, cruise_v2, has_cruise, out, out_line,
                       max_queue_moves)
            for i in range(3):
                if any_named and not named[i]:
                    continue
                for c in range(4):
                    target[c] = pos[c]
                target[i] = cfg[CF_ENDSTOP + i]
                add_move(pos, target, cfg[CF_HOMING_SPEED + i], accel, line, cfg, q, ist,
                         pst, start_v2, cruise_v2, has_cruise, out, out_line,
                         max_queue_moves)
                plan_queue(True, q, ist, pst, start_v2, cruise_v2, has_cruise, out, out_line,
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
            s = params[row, PS]
            if math.isnan(s):
                p = params[row, PP]
                s = (0.0 if math.isnan(p) else p) / 1000.0
            if s < 0.0:
                err = ERR_DWELL
                err_row = row
                break
            plan_queue(True, q, ist, pst, start_v2, cruise_v2, has_cruise, out, out_line,
                       max_queue_moves)
            if s > 0.0:
                emit_dwell(pos, s, line, out, out_line, ist)
        elif op == OP_ABSOLUTE:
            absolute = True
        elif op == OP_RELATIVE:
            absolute = False
        elif op == OP_E_ABSOLUTE:
            e_absolute = True
        elif op == OP_E_RELATIVE:
            e_absolute = False
        elif op == OP_MOTORS_OFF:
            plan_queue(True, q, ist, pst, start_v2, cruise_v2, has_cruise, out, out_line,
                       max_queue_moves)
            for i in range(3):
                homed[i] = False
        elif op == OP_FLUSH:
            plan_queue(True, q, ist, pst, start_v2, cruise_v2, has_cruise, out, out_line,
                       max_queue_moves)
        elif (op == OP_HOTEND or op == OP_HOTEND_WAIT or op == OP_BED
              or op == OP_BED_WAIT):
            t = params[row, PS]
            if math.isnan(t):
                t = params[row, PR]
                if math.isnan(t):
                    t = 0.0
            hotend = op == OP_HOTEND or op == OP_HOTEND_WAIT
            max_temp = cfg[CF_MAX_TEMP_HOTEND] if hotend else cfg[CF_MAX_TEMP_BED]
            if t < 0.0 or t > max_temp:
                err = ERR_TEMPERATURE
                err_row = row
                break
            if op == OP_HOTEND_WAIT or op == OP_BED_WAIT:
                plan_queue(True, q, ist, pst, start_v2, cruise_v2, has_cruise, out, out_line,
                           max_queue_moves)
        elif op == OP_FAN:
            v = params[row, PS]
            if math.isnan(v):
                v = 255.0
            if not (0.0 <= v and v <= 255.0):
                err = ERR_FAN
                err_row = row
                break
        elif op == OP_ACCEL:
            # _set_accel: S, or else the lower of P and T when both are given.
            s = params[row, PS]
            p = params[row, PP]
            t = params[row, PT]
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
                requested = pmin(p, t)
            if err == ERR_NONE and not math.isnan(requested):
                # Toolhead.set_accel (its check cannot fail on parsed numbers).
                if not (math.isfinite(requested) and requested > 0.0):
                    err = ERR_ACCEL
                else:
                    accel = pmin(requested, cfg[CF_MAX_ACCEL])
            if err != ERR_NONE:
                err_row = row
                break
        elif op == OP_SPEED_FACTOR or op == OP_EXTRUDE_FACTOR:
            v = params[row, PS]
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
            # OP_UNSUPPORTED never reaches the kernel (PlanStream hands those rows to
            # the interpreter).
            err = ERR_UNSUPPORTED
            err_row = row
            break
    if err == ERR_NONE and final_flush:
        plan_queue(True, q, ist, pst, start_v2, cruise_v2, has_cruise, out, out_line,
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
