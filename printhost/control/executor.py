"""The printer's motion executor: planned moves on a timeline, turned into steps.

`TimelineExecutor` schedules planned moves on a timeline of print time a lead time
ahead of now (the time the host needs to get steps to the MCU before they are due).
`StepFollowingExecutor` extends it with the step pipeline (move segments, the compiled
step generator, the step compressor) and hands the commands to the MCU's step sender;
its position is the one the steppers have reached by now, converted back through the
kinematics. The same executor drives a real board, the simulated MCU and the
in-process simulated printer: only the clock and where the commands go differ.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from printhost.config import Settings
from printhost.control.clock import Clock
from printhost.control.kernels.steppers import (COREXY_A, COREXY_B, StepperModel,
                                                models_from_settings)
from printhost.control.motion import PlannedMove, Vec4
from printhost.control.stepstream import StepCommands, StepperChannel, StepStream

# Step times are compressed against this MCU clock when no MCU gives its own (the
# in-process simulated printer and unit tests): 72 MHz, an STM32F103's, as the
# simulated MCU and the SKR mini E3 run.
DEFAULT_CLOCK_FREQ = 72_000_000
# Steps are generated in slices of this much print time (a quarter of the lead at most).
# Each call costs about 0.25 ms beyond its steps: on tests/data/cube.gcode at time factor
# 1, slices of 0.05 s cost the control process 78.6 CPU-ms per print-second, 0.25 s 41.8.
GENERATE_SLICE_S = 0.25
# The newest steps of a slice, this much print time (a tenth of the lead at most), are
# compressed with the next one, so the command that reaches a slice's end sees the
# steps after it (StepStream.generate's `hold_s`): 0.25 s slices holding 0.1 s send 1 %
# more commands than the file planned at once, 0.05 s slices holding nothing 24 % more.
COMPRESS_HOLD_S = 0.1
TRUNCATE_MARGIN_S = 1e-6


class TimelineExecutor:
    """`MotionExecutor` that places moves on a timeline of print time, a lead time
    ahead of now, and reads the toolhead position off the move running at any instant.

    Abort behaves like the hardware: a move already executing cannot be cut short
    without losing track of the position, so it finishes and only later moves are
    dropped. `StepFollowingExecutor` below adds the steps; on its own this class is a
    plain model of the toolhead.

    `on_move_started(start_time, move)` is called from `update()` (and the other
    methods that advance to `now()`) once for each move whose start time has been
    reached, in order; moves dropped by `abort()` before starting are never reported.
    Tests use it to record what the printer actually did.
    """

    def __init__(self, clock: Clock, lead_time_s: float = 0.1,
                 start_position: Vec4 = (0.0, 0.0, 0.0, 0.0),
                 on_move_started: Callable[[float, PlannedMove], None] | None = None) -> None:
        if lead_time_s < 0.0:
            raise ValueError("lead_time_s must not be negative")
        self._clock = clock
        self.lead_time_s = lead_time_s
        self.on_move_started = on_move_started
        self._moves: deque[tuple[float, PlannedMove]] = deque()
        self._front_announced = False   # on_move_started already called for _moves[0]
        self._position: Vec4 = tuple(float(c) for c in start_position)  # type: ignore[assignment]
        self._end_time = clock.now()

    def now(self) -> float:
        return self._clock.now()

    def earliest_start(self) -> float:
        """The soonest a move scheduled now may start: a lead time ahead of now."""
        return self._clock.now() + self.lead_time_s

    def schedule(self, move: PlannedMove) -> None:
        start = max(self._end_time, self.earliest_start())
        self._moves.append((start, move))
        self._end_time = start + move.duration

    def queue_end_time(self) -> float:
        return self._end_time

    def rebase(self, position: Vec4) -> None:
        """Forget all motion and take `position` as where the toolhead is, now."""
        self._moves.clear()
        self._front_announced = False
        self._end_time = self._clock.now()
        self._position = tuple(float(c) for c in position)  # type: ignore[assignment]

    def update(self) -> None:
        now = self._clock.now()
        moves = self._moves
        while moves:
            start, move = moves[0]
            if start > now:
                break
            # Only the front move can be running: the next starts when it ends.
            if not self._front_announced:
                self._front_announced = True
                if self.on_move_started is not None:
                    self.on_move_started(start, move)
            if start + move.duration > now:
                self._position = move.position_at(now - start)
                break
            moves.popleft()
            self._front_announced = False
            self._position = move.end

    def position(self) -> Vec4:
        self.update()
        return self._position

    def is_idle(self) -> bool:
        self.update()
        return not self._moves

    def set_position(self, pos: Vec4) -> None:
        if not self.is_idle():
            raise RuntimeError("set_position while moves are still scheduled")
        self._position = tuple(float(c) for c in pos)  # type: ignore[assignment]

    def abort(self) -> Vec4:
        """Drop every move that has not started; return where the running one will end.
        A running dwell ends now: it holds no motion to lose track of."""
        self.update()
        now = self._clock.now()
        if self._moves and self._moves[0][0] <= now:
            running = _cut_dwell(self._moves.popleft(), now)
            self._moves.clear()
            self._moves.append(running)
            self._end_time = running[0] + running[1].duration
            return running[1].end
        self._moves.clear()
        self._front_announced = False
        self._end_time = min(self._end_time, now)
        return self._position


def _cut_dwell(entry: tuple[float, PlannedMove], at: float) -> tuple[float, PlannedMove]:
    """The scheduled move `entry`, or, when it is a dwell still running at `at`, the part
    of it before `at`."""
    start, move = entry
    if move.distance == 0.0 and move.start == move.end and start + move.duration > at:
        return start, PlannedMove.dwell(move.start, max(0.0, at - start))
    return entry


class _ExecutedSteps:
    """Steps of one stepper not yet reached by the clock, and the position before them."""

    def __init__(self, position: int) -> None:
        self.position = position
        self._chunks: deque[tuple[np.ndarray, np.ndarray]] = deque()

    def add(self, base: int, times: np.ndarray, dirs: np.ndarray) -> None:
        self._chunks.append((times, base + np.cumsum(dirs, dtype=np.int64)))

    def at(self, now: float) -> int:
        """Commanded step position after every step at or before `now`."""
        chunks = self._chunks
        while chunks and chunks[0][0][-1] <= now:
            self.position = int(chunks.popleft()[1][-1])
        if chunks:
            times, cum = chunks[0]
            i = int(np.searchsorted(times, now, side="right"))
            if i:
                return int(cum[i - 1])
        return self.position


class StepFollowingExecutor(TimelineExecutor):
    """The printer's motion executor: the timeline above, run through the step pipeline.

    Every scheduled move becomes move segments, step times (compiled step generator)
    and compressed `queue_step` commands, generated a lead time ahead of now and handed
    to `on_commands` (the MCU's step sender on a printer; kept local in the in-process
    simulated printer and in tests). `position()` is where the steppers have taken the
    toolhead by now, so status shows what the motors do with the commands sent,
    including step rounding, input shaping and pressure advance.
    """

    def __init__(self, clock: Clock, settings: Settings, lead_time_s: float = 0.1,
                 start_position: Vec4 = (0.0, 0.0, 0.0, 0.0),
                 on_move_started: Callable[[float, PlannedMove], None] | None = None,
                 *, clock_freq: float = DEFAULT_CLOCK_FREQ, oids: dict[str, int] | None = None,
                 on_commands: Callable[[StepCommands], None] | None = None,
                 lead_source: Callable[[], float] | None = None) -> None:
        super().__init__(clock, lead_time_s, start_position, on_move_started)
        # Asked on every update when given: a lead that follows the MCU's link (a noisy
        # line needs a wider schedule margin, and motion goes at least twice that ahead).
        self.lead_source = lead_source
        self._models: dict[str, StepperModel] = models_from_settings(settings)
        names = list(self._models)
        self._oids = oids or {n: i for i, n in enumerate(names)}
        self._clock_freq = clock_freq
        self._max_error = settings.mcu.max_stepper_error
        self._stream = StepStream(self._models, self._oids, clock_freq, self._max_error,
                                  self._position, clock.now())
        # Where the compressed commands go (the MCU's step sender); None keeps them local.
        self.on_commands = on_commands
        self._executed = {ch.name: _ExecutedSteps(ch.position) for ch in self._stream.channels}
        self._stream.step_tap = self._on_steps
        self._generated_until = clock.now()
        self._slice_s = min(GENERATE_SLICE_S, 0.25 * self.lead_time_s)
        self._hold_s = min(COMPRESS_HOLD_S, 0.1 * self.lead_time_s)
        self.queue_steps = 0

    def _on_steps(self, ch: StepperChannel, times: np.ndarray, dirs: np.ndarray) -> None:
        executed = self._executed[ch.name]
        base = ch.position - int(dirs.sum(dtype=np.int64))
        executed.add(base, times, dirs)

    def earliest_start(self) -> float:
        """Never inside motion already turned into steps: after an idle spell under a wide
        lead, steps standing still were made up to the old now + lead, and a move placed
        by a lead that has since narrowed would start inside them, its beginning lost and
        the steppers made to jump (a burst the MCU answers with `Timer too close`)."""
        return max(super().earliest_start(), self._generated_until)

    def schedule(self, move: PlannedMove) -> None:
        super().schedule(move)
        start = self._moves[-1][0]
        self._stream.add_moves([move], start)

    def update(self) -> None:
        super().update()
        if self.lead_source is not None:
            self.lead_time_s = self.lead_source()
        # Everything before now + lead is final: a move scheduled later starts after it.
        # (A lead that shrank generates nothing until now + lead passes what was made.)
        until = self._clock.now() + self.lead_time_s
        if until - self._generated_until >= self._slice_s:
            commands = self._stream.generate(until, hold_s=self._hold_s)
            self.queue_steps += int(np.count_nonzero(commands.kind == 0)) if len(commands) else 0
            self._generated_until = until
            if self.on_commands is not None and len(commands):
                self.on_commands(commands)

    def abort(self) -> Vec4:
        """Keep every move whose steps were already generated (sent, on a real MCU), drop
        the rest; return where the toolhead ends up."""
        self.update()
        committed = self._generated_until
        kept = [entry for entry in self._moves if entry[0] < committed]
        if kept:
            # A dwell has no steps: the rest of one (a long G4) goes with the dropped moves.
            kept[-1] = _cut_dwell(kept[-1], self._clock.now())
        self._moves.clear()
        self._moves.extend(kept)
        if kept:
            start, move = kept[-1]
            self._end_time = start + move.duration
            end_position = move.end
        else:
            self._front_announced = False
            self._end_time = min(self._end_time, self._clock.now())
            end_position = self._position
        # Rows of dropped moves start where the kept ones end; the stream adds phase
        # durations in its own order, so compare with a margin well below any step.
        self._stream.truncate(max(self._end_time, committed) - TRUNCATE_MARGIN_S)
        return end_position

    def rebase(self, position: Vec4) -> None:
        """Forget all motion and restart the step stream at `position`, now.

        Used after the MCU stopped the steppers at an endstop: the steps it discarded
        must not be counted, and the steppers' step clocks restart from zero (the
        caller sends the matching `reset_step_clock`)."""
        now = self._clock.now()
        self._moves.clear()
        self._front_announced = False
        self._end_time = now
        self._position = tuple(float(c) for c in position)  # type: ignore[assignment]
        self._stream = StepStream(self._models, self._oids, self._clock_freq, self._max_error,
                                  self._position, now)
        self._stream.step_tap = self._on_steps
        self._executed = {ch.name: _ExecutedSteps(ch.position) for ch in self._stream.channels}
        self._generated_until = now

    def stepper_positions(self) -> dict[str, int]:
        self.update()
        now = self._clock.now()
        return {name: steps.at(now) for name, steps in self._executed.items()}

    def position(self) -> Vec4:
        """Where the steppers have taken the toolhead by now (mm, machine coordinates)."""
        steps = self.stepper_positions()
        m = self._models
        a = steps["x"] * m["x"].step_dist
        b = steps["y"] * m["y"].step_dist
        if m["x"].kind == COREXY_A and m["y"].kind == COREXY_B:
            x, y = 0.5 * (a + b), 0.5 * (a - b)
        else:
            x, y = a, b
        return (x, y, steps["z"] * m["z"].step_dist,
                steps["extruder"] * m["extruder"].step_dist)
