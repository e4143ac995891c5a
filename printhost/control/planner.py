"""Look-ahead motion planning: turning straight G-code moves into timed trapezoids.

Each move accelerates, cruises and decelerates with a constant acceleration. How fast
the toolhead may pass from one move to the next depends on the angle between them
(the junction) and on how much room later moves leave for braking, so a move's
profile can only be fixed once enough of the moves after it are known. The planner
therefore keeps a queue: a backward pass works out, for every junction, the fastest
speed from which the toolhead can still stop by the end of the queue, and a forward
pass accelerates from the speed the last emitted move ended at, as hard as those
limits allow.

Junction speeds use the "junction deviation" model popularised by Grbl and used by
Klipper in terms of `square_corner_velocity`: the corner is treated as an arc, whose
radius follows from a virtual deviation and the angle, travelled at the move's
acceleration as centripetal acceleration. It is capped so the arc never needs more
than half of either move, and a reversal or any junction with an extrude-only move
must be passed at zero speed.

Speeds are handled as squares (v2, mm^2/s^2) throughout: with constant acceleration a
distance d changes v^2 by exactly 2*a*d, which keeps both passes to additions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from printhost.config import PrinterSettings
from printhost.control.motion import PlannedMove, Vec4

# Below this XYZ length a move counts as extrude-only (or, with no E either, as empty).
_MIN_LENGTH_MM = 1e-9


@dataclass(slots=True)
class _QueuedMove:
    """A move waiting for its velocities, with every limit that does not depend on neighbours."""

    start: Vec4
    end: Vec4
    distance: float
    accel: float
    max_cruise_v2: float
    delta_v2: float             # v^2 gained (or lost) over the whole move: 2 * distance * accel
    max_start_v2: float         # junction limit with the previous move, see _start_limit_v2
    rest_time_s: float          # duration if it had to start and end at rest (an upper bound)
    direction: tuple[float, float, float] | None   # XYZ unit vector; None if extrude-only
    junction_deviation_mm: float


def junction_limit_v2(prev_dir: tuple[float, float, float],
                      prev_jd_accel: float, prev_delta_v2: float,
                      next_dir: tuple[float, float, float],
                      next_jd_accel: float, next_delta_v2: float) -> float:
    """Largest v^2 allowed through the corner between two moves (inf when they are collinear).

    `*_jd_accel` is junction deviation times the move's acceleration; `*_delta_v2` is
    2 * length * acceleration. Both moves' values are used and the smaller wins, so a
    slow Z move or a short segment slows the corner on either side.
    """
    # theta is the angle between the incoming path reversed and the outgoing path:
    # 180 degrees means straight on, 0 degrees means turning right back. For unit
    # vectors, |u + w| = 2 sin(theta/2) and |w - u| = 2 cos(theta/2); unlike the
    # half-angle formulas on a dot product these stay exact near a reversal, where
    # sqrt(1 - cos) would turn rounding noise of 1e-16 into a speed of 1e-8.
    sum_x, sum_y, sum_z = (prev_dir[0] + next_dir[0], prev_dir[1] + next_dir[1],
                           prev_dir[2] + next_dir[2])
    dif_x, dif_y, dif_z = (next_dir[0] - prev_dir[0], next_dir[1] - prev_dir[1],
                           next_dir[2] - prev_dir[2])
    sin_half = min(1.0, 0.5 * math.sqrt(sum_x * sum_x + sum_y * sum_y + sum_z * sum_z))
    cos_half = 0.5 * math.sqrt(dif_x * dif_x + dif_y * dif_y + dif_z * dif_z)
    if sin_half >= 1.0 or cos_half <= 0.0:
        return math.inf
    # Radius of the virtual arc per unit of junction deviation.
    radius_factor = sin_half / (1.0 - sin_half)
    # Centripetal limit for an arc whose tangent points sit at half of each move:
    # v^2 = a * r with r = (length / 2) * tan(theta / 2), i.e. delta_v2 * tan / 4.
    quarter_tan = 0.25 * sin_half / cos_half
    return min(radius_factor * prev_jd_accel, radius_factor * next_jd_accel,
               quarter_tan * prev_delta_v2, quarter_tan * next_delta_v2)


def junction_deviation_mm(square_corner_velocity: float, accel: float) -> float:
    """The deviation that makes a 90 degree corner at acceleration `accel` pass at exactly scv."""
    return square_corner_velocity ** 2 * (math.sqrt(2.0) - 1.0) / accel


def _rest_to_rest_time_s(distance: float, max_v: float, accel: float) -> float:
    if max_v * max_v >= distance * accel:   # too short to reach max_v: a triangle
        return 2.0 * math.sqrt(distance / accel)
    return distance / max_v + max_v / accel


class LookaheadPlanner:
    """Queue moves, hand them to `emit` with final velocities as soon as those are certain.

    A move is emitted once its profile can no longer change whatever moves follow:
    that is the case for every move before a junction whose speed is already at its
    own limit in the backward pass (more moves behind it could only raise the braking
    room, never the limit). To bound memory and latency, when more than
    `max_queue_moves` are waiting the older half is emitted with the queue's end
    treated as a stop; those speeds are safe, merely not the fastest possible, and
    the moves still queued keep their look-ahead.
    """

    def __init__(self, printer: PrinterSettings, emit: Callable[[PlannedMove], None],
                 max_queue_moves: int = 256) -> None:
        if max_queue_moves < 2:
            raise ValueError("max_queue_moves must be at least 2")
        self._printer = printer
        self._emit = emit
        self.max_queue_moves = max_queue_moves
        self._queue: list[_QueuedMove] = []
        # v^2 at which the first queued move starts: where the last emitted move ended.
        self._head_start_v2 = 0.0
        self._queued_time_s = 0.0

    # ------------------------------------------------------------------ queries

    @property
    def queued_moves(self) -> int:
        return len(self._queue)

    def queued_time_estimate(self) -> float:
        """Upper bound on the print time of the queued moves (each as if from rest to rest)."""
        return self._queued_time_s if self._queue else 0.0

    # ------------------------------------------------------------------ input

    def add_move(self, start: Vec4, end: Vec4, speed_mm_s: float,
                 accel: float | None = None) -> None:
        """Queue a straight move; zero-length moves are dropped.

        `accel` is the toolhead acceleration requested by the G-code (M204); it is
        capped at `printer.max_accel`, the configured limit being a hard one.
        """
        if not (math.isfinite(speed_mm_s) and speed_mm_s > 0.0):
            raise ValueError(f"speed must be a positive number, got {speed_mm_s!r}")
        if accel is not None and not (math.isfinite(accel) and accel > 0.0):
            raise ValueError(f"acceleration must be a positive number, got {accel!r}")
        if not all(math.isfinite(c) for c in (*start, *end)):
            raise ValueError(f"non-finite coordinate in move {start} -> {end}")
        p = self._printer
        dx, dy, dz, de = (end[0] - start[0], end[1] - start[1],
                          end[2] - start[2], end[3] - start[3])
        length = math.sqrt(dx * dx + dy * dy + dz * dz)
        toolhead_accel = p.max_accel if accel is None else min(accel, p.max_accel)
        jd = junction_deviation_mm(p.square_corner_velocity, toolhead_accel)
        direction: tuple[float, float, float] | None
        if length < _MIN_LENGTH_MM:
            length = abs(de)
            if length < _MIN_LENGTH_MM:
                return
            # Extrude-only moves follow the extruder's limits, not the toolhead's.
            direction = None
            max_v = min(speed_mm_s, p.max_extrude_only_velocity)
            move_accel = p.max_extrude_only_accel
        else:
            direction = (dx / length, dy / length, dz / length)
            max_v = min(speed_mm_s, p.max_velocity)
            move_accel = toolhead_accel
            if abs(dz) > 0.0:
                # Z is slow: scale its limits by length/|dz| so the Z component of the
                # velocity and acceleration stays within max_z_velocity/max_z_accel.
                z_ratio = length / abs(dz)
                max_v = min(max_v, p.max_z_velocity * z_ratio)
                move_accel = min(move_accel, p.max_z_accel * z_ratio)
        move = _QueuedMove(
            start=start, end=end, distance=length, accel=move_accel,
            max_cruise_v2=max_v * max_v, delta_v2=2.0 * length * move_accel,
            max_start_v2=0.0, rest_time_s=_rest_to_rest_time_s(length, max_v, move_accel),
            direction=direction, junction_deviation_mm=jd)
        move.max_start_v2 = self._start_limit_v2(move)
        self._queue.append(move)
        self._queued_time_s += move.rest_time_s
        self._plan(final=False)

    def _start_limit_v2(self, move: _QueuedMove) -> float:
        """Upper bound on v^2 where `move` begins, from everything known about the past.

        Besides the corner itself, the speed is bounded by both moves' cruise limits
        and by what the previous move can reach accelerating from its own bound. That
        last term changes nothing physically but makes a junction count as "at its
        limit" sooner, which lets the lazy flush emit moves earlier.
        """
        if not self._queue:
            # Empty queue: everything before was flushed, which ends at a standstill.
            return 0.0
        prev = self._queue[-1]
        limit = min(move.max_cruise_v2, prev.max_cruise_v2,
                    prev.max_start_v2 + prev.delta_v2)
        if prev.direction is None or move.direction is None:
            return 0.0
        corner = junction_limit_v2(
            prev.direction, prev.junction_deviation_mm * prev.accel, prev.delta_v2,
            move.direction, move.junction_deviation_mm * move.accel, move.delta_v2)
        return min(limit, corner)

    def dwell(self, at: Vec4, seconds: float) -> None:
        """Stop (flush) and then pause for `seconds` at `at`."""
        if not math.isfinite(seconds):
            raise ValueError(f"dwell time must be finite, got {seconds!r}")
        self.flush()
        if seconds > 0.0:
            self._emit(PlannedMove.dwell(at, seconds))

    def flush(self) -> None:
        """Emit every queued move, the last one ending at a standstill."""
        self._plan(final=True)

    def clear(self) -> None:
        """Forget queued moves without emitting them (abort); planning restarts from rest."""
        self._queue.clear()
        self._head_start_v2 = 0.0
        self._queued_time_s = 0.0

    # ------------------------------------------------------------------ planning

    def _plan(self, final: bool) -> None:
        queue = self._queue
        n = len(queue)
        if n == 0:
            return
        # Backward pass: the fastest each move may start and still stop by the end.
        start_v2 = [0.0] * (n + 1)    # start_v2[n] is the stop at the end of the queue
        settled = 0   # moves before this index have profiles that can no longer change
        for i in range(n - 1, -1, -1):
            m = queue[i]
            reachable = start_v2[i + 1] + m.delta_v2
            if m.max_start_v2 <= reachable:
                start_v2[i] = m.max_start_v2
                if settled == 0:
                    settled = i
            else:
                start_v2[i] = reachable
        if final:
            count = n
        elif settled > 0:
            count = settled
        elif n > self.max_queue_moves:
            count = n - self.max_queue_moves // 2
        else:
            return
        # Forward pass over the moves being emitted.
        v2 = self._head_start_v2
        for i in range(count):
            m = queue[i]
            end_v2 = min(start_v2[i + 1], v2 + m.delta_v2)
            # Peak of the triangle through start and end speeds, capped by the cruise limit.
            cruise_v2 = min(m.max_cruise_v2, 0.5 * (v2 + end_v2 + m.delta_v2))
            self._emit(_profile(m, v2, cruise_v2, end_v2))
            self._queued_time_s -= m.rest_time_s
            v2 = end_v2
        del queue[:count]
        self._head_start_v2 = v2
        if not queue:
            self._queued_time_s = 0.0   # drop accumulated rounding


def _profile(m: _QueuedMove, start_v2: float, cruise_v2: float, end_v2: float) -> PlannedMove:
    """Build the trapezoid; the cruise phase absorbs the rounding so its length stays exact."""
    start_v = math.sqrt(start_v2)
    end_v = math.sqrt(end_v2)
    cruise_v = max(math.sqrt(cruise_v2), start_v, end_v)
    a = m.accel
    accel_t = (cruise_v - start_v) / a
    decel_t = (cruise_v - end_v) / a
    accel_d = 0.5 * (start_v + cruise_v) * accel_t
    decel_d = 0.5 * (end_v + cruise_v) * decel_t
    cruise_d = max(0.0, m.distance - accel_d - decel_d)
    cruise_t = cruise_d / cruise_v
    return PlannedMove(m.start, m.end, m.distance, start_v, cruise_v, end_v, a,
                       accel_t, cruise_t, decel_t)
