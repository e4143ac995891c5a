"""A stepper's position as a function of print time, read from the move segments.

A stepper's position is built from the segments (see `trapq`): one coordinate for
a cartesian axis, x + y or x - y for the two CoreXY motors, the filament position
for the extruder. It is a sum of "streams": a coordinate of the segments, scaled
and delayed. A plain axis is one stream; CoreXY adds two; input shaping replaces a
coordinate c(t) by sum_i A_i c(t - T_i), one stream per pulse. Pressure advance is
the exception: the extruder position e(t) + K e'(t) is averaged with a triangular
weight over +-smooth_time/2 (Klipper's kin_extruder), computed here in closed form
from the moments of each row's polynomial over the window.

This is the function `stepgen` finds the step times of, kept apart from that
search because it is also used on its own: `position_kernel` gives the position
and commanded step at one instant (the starting step of a stream, and the tests'
ground truth), and the search evaluates it at piece ends and inside its bracketing.

numba's cache checks only the file a function is defined in: the cached kernels of
`stepgen` hold these functions compiled in, so after editing this module clear the
cache (see `printhost.control.kernels`), or they keep the old code.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from printhost.control.kernels.trapq import (AXES_R_X, AXES_R_Y, HALF_ACCEL, MOVE_T,
                                             PRINT_TIME, START_V, START_X)

# How the position is computed: a sum of streams, or the pressure-advance average.
MODE_QUADRATIC = 0
MODE_PRESSURE_ADVANCE = 1


# --------------------------------------------------------------------------- evaluation

@numba.njit(cache=True, nogil=True)
def find_row(segs, x):
    """Index of the last row starting at or before `x`, or -1 if `x` precedes all rows."""
    lo = 0
    hi = segs.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if segs[mid, PRINT_TIME] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


@numba.njit(cache=True, nogil=True)
def held_value(segs, j, col):
    """Coordinate `col` while no row is active just after row `j` (j = -1: before the first)."""
    n = segs.shape[0]
    if j + 1 < n:
        return segs[j + 1, START_X + col]
    mt = segs[j, MOVE_T]
    return segs[j, START_X + col] + segs[j, AXES_R_X + col] * (
        (segs[j, START_V] + segs[j, HALF_ACCEL] * mt) * mt)


@numba.njit(cache=True, nogil=True)
def _coord(segs, col, x):
    """Coordinate `col` (0, 1, 2 = the X, Y, Z columns) at time `x`."""
    j = find_row(segs, x)
    if j >= 0:
        pt = segs[j, PRINT_TIME]
        if x < pt + segs[j, MOVE_T]:
            dt = x - pt
            return segs[j, START_X + col] + segs[j, AXES_R_X + col] * (
                (segs[j, START_V] + segs[j, HALF_ACCEL] * dt) * dt)
    return held_value(segs, j, col)


@numba.njit(cache=True, nogil=True)
def stream_position(segs, cols, coefs, shifts, t):
    total = 0.0
    for k in range(cols.shape[0]):
        total += coefs[k] * _coord(segs, cols[k], t - shifts[k])
    return total


@numba.njit(cache=True, nogil=True)
def _weighted_moment(q0, q1, q2, u0, u1, hst, slope):
    """Integral over [u0, u1] (one side of u = 0) of (q0 + q1 u + q2 u^2) * weight.

    slope = 0 gives the sign weight sign(u), otherwise the triangle weight
    hst - |u|; the stretch must not straddle u = 0, so sign(u) is a constant.
    """
    side = 1.0 if u1 > 0.0 else -1.0
    a2 = u0 * u0
    b2 = u1 * u1
    a3 = a2 * u0
    b3 = b2 * u1
    m0 = q0 * (u1 - u0) + q1 * 0.5 * (b2 - a2) + q2 * (b3 - a3) / 3.0
    if slope == 0.0:
        return side * m0
    m1 = q0 * 0.5 * (b2 - a2) + q1 * (b3 - a3) / 3.0 + q2 * 0.25 * (b2 * b2 - a2 * a2)
    return hst * m0 - side * m1


@numba.njit(cache=True, nogil=True)
def _window_integral(q0, q1, q2, u0, u1, hst, slope):
    total = 0.0
    if u0 < 0.0:
        total += _weighted_moment(q0, q1, q2, u0, min(u1, 0.0), hst, slope)
    if u1 > 0.0:
        total += _weighted_moment(q0, q1, q2, max(u0, 0.0), u1, hst, slope)
    return total


@numba.njit(cache=True, nogil=True)
def pa_eval(segs, t, hst, advance, derivative):
    """Smoothed pressure-advance position at `t` (derivative=False) or its slope.

    The advanced position pa(x) = e(x) + K * flag * e'(x) is integrated against the
    triangle hst - |x - t| (or, for the slope, against sign(x - t)) over the window
    [t - hst, t + hst] and divided by hst^2, so a constant velocity passes through
    unchanged. Each row's polynomial is re-centred on t before integrating, and
    positions are taken relative to a nearby base, which keeps the sums small.
    """
    n = segs.shape[0]
    lo = t - hst
    hi = t + hst
    j = find_row(segs, lo)
    base = segs[0, START_X] if j < 0 else segs[j, START_X]
    slope = 0.0 if derivative else 1.0
    acc = 0.0
    x = lo
    if j < 0:
        xe = min(segs[0, PRINT_TIME], hi)
        if xe > x:
            acc += _window_integral(segs[0, START_X] - base, 0.0, 0.0, x - t, xe - t, hst, slope)
            x = xe
        j = 0
    while x < hi:
        pt = segs[j, PRINT_TIME]
        end = pt + segs[j, MOVE_T]
        if x < end:
            xe = min(end, hi)
            c = t - pt
            r = segs[j, AXES_R_X]
            v = segs[j, START_V]
            h = segs[j, HALF_ACCEL]
            f = advance * segs[j, AXES_R_Y]
            vel = r * (v + 2.0 * h * c)
            q0 = (segs[j, START_X] - base) + r * ((v + h * c) * c) + f * vel
            q1 = vel + f * 2.0 * r * h
            q2 = r * h
            acc += _window_integral(q0, q1, q2, x - t, xe - t, hst, slope)
            x = xe
            if x >= hi:
                break
        if j + 1 < n:
            nxt = segs[j + 1, PRINT_TIME]
            if x < nxt:
                xe = min(nxt, hi)
                acc += _window_integral(segs[j + 1, START_X] - base, 0.0, 0.0,
                                        x - t, xe - t, hst, slope)
                x = xe
            j += 1
        else:
            acc += _window_integral(held_value(segs, j, 0) - base, 0.0, 0.0,
                                    x - t, hi - t, hst, slope)
            x = hi
    if derivative:
        return acc / (hst * hst)
    return base + acc / (hst * hst)


@numba.njit(cache=True, nogil=True)
def position_at(mode, segs, cols, coefs, shifts, hst, advance, t):
    if mode == MODE_QUADRATIC:
        return stream_position(segs, cols, coefs, shifts, t)
    return pa_eval(segs, t, hst, advance, False)


@numba.njit(cache=True, nogil=True)
def commanded_step(p, step_dist):
    """The step k with (k - 1/2) step_dist <= p < (k + 1/2) step_dist."""
    k = np.int64(math.floor(p / step_dist + 0.5))
    while (k + 0.5) * step_dist <= p:
        k += 1
    while (k - 0.5) * step_dist > p:
        k -= 1
    return k


@numba.njit(cache=True, nogil=True)
def position_kernel(segs, cols, coefs, shifts, hst, advance, step_dist, t):
    """(position in mm, commanded step) of the stepper at time t."""
    mode = MODE_PRESSURE_ADVANCE if hst > 0.0 else MODE_QUADRATIC
    p = position_at(mode, segs, cols, coefs, shifts, hst, advance, t)
    return p, commanded_step(p, step_dist)
