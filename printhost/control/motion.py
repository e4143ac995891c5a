"""The seam between motion planning and whatever executes the motion.

The planner produces `PlannedMove`s: straight lines in (x, y, z, e) with a trapezoidal
velocity profile whose timing is already fixed. A `MotionExecutor` takes them in order
and places them on its timeline. Today the simulated printer's executor moves a model
toolhead through them; the step generator and the Klipper MCU link (later work) are a
second executor behind the same interface, which is why the interface speaks only of
print time and positions, never of wall-clock time or threads.

Times are *print time* in seconds on the executor's own clock (for the simulator: the
simulated clock; for an MCU: the MCU clock converted to seconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

Vec4 = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class PlannedMove:
    """A straight move with a fixed trapezoidal velocity profile.

    `start` and `end` are (x, y, z, e) in mm. Velocities are along the move's
    length (`distance`); that is the XYZ length, or the E length for an
    extrude-only move. The three phases take `accel_t`, `cruise_t` and `decel_t`
    seconds; `accel` is used for both ramps. A dwell is a move with start == end,
    zero velocities and only `cruise_t` set.
    """

    start: Vec4
    end: Vec4
    distance: float
    start_v: float
    cruise_v: float
    end_v: float
    accel: float
    accel_t: float
    cruise_t: float
    decel_t: float

    @property
    def duration(self) -> float:
        return self.accel_t + self.cruise_t + self.decel_t

    def distance_at(self, t: float) -> float:
        """Distance travelled along the move `t` seconds after it starts."""
        if t <= 0.0:
            return 0.0
        if t < self.accel_t:
            return (self.start_v + 0.5 * self.accel * t) * t
        d = (self.start_v + 0.5 * self.accel * self.accel_t) * self.accel_t
        t -= self.accel_t
        if t < self.cruise_t:
            return d + self.cruise_v * t
        d += self.cruise_v * self.cruise_t
        t -= self.cruise_t
        t = min(t, self.decel_t)
        return min(self.distance, d + (self.cruise_v - 0.5 * self.accel * t) * t)

    def position_at(self, t: float) -> Vec4:
        """Toolhead position `t` seconds after the move starts (clamped to the move)."""
        if self.distance <= 0.0 or t >= self.duration:
            return self.end if t >= self.duration else self.start
        r = self.distance_at(t) / self.distance
        s, e = self.start, self.end
        return (s[0] + (e[0] - s[0]) * r, s[1] + (e[1] - s[1]) * r,
                s[2] + (e[2] - s[2]) * r, s[3] + (e[3] - s[3]) * r)

    @staticmethod
    def dwell(at: Vec4, seconds: float) -> "PlannedMove":
        return PlannedMove(at, at, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, max(0.0, seconds), 0.0)


class MotionExecutor(Protocol):
    """Runs planned moves on a timeline of print time."""

    def now(self) -> float:
        """The executor's current print time."""

    def schedule(self, move: PlannedMove) -> None:
        """Append a move after the last scheduled one (or at `now() + lead` if the queue ran dry)."""

    def update(self) -> None:
        """Advance to `now()`: retire finished moves, refresh the live position."""

    def queue_end_time(self) -> float:
        """Print time at which everything scheduled so far has finished."""

    def earliest_start(self) -> float:
        """The soonest a move scheduled now could start: the executor's commit horizon,
        before which motion is already on its way and cannot be added to."""

    def position(self) -> Vec4:
        """Where the toolhead is at `now()`."""

    def set_position(self, pos: Vec4) -> None:
        """Declare the current position (G92, homing); only valid when idle."""

    def is_idle(self) -> bool:
        """True when every scheduled move has finished."""

    def abort(self) -> Vec4:
        """Stop as soon as it is safe, dropping moves not yet started; returns the stop position."""


def vec_distance(a: Vec4, b: Vec4) -> float:
    return math.sqrt((b[0] - a[0]) ** 2 + (b[1] - a[1]) ** 2 + (b[2] - a[2]) ** 2)


class QueueClockExecutor:
    """A MotionExecutor with no real time: its clock is the end of its own queue.

    Nothing ever waits on it (every move counts as done as soon as it is queued), which
    is what offline work needs: `printhost batch` builds on it, and tests use it with
    `record=True` to collect exactly the moves the planner released.
    """

    def __init__(self, start_time: float, start_position: Vec4, record: bool = False) -> None:
        self._end = start_time
        self._pos = start_position
        self.count = 0
        self.moves: list[PlannedMove] | None = [] if record else None

    def now(self) -> float:
        return self._end

    def schedule(self, move: PlannedMove) -> None:
        if self.moves is not None:
            self.moves.append(move)
        self.count += 1
        self._end += move.duration
        self._pos = move.end

    def update(self) -> None:
        return None

    def queue_end_time(self) -> float:
        return self._end

    def earliest_start(self) -> float:
        return self._end

    def position(self) -> Vec4:
        return self._pos

    def set_position(self, pos: Vec4) -> None:
        self._pos = pos

    def is_idle(self) -> bool:
        return True

    def abort(self) -> Vec4:
        return self._pos
