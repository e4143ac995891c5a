"""Look-ahead motion planning: turning straight G-code moves into timed trapezoids.

Each move accelerates, cruises and decelerates with a constant acceleration. How fast
the toolhead may pass from one move to the next depends on the angle between them
(the junction) and on how much room later moves leave for braking, so a move's
profile can only be fixed once enough of the moves after it are known. The planner
keeps a queue and plans it with the same rules as Klipper's toolhead, so that a
printer configured with the same numbers spends the same time on the same G-code:

* Per move: the speed is capped by `max_velocity` (or, for a move that only
  extrudes, by `max_extrude_only_velocity`), a move with Z motion by the Z limits
  scaled to the move's direction, and a move that retracts or only extrudes by the
  extrude-only limits scaled by how much filament moves per millimetre of travel.
  Over-extrusion (more than `max_extrude_cross_section`) and over-long extrude-only
  moves are refused with `MoveLimitError` before anything is queued.
* Per junction: the "junction deviation" corner model in terms of
  `square_corner_velocity` (at the acceleration in force, so an M204 changes it),
  capped so the virtual arc never needs more than half of either move; the
  extruder's `instantaneous_corner_velocity` bounds how abruptly the filament feed
  rate may change; any junction with an extrude-only move is passed at a stop.
* Per queue: a backward pass finds, for every junction, the fastest speed from
  which the toolhead can still stop by the end of the queue. `minimum_cruise_ratio`
  then runs the same pass with a reduced "pseudo" acceleration,
  accel * (1 - minimum_cruise_ratio); the peaks of that gentler profile cap the
  cruise speed of the moves around them. That is what keeps short zig-zag moves
  from spending all their time accelerating and braking with no cruise at all.

Speeds are handled as squares (v2, mm^2/s^2) throughout: with constant acceleration a
distance d changes v^2 by exactly 2*a*d, which keeps both passes to additions.

The queue is emitted lazily, and only the moves whose profile can no longer change
whatever is appended later leave it (see `_plan`); so the result equals planning the
whole file at once, except where the queue would grow past `max_queue_moves` or the
toolhead is about to run out of motion (then the planner stops at the queue's end).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from printhost.config import ExtruderSettings, PrinterSettings
from printhost.control.motion import PlannedMove, Vec4

# Below this XYZ length a move counts as extrude-only (or, with no E either, as empty).
_MIN_LENGTH_MM = 1e-9
# Acceleration an extrude-only move starts from before the extruder limits lower it:
# effectively "unlimited", the same placeholder Klipper uses.
_UNLIMITED_ACCEL = 99999999.9
# Moves held for look-ahead at most; beyond it the oldest half is planned as if the
# queue ended there (a stop the later moves can still cancel, see `_plan`).
MAX_QUEUE_MOVES = 256


class MoveLimitError(ValueError):
    """A move breaks an extruder limit (too much filament for its length, or too long)."""


def check_move(start: Vec4, end: Vec4, speed_mm_s: float, accel: float | None) -> None:
    """A planner's argument checks (the toolhead checks the same first; homing passes
    configured values): ValueError for a speed, acceleration or coordinate that is not
    a finite positive or finite number."""
    if not (math.isfinite(speed_mm_s) and speed_mm_s > 0.0):
        raise ValueError(f"speed must be a positive number, got {speed_mm_s!r}")
    if accel is not None and not (math.isfinite(accel) and accel > 0.0):
        raise ValueError(f"acceleration must be a positive number, got {accel!r}")
    if not all(math.isfinite(c) for c in (*start, *end)):
        raise ValueError(f"non-finite coordinate in move {start} -> {end}")


def extrude_only_too_long(de: float, limit_mm: float) -> MoveLimitError:
    return MoveLimitError(f"Extrude only move too long ({de:.3f}mm vs {limit_mm:.3f}mm); "
                          f"see extruder.max_extrude_only_distance")


def over_extrusion(cross_section_mm2: float, limit_mm2: float) -> MoveLimitError:
    return MoveLimitError(f"Move exceeds maximum extrusion ({cross_section_mm2:.3f}mm^2 vs "
                          f"{limit_mm2:.3f}mm^2); see extruder.max_extrude_cross_section")


@dataclass(slots=True)
class _QueuedMove:
    """A move waiting for its velocities, with every limit that does not depend on neighbours."""

    start: Vec4
    end: Vec4
    distance: float
    accel: float
    max_cruise_v2: float
    delta_v2: float             # v^2 gained (or lost) over the whole move: 2 * distance * accel
    mcr_delta_v2: float         # the same with the minimum_cruise_ratio pseudo-acceleration
    max_start_v2: float         # junction limit with the previous move, see _start_limits
    max_mcr_start_v2: float     # the same bound for the pseudo-acceleration profile
    rest_time_s: float          # duration if it had to start and end at rest
    direction: tuple[float, float, float] | None   # XYZ unit vector; None if extrude-only
    e_ratio: float              # filament per mm of `distance` (+-1 for extrude-only)
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


def _rest_to_rest_time_s(distance: float, accel: float, cruise_v2: float) -> float:
    """Duration of a move that starts and ends at rest and peaks at sqrt(cruise_v2)."""
    cruise_v = math.sqrt(cruise_v2)
    ramp_d = cruise_v2 / accel           # both ramps together
    return 2.0 * cruise_v / accel + max(0.0, distance - ramp_d) / cruise_v


class LookaheadPlanner:
    """Queue moves, hand them to `emit` with final velocities as soon as those are certain.

    `extruder` supplies the filament geometry and the extruder's limits; the
    extrude-only speed and acceleration come from `printer`, as everything else does.
    """

    def __init__(self, printer: PrinterSettings, emit: Callable[[PlannedMove], None],
                 max_queue_moves: int = MAX_QUEUE_MOVES,
                 extruder: ExtruderSettings | None = None) -> None:
        if max_queue_moves < 2:
            raise ValueError("max_queue_moves must be at least 2")
        self._printer = printer
        self._extruder = extruder if extruder is not None else ExtruderSettings()
        ex = self._extruder
        self._filament_area = math.pi * (ex.filament_diameter * 0.5) ** 2
        # Filament length per mm of travel that still fits the allowed cross-section.
        self._max_extrude_ratio = ex.cross_section_limit_mm2 / self._filament_area
        self._emit = emit
        self.max_queue_moves = max_queue_moves
        self._queue: list[_QueuedMove] = []
        # v^2 at which the first queued move starts (where the last emitted move ended)
        # and the cruise v^2 of the last emitted move, which a first queued move that
        # only decelerates inherits.
        self._head_start_v2 = 0.0
        self._prev_cruise_v2 = 0.0
        self._queued_time_s = 0.0

    # ------------------------------------------------------------------ queries

    @property
    def queued_moves(self) -> int:
        return len(self._queue)

    def queued_time_estimate(self) -> float:
        """Print time of the queued moves, each counted as if from rest to rest.

        With look-ahead a move usually runs faster than that, so this is normally an
        upper bound; it is what the job uses to decide whether to read more G-code.
        """
        return self._queued_time_s if self._queue else 0.0

    # ------------------------------------------------------------------ input

    def add_move(self, start: Vec4, end: Vec4, speed_mm_s: float,
                 accel: float | None = None) -> None:
        """Queue a straight move; zero-length moves are dropped.

        `accel` is the toolhead acceleration requested by the G-code (M204); it is
        capped at `printer.max_accel`, the configured limit being a hard one. The
        junction deviation and the minimum-cruise-ratio pseudo-acceleration follow
        the acceleration in force, as in Klipper. Raises `MoveLimitError` (nothing
        queued) if the move breaks an extruder limit.
        """
        check_move(start, end, speed_mm_s, accel)
        p = self._printer
        dx, dy, dz, de = (end[0] - start[0], end[1] - start[1],
                          end[2] - start[2], end[3] - start[3])
        length = math.sqrt(dx * dx + dy * dy + dz * dz)
        toolhead_accel = p.max_accel if accel is None else min(accel, p.max_accel)
        jd = junction_deviation_mm(p.square_corner_velocity, toolhead_accel)
        mcr_accel = toolhead_accel * (1.0 - p.minimum_cruise_ratio)
        direction: tuple[float, float, float] | None
        if length < _MIN_LENGTH_MM:
            length = abs(de)
            if length < _MIN_LENGTH_MM:
                return
            # Extrude-only: no toolhead limits; the extruder's limits apply below.
            direction = None
            e_ratio = 1.0 if de > 0.0 else -1.0
            velocity = speed_mm_s
            move_accel = _UNLIMITED_ACCEL
        else:
            direction = (dx / length, dy / length, dz / length)
            e_ratio = de / length
            velocity = min(speed_mm_s, p.max_velocity)
            move_accel = toolhead_accel
        # Each limit lowers the cruise speed and the acceleration; the pseudo
        # acceleration never exceeds the real one.
        max_cruise_v2 = velocity * velocity
        limits: list[tuple[float, float]] = []
        if direction is not None and dz != 0.0:
            # Z is slow: scale its limits by length/|dz| so the Z component of the
            # velocity and acceleration stays within max_z_velocity/max_z_accel.
            z_ratio = length / abs(dz)
            limits.append((p.max_z_velocity * z_ratio, p.max_z_accel * z_ratio))
        if de != 0.0:
            extruder_limit = self._check_extrusion(direction is None or (dx == 0.0 and dy == 0.0),
                                                   e_ratio, de)
            if extruder_limit is not None:
                limits.append(extruder_limit)
        delta_v2 = 2.0 * length * move_accel
        mcr_delta_v2 = 2.0 * length * mcr_accel
        for limit_v, limit_accel in limits:
            if limit_v * limit_v < max_cruise_v2:
                max_cruise_v2 = limit_v * limit_v
            move_accel = min(move_accel, limit_accel)
            delta_v2 = 2.0 * length * move_accel
            mcr_delta_v2 = min(mcr_delta_v2, delta_v2)
        rest_cruise_v2 = min(max_cruise_v2, 0.5 * delta_v2, 0.5 * mcr_delta_v2)
        move = _QueuedMove(
            start=start, end=end, distance=length, accel=move_accel,
            max_cruise_v2=max_cruise_v2, delta_v2=delta_v2, mcr_delta_v2=mcr_delta_v2,
            max_start_v2=0.0, max_mcr_start_v2=0.0,
            rest_time_s=_rest_to_rest_time_s(length, move_accel, rest_cruise_v2),
            direction=direction, e_ratio=e_ratio, junction_deviation_mm=jd)
        self._set_start_limits(move)
        self._queue.append(move)
        self._queued_time_s += move.rest_time_s
        self._plan(final=False)

    def _check_extrusion(self, extrude_only: bool, e_ratio: float,
                         de: float) -> tuple[float, float] | None:
        """Refuse impossible extrusion; return the (speed, accel) limit it imposes, if any.

        Moves that retract, and moves with no X/Y motion (extrude-only, or E with a
        pure Z move), are bound by the extrude-only limits scaled by the filament
        moved per mm. Extruding moves with X/Y motion are only checked for
        over-extrusion, allowing a tiny amount (less than a nozzle's worth of the
        maximum) so that slicers' short priming blobs still print.
        """
        ex = self._extruder
        p = self._printer
        if extrude_only or e_ratio < 0.0:
            if abs(de) > ex.max_extrude_only_distance:
                raise extrude_only_too_long(de, ex.max_extrude_only_distance)
            inverse = 1.0 / abs(e_ratio)
            return p.max_extrude_only_velocity * inverse, p.max_extrude_only_accel * inverse
        if e_ratio > self._max_extrude_ratio:
            if de <= ex.nozzle_diameter * self._max_extrude_ratio:
                return None
            raise over_extrusion(e_ratio * self._filament_area,
                                 self._max_extrude_ratio * self._filament_area)
        return None

    def _set_start_limits(self, move: _QueuedMove) -> None:
        """Bound v^2 where `move` begins, from the corner and from everything before it.

        Besides the corner itself, the speed is bounded by both moves' cruise limits,
        by the extruder's instantaneous corner velocity, and by what the previous move
        can reach accelerating from its own bound. An empty queue means everything
        before was flushed, which ends at a standstill.
        """
        if not self._queue:
            return
        prev = self._queue[-1]
        if prev.direction is None or move.direction is None:
            return
        e_change = move.e_ratio - prev.e_ratio
        if e_change != 0.0:
            extruder_v2 = (self._extruder.instantaneous_corner_velocity / abs(e_change)) ** 2
        else:
            extruder_v2 = move.max_cruise_v2
        corner = junction_limit_v2(
            prev.direction, prev.junction_deviation_mm * prev.accel, prev.delta_v2,
            move.direction, move.junction_deviation_mm * move.accel, move.delta_v2)
        move.max_start_v2 = min(move.max_cruise_v2, prev.max_cruise_v2,
                                prev.max_start_v2 + prev.delta_v2, extruder_v2, corner)
        move.max_mcr_start_v2 = min(move.max_start_v2,
                                    prev.max_mcr_start_v2 + prev.mcr_delta_v2)

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
        self._prev_cruise_v2 = 0.0
        self._queued_time_s = 0.0

    # ------------------------------------------------------------------ planning

    def _plan(self, final: bool) -> None:
        """Plan the queue as if it ended at a stop; emit what is certain (all if `final`).

        Backward pass, per move from the last: `start` is the fastest start from which
        the rest of the queue can still brake to the final stop; `mcr` is the same with
        the pseudo-acceleration. A move whose pseudo profile can still speed up ("can
        accelerate") gets a cruise cap: the peak of the pseudo hill it belongs to,
        recomputed ("fresh") at a move that can both speed up and slow down, or at a
        full-acceleration move directly followed by braking moves. Braking-only moves
        get no cap of their own and inherit the cruise of the move before them in the
        forward pass.

        Which moves are certain: a junction where both `start` and `mcr` sit at their
        own limits (and the pseudo profile strictly below what braking would allow) no
        longer depends on anything appended later, since appending can only raise the
        braking room. Below such a junction, once a fresh peak is computed, that move
        and everything before it, plus the braking-only moves right after it, have
        their final profiles. The moves from the next capped move on are kept.
        """
        queue = self._queue
        n = len(queue)
        if n == 0:
            return
        start_v2 = [0.0] * (n + 1)    # start_v2[n] is the stop at the end of the queue
        cruise_v2: list[float | None] = [None] * n
        next_mcr_v2 = 0.0
        peak_v2 = 0.0
        pending = 0                   # moves since the last one that got a cruise cap
        settled = -1                  # index of a junction that can no longer change
        certain = 0                   # moves before this index have final profiles
        for i in range(n - 1, -1, -1):
            m = queue[i]
            reach_v2 = start_v2[i + 1] + m.delta_v2
            start = min(m.max_start_v2, reach_v2)
            reach_mcr_v2 = next_mcr_v2 + m.mcr_delta_v2
            mcr = min(m.max_mcr_start_v2, reach_mcr_v2)
            pending += 1
            if mcr < reach_mcr_v2:
                fresh = m.mcr_delta_v2 + mcr > next_mcr_v2 or pending > 1
                if fresh:
                    peak_v2 = (mcr + reach_mcr_v2) * 0.5
                    if 0 <= i < settled and certain == 0:
                        certain = i + pending
                cruise_v2[i] = min((start + reach_v2) * 0.5, m.max_cruise_v2, peak_v2)
                pending = 0
            if settled < 0 and m.max_start_v2 <= reach_v2 and m.max_mcr_start_v2 < reach_mcr_v2:
                settled = i
            start_v2[i] = start
            next_mcr_v2 = mcr
        if final:
            count = n
        elif certain > 0:
            count = certain
        elif n > self.max_queue_moves:
            count = n - self.max_queue_moves // 2
        else:
            return
        # Forward pass over the moves being emitted.
        prev_cruise = self._prev_cruise_v2
        end = self._head_start_v2
        for i in range(count):
            m = queue[i]
            cruise = cruise_v2[i]
            if cruise is None:
                cruise = min(prev_cruise, start_v2[i])
            begin = min(start_v2[i], cruise)
            if i == 0:
                # Continue exactly from where the previous batch ended.
                begin = self._head_start_v2
                cruise = max(cruise, begin)
            end = min(start_v2[i + 1], cruise)
            self._emit(_profile(m, begin, cruise, end))
            self._queued_time_s -= m.rest_time_s
            prev_cruise = cruise
        del queue[:count]
        self._head_start_v2 = end
        self._prev_cruise_v2 = prev_cruise
        if not queue:
            self._queued_time_s = 0.0   # drop accumulated rounding
        elif count != certain and not final:
            self._pin_head(end)

    def _pin_head(self, start_v2: float) -> None:
        """After a forced early emission, make the remaining queue start at `start_v2`.

        The emitted moves were planned as if the queue ended at a stop, so the next
        move must begin at the speed they ended with, and the bounds of the moves after
        it must not assume more speed than can be reached from there.
        """
        prev: _QueuedMove | None = None
        for m in self._queue:
            if prev is None:
                limit, mcr_limit = start_v2, start_v2
            else:
                limit = prev.max_start_v2 + prev.delta_v2
                mcr_limit = prev.max_mcr_start_v2 + prev.mcr_delta_v2
            if m.max_start_v2 <= limit and m.max_mcr_start_v2 <= mcr_limit:
                break
            m.max_start_v2 = min(m.max_start_v2, limit)
            m.max_mcr_start_v2 = min(m.max_mcr_start_v2, mcr_limit, m.max_start_v2)
            prev = m


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
