"""The move-segment array: the form in which motion reaches the step kernels.

The kernels cannot walk a list of `PlannedMove` objects, so each move is flattened
into rows of a float64 array, one row per phase with constant acceleration
(accelerate, cruise, decelerate). A row describes the distance travelled along the
move as a quadratic in time and maps it onto coordinates:

    dt  = t - PRINT_TIME                      (0 <= dt < MOVE_T)
    d   = (START_V + HALF_ACCEL * dt) * dt
    pos = START + AXES_R * d                  (per coordinate x, y, z)

which is the layout of Klipper's trapezoid queue. Storing half the acceleration
saves a multiplication in the hottest expression of the step solver.

Two arrays are built from the same moves and share their time columns row for row:

- toolhead segments: x, y, z of the toolhead. AXES_R is the unit direction of the
  XYZ motion, or zero for a move that only extrudes, so such a move holds the
  toolhead still for its duration.
- extruder segments: the filament position in the X columns. AXES_R_X is the
  signed ratio of filament length to move length (+-1 for an extrude-only move,
  whose length is the filament length), and AXES_R_Y is 1.0 where pressure advance
  may act on the move: it must move in X or Y and push filament forward, the rule
  Klipper uses so that retracts, unretracts and Z hops never get an advance. The
  Y and Z start columns are unused and zero.

Dwells (and any move of zero length) produce no rows; they only advance time, so
they show up as a gap before the next row. The kernels treat any gap the way
Klipper treats its padding moves: the position is held at the start of the next
row (after the last row: at the end of the last row, before the first row: at the
start of the first). `StepStream` fills a gap before motion it is handed later with
a row at rest at the end of the last row, so a position held while the next motion
was unknown stays the position held once it is known. Row times are accumulated by adding each phase duration to
the previous end, so consecutive phases meet at bitwise-equal times.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numba
import numpy as np

from printhost.control.motion import PlannedMove

PRINT_TIME = 0
MOVE_T = 1
START_V = 2
HALF_ACCEL = 3
START_X = 4
START_Y = 5
START_Z = 6
AXES_R_X = 7
AXES_R_Y = 8
AXES_R_Z = 9
N_COLUMNS = 10

# Below this XYZ length a move counts as extrude-only; the planner uses the same bound.
_MIN_XYZ_MM = 1e-9


def _phases(move: PlannedMove) -> Iterable[tuple[float, float, float, float]]:
    """(duration, start velocity, half acceleration, distance done before) per phase."""
    done = 0.0
    for duration, v0, half_accel in ((move.accel_t, move.start_v, 0.5 * move.accel),
                                     (move.cruise_t, move.cruise_v, 0.0),
                                     (move.decel_t, move.cruise_v, -0.5 * move.accel)):
        if duration > 0.0:
            yield duration, v0, half_accel, done
            done += (v0 + half_accel * duration) * duration


def _build(moves: Iterable[PlannedMove], start_time: float, toolhead: bool) -> np.ndarray:
    if not math.isfinite(start_time):
        raise ValueError(f"start_time must be finite, got {start_time!r}")
    rows: list[tuple[float, ...]] = []
    t = float(start_time)
    for move in moves:
        if move.distance <= 0.0:
            t += move.duration
            continue
        sx, sy, sz, se = move.start
        ex, ey, ez, ee = move.end
        dx, dy, dz, de = ex - sx, ey - sy, ez - sz, ee - se
        moves_xyz = math.sqrt(dx * dx + dy * dy + dz * dz) > _MIN_XYZ_MM
        inv = 1.0 / move.distance
        if toolhead:
            start = (sx, sy, sz)
            ratio = (dx * inv, dy * inv, dz * inv) if moves_xyz else (0.0, 0.0, 0.0)
        else:
            advance = 1.0 if (de > 0.0 and (dx != 0.0 or dy != 0.0) and moves_xyz) else 0.0
            start = (se, 0.0, 0.0)
            ratio = (de * inv, advance, 0.0)
        for duration, v0, half_accel, done in _phases(move):
            if toolhead:
                s0 = (start[0] + ratio[0] * done, start[1] + ratio[1] * done,
                      start[2] + ratio[2] * done)
            else:
                s0 = (start[0] + ratio[0] * done, 0.0, 0.0)
            rows.append((t, duration, v0, half_accel, s0[0], s0[1], s0[2],
                         ratio[0], ratio[1], ratio[2]))
            t += duration
    if not rows:
        return np.zeros((0, N_COLUMNS), dtype=np.float64)
    return np.array(rows, dtype=np.float64)


def toolhead_segments(moves: list[PlannedMove], start_time: float) -> np.ndarray:
    """XYZ segments of `moves` played back to back from print time `start_time`."""
    return _build(moves, start_time, toolhead=True)


def extruder_segments(moves: list[PlannedMove], start_time: float) -> np.ndarray:
    """Filament segments of `moves`, row-aligned with `toolhead_segments`."""
    return _build(moves, start_time, toolhead=False)


def end_time(segs: np.ndarray) -> float:
    """Print time at which the last segment finishes (-inf for an empty array)."""
    if len(segs) == 0:
        return -math.inf
    return float(segs[-1, PRINT_TIME] + segs[-1, MOVE_T])


def position_at(segs: np.ndarray, t: float) -> tuple[float, float, float]:
    """The (x, y, z) columns at print time `t`, with the gap rules described above."""
    n = len(segs)
    if n == 0:
        raise ValueError("no segments")
    j = int(np.searchsorted(segs[:, PRINT_TIME], t, side="right")) - 1
    if j < 0:
        row = segs[0]
        return float(row[START_X]), float(row[START_Y]), float(row[START_Z])
    row = segs[j]
    dt = t - row[PRINT_TIME]
    if t >= row[PRINT_TIME] + row[MOVE_T]:
        if j + 1 < n:
            nxt = segs[j + 1]
            return float(nxt[START_X]), float(nxt[START_Y]), float(nxt[START_Z])
        dt = row[MOVE_T]
    d = (row[START_V] + row[HALF_ACCEL] * dt) * dt
    return (float(row[START_X] + row[AXES_R_X] * d), float(row[START_Y] + row[AXES_R_Y] * d),
            float(row[START_Z] + row[AXES_R_Z] * d))


def window(segs: np.ndarray, t0: float, t1: float, before: float = 0.0,
           after: float = 0.0) -> np.ndarray:
    """The rows overlapping [t0 - before, t1 + after], as a view.

    Step generation for a time range only needs the motion around it (input
    shaping looks a few milliseconds back and ahead, pressure advance smoothing
    half its window), and handing the kernels a short window keeps each call's
    cost independent of how long the job is.
    """
    n = len(segs)
    if n == 0:
        return segs
    times = segs[:, PRINT_TIME]
    ends = times + segs[:, MOVE_T]
    lo = int(np.searchsorted(ends, t0 - before, side="left"))
    hi = int(np.searchsorted(times, t1 + after, side="right"))
    # One extra row on each side: the kernels split time at row boundaries, and the
    # boundary just outside the range (the end of the row before a gap, the start of
    # the row after one) decides where the first and last of those pieces begin and
    # end. With it, a windowed call computes bit-for-bit what a call over the whole
    # array computes.
    return segs[max(0, lo - 1):min(n, max(hi, lo) + 1)]


def check_segments(segs: np.ndarray) -> np.ndarray:
    """Return `segs` as a C-contiguous float64 (n, 10) array, or raise ValueError.

    The kernels trust their input completely (a NaN time or an overlapping row
    would make them loop over nonsense or lose steps), so every public entry point
    checks it here first: finite values, non-negative durations, and rows that
    start no earlier than the previous row ends.
    """
    arr = np.ascontiguousarray(segs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != N_COLUMNS:
        raise ValueError(f"segments must have shape (n, {N_COLUMNS}), got {arr.shape}")
    if len(arr) == 0:
        return arr
    if not np.isfinite(arr).all():
        raise ValueError("segments contain a non-finite value")
    if (arr[:, MOVE_T] < 0.0).any():
        raise ValueError("segments contain a negative MOVE_T")
    ends = arr[:-1, PRINT_TIME] + arr[:-1, MOVE_T]
    bad = np.nonzero(arr[1:, PRINT_TIME] < ends)[0]
    if len(bad):
        i = int(bad[0]) + 1
        raise ValueError(f"segment {i} starts at {arr[i, PRINT_TIME]!r}, before the previous "
                         f"one ends at {ends[i - 1]!r}")
    return arr


# --------------------------------------------------------------------------- compiled builder

@numba.njit(cache=True, nogil=True)
def _build_kernel(moves, start_time, tool, ext):  # pragma: no cover - compiled
    """`_build` for both arrays at once over the planner's move rows (see plan.py).

    The arithmetic is `_build`'s, operation for operation, so the rows are
    bit-identical to those built from `PlannedMove` objects.
    """
    n = 0
    t = start_time
    for i in range(moves.shape[0]):
        sx = moves[i, 0]
        sy = moves[i, 1]
        sz = moves[i, 2]
        se = moves[i, 3]
        distance = moves[i, 8]
        accel_t = moves[i, 13]
        cruise_t = moves[i, 14]
        decel_t = moves[i, 15]
        if distance <= 0.0:
            t += accel_t + cruise_t + decel_t
            continue
        dx = moves[i, 4] - sx
        dy = moves[i, 5] - sy
        dz = moves[i, 6] - sz
        de = moves[i, 7] - se
        moves_xyz = math.sqrt(dx * dx + dy * dy + dz * dz) > _MIN_XYZ_MM
        inv = 1.0 / distance
        if moves_xyz:
            rx = dx * inv
            ry = dy * inv
            rz = dz * inv
        else:
            rx = 0.0
            ry = 0.0
            rz = 0.0
        advance = 1.0 if (de > 0.0 and (dx != 0.0 or dy != 0.0) and moves_xyz) else 0.0
        re = de * inv
        accel = moves[i, 12]
        done = 0.0
        for phase in range(3):
            if phase == 0:
                duration = accel_t
                v0 = moves[i, 9]
                half_accel = 0.5 * accel
            elif phase == 1:
                duration = cruise_t
                v0 = moves[i, 10]
                half_accel = 0.0
            else:
                duration = decel_t
                v0 = moves[i, 10]
                half_accel = -0.5 * accel
            if duration > 0.0:
                tool[n, 0] = t
                tool[n, 1] = duration
                tool[n, 2] = v0
                tool[n, 3] = half_accel
                tool[n, 4] = sx + rx * done
                tool[n, 5] = sy + ry * done
                tool[n, 6] = sz + rz * done
                tool[n, 7] = rx
                tool[n, 8] = ry
                tool[n, 9] = rz
                ext[n, 0] = t
                ext[n, 1] = duration
                ext[n, 2] = v0
                ext[n, 3] = half_accel
                ext[n, 4] = se + re * done
                ext[n, 5] = 0.0
                ext[n, 6] = 0.0
                ext[n, 7] = re
                ext[n, 8] = advance
                ext[n, 9] = 0.0
                n += 1
                t += duration
                done += (v0 + half_accel * duration) * duration
    return n, t


def segments_from_move_rows(moves: np.ndarray, start_time: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Toolhead and extruder segments, and the end time, of planner move rows.

    `moves` has the column layout of `printhost.control.kernels.plan` (start x y z e,
    end x y z e, distance, start_v, cruise_v, end_v, accel, accel_t, cruise_t,
    decel_t). Equivalent to `toolhead_segments`/`extruder_segments` of the same moves
    as `PlannedMove` objects, without a Python loop per move.
    """
    if not math.isfinite(start_time):
        raise ValueError(f"start_time must be finite, got {start_time!r}")
    rows = np.ascontiguousarray(moves, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != 16:
        raise ValueError(f"move rows must have shape (n, 16), got {rows.shape}")
    tool = np.empty((3 * len(rows), N_COLUMNS), dtype=np.float64)
    ext = np.empty((3 * len(rows), N_COLUMNS), dtype=np.float64)
    n, end = _build_kernel(rows, float(start_time), tool, ext)
    return tool[:n], ext[:n], float(end)
