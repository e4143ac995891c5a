import math

import numpy as np
import pytest

from printhost.control.kernels import trapq
from printhost.control.kernels.trapq import (AXES_R_X, AXES_R_Y, AXES_R_Z, HALF_ACCEL, MOVE_T,
                                              PRINT_TIME, START_V, START_X, START_Y, START_Z)
from printhost.control.motion import PlannedMove


def trapezoid(start, end, v0, vc, v1, accel, distance=None):
    if distance is None:
        d = [b - a for a, b in zip(start, end)]
        distance = math.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2) or abs(d[3])
    at = (vc - v0) / accel
    dt = (vc - v1) / accel
    cd = distance - 0.5 * (v0 + vc) * at - 0.5 * (v1 + vc) * dt
    assert cd >= -1e-12
    return PlannedMove(start, end, distance, v0, vc, v1, accel, at, max(cd, 0.0) / vc, dt)


def moves_fixture():
    return [
        trapezoid((0, 0, 0.2, 0), (30, 40, 0.2, 2.0), 0.0, 100.0, 20.0, 2000.0),   # XY + E
        trapezoid((30, 40, 0.2, 2.0), (30, 10, 0.2, 3.0), 20.0, 80.0, 0.0, 2000.0),
        PlannedMove.dwell((30, 10, 0.2, 3.0), 0.25),
        trapezoid((30, 10, 0.2, 3.0), (30, 10, 0.2, 2.2), 0.0, 25.0, 0.0, 1000.0),  # retract
        trapezoid((30, 10, 0.2, 2.2), (30, 10, 0.6, 2.2), 0.0, 5.0, 0.0, 100.0),    # Z hop
        trapezoid((30, 10, 0.6, 2.2), (30, 10, 0.6, 3.0), 0.0, 25.0, 0.0, 1000.0),  # unretract
        trapezoid((30, 10, 0.6, 3.0), (35, 10, 0.8, 3.5), 0.0, 50.0, 0.0, 1500.0),  # XYZ + E
        trapezoid((35, 10, 0.8, 3.5), (5, 10, 0.8, 3.5), 0.0, 150.0, 0.0, 3000.0),  # travel
    ]


def test_rows_follow_the_moves():
    moves = moves_fixture()
    th = trapq.toolhead_segments(moves, 2.0)
    ex = trapq.extruder_segments(moves, 2.0)
    assert th.dtype == np.float64 and th.shape[1] == trapq.N_COLUMNS
    # The time columns are shared row for row.
    np.testing.assert_array_equal(th[:, :4], ex[:, :4])
    # Each phase follows the last without a gap, bitwise, except for the dwell.
    ends = th[:-1, PRINT_TIME] + th[:-1, MOVE_T]
    gaps = th[1:, PRINT_TIME] - ends
    assert (gaps >= 0.0).all()
    assert int((gaps > 0.0).sum()) == 1
    assert gaps.max() == pytest.approx(0.25, abs=1e-12)
    assert (th[:, MOVE_T] > 0.0).all()
    assert th[0, PRINT_TIME] == 2.0
    total = sum(m.duration for m in moves)
    assert trapq.end_time(th) == pytest.approx(2.0 + total, abs=1e-12)


def test_positions_match_planned_moves():
    moves = moves_fixture()
    th = trapq.toolhead_segments(moves, 1.0)
    ex = trapq.extruder_segments(moves, 1.0)
    rng = np.random.default_rng(3)
    t0 = 1.0
    for m in moves:
        for u in np.concatenate([[0.0, m.duration], rng.uniform(0.0, m.duration, 20)]):
            want = m.position_at(float(u))
            t = t0 + float(u)
            got = trapq.position_at(th, t)
            assert got == pytest.approx(want[:3], abs=1e-9)
            assert trapq.position_at(ex, t)[0] == pytest.approx(want[3], abs=1e-9)
        t0 += m.duration


def test_axis_ratios_and_advance_flag():
    moves = moves_fixture()
    th = trapq.toolhead_segments(moves, 0.0)
    ex = trapq.extruder_segments(moves, 0.0)
    first = th[0]
    np.testing.assert_allclose(first[AXES_R_X:AXES_R_Z + 1], [0.6, 0.8, 0.0])
    assert ex[0, AXES_R_X] == pytest.approx(2.0 / 50.0)
    assert ex[0, AXES_R_Y] == 1.0                     # XY move pushing filament
    # One row per phase that lasts; the dwell has none.
    per_move = [sum(1 for d in (m.accel_t, m.cruise_t, m.decel_t) if d > 0)
                for m in moves if m.distance > 0]
    assert len(th) == sum(per_move) and per_move[:2] == [3, 3]
    starts = np.cumsum([0] + per_move[:-1])
    retract, hop, unretract, xyz_e, travel = (ex[starts[i]] for i in range(2, 7))
    assert retract[AXES_R_X] == -1.0 and retract[AXES_R_Y] == 0.0
    assert th[starts[2], AXES_R_X:AXES_R_Z + 1].tolist() == [0.0, 0.0, 0.0]
    assert hop[AXES_R_X] == 0.0 and hop[AXES_R_Y] == 0.0
    assert unretract[AXES_R_X] == 1.0 and unretract[AXES_R_Y] == 0.0   # no XY motion
    assert xyz_e[AXES_R_Y] == 1.0
    assert travel[AXES_R_X] == 0.0 and travel[AXES_R_Y] == 0.0
    assert (ex[:, START_Y] == 0.0).all() and (ex[:, START_Z] == 0.0).all()
    assert (ex[:, AXES_R_Z] == 0.0).all()
    # Phases carry the trapezoid: accelerate, cruise, decelerate.
    assert th[0, HALF_ACCEL] == 1000.0 and th[1, HALF_ACCEL] == 0.0 and th[2, HALF_ACCEL] == -1000.0
    assert th[1, START_V] == 100.0


def test_zero_length_phases_are_skipped():
    m = PlannedMove((0, 0, 0, 0), (10, 0, 0, 0), 10.0, 50.0, 50.0, 50.0, 1000.0, 0.0, 0.2, 0.0)
    th = trapq.toolhead_segments([m], 0.0)
    assert th.shape == (1, trapq.N_COLUMNS)
    assert trapq.toolhead_segments([], 5.0).shape == (0, trapq.N_COLUMNS)
    assert trapq.toolhead_segments([PlannedMove.dwell((1, 2, 3, 4), 1.0)], 0.0).shape[0] == 0


def test_gap_rules():
    moves = moves_fixture()
    th = trapq.toolhead_segments(moves, 1.0)
    assert trapq.position_at(th, -100.0) == (0.0, 0.0, 0.2)
    end = trapq.end_time(th)
    assert trapq.position_at(th, end + 100.0) == pytest.approx((5.0, 10.0, 0.8), abs=1e-12)
    # inside the dwell the position is the next row's start
    dwell_start = 1.0 + moves[0].duration + moves[1].duration
    assert trapq.position_at(th, dwell_start + 0.1) == pytest.approx((30.0, 10.0, 0.2), abs=1e-12)


def test_window_keeps_what_the_range_needs():
    rng = np.random.default_rng(5)
    moves = moves_fixture() * 3
    th = trapq.toolhead_segments(moves, 0.0)
    end = trapq.end_time(th)
    for _ in range(200):
        t0 = rng.uniform(-0.5, end + 0.5)
        t1 = t0 + rng.uniform(0.0, 0.3)
        before, after = rng.uniform(0.0, 0.05, 2)
        w = trapq.window(th, t0, t1, before, after)
        assert np.shares_memory(w, th)
        lo = np.searchsorted(th[:, 0], w[0, 0])
        # every row overlapping the range is there, plus one on each side if any
        overlapping = [j for j in range(len(th))
                       if th[j, 0] <= t1 + after and th[j, 0] + th[j, 1] >= t0 - before]
        if overlapping:
            assert lo <= max(0, overlapping[0] - 1)
            assert lo + len(w) >= min(len(th), overlapping[-1] + 2)
        for t in np.linspace(t0 - before, t1 + after, 7):
            assert trapq.position_at(w, t) == pytest.approx(trapq.position_at(th, t), abs=1e-12)


def test_check_segments():
    th = trapq.toolhead_segments(moves_fixture(), 0.0)
    assert trapq.check_segments(th) is not None
    with pytest.raises(ValueError):
        trapq.check_segments(th[:, :9])
    bad = th.copy()
    bad[3, PRINT_TIME] -= 1e-6
    with pytest.raises(ValueError, match="before the previous"):
        trapq.check_segments(bad)
    bad = th.copy()
    bad[2, START_X] = np.nan
    with pytest.raises(ValueError):
        trapq.check_segments(bad)
    bad = th.copy()
    bad[2, MOVE_T] = -1.0
    with pytest.raises(ValueError):
        trapq.check_segments(bad)
    with pytest.raises(ValueError):
        trapq.toolhead_segments(moves_fixture(), math.nan)
