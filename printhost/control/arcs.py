"""G2/G3 arcs as chains of straight segments, with Klipper's geometry.

The planner only knows straight moves, so an arc is cut into chords before it reaches
it. The cut follows Klipper's `gcode_arcs` (which took it from Marlin) exactly: the
same segment count, floor(arc length / resolution) but at least one, so each segment
spans *at least* `resolution` of arc and less than twice that (an arc shorter than
`resolution` is a single segment); the same points, computed by rotating the start
offset by whole multiples of the per-segment angle (no accumulated rotation error);
and the last point replaced by the requested end point, so the arc ends exactly
where the G-code says. A motion time computed for the same file therefore matches
Klipper's.

Only the XY plane is supported (G17, the default everywhere); a Z change makes the
arc a helix, spread evenly over the segments.

The centre comes either from I/J, offsets from the start point (what Klipper reads),
or from R, the radius, which Klipper refuses and Marlin accepts; here R follows
Marlin: positive for the shorter arc, negative for the longer one (> 180 degrees).
"""

from __future__ import annotations

import math

# A radius may fall short of half the chord by this much and still be read as a half
# circle: R values are written rounded, typically to 3 decimals, so an exact half
# circle in a file can come out a hair too small. Anything shorter cannot reach the
# end point at all and is refused.
RADIUS_TOLERANCE_MM = 0.005

# More segments than this from one line is refused: one G2 line must not keep the
# control loop busy for seconds (an arc at the finest resolution of 0.001 mm would
# need a million segments for a 20 mm circle).
MAX_ARC_SEGMENTS = 100_000

Point3 = tuple[float, float, float]


class ArcError(ValueError):
    """The arc's parameters do not describe an arc that can be drawn."""


def centre_offset_from_radius(start: Point3, target: Point3, radius: float,
                              clockwise: bool) -> tuple[float, float]:
    """Return (I, J), the centre relative to the start, for an R-form arc.

    Two circles of radius |R| pass through both points; the sign of R picks the one
    that gives the shorter (R > 0) or longer (R < 0) arc in the given direction.
    """
    if not math.isfinite(radius) or radius == 0.0:
        raise ArcError("G2/G3 radius R must not be zero")
    dx = target[0] - start[0]
    dy = target[1] - start[1]
    chord = math.hypot(dx, dy)
    if chord == 0.0:
        raise ArcError("G2/G3 with R needs an end point different from the start "
                       "(a full circle needs I/J)")
    half = 0.5 * chord
    if abs(radius) < half - RADIUS_TOLERANCE_MM:
        raise ArcError(f"G2/G3 radius {abs(radius):.3f} is too small to reach the end point "
                       f"({chord:.3f} mm away)")
    # Distance from the chord's midpoint to the centre, along the chord's normal.
    rise = math.sqrt(max(0.0, (abs(radius) - half) * (abs(radius) + half)))
    # The left normal of the chord points at the centre of a short counter-clockwise
    # arc; a clockwise arc or a negative radius (long arc) flips the side, both flip it back.
    side = -1.0 if clockwise != (radius < 0.0) else 1.0
    centre_x = start[0] + 0.5 * dx + side * rise * (-dy / chord)
    centre_y = start[1] + 0.5 * dy + side * rise * (dx / chord)
    return centre_x - start[0], centre_y - start[1]


def arc_points(start: Point3, target: Point3, offset: tuple[float, float], clockwise: bool,
               resolution: float) -> list[Point3]:
    """End points of the segments that approximate the arc (the start not included).

    `offset` is (I, J): the centre minus the start. When the target equals the start
    in X and Y, the arc is a full circle.
    """
    if not resolution > 0.0:
        raise ArcError("arc resolution must be positive")
    off_i, off_j = offset
    if off_i == 0.0 and off_j == 0.0:
        raise ArcError("G2/G3 requires I and J (or R) parameters")
    centre_x = start[0] + off_i
    centre_y = start[1] + off_j
    # Radius vectors from the centre to the start and to the target.
    start_rx, start_ry = -off_i, -off_j
    end_rx, end_ry = target[0] - centre_x, target[1] - centre_y
    # Signed angle from the start vector to the end vector, then taken the long way
    # round for clockwise arcs (angles are counter-clockwise positive).
    angle = math.atan2(start_rx * end_ry - start_ry * end_rx,
                       start_rx * end_rx + start_ry * end_ry)
    if angle < 0.0:
        angle += 2.0 * math.pi
    if clockwise:
        angle -= 2.0 * math.pi
    if angle == 0.0 and start[0] == target[0] and start[1] == target[1]:
        angle = 2.0 * math.pi      # counter-clockwise back to the start: a whole circle
    rise = target[2] - start[2]
    radius = math.hypot(start_rx, start_ry)
    flat_length = radius * angle
    length = math.hypot(flat_length, rise) if rise else abs(flat_length)
    count = max(1.0, math.floor(length / resolution))
    if count > MAX_ARC_SEGMENTS:
        raise ArcError(f"G2/G3 arc would need {count:.0f} segments at a resolution of "
                       f"{resolution:g} mm (at most {MAX_ARC_SEGMENTS})")
    segments = int(count)
    angle_step = angle / count
    rise_step = rise / count
    points: list[Point3] = []
    for k in range(1, segments):
        turn = k * angle_step
        cos_t = math.cos(turn)
        sin_t = math.sin(turn)
        # The start radius vector (-I, -J) rotated by `turn`.
        rx = -off_i * cos_t + off_j * sin_t
        ry = -off_i * sin_t - off_j * cos_t
        points.append((centre_x + rx, centre_y + ry, start[2] + k * rise_step))
    points.append((target[0], target[1], target[2]))
    return points
