"""The toolhead: range and homing checks in front of the planner and a motion executor.

The planner is the printer's one lookahead queue (`kernels.lookahead.CompiledPlanner`),
which print jobs also feed whole pieces of a file; `Toolhead.reference` builds one on
the pure-Python planner the compiled one is checked against.

Everything here is in machine coordinates. G92 and relative/absolute modes only change
how G-code numbers map onto machine positions, so they belong to the G-code layer;
keeping them out of the toolhead means the range checks below always compare like
with like, and a G92 can never make the toolhead believe it is somewhere it is not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from printhost.config import AxisSettings, ExtruderSettings, PrinterSettings, Settings
from printhost.control.motion import MotionExecutor, Vec4
from printhost.control.planner import LookaheadPlanner, MoveLimitError

_AXES = "xyz"
_RANGE_TOLERANCE_MM = 1e-6
# If less than this much print time is left in the executor's queue, moves held back
# by the planner for look-ahead are released, ending at a stop, rather than letting
# the toolhead run dry mid-move while waiting for G-code that is slow to arrive.
_STARVATION_S = 0.25


class MoveError(Exception):
    """A move was refused (out of range, unhomed axis, extruder limit); nothing was queued."""


class NotHomed(MoveError):
    """A move of an axis that is not homed."""


class OutOfRange(MoveError):
    """A move that would leave an axis' limits."""


class Toolhead:
    """Plans and executes moves for one printer, remembering where it was told to go.

    `commanded_position` is where the toolhead will be once everything accepted so far
    has run; the live position lags behind it by the queued motion.
    """

    def __init__(self, printer: PrinterSettings, executor: MotionExecutor,
                 extruder: ExtruderSettings | None = None, *, planner: Any = None) -> None:
        self._printer = printer
        self._executor = executor
        # `planner` stands in for the compiled planner where the moves go elsewhere: the
        # reference planner (`reference`), or the batch planner's recorder when it lends a
        # command to the interpreter (kernels/plan.py).
        self._planner = planner if planner is not None else _compiled_planner(
            Settings(printer=printer, extruder=extruder or ExtruderSettings()), executor)
        self.commanded_position: Vec4 = tuple(executor.position())  # type: ignore[assignment]
        self._homed: set[str] = set()
        # Set when an MCU does the homing (McuHoming); None homes by plain moves.
        self.homing_driver: Any = None
        self._accel = printer.max_accel

    @classmethod
    def reference(cls, printer: PrinterSettings, executor: MotionExecutor,
                  extruder: ExtruderSettings | None = None) -> Toolhead:
        """A toolhead on the pure-Python planner (`planner.LookaheadPlanner`): the oracle
        the compiled planner is compared with (start-up self-test, tests)."""
        return cls(printer, executor, extruder,
                   planner=LookaheadPlanner(printer, executor.schedule, extruder=extruder))

    @property
    def planner(self) -> Any:
        """The lookahead planner; a print job feeds it pieces of its file directly."""
        return self._planner

    @property
    def homed_axes(self) -> str:
        return "".join(a for a in _AXES if a in self._homed)

    @property
    def accel(self) -> float:
        """Toolhead acceleration in force (M204), never above `printer.max_accel`."""
        return self._accel

    def set_accel(self, accel: float) -> float:
        """Change the acceleration of later moves (M204); returns the value in force.

        Like Klipper, this also changes the junction deviation (a 90 degree corner
        still passes at square_corner_velocity) and the minimum-cruise-ratio
        pseudo-acceleration. Unlike Klipper, a request above `printer.max_accel` is
        capped there: the configured limit is treated as a hard one.
        """
        if not (math.isfinite(accel) and accel > 0.0):
            raise MoveError(f"invalid acceleration: {accel!r}")
        self._accel = min(float(accel), self._printer.max_accel)
        return self._accel

    def restore(self, position: Vec4, homed_axes: str, accel: float) -> None:
        """Take over a state kept elsewhere, without moving: the commanded position, the
        homed axes and the acceleration (the compiled planner's, when it lends a command
        to the interpreter)."""
        self.commanded_position = tuple(float(c) for c in position)  # type: ignore[assignment]
        self._homed = set(homed_axes)
        self.set_accel(accel)

    def _axis(self, name: str) -> AxisSettings:
        return getattr(self._printer.axes, name)

    # ------------------------------------------------------------------ motion

    def move_to(self, target: Vec4, speed_mm_s: float) -> None:
        """Queue a straight move to `target` (machine coordinates) at up to `speed_mm_s`.

        Only axes that actually move are checked, as in Klipper: an unhomed Y does not
        stop an extrude-only move or a move along X.
        """
        if len(target) != 4 or not all(math.isfinite(c) for c in target):
            raise MoveError(f"invalid move target: {target!r}")
        if not (math.isfinite(speed_mm_s) and speed_mm_s > 0.0):
            raise MoveError(f"invalid move speed: {speed_mm_s!r}")
        target = tuple(float(c) for c in target)  # type: ignore[assignment]
        self.check_target(target)
        try:
            self._planner.add_move(self.commanded_position, target, speed_mm_s, self._accel)
        except MoveLimitError as exc:
            raise MoveError(str(exc)) from None
        self.commanded_position = target

    def check_target(self, target: Vec4) -> None:
        """The checks of a move from the commanded position to `target`: every axis that
        moves must be homed (`NotHomed`) and end inside its limits (`OutOfRange`). Also
        asked before a move is queued behind others (the console's jogs), so a jog off
        the bed is refused with the toolhead's own reason and tolerance."""
        for i, axis in enumerate(_AXES):
            if target[i] == self.commanded_position[i]:
                continue
            if axis not in self._homed:
                raise NotHomed(f"must home axis first: {axis.upper()}")
            limits = self._axis(axis)
            if not (limits.position_min - _RANGE_TOLERANCE_MM <= target[i]
                    <= limits.position_max + _RANGE_TOLERANCE_MM):
                raise OutOfRange(
                    f"move out of range: {axis.upper()}={target[i]:.3f} is outside "
                    f"{limits.position_min:.3f}..{limits.position_max:.3f}")

    @property
    def executor(self) -> MotionExecutor:
        return self._executor

    def home(self, axes: str = "") -> Callable[[], bool] | None:
        """Home the given axes ("" means all), in X, Y, Z order.

        With an MCU attached (`homing_driver` set) homing runs against the endstops
        and takes time: the returned wait is polled until it reports done. Otherwise:

        In the simulator an endstop triggers exactly at `position_endstop`, so homing
        is a plain move there at the axis' homing speed, ending at a standstill as a
        triggered endstop does (it is flushed, never blended into the next move).
        Range checks are skipped: the position before homing is only a belief, which
        is the point of homing.
        """
        wanted = axes.lower()
        unknown = sorted(set(wanted) - set(_AXES))
        if unknown:
            raise MoveError(f"cannot home unknown axis: {''.join(unknown).upper()}")
        if self.homing_driver is not None:
            return self.homing_driver.start(wanted)
        # Homing starts from a standstill, as on a printer, never blended into the
        # move before it.
        self._planner.flush()
        for i, axis in enumerate(_AXES):
            if wanted and axis not in wanted:
                continue
            settings = self._axis(axis)
            target = list(self.commanded_position)
            target[i] = settings.position_endstop
            target_t: Vec4 = (target[0], target[1], target[2], target[3])
            self._planner.add_move(self.commanded_position, target_t, settings.homing_speed,
                                   self._accel)
            self._planner.flush()
            self.commanded_position = target_t
            self._homed.add(axis)
        return None

    def homing_move(self, target: Vec4, speed_mm_s: float) -> None:
        """A move towards an endstop: no range checks (the position is not known yet),
        never blended with anything, and expected to be cut short by the endstop."""
        self._planner.flush()
        self._planner.add_move(self.commanded_position, target, speed_mm_s, self._accel)
        self._planner.flush()
        self.commanded_position = target

    def rebase(self, position: Vec4, homed_axis: str | None) -> None:
        """The MCU stopped the motors (at an endstop, or because homing was aborted):
        forget the rest of the motion and take `position` as where the toolhead is;
        `homed_axis` is the axis now homed, if any."""
        self._planner.clear()
        self._executor.rebase(position)
        self.commanded_position = position
        if homed_axis is not None:
            self._homed.add(homed_axis)

    def set_position(self, position: Vec4, homed_axis: str | None = None) -> None:
        """Declare where the toolhead is, without moving (as Klipper's
        SET_KINEMATIC_POSITION): the height a print resumed after a power loss believes.
        Only at a standstill; on an MCU the steppers' step clocks restart first."""
        if not self.is_idle():
            raise MoveError("the position can only be set while the toolhead stands still")
        if self.homing_driver is not None:
            self.homing_driver.restart_step_clocks()
        self.rebase(position, homed_axis)

    def motors_off(self) -> None:
        """Release the motors (M84/M18): queued motion still runs, then every axis is unhomed.

        A released motor can be pushed by hand, so the position is no longer known and
        later moves need a G28 first, as in Klipper (which also ignores any axis
        letters and releases all motors).
        """
        self._planner.flush()
        self._homed.clear()

    def dwell(self, seconds: float) -> None:
        """Wait `seconds` after the queued motion has come to a stop (G4)."""
        self._planner.dwell(self.commanded_position, seconds)

    def flush(self) -> None:
        """Release every move held for look-ahead; the last one ends at a stop."""
        self._planner.flush()

    def update(self) -> None:
        """Advance the executor; release held moves if it is about to run out of work."""
        if self.homing_driver is not None:
            self.homing_driver.update()
        self._executor.update()
        horizon = self._executor.earliest_start()
        if (self._planner.queued_moves
                and self._executor.queue_end_time() - horizon < _STARVATION_S):
            self._planner.flush()

    # ------------------------------------------------------------------ state

    def buffered_time(self) -> float:
        """Print time still ahead: scheduled motion plus a bound on the planner's queue."""
        # Motion inside the executor's commit horizon (its lead time) is already on its
        # way to the MCU and cannot be added to; only what lies beyond it buffers.
        horizon = self._executor.earliest_start()
        ahead = max(0.0, self._executor.queue_end_time() - horizon)
        return ahead + self._planner.queued_time_estimate()

    @property
    def homing_stopping(self) -> bool:
        """An aborted homing move's end position is still being read back from the MCU."""
        return self.homing_driver is not None and self.homing_driver.stopping

    def is_idle(self) -> bool:
        if self.homing_stopping:
            return False
        return self._planner.queued_moves == 0 and self._executor.is_idle()

    def live_position(self) -> Vec4:
        """Where the steppers are now. While an axis homes, its coordinate is kept within
        the axis' range: the MCU halts the motors at the endstop, so the model moving on
        past the range only means the host has not heard of the trigger (or of the
        stop after an abort) yet."""
        pos = self._executor.position()
        axis = self.homing_driver.moving_axis if self.homing_driver is not None else None
        if axis is None:
            return pos
        limits = self._axis(axis)
        i = _AXES.index(axis)
        clamped = list(pos)
        clamped[i] = min(max(pos[i], limits.position_min), limits.position_max)
        return (clamped[0], clamped[1], clamped[2], clamped[3])

    def abort_homing(self) -> bool:
        """Stop a homing move in progress (pause, cancel, shutdown): the MCU halts the
        motors at once, the axis is no longer homed, and the toolhead moves to where the
        motors stopped once the MCU has reported it (`is_idle()` is False until then).
        False when no homing move was running."""
        if self.homing_driver is None:
            return False
        stopped = self.homing_driver.abort()
        if stopped is None:
            return False
        axis, start = stopped
        self._planner.clear()
        self._homed.discard(axis)
        self.commanded_position = start
        return True

    def abort(self) -> Vec4:
        """Drop planned motion, stop after the running move; returns the stop position.
        A homing move is stopped at once instead (`abort_homing`).

        The stop position becomes the commanded one, so whatever runs next (a park
        move after cancel) starts from where the toolhead really is.
        """
        # During a homing move (or its read-back) the executor's stop position is the end
        # of that move, which the motors never reach; the read-back sets the position.
        homing = self.abort_homing() or self.homing_stopping
        self._planner.clear()
        stop = self._executor.abort()
        if not homing:
            self.commanded_position = tuple(stop)  # type: ignore[assignment]
        return self.commanded_position

    def get_status(self) -> dict[str, Any]:
        """Status for the API; `position` is the commanded one, as in Klipper's toolhead."""
        return {
            "position": list(self.commanded_position),
            "live_position": list(self.live_position()),
            "homed_axes": self.homed_axes,
        }


def _compiled_planner(settings: Settings, executor: MotionExecutor) -> Any:
    """The printer's planner, handing each emitted move to the executor."""
    # Imported here: the kernels' encoding (plan_ops) reads this module's tolerance.
    from printhost.control.kernels.lookahead import CompiledPlanner, planned_moves

    schedule = executor.schedule

    def emit(rows: Any) -> None:
        for move in planned_moves(rows):
            schedule(move)

    return CompiledPlanner(settings, emit)
