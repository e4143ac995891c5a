import math
import random
from dataclasses import replace

import pytest

from printhost.config import PrinterSettings
from printhost.control.motion import PlannedMove
from printhost.control.planner import LookaheadPlanner

PRINTER = PrinterSettings()
TOL = 1e-9


def collect(printer=PRINTER, **kw):
    out: list[PlannedMove] = []
    return LookaheadPlanner(printer, out.append, **kw), out


def _sub(a, b):
    return tuple(y - x for x, y in zip(a, b))


def _xyz_len(m):
    d = _sub(m.start, m.end)
    return math.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)


def _is_extrude_only(m):
    return _xyz_len(m) < 1e-9


def corner_limit_v2(p: PlannedMove, n: PlannedMove, printer=PRINTER, toolhead_accel=None):
    """Independent statement of the junction rule, using the angle itself."""
    if _is_extrude_only(p) or _is_extrude_only(n):
        return 0.0
    u = [c / p.distance for c in _sub(p.start, p.end)[:3]]
    w = [c / n.distance for c in _sub(n.start, n.end)[:3]]
    cross = (u[1] * w[2] - u[2] * w[1], u[2] * w[0] - u[0] * w[2], u[0] * w[1] - u[1] * w[0])
    turn = math.atan2(math.hypot(*cross), sum(a * b for a, b in zip(u, w)))
    theta = math.pi - turn   # 180 degrees = straight on, 0 = reversal
    if theta >= math.pi - 1e-12:
        return math.inf
    s = math.sin(theta / 2)
    jd = printer.square_corner_velocity ** 2 * (math.sqrt(2) - 1) / (
        toolhead_accel or printer.max_accel)
    radius = jd * s / (1 - s)
    limits = [radius * p.accel, radius * n.accel]
    for m in (p, n):
        limits.append(m.accel * 0.5 * m.distance * math.tan(theta / 2))
    return min(limits)


def check_profile(m: PlannedMove, printer=PRINTER):
    assert m.accel_t >= 0 and m.cruise_t >= 0 and m.decel_t >= 0
    assert m.cruise_v + TOL >= max(m.start_v, m.end_v)
    # Phase lengths computed from the fields must add up to the move.
    accel_d = m.start_v * m.accel_t + 0.5 * m.accel * m.accel_t ** 2
    decel_d = m.cruise_v * m.decel_t - 0.5 * m.accel * m.decel_t ** 2
    total = accel_d + m.cruise_v * m.cruise_t + decel_d
    assert abs(total - m.distance) <= TOL * max(1.0, m.distance)
    assert abs(m.distance_at(m.duration) - m.distance) <= TOL * max(1.0, m.distance)
    # Ramps reach exactly the cruise speed.
    assert abs(m.start_v + m.accel * m.accel_t - m.cruise_v) <= TOL * max(1.0, m.cruise_v)
    assert abs(m.cruise_v - m.accel * m.decel_t - m.end_v) <= TOL * max(1.0, m.cruise_v)
    if _is_extrude_only(m):
        assert abs(m.distance - abs(m.end[3] - m.start[3])) <= TOL
        assert m.cruise_v <= printer.max_extrude_only_velocity * (1 + TOL)
        assert m.accel <= printer.max_extrude_only_accel * (1 + TOL)
    else:
        assert abs(m.distance - _xyz_len(m)) <= TOL * max(1.0, m.distance)
        assert m.cruise_v <= printer.max_velocity * (1 + TOL)
        assert m.accel <= printer.max_accel * (1 + TOL)
        dz = abs(m.end[2] - m.start[2])
        assert m.cruise_v * dz / m.distance <= printer.max_z_velocity * (1 + TOL)
        assert m.accel * dz / m.distance <= printer.max_z_accel * (1 + TOL)


def check_sequence(moves, printer=PRINTER, toolhead_accel=None):
    assert moves[0].start_v == 0.0
    assert moves[-1].end_v == 0.0
    for m in moves:
        check_profile(m, printer)
    for p, n in zip(moves, moves[1:]):
        assert p.end == n.start
        assert abs(n.start_v - p.end_v) <= TOL
        limit = corner_limit_v2(p, n, printer, toolhead_accel)
        assert n.start_v ** 2 <= limit * (1 + 1e-6) + 1e-9


def reference_plan(segments, speeds, printer=PRINTER):
    """Whole-sequence two-pass planner written from the definitions, no laziness."""
    moves = []
    for (a, b), v in zip(segments, speeds):
        d = math.dist(a[:3], b[:3])
        if d < 1e-9:
            d = abs(b[3] - a[3])
            if d < 1e-9:
                continue
            moves.append(dict(a=a, b=b, d=d, acc=printer.max_extrude_only_accel,
                              v2=min(v, printer.max_extrude_only_velocity) ** 2))
            continue
        acc, vmax = printer.max_accel, min(v, printer.max_velocity)
        dz = abs(b[2] - a[2])
        if dz:
            vmax = min(vmax, printer.max_z_velocity * d / dz)
            acc = min(acc, printer.max_z_accel * d / dz)
        moves.append(dict(a=a, b=b, d=d, acc=acc, v2=vmax ** 2))
    # Junction limits via the independent corner rule on fake PlannedMoves.
    fakes = [PlannedMove(m["a"], m["b"], m["d"], 0, 0, 0, m["acc"], 0, 0, 0) for m in moves]
    junction = [0.0] + [min(corner_limit_v2(p, n, printer), pm["v2"], nm["v2"])
                        for p, n, pm, nm in zip(fakes, fakes[1:], moves, moves[1:])]
    n = len(moves)
    back = [0.0] * (n + 1)
    for i in range(n - 1, -1, -1):
        back[i] = min(junction[i], back[i + 1] + 2 * moves[i]["d"] * moves[i]["acc"])
    result, v2 = [], 0.0
    for i, m in enumerate(moves):
        end = min(back[i + 1], v2 + 2 * m["d"] * m["acc"])
        cruise = min(m["v2"], (v2 + end + 2 * m["d"] * m["acc"]) / 2)
        result.append((math.sqrt(v2), math.sqrt(cruise), math.sqrt(end)))
        v2 = end
    return result


def random_segments(rng, count, printer=PRINTER):
    pos = (100.0, 100.0, 5.0, 0.0)
    segments, speeds = [], []
    for _ in range(count):
        kind = rng.random()
        x, y, z, e = pos
        if kind < 0.08:
            new = (x, y, z, e + rng.uniform(-2, 2))                       # retract/prime
        elif kind < 0.14:
            new = (x, y, z + rng.uniform(-0.5, 0.5), e)                  # Z hop
        elif kind < 0.18:
            new = pos                                                     # zero length
        elif kind < 0.24 and segments:
            new = segments[-1][0]                                         # reversal
        elif kind < 0.5:
            step = rng.choice([0.01, 0.1, 0.5])                           # fine arc
            ang = rng.uniform(0, 2 * math.pi)
            new = (x + step * math.cos(ang), y + step * math.sin(ang), z, e + step * 0.05)
        else:
            new = (rng.uniform(0, 235), rng.uniform(0, 235),
                   z + rng.choice([0.0, 0.0, 0.0, rng.uniform(-1, 1)]), e + rng.uniform(0, 3))
        segments.append((pos, new))
        speeds.append(rng.choice([5.0, 30.0, 80.0, 150.0, 400.0]))
        pos = new
    return segments, speeds


# ---------------------------------------------------------------- properties on random input

@pytest.mark.parametrize("seed", range(6))
def test_random_sequences_are_continuous_and_within_limits(seed):
    rng = random.Random(seed)
    segments, speeds = random_segments(rng, 400)
    planner, out = collect()
    for (a, b), v in zip(segments, speeds):
        planner.add_move(a, b, v)
    planner.flush()
    assert planner.queued_moves == 0
    check_sequence(out)
    expected = reference_plan(segments, speeds)
    assert len(out) == len(expected)
    for m, (s, c, e) in zip(out, expected):
        assert m.start_v == pytest.approx(s, rel=1e-6, abs=1e-6)
        assert m.cruise_v == pytest.approx(c, rel=1e-6, abs=1e-6)
        assert m.end_v == pytest.approx(e, rel=1e-6, abs=1e-6)


def test_random_with_other_limits_and_m204_accel():
    printer = replace(PRINTER, max_velocity=120.0, max_accel=800.0, max_z_velocity=4.0,
                      max_z_accel=30.0, square_corner_velocity=9.0,
                      max_extrude_only_velocity=20.0, max_extrude_only_accel=400.0)
    rng = random.Random(99)
    segments, speeds = random_segments(rng, 300, printer)
    planner, out = collect(printer)
    for (a, b), v in zip(segments, speeds):
        planner.add_move(a, b, v, accel=500.0)
    planner.flush()
    check_sequence(out, printer, toolhead_accel=500.0)
    assert all(m.accel <= 500.0 for m in out if not _is_extrude_only(m))


def test_moves_are_emitted_in_order_with_zero_length_dropped():
    planner, out = collect()
    pts = [(0, 0, 0, 0), (10, 0, 0, 0), (10, 0, 0, 0), (10, 5, 0, 1), (10, 5, 0, 1)]
    for a, b in zip(pts, pts[1:]):
        planner.add_move(a, b, 50.0)
    planner.flush()
    assert [(m.start, m.end) for m in out] == [(pts[0], pts[1]), (pts[2], pts[3])]


# ---------------------------------------------------------------- look-ahead

def test_collinear_segments_take_as_long_as_one_move():
    direction = (3.0, 4.0, 0.0)
    single, one = collect()
    single.add_move((10, 10, 0, 0), (10 + 30, 10 + 40, 0, 5), 120.0)
    single.flush()
    split, many = collect()
    for i in range(100):
        a = (10 + direction[0] * 0.1 * i, 10 + direction[1] * 0.1 * i, 0.0, 0.05 * i)
        b = (10 + direction[0] * 0.1 * (i + 1), 10 + direction[1] * 0.1 * (i + 1),
             0.0, 0.05 * (i + 1))
        split.add_move(a, b, 120.0)
    split.flush()
    assert len(many) == 100
    check_sequence(many)
    assert sum(m.duration for m in many) == pytest.approx(one[0].duration, abs=1e-6)
    assert max(m.cruise_v for m in many) == pytest.approx(120.0)


def test_lazy_flush_emits_moves_before_a_limiting_corner():
    planner, out = collect()
    planner.add_move((0, 0, 0, 0), (50, 0, 0, 0), 100.0)
    assert out == []                      # could still be followed by a straight move
    planner.add_move((50, 0, 0, 0), (50, 50, 0, 0), 100.0)
    assert len(out) == 1                  # the corner fixed the first move's end speed
    assert out[0].end_v == pytest.approx(PRINTER.square_corner_velocity)
    assert planner.queued_moves == 1
    planner.flush()
    check_sequence(out)


def test_lazy_flush_on_straight_line_keeps_only_the_braking_distance():
    planner, out = collect()
    for i in range(200):
        planner.add_move((i * 1.0, 0, 0, 0), ((i + 1) * 1.0, 0, 0, 0), 100.0)
    # Stopping from 100 mm/s at 3000 mm/s^2 takes 1.67 mm: only a few moves are held.
    assert planner.queued_moves <= 4
    planner.flush()
    check_sequence(out)


def test_queue_overflow_emits_older_moves_without_stopping():
    planner, out = collect(max_queue_moves=8)
    sizes = []
    for i in range(60):
        planner.add_move((i * 0.01, 0, 0, 0), ((i + 1) * 0.01, 0, 0, 0), 300.0)
        sizes.append(planner.queued_moves)
    assert max(sizes) <= 9 and out
    planner.flush()
    check_sequence(out)
    # The toolhead keeps moving: only the very first and very last speeds are zero.
    assert all(m.end_v > 0 for m in out[:-1])


# ---------------------------------------------------------------- junctions

def test_ninety_degree_corner_passes_at_square_corner_velocity():
    planner, out = collect()
    planner.add_move((0, 0, 0, 0), (100, 0, 0, 0), 200.0)
    planner.add_move((100, 0, 0, 0), (100, 100, 0, 0), 200.0)
    planner.flush()
    assert out[0].end_v == pytest.approx(PRINTER.square_corner_velocity, rel=1e-12)
    assert out[1].start_v == out[0].end_v


def test_ninety_degree_corner_with_lower_m204_accel_keeps_scv():
    planner, out = collect()
    planner.add_move((0, 0, 0, 0), (100, 0, 0, 0), 200.0, accel=1000.0)
    planner.add_move((100, 0, 0, 0), (100, 100, 0, 0), 200.0, accel=1000.0)
    planner.flush()
    assert out[0].accel == 1000.0
    assert out[0].end_v == pytest.approx(PRINTER.square_corner_velocity, rel=1e-12)


def test_accel_above_the_configured_limit_is_capped():
    planner, out = collect()
    planner.add_move((0, 0, 0, 0), (100, 0, 0, 0), 200.0, accel=50_000.0)
    planner.flush()
    assert out[0].accel == PRINTER.max_accel


def test_short_segments_corner_is_limited_by_centripetal_bound():
    planner, out = collect()
    d = 0.005
    planner.add_move((10, 10, 0, 0), (10 + d, 10, 0, 0), 200.0)
    planner.add_move((10 + d, 10, 0, 0), (10 + d, 10 + d, 0, 0), 200.0)
    planner.flush()
    # v^2 = a * (d / 2) * tan(45 deg), smaller than scv^2 here.
    expected = math.sqrt(PRINTER.max_accel * d / 2)
    assert expected < PRINTER.square_corner_velocity
    assert out[0].end_v == pytest.approx(expected, rel=1e-12)


def test_shallow_corner_is_faster_than_square_corner():
    planner, out = collect()
    planner.add_move((0, 0, 0, 0), (100, 0, 0, 0), 200.0)
    planner.add_move((100, 0, 0, 0), (200, 10, 0, 0), 200.0)
    planner.flush()
    assert out[0].end_v > PRINTER.square_corner_velocity * 3
    check_sequence(out)


def test_reversal_stops():
    planner, out = collect()
    planner.add_move((0, 0, 0, 0), (50, 0, 0, 0), 100.0)
    planner.add_move((50, 0, 0, 0), (0, 0, 0, 0), 100.0)
    assert len(out) == 1 and out[0].end_v == 0.0
    planner.flush()
    assert out[1].start_v == 0.0


def test_junctions_with_extrude_only_moves_stop():
    planner, out = collect()
    planner.add_move((0, 0, 0, 0), (50, 0, 0, 1), 100.0)
    planner.add_move((50, 0, 0, 1), (50, 0, 0, 0), 100.0)    # retract
    planner.add_move((50, 0, 0, 0), (50, 0, 0, 1), 100.0)    # unretract
    planner.add_move((50, 0, 0, 1), (100, 0, 0, 2), 100.0)
    planner.flush()
    assert [m.end_v for m in out] == [0.0, 0.0, 0.0, 0.0]
    retract = out[1]
    assert retract.distance == 1.0
    assert retract.accel == PRINTER.max_extrude_only_accel
    assert retract.cruise_v <= PRINTER.max_extrude_only_velocity
    check_sequence(out)


def test_extrude_only_speed_is_capped():
    planner, out = collect()
    planner.add_move((0, 0, 0, 0), (0, 0, 0, 500), 1000.0)
    planner.flush()
    assert out[0].cruise_v == pytest.approx(PRINTER.max_extrude_only_velocity)


def test_z_moves_use_z_limits():
    planner, out = collect()
    planner.add_move((0, 0, 0, 0), (0, 0, 50, 0), 100.0)
    planner.add_move((0, 0, 50, 0), (40, 0, 80, 0), 100.0)   # dz/d = 0.6
    planner.flush()
    assert out[0].cruise_v == pytest.approx(PRINTER.max_z_velocity)
    assert out[0].accel == pytest.approx(PRINTER.max_z_accel)
    assert out[1].cruise_v == pytest.approx(PRINTER.max_z_velocity / 0.6)
    assert out[1].accel == pytest.approx(PRINTER.max_z_accel / 0.6)
    check_sequence(out)


# ---------------------------------------------------------------- flush, dwell, estimate

def test_flush_ends_at_rest_and_next_move_starts_from_rest():
    planner, out = collect()
    planner.add_move((0, 0, 0, 0), (10, 0, 0, 0), 100.0)
    planner.add_move((10, 0, 0, 0), (20, 0, 0, 0), 100.0)
    planner.flush()
    assert out[-1].end_v == 0.0 and planner.queued_moves == 0
    planner.add_move((20, 0, 0, 0), (30, 0, 0, 0), 100.0)
    planner.flush()
    assert out[-1].start_v == 0.0
    planner.flush()                          # nothing queued: nothing emitted
    assert len(out) == 3


def test_dwell_flushes_first():
    planner, out = collect()
    planner.add_move((0, 0, 0, 0), (10, 0, 0, 0), 100.0)
    planner.dwell((10, 0, 0, 0), 1.5)
    assert len(out) == 2
    assert out[0].end_v == 0.0
    assert out[1] == PlannedMove.dwell((10, 0, 0, 0), 1.5)
    assert out[1].duration == 1.5
    planner.dwell((10, 0, 0, 0), 0.0)        # G4 P0: a flush, no empty move
    assert len(out) == 2


def test_queued_time_estimate_bounds_the_real_time():
    planner, out = collect()
    assert planner.queued_time_estimate() == 0.0
    pts = [(0, 0, 0, 0), (30, 0, 0, 0), (30, 30, 0, 0), (60, 60, 0, 0), (60, 60, 2, 0)]
    for a, b in zip(pts, pts[1:]):
        planner.add_move(a, b, 150.0)
    queued = planner.queued_moves
    estimate = planner.queued_time_estimate()
    already = len(out)
    planner.flush()
    actual = sum(m.duration for m in out[already:])
    assert len(out) - already == queued
    assert actual <= estimate + 1e-9
    assert estimate < actual * 3
    assert planner.queued_time_estimate() == 0.0


def test_clear_drops_queued_moves_and_restarts_from_rest():
    planner, out = collect()
    planner.add_move((0, 0, 0, 0), (10, 0, 0, 0), 100.0)
    planner.clear()
    planner.flush()
    assert out == [] and planner.queued_time_estimate() == 0.0
    planner.add_move((5, 0, 0, 0), (15, 0, 0, 0), 100.0)
    planner.flush()
    assert out[0].start_v == 0.0


@pytest.mark.parametrize("speed,accel", [(0.0, None), (-1.0, None), (math.nan, None),
                                         (math.inf, None), (10.0, 0.0), (10.0, math.nan)])
def test_invalid_speed_or_accel_is_refused(speed, accel):
    planner, out = collect()
    with pytest.raises(ValueError):
        planner.add_move((0, 0, 0, 0), (1, 0, 0, 0), speed, accel)
    assert planner.queued_moves == 0


def test_non_finite_coordinates_are_refused():
    planner, _ = collect()
    with pytest.raises(ValueError):
        planner.add_move((0, 0, 0, 0), (math.nan, 0, 0, 0), 10.0)
