"""The printer's lookahead planner: one compiled queue behind the toolhead and the jobs.

Every move the printer makes is planned here, whoever asks for it: the toolhead
(a console `G1`, a park move, homing by plain moves, an arc's segments) one move at
a time through the planner interface (`add_move`, `flush`, `dwell`, `clear`), and a
print job whole pieces of a file at a time through `run`, which executes the file's
rows (`plan_ops.operations`) in the compiled interpreter loop (`plan_kernel`).
Both feed the same lookahead queue, so a move the toolhead adds between two pieces
of a file blends with them exactly as in a file planned whole, and `printhost
batch` (`plan.PlanStream`) and a live print plan the same file identically.

The state the kernel carries between calls (`state`, `plan_ops.S_*`: commanded
position, homed axes, acceleration, G-code modes, offsets and factors) is the
toolhead's and the interpreter's while a piece runs; the caller puts theirs in
before (`take_from`) and takes the result back after (`give_to`). A single move
from the toolhead needs only its start and acceleration.

`planner.LookaheadPlanner` is the pure-Python reference these kernels are a port
of; the start-up self-test and the tests compare the two move for move.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from printhost.config import Settings
from printhost.control.gcode_bulk import PARAM_LETTERS
from printhost.control.interpreter import GCodeState
from printhost.control.kernels.plan_kernel import initial_state, new_queue, run_chunk
from printhost.control.kernels.plan_lookahead import (I_QUEUED, Q_ACCEL, Q_DELTA_V2,
                                                      Q_DISTANCE, Q_MAX_CRUISE_V2,
                                                      Q_MCR_DELTA_V2)
from printhost.control.kernels.plan_ops import (ERR_EXTRUDE_ONLY_LENGTH, ERR_EXTRUSION,
                                                ERR_NONE, N_MOVE_COLUMNS, N_S, OP_DWELL,
                                                OP_HOME, OP_MACHINE_MOVE, OP_MOVE, PE, PF, PS,
                                                PX, S_ABSOLUTE, S_ACCEL, S_E_ABSOLUTE,
                                                S_EXTRUDE_FACTOR, S_GCODE_POS, S_HOMED,
                                                S_OFFSET, S_POSITION, S_SPEED, S_SPEED_FACTOR,
                                                pack_constants)
from printhost.control.motion import PlannedMove, Vec4
from printhost.control.planner import (MAX_QUEUE_MOVES, _MIN_LENGTH_MM, check_move,
                                       extrude_only_too_long, over_extrusion)

if TYPE_CHECKING:
    from printhost.control.toolhead import Toolhead

#: Receives the moves a call emitted, one row per move (`plan_ops` columns).
Emit = Callable[[np.ndarray], None]


def write_state(state: np.ndarray, toolhead: Toolhead, gcode_state: GCodeState) -> None:
    """A toolhead's position, homed axes and acceleration and an interpreter's
    GCodeState as the kernel keeps them (`plan_ops.S_*`)."""
    state[S_POSITION:S_POSITION + 4] = toolhead.commanded_position
    homed = toolhead.homed_axes
    for i, axis in enumerate("xyz"):
        state[S_HOMED + i] = 1.0 if axis in homed else 0.0
    state[S_ACCEL] = toolhead.accel
    state[S_ABSOLUTE] = 1.0 if gcode_state.absolute_coords else 0.0
    state[S_E_ABSOLUTE] = 1.0 if gcode_state.absolute_extrude else 0.0
    state[S_SPEED] = gcode_state.speed_mm_s
    state[S_SPEED_FACTOR] = gcode_state.speed_factor
    state[S_EXTRUDE_FACTOR] = gcode_state.extrude_factor
    state[S_GCODE_POS:S_GCODE_POS + 4] = gcode_state.gcode_pos
    state[S_OFFSET:S_OFFSET + 3] = gcode_state.offset[:3]


def read_state(state: np.ndarray, toolhead: Toolhead, inch_units: bool = False) -> GCodeState:
    """The reverse of `write_state`: the toolhead takes its part (without moving), the
    interpreter's part is returned. Inches are the interpreter's alone (given)."""
    s = state.tolist()
    toolhead.restore((s[S_POSITION], s[S_POSITION + 1], s[S_POSITION + 2], s[S_POSITION + 3]),
                     "".join(a for i, a in enumerate("xyz") if s[S_HOMED + i]), s[S_ACCEL])
    g, o = S_GCODE_POS, S_OFFSET
    return GCodeState(
        absolute_coords=bool(s[S_ABSOLUTE]), absolute_extrude=bool(s[S_E_ABSOLUTE]),
        speed_mm_s=s[S_SPEED], speed_factor=s[S_SPEED_FACTOR],
        extrude_factor=s[S_EXTRUDE_FACTOR], gcode_pos=(s[g], s[g + 1], s[g + 2], s[g + 3]),
        offset=(s[o], s[o + 1], s[o + 2], 0.0), inch_units=inch_units)


def planned_moves(rows: np.ndarray) -> list[PlannedMove]:
    """Move rows as PlannedMove objects, for executors that take those."""
    return [PlannedMove((r[0], r[1], r[2], r[3]), (r[4], r[5], r[6], r[7]),
                        r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15])
            for r in rows.tolist()]


class CompiledPlanner:
    """The lookahead queue, the interpreter state of the file being planned, and the
    compiled kernels that run both. `emit` receives every move as soon as its profile
    is final (None: the caller takes them from `run`'s result)."""

    def __init__(self, settings: Settings, emit: Emit | None = None,
                 max_queue_moves: int = MAX_QUEUE_MOVES,
                 start_position: Vec4 = (0.0, 0.0, 0.0, 0.0)) -> None:
        if max_queue_moves < 2:
            raise ValueError("max_queue_moves must be at least 2")
        self.settings = settings
        self.max_queue_moves = max_queue_moves
        self.cfg = pack_constants(settings)
        self.state = np.zeros(N_S, dtype=np.float64)
        initial_state(np.array(start_position, dtype=np.float64), self.cfg, self.state)
        self._q, self._ist, self._pst = new_queue(max_queue_moves)
        self._emit = emit
        self._estimate: float | None = 0.0     # the queue's time estimate, until it changes
        self._last_error = ERR_NONE            # the kernel's code for the last one-row call
        ex = settings.extruder
        self._filament_area = math.pi * (ex.filament_diameter * 0.5) ** 2
        # One-row programs for the toolhead's calls, reused.
        self._row_op = np.empty(1, dtype=np.int8)
        self._row_params = np.full((1, len(PARAM_LETTERS)), np.nan)
        self._row_line = np.zeros(1, dtype=np.int64)
        self._no_ops = np.zeros(0, dtype=np.int8)
        self._no_params = np.zeros((0, len(PARAM_LETTERS)), dtype=np.float64)
        self._no_lines = np.zeros(0, dtype=np.int64)

    # ------------------------------------------------------------------ queries
    @property
    def queued_moves(self) -> int:
        return int(self._ist[I_QUEUED])

    def queued_time_estimate(self) -> float:
        """Print time of the queued moves, each counted as if from rest to rest (the
        reference's estimate, by its expression): what a job reads ahead by."""
        if self._estimate is not None:
            return self._estimate       # asked every control-loop pass; the queue rarely moved
        n = int(self._ist[I_QUEUED])
        if not n:
            self._estimate = 0.0
            return 0.0
        q = self._q[:n]
        accel = q[:, Q_ACCEL]
        cruise_v2 = np.minimum(np.minimum(q[:, Q_MAX_CRUISE_V2], 0.5 * q[:, Q_DELTA_V2]),
                               0.5 * q[:, Q_MCR_DELTA_V2])
        cruise_v = np.sqrt(cruise_v2)
        ramp_d = cruise_v2 / accel
        times = 2.0 * cruise_v / accel + np.maximum(0.0, q[:, Q_DISTANCE] - ramp_d) / cruise_v
        self._estimate = float(times.sum())
        return self._estimate

    # ------------------------------------------------------------------ pieces of a file
    def run(self, ops: np.ndarray, params: np.ndarray, lines: np.ndarray,
            final: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
        """Rows through the kernel, row k from line `lines[k]`, continuing from `state`
        and the queue: (moves emitted, their lines, failing row or -1). At a failing
        row `state` is the state before it and nothing of that row was queued."""
        capacity = (int(np.count_nonzero((ops == OP_MOVE) | (ops == OP_MACHINE_MOVE)))
                    + 3 * int(np.count_nonzero(ops == OP_HOME))
                    + int(np.count_nonzero(ops == OP_DWELL)) + int(self._ist[I_QUEUED]))
        out = np.empty((capacity, N_MOVE_COLUMNS), dtype=np.float64)
        out_line = np.empty(capacity, dtype=np.int64)
        self._estimate = None
        count, err, err_row = run_chunk(ops, params, len(ops), final, self.cfg, lines,
                                        self.max_queue_moves, out, out_line, self.state,
                                        self._q, self._ist, self._pst)
        moves = out[:count]
        if count and self._emit is not None:
            self._emit(moves)
        return moves, out_line[:count], (err_row if err != ERR_NONE else -1)

    def take_from(self, toolhead: Toolhead, gcode_state: GCodeState) -> None:
        """The toolhead's and the interpreter's state into the kernel's, before a piece
        of a file runs."""
        write_state(self.state, toolhead, gcode_state)

    def give_to(self, toolhead: Toolhead, inch_units: bool = False) -> GCodeState:
        """The kernel's state back: into the toolhead, and as the interpreter's."""
        return read_state(self.state, toolhead, inch_units)

    # ------------------------------------------------------------------ the toolhead's planner
    def add_move(self, start: Vec4, end: Vec4, speed_mm_s: float,
                 accel: float | None = None) -> None:
        """Queue a straight move (machine coordinates, checked by the toolhead);
        zero-length moves are dropped. `accel` is capped at `printer.max_accel`.
        Raises MoveLimitError (nothing queued) if it breaks an extruder limit."""
        check_move(start, end, speed_mm_s, accel)
        s = self.state
        s[S_POSITION:S_POSITION + 4] = start
        s[S_ACCEL] = self.settings.printer.max_accel if accel is None else accel
        self._row_op[0] = OP_MACHINE_MOVE
        p = self._row_params[0]
        p[PX:PX + 3] = end[:3]
        p[PE] = end[3]
        p[PF] = speed_mm_s
        _, _, failed = self._run_row()
        if failed >= 0:
            raise self._limit_error(start, end)

    def _run_row(self) -> tuple[np.ndarray, np.ndarray, int]:
        capacity = 1 + int(self._ist[I_QUEUED])
        out = np.empty((capacity, N_MOVE_COLUMNS), dtype=np.float64)
        out_line = np.empty(capacity, dtype=np.int64)
        self._estimate = None
        count, err, err_row = run_chunk(self._row_op, self._row_params, 1, False, self.cfg,
                                        self._row_line, self.max_queue_moves, out, out_line,
                                        self.state, self._q, self._ist, self._pst)
        self._last_error = err
        if count and self._emit is not None:
            self._emit(out[:count])
        return out[:count], out_line[:count], (err_row if err != ERR_NONE else -1)

    def _limit_error(self, start: Vec4, end: Vec4) -> Exception:
        """The reference's MoveLimitError for a move the kernel refused."""
        dx, dy, dz, de = (end[0] - start[0], end[1] - start[1], end[2] - start[2],
                          end[3] - start[3])
        length = math.sqrt(dx * dx + dy * dy + dz * dz)
        if self._last_error == ERR_EXTRUDE_ONLY_LENGTH:
            return extrude_only_too_long(de, self.settings.extruder.max_extrude_only_distance)
        if self._last_error == ERR_EXTRUSION and length >= _MIN_LENGTH_MM:
            area = self._filament_area
            max_ratio = self.settings.extruder.cross_section_limit_mm2 / area
            return over_extrusion(de / length * area, max_ratio * area)
        return RuntimeError(f"the planner refused the move {start} -> {end} "
                            f"(kernel error {self._last_error})")

    def flush(self) -> None:
        """Emit every queued move, the last one ending at a standstill."""
        if self._ist[I_QUEUED]:
            self.run(self._no_ops, self._no_params, self._no_lines, final=True)

    def dwell(self, at: Vec4, seconds: float) -> None:
        """Stop (flush) and then pause for `seconds` at `at`."""
        if not math.isfinite(seconds):
            raise ValueError(f"dwell time must be finite, got {seconds!r}")
        self.flush()
        if seconds > 0.0:
            self.state[S_POSITION:S_POSITION + 4] = at
            self._row_op[0] = OP_DWELL
            self._row_params[0, :] = np.nan
            self._row_params[0, PS] = seconds
            self._run_row()
            self._row_params[0, PS] = np.nan

    def clear(self) -> None:
        """Forget queued moves without emitting them (abort); planning restarts from rest."""
        self._ist[:] = 0
        self._pst[:] = 0.0
        self._estimate = 0.0
