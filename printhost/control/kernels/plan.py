"""Compiled batch planning: a whole parsed file through interpreter, toolhead and planner.

`printhost batch` knows the entire file before it starts, so the per-line Python
objects of the interactive path (a `GCodeCommand` per line, a `_QueuedMove` and a
`PlannedMove` per move, a dict of parameters per command) are pure overhead there:
they cost tens of microseconds per move, more than everything after the planner.
`plan_file` runs the same semantics as one compiled loop over the arrays of
`gcode_bulk.BulkGCode` and returns the planned moves as one float64 array.

The result must be *bit-identical* to what `GCodeInterpreter` + `Toolhead` +
`LookaheadPlanner` emit for the same file, because the batch output is compared
with the interactive path and with Klipper move for move. The work is split by
concern:

- `plan_ops`: the encoding the kernel reads (operation codes, parameter columns,
  settings constants, state and output layouts, error codes);
- `plan_kernel`: the compiled interpreter and toolhead loop over the rows;
- `plan_lookahead`: the compiled lookahead planner and the output rows;
- this module: the Python entry point, its result types, and the error replay.
  It re-exports the output column names, because they describe `PlanResult.moves`.

Only a subset of G-code is ported: the commands real slicer output consists of.
Every other command the interpreter knows (arcs, firmware retraction, inch units,
other planes, the chamber, the power supply) is run by the interpreter itself, at
its place in the file, without leaving the compiled path: `PlanStream` splits the
piece at that line, puts an interpreter and a toolhead into the kernel's state, and
the toolhead's planner is a recorder (`_MoveRecorder`) whose moves, flushes and
dwells become kernel rows (`OP_MACHINE_MOVE`, ...). They enter the kernel's own
lookahead queue, so an arc blends with the moves around it exactly as on the Python
path; then the interpreter's state goes back into the kernel's. While inches are in
force, moves and `G92` go the same way. `M112` stops the file as an error.
Letters a command does not read are ignored, as the interpreter ignores them (`G28 W`
homes all axes), and unknown commands are skipped. `plan_file` returns None, and the
caller runs the Python path (which remains the reference), only where the two would
disagree: a command that asks the toolhead for something the recorder cannot
express, or a refusal the reference does not confirm.

Errors: the kernel stops at the first failing line exactly where the Python path
would raise, with the moves emitted up to there. The message is not rebuilt from a
copy of the reference's format strings: the failing command is replayed through a
fresh interpreter and toolhead put into the kernel's state at that line, so the
text is the reference's own. (If the replay does not fail, the two implementations
disagree; `plan_file` then returns None so the reference decides.)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from printhost.config import Settings
from printhost.control.gcode import GCodeError
from printhost.control.gcode_bulk import PARAM_LETTERS, BulkGCode
from printhost.control.interpreter import CommandError, GCodeInterpreter, PartFan
from printhost.control.kernels.lookahead import CompiledPlanner, planned_moves, read_state
from printhost.control.kernels.plan_ops import (N_MOVE_COLUMNS, OP_DWELL, OP_FLUSH,
                                                OP_MACHINE_MOVE, OP_MOVE, OP_NOTHING,
                                                OP_SET_POSITION, OP_UNSUPPORTED, PE, PF, PS, PX,
                                                S_ACCEL, S_HOMED, S_POSITION, operations)
# The columns of `PlanResult.moves`, re-exported: importers of the result read them here.
from printhost.control.kernels.plan_ops import (ACCEL, ACCEL_T, CRUISE_T, CRUISE_V, DECEL_T,
                                                DISTANCE, END_E, END_V, END_X, END_Y, END_Z,
                                                START_E, START_V, START_X, START_Y, START_Z)
from printhost.control.motion import PlannedMove, QueueClockExecutor, Vec4
from printhost.control.planner import MAX_QUEUE_MOVES
from printhost.control.toolhead import Toolhead

__all__ = ["ACCEL", "ACCEL_T", "CRUISE_T", "CRUISE_V", "DECEL_T", "DISTANCE", "END_E", "END_V",
           "END_X", "END_Y", "END_Z", "N_MOVE_COLUMNS", "START_E", "START_V", "START_X",
           "START_Y", "START_Z", "PlanError", "PlanResult", "PlanStream", "plan_file", "warm_up"]

log = logging.getLogger(__name__)


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
        return planned_moves(self.moves)


def _replay_error(parsed: BulkGCode, row: int, settings: Settings,
                  state: np.ndarray, inch_units: bool = False,
                  retracted: bool = False) -> str | None:
    """The reference's message for the failing line, or None if the reference accepts it.

    A fresh interpreter and toolhead are put into the kernel's state at that line
    (commanded position, homed axes, acceleration, G-code modes, offsets, factors)
    and the line is executed. The planner's queue is not rebuilt: every refusal
    happens before a move touches the queue.
    """
    from printhost.control.clock import ManualClock
    from printhost.sim.heaters import build_simulated_heaters

    executor = QueueClockExecutor(0.0, (0.0, 0.0, 0.0, 0.0))
    toolhead = Toolhead(settings.printer, executor, settings.extruder)
    heaters, _ = build_simulated_heaters(settings, ManualClock())
    interp = GCodeInterpreter(toolhead, heaters, PartFan(), executor.now, settings.gcode,
                              settings.firmware_retraction)
    _put_in_state(state, interp, toolhead, inch_units, retracted)
    cmd = parsed.command(row)
    if cmd is None:
        return None
    try:
        interp.execute(cmd)
    except CommandError as exc:
        return str(exc)
    return None


def _put_in_state(state: np.ndarray, interp: GCodeInterpreter, toolhead: Toolhead,
                  inch_units: bool, retracted: bool) -> None:
    """An interpreter and its toolhead put into the kernel's state (commanded position,
    homed axes, acceleration, G-code modes, offsets, factors), with what only the
    interpreter keeps (inches, a pending retraction) given."""
    interp.restore_state(read_state(state, toolhead, inch_units))
    interp.retracted = retracted


class _MoveRecorder:
    """The planner of the toolhead a lent command drives (`Toolhead(planner=...)`):
    what the toolhead asks of its planner becomes kernel rows, so the moves join the
    kernel's lookahead queue where the interpreter's would join its own planner's.

    Moves must use the acceleration the kernel is at (no lent command changes it);
    anything the kernel has no row for is noted in `unexpressed`."""

    queued_moves = 0

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[int, float]]] = []
        self.unexpressed: str | None = None
        self._accel = 0.0

    def reset(self, accel: float) -> None:
        self.rows = []
        self.unexpressed = None
        self._accel = accel

    def add_move(self, start: Vec4, end: Vec4, speed_mm_s: float,
                 accel: float | None = None) -> None:
        if accel is not None and accel != self._accel:
            self.unexpressed = f"move at an acceleration of {accel:g}"
            return
        self.rows.append((OP_MACHINE_MOVE, {PX: end[0], PX + 1: end[1], PX + 2: end[2],
                                            PE: end[3], PF: speed_mm_s}))

    def flush(self) -> None:
        self.rows.append((OP_FLUSH, {}))

    def dwell(self, at: Vec4, seconds: float) -> None:
        self.rows.append((OP_DWELL, {PS: seconds}))

    def clear(self) -> None:
        self.unexpressed = "drop its queued moves"

    def queued_time_estimate(self) -> float:
        return 0.0


class PlanStream:
    """The compiled planner fed a file piece by piece (`gcode_bulk.iter_chunks`).

    The interpreter and toolhead state and the lookahead queue are carried from one
    piece to the next, so the moves are exactly those of planning the file whole,
    while memory follows the piece. Moves still in the lookahead queue at the end of
    a piece come out with the next one, or with `final`.
    """

    def __init__(self, settings: Settings, start_position: Sequence[float]) -> None:
        start = [float(v) for v in start_position]
        if len(start) == 3:
            start.append(0.0)
        if len(start) != 4:
            raise ValueError(f"start_position needs 3 or 4 values, got {len(start)}")
        self.settings = settings
        self._planner = CompiledPlanner(settings, None, MAX_QUEUE_MOVES,
                                        (start[0], start[1], start[2], start[3]))
        self._state = self._planner.state
        self.failed = False
        # The interpreter, toolhead and recorder lent commands run on (built when needed).
        self._lent: tuple[GCodeInterpreter, Toolhead, _MoveRecorder] | None = None

    def feed(self, parsed: BulkGCode, final: bool = False) -> PlanResult | None:
        """Plan the next piece (the whole file with `final`, or `finish()` later).

        With an `error` the stream stops at that line, like the Python path, and takes
        nothing more. None only where the kernel and the reference would disagree (see
        the module docstring): the caller then runs the Python path instead."""
        if self.failed:
            raise RuntimeError("the plan stream stopped at an error")
        ops, params, stop_row, parse_error = operations(parsed)
        # Rows the interpreter runs: commands the kernel does not port, and while inches
        # are in force (which only the interpreter knows) every move and G92 as well,
        # and the rows the kernel takes as doing nothing, G21 among them.
        head = ops[:stop_row]
        lent = np.flatnonzero(head == OP_UNSUPPORTED)
        lent_in_inches = np.flatnonzero((head == OP_UNSUPPORTED) | (head == OP_MOVE)
                                        | (head == OP_SET_POSITION) | (head == OP_NOTHING))
        moves: list[np.ndarray] = []
        lines: list[np.ndarray] = []
        error: PlanError | None = None
        row = 0
        while error is None:
            rows = lent_in_inches if self._inches() else lent
            k = int(np.searchsorted(rows, row))
            end = int(rows[k]) if k < len(rows) else stop_row
            last = end == stop_row
            planned = self._planner.run(ops[row:end], params[row:end],
                                        np.arange(parsed.first_line + row,
                                                  parsed.first_line + end),
                                        last and final and parse_error is None)
            moves.append(planned[0])
            lines.append(planned[1])
            if planned[2] >= 0:
                failed = row + planned[2]
                message = _replay_error(parsed, failed, self.settings, self._state,
                                        self._inches(), self._retracted())
                if message is None:
                    log.warning("line %d: the compiled planner refused a line the "
                                "interpreter accepts; using the interpreter",
                                parsed.first_line + failed)
                    return None
                error = PlanError(parsed.first_line + failed, message)
                break
            if last:
                break
            lent_result = self._lend(parsed, end)
            if lent_result is None:
                return None
            moves.append(lent_result[0])
            lines.append(lent_result[1])
            error = lent_result[2]
            row = end + 1
        if error is None and parse_error is not None:
            error = PlanError(parse_error.lineno, parse_error.message, parse_error)
        self.failed = error is not None
        return self._result(np.concatenate(moves) if len(moves) > 1 else moves[0],
                            np.concatenate(lines) if len(lines) > 1 else lines[0], error)

    # -------------------------------------------------- commands the interpreter runs
    def _inches(self) -> bool:
        return self._lent is not None and self._lent[0].state.inch_units

    def _retracted(self) -> bool:
        return self._lent is not None and self._lent[0].retracted

    def _lend(self, parsed: BulkGCode,
              row: int) -> tuple[np.ndarray, np.ndarray, PlanError | None] | None:
        """Run line `row` on the interpreter, its toolhead's moves in the kernel's queue:
        (moves emitted, their lines, the line's error or None); None if the recorder
        cannot express what the command asked of the toolhead."""
        cmd = parsed.command(row)
        no_moves = (np.zeros((0, N_MOVE_COLUMNS)), np.zeros(0, dtype=np.int64))
        if cmd is None:
            return (*no_moves, None)
        if cmd.name == "M112":
            return (*no_moves, PlanError(cmd.lineno, "emergency stop (M112)"))
        if self._lent is None:
            self._lent = self._new_interpreter()
        interp, toolhead, recorder = self._lent
        before = self._state.copy()
        inches, retracted = self._inches(), self._retracted()
        _put_in_state(before, interp, toolhead, inches, retracted)
        recorder.reset(float(before[S_ACCEL]))
        refused: PlanError | None = None
        try:
            interp.execute(cmd)     # a wait (M191) has nothing to wait for in a plan
        except CommandError as exc:
            # What the command queued before it failed (the first segments of an arc)
            # is queued on the Python path too: it still goes to the kernel.
            refused = PlanError(cmd.lineno, str(exc))
        if recorder.unexpressed is not None:
            log.warning("line %d: %s asks the toolhead to %s, which the compiled planner "
                        "cannot queue; using the interpreter", cmd.lineno, cmd.name,
                        recorder.unexpressed)
            return None
        n = len(recorder.rows)
        if not n:
            if refused is None:
                self._take_state(interp, toolhead)
            return (*no_moves, refused)
        ops = np.empty(n, dtype=np.int8)
        params = np.full((n, len(PARAM_LETTERS)), np.nan)
        for k, (op, values) in enumerate(recorder.rows):
            ops[k] = op
            for column, value in values.items():
                params[k, column] = value
        moves, lines, failed = self._planner.run(ops, params, np.full(n, cmd.lineno))
        if failed >= 0:
            message = _replay_error(parsed, row, self.settings, before, inches, retracted)
            if message is None:
                log.warning("line %d: the compiled planner refused a move the "
                            "interpreter accepts; using the interpreter", cmd.lineno)
                return None
            return moves, lines, PlanError(cmd.lineno, message)
        if refused is None:
            self._take_state(interp, toolhead)
        return moves, lines, refused

    def _take_state(self, interp: GCodeInterpreter, toolhead: Toolhead) -> None:
        """The interpreter's and the toolhead's state after a lent command, into the kernel's."""
        self._planner.take_from(toolhead, interp.state)

    def _new_interpreter(self) -> tuple[GCodeInterpreter, Toolhead, _MoveRecorder]:
        from printhost.control.clock import ManualClock
        from printhost.sim.heaters import build_simulated_heaters

        settings = self.settings
        recorder = _MoveRecorder()
        executor = QueueClockExecutor(0.0, (0.0, 0.0, 0.0, 0.0))
        toolhead = Toolhead(settings.printer, executor, settings.extruder, planner=recorder)
        heaters, _ = build_simulated_heaters(settings, ManualClock())
        interp = GCodeInterpreter(toolhead, heaters, PartFan(), executor.now, settings.gcode,
                                  settings.firmware_retraction)
        return interp, toolhead, recorder

    def finish(self) -> PlanResult:
        """The moves still in the lookahead queue, after the last piece."""
        if self.failed:
            raise RuntimeError("the plan stream stopped at an error")
        moves, lines, _ = self._planner.run(np.zeros(0, dtype=np.int8),
                                            np.zeros((0, len(PARAM_LETTERS))),
                                            np.zeros(0, dtype=np.int64), final=True)
        return self._result(moves, lines, None)

    def _result(self, moves: np.ndarray, lineno: np.ndarray,
                error: PlanError | None) -> PlanResult:
        s = self._state.tolist()
        return PlanResult(
            moves=moves, lineno=lineno,
            position=(s[S_POSITION], s[S_POSITION + 1], s[S_POSITION + 2], s[S_POSITION + 3]),
            homed_axes="".join(a for i, a in enumerate("xyz") if s[S_HOMED + i]), error=error)


def plan_file(parsed: BulkGCode, settings: Settings,
              start_position: Sequence[float]) -> PlanResult | None:
    """Plan a parsed file as `printhost batch`'s Python path would; None if the file
    uses anything the kernel does not cover (the caller then runs the Python path).

    `start_position` is the toolhead position before the file, (x, y, z) or
    (x, y, z, e); E defaults to 0. Homing state and offsets start cleared, the
    acceleration at `printer.max_accel`, as for a fresh Toolhead and interpreter.
    """
    return PlanStream(settings, start_position).feed(parsed, final=True)


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernels, so the first file does not wait."""
    from printhost.control.gcode_bulk import parse_bytes

    program = b"G28\nG1 X10 Y10 F6000\nG1 X20 E1\nG4 P10\nM204 S1000\nG1 Y20\nM84\n"
    plan_file(parse_bytes(program), Settings(), (0.0, 0.0, 0.0))
