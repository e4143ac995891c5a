"""G2/G3 geometry: Klipper's segment count and points, and the Marlin-style R form."""

from __future__ import annotations

import math
import random

import pytest

from printhost.control.arcs import (MAX_ARC_SEGMENTS, RADIUS_TOLERANCE_MM, ArcError, arc_points,
                                    centre_offset_from_radius)


def klipper_plan_arc(cur, target, offset, clockwise, mm_per_arc_segment):
    """klippy/extras/gcode_arcs.py planArc for the XY plane, restated line by line."""
    r_p, r_q = -offset[0], -offset[1]
    center_p, center_q = cur[0] - r_p, cur[1] - r_q
    rt_alpha, rt_beta = target[0] - center_p, target[1] - center_q
    angular_travel = math.atan2(r_p * rt_beta - r_q * rt_alpha, r_p * rt_alpha + r_q * rt_beta)
    if angular_travel < 0.:
        angular_travel += 2. * math.pi
    if clockwise:
        angular_travel -= 2. * math.pi
    if angular_travel == 0. and cur[0] == target[0] and cur[1] == target[1]:
        angular_travel = 2. * math.pi
    linear_travel = target[2] - cur[2]
    radius = math.hypot(r_p, r_q)
    flat_mm = radius * angular_travel
    mm_of_travel = math.hypot(flat_mm, linear_travel) if linear_travel else math.fabs(flat_mm)
    segments = max(1., math.floor(mm_of_travel / mm_per_arc_segment))
    theta_per_segment = angular_travel / segments
    linear_per_segment = linear_travel / segments
    coords = []
    for i in range(1, int(segments) + 1):
        dist_helical = i * linear_per_segment
        c_theta = i * theta_per_segment
        cos_ti, sin_ti = math.cos(c_theta), math.sin(c_theta)
        r_p = -offset[0] * cos_ti + offset[1] * sin_ti
        r_q = -offset[0] * sin_ti - offset[1] * cos_ti
        c = (center_p + r_p, center_q + r_q, cur[2] + dist_helical)
        if i == segments:
            c = tuple(target)
        coords.append(c)
    return coords


def test_points_are_klippers_exactly_on_random_arcs():
    rng = random.Random(7)
    for _ in range(2000):
        cur = (rng.uniform(0, 200), rng.uniform(0, 200), rng.uniform(0, 5))
        offset = (rng.uniform(-30, 30), rng.uniform(-30, 30))
        if rng.random() < 0.2:
            target = cur if rng.random() < 0.5 else (cur[0], cur[1], cur[2] + 1.0)
        else:
            target = (rng.uniform(0, 200), rng.uniform(0, 200),
                      cur[2] + rng.choice([0.0, 0.0, rng.uniform(-1, 1)]))
        clockwise = rng.random() < 0.5
        resolution = rng.choice([0.1, 0.5, 1.0, 2.5])
        if offset == (0.0, 0.0):
            continue
        assert arc_points(cur, target, offset, clockwise, resolution) == \
            klipper_plan_arc(cur, target, offset, clockwise, resolution)


def test_segment_count_and_lengths():
    # Quarter circle of radius 10: 15.71 mm -> 15 segments of 1.047 mm.
    pts = arc_points((10.0, 0.0, 0.0), (0.0, 10.0, 0.0), (-10.0, 0.0), False, 1.0)
    assert len(pts) == 15
    chords = [math.dist(a, b) for a, b in zip([(10.0, 0.0, 0.0)] + pts, pts)]
    assert all(c == pytest.approx(2 * 10 * math.sin(math.pi / 4 / 15)) for c in chords)
    assert all(1.0 <= c < 2.0 for c in chords)        # floor: segments are at least resolution
    for x, y, _ in pts:
        assert math.hypot(x, y) == pytest.approx(10.0, abs=1e-12)
    assert pts[-1] == (0.0, 10.0, 0.0)


def test_short_arc_is_one_segment_to_the_target():
    assert arc_points((0.0, 0.0, 0.0), (0.2, 0.2, 0.0), (0.2, 0.0), True, 1.0) == [(0.2, 0.2, 0.0)]


def test_full_circles_in_both_directions():
    for clockwise, sign in ((True, -1.0), (False, 1.0)):
        pts = arc_points((10.0, 0.0, 0.0), (10.0, 0.0, 0.0), (-10.0, 0.0), clockwise, 1.0)
        assert len(pts) == math.floor(2 * math.pi * 10)
        # The first step goes up (counter-clockwise) or down (clockwise) from (10, 0).
        assert math.copysign(1.0, pts[0][1]) == sign
        assert pts[-1] == (10.0, 0.0, 0.0)


def test_helix_spreads_z_evenly():
    pts = arc_points((10.0, 0.0, 1.0), (10.0, 0.0, 3.0), (-10.0, 0.0), False, 1.0)
    travel = math.hypot(2 * math.pi * 10, 2.0)
    assert len(pts) == math.floor(travel)
    steps = [b[2] - a[2] for a, b in zip([(0, 0, 1.0)] + pts, pts)]
    assert all(s == pytest.approx(2.0 / len(pts)) for s in steps)


def test_errors():
    with pytest.raises(ArcError, match="requires I and J"):
        arc_points((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0), True, 1.0)
    with pytest.raises(ArcError, match="positive"):
        arc_points((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (1.0, 0.0), True, 0.0)
    with pytest.raises(ArcError, match=f"at most {MAX_ARC_SEGMENTS}"):
        arc_points((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (100.0, 0.0), True, 0.001)


# ---------------------------------------------------------------- R form

def test_radius_form_centres():
    start, end = (0.0, 0.0, 0.0), (10.0, 0.0, 0.0)
    # Half circle: the centre is the midpoint whichever way round.
    for cw in (True, False):
        assert centre_offset_from_radius(start, end, 5.0, cw) == pytest.approx((5.0, 0.0))
    # R 13 over a 10 mm chord: centre 12 mm off the chord; short arcs keep the centre
    # on the side opposite to the bulge, long arcs (R < 0) on the other side.
    assert centre_offset_from_radius(start, end, 13.0, False) == pytest.approx((5.0, 12.0))
    assert centre_offset_from_radius(start, end, 13.0, True) == pytest.approx((5.0, -12.0))
    assert centre_offset_from_radius(start, end, -13.0, False) == pytest.approx((5.0, -12.0))
    assert centre_offset_from_radius(start, end, -13.0, True) == pytest.approx((5.0, 12.0))


def test_radius_form_arc_length_matches_sign():
    rng = random.Random(3)
    for _ in range(300):
        start = (rng.uniform(0, 100), rng.uniform(0, 100), 0.0)
        end = (rng.uniform(0, 100), rng.uniform(0, 100), 0.0)
        chord = math.dist(start, end)
        r = chord / 2 + rng.uniform(0.01, 50)
        for cw in (True, False):
            for signed in (r, -r):
                i, j = centre_offset_from_radius(start, end, signed, cw)
                centre = (start[0] + i, start[1] + j)
                assert math.dist(centre, start[:2]) == pytest.approx(r, rel=1e-9)
                assert math.dist(centre, end[:2]) == pytest.approx(r, rel=1e-9)
                pts = arc_points(start, end, (i, j), cw, 0.5)
                # Angle swept, from the points themselves.
                swept = 0.0
                prev = math.atan2(start[1] - centre[1], start[0] - centre[0])
                for x, y, _ in pts:
                    a = math.atan2(y - centre[1], x - centre[0])
                    d = (a - prev + math.pi) % (2 * math.pi) - math.pi
                    swept += d
                    prev = a
                assert (swept < 0) == cw
                assert (abs(swept) > math.pi) == (signed < 0)


def test_radius_tolerance_and_errors():
    start, end = (0.0, 0.0, 0.0), (10.0, 0.0, 0.0)
    # A rounded half-circle radius a hair short is accepted as the half circle.
    off = centre_offset_from_radius(start, end, 5.0 - RADIUS_TOLERANCE_MM / 2, True)
    assert off == pytest.approx((5.0, 0.0))
    with pytest.raises(ArcError, match="too small"):
        centre_offset_from_radius(start, end, 4.9, True)
    with pytest.raises(ArcError, match="must not be zero"):
        centre_offset_from_radius(start, end, 0.0, True)
    with pytest.raises(ArcError, match="full circle needs I/J"):
        centre_offset_from_radius(start, (0.0, 0.0, 5.0), 5.0, True)
