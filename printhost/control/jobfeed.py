"""A print file fed to the printer: pieces of whole lines, planned in the compiled loop.

A job's file goes through the same pipeline as `printhost batch`: each piece is parsed
in one pass (`gcode_bulk`) and turned into operation rows (`plan_ops.operations`), and
runs of motion rows (moves, dwells, modes, `G92`, `M204`, `M220`/`M221`) execute in
the compiled interpreter loop straight into the toolhead's lookahead queue
(`kernels.lookahead.CompiledPlanner`). Everything else runs on the printer's
interpreter at its place in the stream, in order: heaters and their waits, fans,
homing (a wait on an MCU), `M400`, `M84`, arcs, firmware retraction, inches, the
chamber, the power supply, and unknown commands (logged once, as for the console).
The interpreter's G-code state and the toolhead's position are put into the kernel
before a run and taken back after it, so between ticks they are where a pause, the
console or the API expect them.

The feed reads ahead only while less than `buffer_time_s` of motion is queued, as
before; the number of rows in one run follows the print time recent rows added, so a
run of long moves cannot overshoot the buffer by much. A failing line stops the feed
with the interpreter's own message: a line the kernel refuses is executed on the
interpreter, which raises exactly what it raises for the console (and if it accepts
the line, the two disagree: it is logged, and the interpreter's result stands).
"""

from __future__ import annotations

import logging
from typing import IO, Callable

import numpy as np

from printhost.control.gcode import GCodeCommand
from printhost.control.gcode_bulk import BulkGCode, iter_pieces
from printhost.control.interpreter import CommandError, GCodeInterpreter, Wait
from printhost.control.kernels.plan_ops import (OP_ABSOLUTE, OP_ACCEL, OP_DWELL,
                                                OP_E_ABSOLUTE, OP_E_RELATIVE,
                                                OP_EXTRUDE_FACTOR, OP_MOVE, OP_NOTHING,
                                                OP_RELATIVE, OP_SET_POSITION, OP_SKIP,
                                                OP_SPEED_FACTOR, S_POSITION, operations)
from printhost.control.toolhead import Toolhead

log = logging.getLogger(__name__)

#: Bytes read and parsed at a time (about a thousand slicer lines).
PIECE_BYTES = 1 << 15
#: Rows one tick may handle, and how many of them may be commands for the interpreter,
#: so that a file of comments or of heater commands cannot starve the control loop.
MAX_ROWS_PER_TICK = 4000
MAX_COMMANDS_PER_TICK = 400
#: Rows in one kernel run at most, and in the first run of a job.
MAX_RUN_ROWS = 256
FIRST_RUN_ROWS = 8

# Operations the compiled loop runs for a live print. The rest touch the world outside
# the motion plan (heaters, fans, homing on an MCU, waits) or are not ported.
_KERNEL_OPS = np.array([OP_SKIP, OP_MOVE, OP_DWELL, OP_ABSOLUTE, OP_RELATIVE, OP_E_ABSOLUTE,
                        OP_E_RELATIVE, OP_SET_POSITION, OP_ACCEL, OP_SPEED_FACTOR,
                        OP_EXTRUDE_FACTOR], dtype=np.int8)
#: Pieces where more than this share of the moves name Z (spiral vase mode: every
#: move climbs) are not cut at Z moves.
VASE_SHARE = 0.75
_NO_ROWS = np.zeros(0, dtype=np.int64)
# While inches are in force (G20, known only to the interpreter) these go to it too.
_INCH_OPS = np.array([OP_MOVE, OP_SET_POSITION, OP_NOTHING], dtype=np.int8)


class LineError(Exception):
    """A command of the file failed: the job stops at `lineno` with `message`."""

    def __init__(self, lineno: int, message: str) -> None:
        super().__init__(message)
        self.lineno = lineno
        self.message = message


class EmergencyStop(Exception):
    """M112 in a file: the printer must shut down at once."""


class _Piece:
    """One parsed piece and where the feed is in it."""

    def __init__(self, parsed: BulkGCode, base_offset: int) -> None:
        self.parsed = parsed
        ops, params, stop_row, parse_error = operations(parsed)
        self.ops = ops
        self.params = params
        self.stop_row = stop_row
        self.parse_error = parse_error
        self.lines = parsed.lineno
        self.offsets = parsed.offset + base_offset
        head = ops[:stop_row]
        interp = ~np.isin(head, _KERNEL_OPS)
        # Unknown commands go to the interpreter, which logs them once.
        for row, result in parsed.fallback.items():
            if row < stop_row and isinstance(result, GCodeCommand) and not result.known:
                interp[row] = True
        self.interp_rows = np.flatnonzero(interp)
        self.inch_rows = np.flatnonzero(interp | np.isin(head, _INCH_OPS))
        # Moves that name Z: a run starts at each (a checkpoint boundary), so Z never
        # changes inside a run except at its first row. A piece where nearly every move
        # names Z (spiral vase mode) is not cut: it would be a run per row; such a
        # piece has no resume point.
        z_rows = np.flatnonzero((head == OP_MOVE) & ~np.isnan(params[:stop_row, 2]))
        moves = int(np.count_nonzero(head == OP_MOVE))
        self.z_rows = z_rows if len(z_rows) <= VASE_SHARE * moves else _NO_ROWS
        self.base_offset = base_offset
        self.row = 0

    def start_offset(self, r: int) -> int:
        """The file offset where row `r`'s line begins."""
        return int(self.offsets[r - 1]) if r > 0 else self.base_offset


class JobFeed:
    """Feeds one open G-code file to the interpreter and the compiled planner."""

    def __init__(self, fh: IO[bytes], interp: GCodeInterpreter, toolhead: Toolhead,
                 buffer_time_s: float, *, first_line: int = 1,
                 on_boundary: Callable[[int, int, int], None] | None = None) -> None:
        """Read `fh` from where it stands; `first_line` is the number of the line there
        (a job resumed from a checkpoint). `on_boundary(offset, line, row_z)` is called
        before each run that starts with a move naming Z, in absolute coordinates, with
        the file offset and number of that line: the state of the interpreter and the
        toolhead then is exactly the state to restart the file from there."""
        self._fh = fh
        self.on_boundary = on_boundary
        self.interp = interp
        self.toolhead = toolhead
        self.planner = toolhead.planner
        self.buffer_time_s = buffer_time_s
        self.eof = False
        # The last line handled and the byte offset just after it.
        self.line = first_line - 1
        self.bytes_read = fh.tell()
        self._pieces = iter_pieces(fh, PIECE_BYTES, first_line=first_line,
                                   base_offset=self.bytes_read)
        self._piece: _Piece | None = None
        self._run_rows = FIRST_RUN_ROWS

    def z_target(self, row: int) -> float:
        """The machine Z that row `row` of the current piece moves to (absolute)."""
        piece = self._piece
        assert piece is not None
        value = float(piece.params[row, 2])
        if self.interp.state.inch_units:
            value *= 25.4
        return value + self.interp.state.offset[2]

    # ------------------------------------------------------------------ reading
    def _next_piece(self) -> bool:
        """Read and parse the next piece of whole lines; False at the end of the file."""
        got = next(self._pieces, None)
        if got is None:
            return False
        self._piece = _Piece(*got)
        return True

    # ------------------------------------------------------------------ feeding
    def feed(self) -> tuple[Wait, GCodeCommand] | None:
        """Handle rows until the buffer is full, a command waits, the tick's share is
        used, or the file ends (`eof`, everything flushed). Returns the wait and its
        command when one waits. Raises GCodeError (a line that cannot be parsed),
        LineError (a command failed) or EmergencyStop (M112)."""
        rows = commands = 0
        while rows < MAX_ROWS_PER_TICK and commands < MAX_COMMANDS_PER_TICK:
            buffered = self.toolhead.buffered_time()
            if buffered >= self.buffer_time_s:
                return None
            piece = self._piece
            if piece is None or piece.row >= len(piece.ops):
                if not self._next_piece():
                    self.eof = True
                    self.toolhead.flush()
                    return None
                continue
            r = piece.row
            special = piece.inch_rows if self.interp.state.inch_units else piece.interp_rows
            k = int(np.searchsorted(special, r))
            next_command = int(special[k]) if k < len(special) else piece.stop_row
            if r < next_command:
                n = min(next_command - r, self._run_rows)
                z_rows = piece.z_rows
                if len(z_rows):
                    k = int(np.searchsorted(z_rows, r))
                    at_z = k < len(z_rows) and z_rows[k] == r
                    if at_z and self.on_boundary is not None \
                            and self.interp.state.absolute_coords:
                        self.on_boundary(piece.start_offset(r), int(piece.lines[r]), r)
                    k += at_z
                    if k < len(z_rows):
                        n = min(n, int(z_rows[k]) - r)
                self._run(piece, r, n, buffered)
                rows += n
                continue
            if r == piece.stop_row:
                assert piece.parse_error is not None
                self.line = piece.parse_error.lineno
                raise piece.parse_error
            rows += 1
            commands += 1
            wait = self._command(piece, r)
            if wait is not None:
                return wait
        return None

    def _run(self, piece: _Piece, r: int, n: int, buffered_before: float) -> None:
        """Rows [r, r + n) through the compiled loop."""
        interp, toolhead, planner = self.interp, self.toolhead, self.planner
        planner.take_from(toolhead, interp.state)
        e_before = float(planner.state[S_POSITION + 3])
        _, _, failed = planner.run(piece.ops[r:r + n], piece.params[r:r + n],
                                   piece.lines[r:r + n])
        interp.state = planner.give_to(toolhead, interp.state.inch_units)
        interp.filament_used_mm += float(planner.state[S_POSITION + 3]) - e_before
        done = n if failed < 0 else failed
        if done:
            self._mark(piece, r + done - 1)
        piece.row = r + done
        # Size the next run by the print time these rows added (a run of long moves
        # must not overshoot the buffer by much; comments and G92s add none).
        added = toolhead.buffered_time() - buffered_before
        if done and added > 0.0:
            room = self.buffer_time_s - buffered_before
            wanted = int(room * done / added) + 1
        else:
            wanted = MAX_RUN_ROWS
        self._run_rows = max(1, min(MAX_RUN_ROWS, wanted, 2 * self._run_rows + FIRST_RUN_ROWS))
        if failed >= 0:
            # The interpreter gives the reference's message (or, disagreeing, runs it).
            wait = self._command(piece, r + failed, refused=True)
            assert wait is None, "the kernel refused a command that waits"

    def _command(self, piece: _Piece, r: int,
                 refused: bool = False) -> tuple[Wait, GCodeCommand] | None:
        """Row `r` on the interpreter."""
        cmd = piece.parsed.command(r)
        piece.row = r + 1
        self._mark(piece, r)
        if cmd is None:
            return None
        if cmd.name == "M112":
            raise EmergencyStop(f"emergency stop (M112) at line {cmd.lineno}")
        try:
            wait = self.interp.execute(cmd)
        except CommandError as exc:
            raise LineError(cmd.lineno, str(exc)) from None
        if refused:
            log.warning("line %d: the compiled planner refused a line the interpreter "
                        "accepts; the interpreter's result stands", cmd.lineno)
        return (wait, cmd) if wait is not None else None

    def _mark(self, piece: _Piece, r: int) -> None:
        self.line = int(piece.lines[r])
        self.bytes_read = int(piece.offsets[r])


__all__ = ["EmergencyStop", "JobFeed", "LineError"]
