"""From planned moves to per-stepper `queue_step` commands, incrementally.

`StepStream` keeps the move-segment arrays of the toolhead and the extruder, and for
each stepper the commanded step position, the steps generated but not yet compressed,
and the clock and direction of the last step sent. `generate(until)` turns everything
up to print time `until` into MCU commands:

1. step times for [done, until - margin) from the stepgen kernel, where the margin is
   how far ahead the stepper's position depends on motion (input shaper pulses,
   pressure advance smoothing), so no step is computed before its motion is known;
2. conversion to MCU ticks;
3. compression into (interval, count, add) triples, holding back the tail whose best
   compression depends on steps not generated yet.

The commands of all steppers come back merged in clock order as one `StepCommands`,
a set of parallel arrays, because a print makes hundreds of thousands of them and
the encoder (`printhost.mcu.fastencode`) takes arrays.

The same object serves `printhost batch` (all at once, written to a file) and the
control process (chunk by chunk, sent to an MCU), which is why it never looks at a
clock of its own: the caller decides how far to generate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np

from printhost.control.kernels import trapq
from printhost.control.kernels.stepcompress import Commands, compress_steps
from printhost.control.kernels.steppers import (DEFAULT_STEP_CAPACITY, EXTRUDER, StepperModel,
                                                commanded_position, generate_steps)
from printhost.control.motion import PlannedMove, Vec4


# Callers' sums of move durations may differ from the segment times by rounding.
SNAP_S = 1e-6
# Generated past the end of the motion when finishing, so no trailing step is missed.
FINAL_PAD_S = 0.001
# A call asked for steps up to the very end of the motion known so far (a batch chunk
# ends there) stops this much short of it; the next call (or the final one) makes the
# rest. The position at that end is read off the last segment's polynomial, and once
# the next segment arrives, off that segment's exact start: the two can differ by
# rounding, and where the position lies on a half-step point (a slicer's X122.375 at
# 100 steps/mm) they put it on different sides of it. A step decided by the first
# reading and undone by the second was lost or doubled for good: tests/data/cube.gcode
# in 5 s chunks at 100 steps/mm ended 6 steps off in X.
KNOWN_END_GUARD_S = 1e-6


#: Values of `StepCommands.kind`.
QUEUE_STEP = 0
SET_NEXT_STEP_DIR = 1
#: The firmware message each kind is sent as.
KIND_NAMES = ("queue_step", "set_next_step_dir")


@dataclass(frozen=True, eq=False)
class StepCommands:
    """MCU commands for steppers as parallel arrays, one row per command, in send order.

    Rows are sorted by `clock` (the tick of the command's first step). Each row is a
    `queue_step` (`interval`, `count`, `add` set, `dir` 0) or a `set_next_step_dir`
    (`dir` 0/1 set, the others 0) according to `kind`. Arrays rather than one object
    per command, because a print produces hundreds of thousands of them and the
    encoder consumes arrays directly.
    """

    clock: np.ndarray     # int64
    kind: np.ndarray      # int8: QUEUE_STEP or SET_NEXT_STEP_DIR
    oid: np.ndarray       # int64
    interval: np.ndarray  # uint32
    count: np.ndarray     # uint16
    add: np.ndarray       # int16
    dir: np.ndarray       # int8

    def __len__(self) -> int:
        return int(self.clock.shape[0])

    @classmethod
    def empty(cls) -> StepCommands:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros(0, np.int64),
                   np.zeros(0, np.uint32), np.zeros(0, np.uint16), np.zeros(0, np.int16),
                   np.zeros(0, np.int8))

    def rows(self, first: int, end: int) -> StepCommands:
        """Rows [first, end), as views of these arrays."""
        return StepCommands(*(getattr(self, f)[first:end] for f in _FIELDS))

    def messages(self) -> list[tuple[str, dict[str, int]]]:
        """Each row as (message name, parameters), for logs and the Python codec."""
        out: list[tuple[str, dict[str, int]]] = []
        for i in range(len(self)):
            oid = int(self.oid[i])
            if self.kind[i] == QUEUE_STEP:
                out.append((KIND_NAMES[QUEUE_STEP],
                            {"oid": oid, "interval": int(self.interval[i]),
                             "count": int(self.count[i]), "add": int(self.add[i])}))
            else:
                out.append((KIND_NAMES[SET_NEXT_STEP_DIR],
                            {"oid": oid, "dir": int(self.dir[i])}))
        return out


_FIELDS = tuple(f.name for f in fields(StepCommands))


def channel_commands(oid: int, cmds: Commands) -> StepCommands:
    """One stepper's compressed steps as rows, a `set_next_step_dir` before each
    `queue_step` that changes direction (both on that command's first clock)."""
    n = len(cmds.count)
    turns = cmds.set_dir != 0
    # Row of each queue_step once the direction rows are slotted in before them.
    q_rows = np.arange(n, dtype=np.int64) + np.cumsum(turns, dtype=np.int64)
    d_rows = q_rows[turns] - 1
    total = n + int(np.count_nonzero(turns))
    clock = np.empty(total, np.int64)
    clock[q_rows] = cmds.first_clock
    clock[d_rows] = cmds.first_clock[turns]
    kind = np.full(total, QUEUE_STEP, np.int8)
    kind[d_rows] = SET_NEXT_STEP_DIR
    interval = np.zeros(total, np.uint32)
    interval[q_rows] = cmds.interval
    count = np.zeros(total, np.uint16)
    count[q_rows] = cmds.count
    add = np.zeros(total, np.int16)
    add[q_rows] = cmds.add
    direction = np.zeros(total, np.int8)
    direction[d_rows] = cmds.set_dir[turns] > 0
    return StepCommands(clock, kind, np.full(total, oid, np.int64), interval, count, add,
                        direction)


def merge_commands(parts: list[StepCommands]) -> StepCommands:
    """All parts in clock order; equal clocks keep the parts' order and each part's own.

    The stable sort is what lets the caller decide ties: steppers in configuration
    order, and a direction change ahead of the `queue_step` it applies to.
    """
    parts = [p for p in parts if len(p)]
    if not parts:
        return StepCommands.empty()
    joined = [np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS]
    order = np.argsort(joined[0], kind="stable")
    return StepCommands(*(column[order] for column in joined))


@dataclass
class StepperChannel:
    name: str
    oid: int
    model: StepperModel
    position: int
    done_until: float
    last_clock: int = 0
    last_dir: int = 0
    pending_clocks: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    pending_dirs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    queue_steps: int = 0
    steps: int = 0
    dir_changes: int = 0
    # Output size for the next generate_steps call: 1.25 x the most steps one call has
    # returned, so ranges of the usual length fit the first buffer and the kernel runs once.
    step_capacity: int = DEFAULT_STEP_CAPACITY

    @property
    def is_extruder(self) -> bool:
        return self.model.kind == EXTRUDER


def _rest_row(pos: Vec4, t: float, extruder: bool) -> np.ndarray:
    """A zero-length segment at rest: used to read the commanded step at the start."""
    row = np.zeros((1, trapq.N_COLUMNS), dtype=np.float64)
    row[0, trapq.PRINT_TIME] = t
    if extruder:
        row[0, trapq.START_X] = pos[3]
    else:
        row[0, trapq.START_X:trapq.START_Z + 1] = pos[:3]
    return row


def row_end(row: np.ndarray, col: int) -> float:
    """Coordinate `col` where a segment row ends, by its own polynomial: the value the
    step kernels hold after the last row (`position.held_value`), by the same float
    operations in the same order, so the two agree to the bit (tested). Computed here
    rather than by calling the compiled function, which the control process would
    compile in the middle of a print."""
    mt = float(row[trapq.MOVE_T])
    return (float(row[trapq.START_X + col]) + float(row[trapq.AXES_R_X + col])
            * ((float(row[trapq.START_V]) + float(row[trapq.HALF_ACCEL]) * mt) * mt))


class StepStream:
    def __init__(self, models: dict[str, StepperModel], oids: dict[str, int],
                 clock_freq: float, max_error_s: float, start_position: Vec4,
                 start_time: float) -> None:
        self.clock_freq = float(clock_freq)
        self.max_error_ticks = max_error_s * self.clock_freq
        self.channels: list[StepperChannel] = []
        for name, model in models.items():
            ext = model.kind == EXTRUDER
            # Shaping and pressure-advance smoothing make a stepper move up to its
            # margins *before* the motion that causes it: start generating that early.
            before, after = model.margins()
            first = start_time - before - after
            pos = commanded_position(_rest_row(start_position, start_time, ext), model, first)
            self.channels.append(StepperChannel(name, oids[name], model, pos, first))
        self._tool = np.zeros((0, trapq.N_COLUMNS), dtype=np.float64)
        self._ext = np.zeros((0, trapq.N_COLUMNS), dtype=np.float64)
        self._tool_chunks: list[np.ndarray] = []
        self._ext_chunks: list[np.ndarray] = []
        self._t_end = start_time
        # Optional observer of every generated step, before compression: the simulated
        # printer moves its steppers by them.
        self.step_tap = None
        self._lookback = max(max(ch.model.margins()) for ch in self.channels) if self.channels else 0.0

    # ------------------------------------------------------------------ input
    def _start(self, start_time: float) -> float:
        """A start within `SNAP_S` of where the previous moves ended is taken as exactly
        that end: callers add durations in their own order, and rows must meet at
        bitwise-equal times (a start a few ulps early would overlap the last row)."""
        if abs(start_time - self._t_end) < SNAP_S or start_time < self._t_end:
            return self._t_end
        return start_time

    def _append(self, tool: np.ndarray, ext: np.ndarray, end: float) -> float:
        if len(tool):
            self._fill_gap(float(tool[0, trapq.PRINT_TIME]))
            self._tool_chunks.append(tool)
            self._ext_chunks.append(ext)
        self._t_end = end
        return end

    def _fill_gap(self, start: float) -> None:
        """Before motion that starts after a pause, a row at rest from where the motion
        before it ended, at the position its last row ends at by its own polynomial.

        Without it the position in the pause would be read off the new motion's
        exact start once that is known, and off the last row's end before: steps
        made for the pause in between (a printer at rest while a heater reaches its
        target) would rest on one reading and the steps after on the other, which a
        half-step point between them turns into a step lost or doubled for good."""
        tool = self._tool_chunks[-1] if self._tool_chunks else self._tool
        if not len(tool):
            return
        ext = self._ext_chunks[-1] if self._ext_chunks else self._ext
        # From the last row's end: a dwell adds time but no rows, and steps may have been
        # made into it before the motion after it was known.
        gap_start = trapq.end_time(tool)
        if start - gap_start <= SNAP_S:
            return
        rest = np.zeros((1, trapq.N_COLUMNS), dtype=np.float64)
        rest[0, trapq.PRINT_TIME] = gap_start
        rest[0, trapq.MOVE_T] = start - gap_start
        rest_ext = rest.copy()
        for col in range(3):
            rest[0, trapq.START_X + col] = row_end(tool[-1], col)
        rest_ext[0, trapq.START_X] = row_end(ext[-1], 0)
        self._tool_chunks.append(rest)
        self._ext_chunks.append(rest_ext)

    def add_moves(self, moves: list[PlannedMove], start_time: float) -> float:
        """Append moves played back to back from `start_time`; returns their end time."""
        start_time = self._start(start_time)
        if not moves:
            return start_time
        tool = trapq.toolhead_segments(moves, start_time)
        ext = trapq.extruder_segments(moves, start_time)
        # Accumulate the end the way the segment builder accumulates row times.
        t = start_time
        for m in moves:
            if m.distance <= 0.0:
                t += m.duration
                continue
            for phase in (m.accel_t, m.cruise_t, m.decel_t):
                if phase > 0.0:
                    t += phase
        return self._append(tool, ext, t)

    def add_move_rows(self, rows: np.ndarray, start_time: float) -> float:
        """`add_moves` for the compiled planner's move rows (no Python loop per move)."""
        start_time = self._start(start_time)
        if not len(rows):
            return start_time
        tool, ext, end = trapq.segments_from_move_rows(rows, start_time)
        return self._append(tool, ext, end)

    def truncate(self, t: float) -> None:
        """Forget motion from print time `t` on (moves dropped by an abort).

        Only motion whose steps were not generated yet may be dropped; the caller
        keeps everything it already committed.
        """
        tool, ext = self._segments()
        n = int(np.searchsorted(tool[:, trapq.PRINT_TIME], t, side="left")) if len(tool) else 0
        self._tool = tool[:n]
        self._ext = ext[:n]
        # Later moves continue from where the kept motion really ends (its own sums).
        self._t_end = min(self._t_end, t)
        if n:
            self._t_end = max(self._t_end, trapq.end_time(self._tool))

    def _segments(self) -> tuple[np.ndarray, np.ndarray]:
        if self._tool_chunks:
            self._tool = np.concatenate([self._tool, *self._tool_chunks])
            self._ext = np.concatenate([self._ext, *self._ext_chunks])
            self._tool_chunks.clear()
            self._ext_chunks.clear()
        return self._tool, self._ext

    # ------------------------------------------------------------------ output
    def generate(self, until: float, final: bool = False, hold_s: float = 0.0) -> StepCommands:
        """Commands for every step up to print time `until` (all of them when `final`).

        They come in clock order; on equal clocks steppers keep their configuration
        order and a `set_next_step_dir` precedes the `queue_step` it belongs to.

        With `hold_s`, steps are generated up to `until` but compressed only up to
        `until - hold_s`: the command that reaches that point is formed with the
        following steps in view instead of ending at the last step generated, so a
        live print cut into short slices sends no more commands than one planned at
        once. The held steps go out with a later call (or the final one).
        """
        tool, ext = self._segments()
        if not final and len(tool):
            known_end = trapq.end_time(tool)
            if abs(until - known_end) <= KNOWN_END_GUARD_S:
                until = known_end - KNOWN_END_GUARD_S
        out: list[StepCommands] = []
        for ch in self.channels:
            segs = ext if ch.is_extruder else tool
            before, after = ch.model.margins()
            if final:
                # Shaped motion runs on after the last segment by the shaper's delays.
                t1 = trapq.end_time(segs) + before + after + FINAL_PAD_S if len(segs) else -math.inf
            else:
                t1 = until - after
            if len(segs) and t1 > ch.done_until:
                win = trapq.window(segs, ch.done_until, t1, before, after)
                batch = generate_steps(win, ch.model, ch.done_until, t1, ch.position,
                                       ch.step_capacity)
                ch.step_capacity = max(ch.step_capacity, math.ceil(1.25 * len(batch.times)))
                ch.position = batch.position
                ch.done_until = t1
                if self.step_tap is not None and len(batch.times):
                    self.step_tap(ch, batch.times, batch.dirs)
                if len(batch.times):
                    ch.pending_clocks = np.concatenate([ch.pending_clocks,
                                                        batch.times * self.clock_freq])
                    ch.pending_dirs = np.concatenate([ch.pending_dirs, batch.dirs])
            part = self._compress(ch, None if final else int((t1 - hold_s) * self.clock_freq))
            if part is not None:
                out.append(part)
        self._trim()
        return merge_commands(out)

    def _compress(self, ch: StepperChannel, until: int | None) -> StepCommands | None:
        if not len(ch.pending_clocks):
            return None
        cmds = compress_steps(ch.pending_clocks, ch.pending_dirs, ch.last_clock,
                              self.max_error_ticks, ch.last_dir, until)
        out = channel_commands(ch.oid, cmds)
        ch.dir_changes += int(np.count_nonzero(cmds.set_dir))
        ch.queue_steps += len(cmds.count)
        ch.steps += cmds.consumed
        ch.last_clock = cmds.last_clock
        ch.last_dir = cmds.last_dir
        ch.pending_clocks = ch.pending_clocks[cmds.consumed:]
        ch.pending_dirs = ch.pending_dirs[cmds.consumed:]
        return out

    def _trim(self) -> None:
        """Drop segments no stepper will read again, so memory stays flat on long prints."""
        if not len(self._tool) or not self.channels:
            return
        oldest = min(ch.done_until for ch in self.channels) - self._lookback
        ends = self._tool[:, trapq.PRINT_TIME] + self._tool[:, trapq.MOVE_T]
        keep_from = max(0, int(np.searchsorted(ends, oldest, side="left")) - 2)
        if keep_from > 4096:
            self._tool = self._tool[keep_from:].copy()
            self._ext = self._ext[keep_from:].copy()

    def summary(self) -> dict[str, dict[str, int]]:
        return {ch.name: {"oid": ch.oid, "queue_step": ch.queue_steps, "steps": ch.steps,
                          "set_next_step_dir": ch.dir_changes, "position": ch.position}
                for ch in self.channels}
