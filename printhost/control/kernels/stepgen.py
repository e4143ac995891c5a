"""Step times for one stepper motor, computed from the move-segment array.

A stepper's position is a function of print time built from the segments (see
`trapq`): one coordinate for a cartesian axis, x + y or x - y for the two CoreXY
motors, the filament position for the extruder. With `step_dist` the distance of
one microstep, the motor is commanded to step k while its position lies in
[(k - 1/2) step_dist, (k + 1/2) step_dist): it steps forward at the moment the
position reaches (k + 1/2) step_dist and back at the moment it drops below
(k - 1/2) step_dist. This is the half-step rule of Klipper's itersolve, on a grid
anchored at zero instead of at wherever the position was last set, so that the
commanded step position is always the rounding of the true position and nothing
depends on history.

The position function is a sum of "streams": a coordinate of the segments, scaled
and delayed. A plain axis is one stream; CoreXY adds two; input shaping replaces a
coordinate c(t) by sum_i A_i c(t - T_i), one stream per pulse. Every stream is a
quadratic in time between the segment boundaries shifted by its delay, so the sum
is exactly quadratic between consecutive such breakpoints, and its step times are
roots of quadratics, solved in closed form. Pressure advance is the exception: the
extruder position e(t) + K e'(t) is averaged with a triangular weight over
+-smooth_time/2 (Klipper's kin_extruder), which makes it a quartic between the
breakpoints {boundary - h, boundary, boundary + h}. There the pieces are split at
the zeros of the derivative (found through the zeros of the second derivative,
which is a quadratic) and each crossing is bracketed and refined with the Illinois
variant of regula falsi to well under a nanosecond.

Why breakpoint intervals and not a search along time: on an interval with a known
polynomial, the turning points are known, so between them the position is
monotonic and the number of steps is simply the number of half-step points between
its end values. Those end values are evaluated once per point and shared by the
neighbouring pieces, so the counts telescope: the steps generated over any time
range always add up to the change of the rounded position, and no step can be lost
or invented by a root finder's tolerance. Direction reversals inside a segment,
zero-length and zero-speed segments and gaps all fall out of the same rule. (The
only steps that can go missing are pairs: a half-step point overshot by less than
rounding error at a turning point, together with the step back. The net position
is unaffected.) Positions are expected to be continuous; if the segments jump,
every step of the jump is emitted at the instant of the jump.

Streaming: steps are produced for a time range [t0, t1). The pieces depend only
on the segments, never on t0 and t1, and every root is computed from its piece
alone; a range merely selects the roots that fall inside it. Calling range after
range therefore produces bit-for-bit the steps of one call over the union. The
state carried between calls is just the commanded step position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numba
import numpy as np

from printhost.control.kernels import trapq
from printhost.control.kernels.trapq import (AXES_R_X, AXES_R_Y, HALF_ACCEL, MOVE_T,
                                              PRINT_TIME, START_V, START_X)

if TYPE_CHECKING:
    from printhost.config import Settings

CARTESIAN_X = 0
CARTESIAN_Y = 1
CARTESIAN_Z = 2
COREXY_A = 3
COREXY_B = 4
EXTRUDER = 5
KIND_NAMES = ("cartesian_x", "cartesian_y", "cartesian_z", "corexy_a", "corexy_b", "extruder")

# Step times from the iterative solver are refined until the bracket is this narrow.
ROOT_TOLERANCE_S = 1e-11
_MAX_ITERATIONS = 200

_MODE_QUADRATIC = 0
_MODE_PRESSURE_ADVANCE = 1


# --------------------------------------------------------------------------- evaluation

@numba.njit(cache=True, nogil=True)
def _find_row(segs, x):
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
def _held_value(segs, j, col):
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
    j = _find_row(segs, x)
    if j >= 0:
        pt = segs[j, PRINT_TIME]
        if x < pt + segs[j, MOVE_T]:
            dt = x - pt
            return segs[j, START_X + col] + segs[j, AXES_R_X + col] * (
                (segs[j, START_V] + segs[j, HALF_ACCEL] * dt) * dt)
    return _held_value(segs, j, col)


@numba.njit(cache=True, nogil=True)
def _stream_position(segs, cols, coefs, shifts, t):
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
def _pa_eval(segs, t, hst, advance, derivative):
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
    j = _find_row(segs, lo)
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
            acc += _window_integral(_held_value(segs, j, 0) - base, 0.0, 0.0,
                                    x - t, hi - t, hst, slope)
            x = hi
    if derivative:
        return acc / (hst * hst)
    return base + acc / (hst * hst)


@numba.njit(cache=True, nogil=True)
def _position(mode, segs, cols, coefs, shifts, hst, advance, t):
    if mode == _MODE_QUADRATIC:
        return _stream_position(segs, cols, coefs, shifts, t)
    return _pa_eval(segs, t, hst, advance, False)


@numba.njit(cache=True, nogil=True)
def _commanded(p, step_dist):
    """The step k with (k - 1/2) step_dist <= p < (k + 1/2) step_dist."""
    k = np.int64(math.floor(p / step_dist + 0.5))
    while (k + 0.5) * step_dist <= p:
        k += 1
    while (k - 0.5) * step_dist > p:
        k -= 1
    return k


# --------------------------------------------------------------------------- root finding

@numba.njit(cache=True, nogil=True)
def _quadratic_root(c, b1, b2, direction):
    """Root of b2 s^2 + b1 s + c on the branch where the slope has sign `direction`.

    Of the two algebraically equal forms of the quadratic formula, the one that
    adds quantities of equal sign is used, so no digits cancel even when the
    acceleration term is tiny next to the velocity term.
    """
    if b2 == 0.0:
        if b1 == 0.0:
            return 0.0
        return -c / b1
    disc = b1 * b1 - 4.0 * b2 * c
    sq = math.sqrt(disc) if disc > 0.0 else 0.0
    if direction * b1 > 0.0:
        return -2.0 * c / (b1 + direction * sq)
    return (direction * sq - b1) / (2.0 * b2)


@numba.njit(cache=True, nogil=True)
def _refine(segs, hst, advance, derivative, target, rising, lo, hi, f_lo, f_hi):
    """Crossing of `target` by the smoothed position (or its slope) inside [lo, hi].

    The bracket is known: at `lo` the value has not reached the target, at `hi` it
    has ("reached" is >= when rising, < when falling, the step rule). Illinois
    regula falsi keeps the bracket and converges superlinearly; halving the stale
    end's value stops the one-sided stalls of plain regula falsi, and a bisection
    is forced whenever the bracket fails to halve for three steps, which bounds
    the iterations whatever the function does.
    """
    fa = f_lo - target
    fb = f_hi - target
    last_side = 0
    width = hi - lo
    slow = 0
    for _ in range(_MAX_ITERATIONS):
        if hi - lo <= ROOT_TOLERANCE_S:
            break
        if slow >= 3 or fb == fa:
            x = lo + 0.5 * (hi - lo)
            slow = 0
        else:
            x = lo + (hi - lo) * (fa / (fa - fb))
        if not (lo < x < hi):
            x = lo + 0.5 * (hi - lo)
            if not (lo < x < hi):
                break
        fx = _pa_eval(segs, x, hst, advance, derivative) - target
        reached = fx >= 0.0 if rising else fx < 0.0
        if reached:
            hi = x
            fb = fx
            if last_side == 1:
                fa *= 0.5
            last_side = 1
        else:
            lo = x
            fa = fx
            if last_side == -1:
                fb *= 0.5
            last_side = -1
        if hi - lo > 0.5 * width:
            slow += 1
        else:
            slow = 0
            width = hi - lo
    return lo + 0.5 * (hi - lo)


# --------------------------------------------------------------------------- pieces

@numba.njit(cache=True, nogil=True)
def _threshold_range(k0, k1):
    """Thresholds crossed going from step k0 to step k1, as (first, last, direction)."""
    if k1 > k0:
        return k0, k1 - 1, 1
    return k0 - 1, k1, -1


@numba.njit(cache=True, nogil=True)
def _emit(out_t, out_d, count, t, direction):
    if count < out_t.shape[0]:
        out_t[count] = t
        out_d[count] = direction
    return count + 1


@numba.njit(cache=True, nogil=True)
def _piece(mode, segs, cols, coefs, shifts, hst, advance, step_dist, t0, t1,
           a, c0, c1, c2, m0, m1, p0, p1, out_t, out_d, count):
    """Emit the steps of a monotonic piece [m0, m1] whose end values are p0, p1.

    For the quadratic mode, c0 + c1 s + c2 s^2 (s = t - a) is the position on the
    piece. Only thresholds whose crossing can fall in [t0, t1) are solved: when the
    piece sticks out of the range, the position at the range edge narrows them down
    (with a margin of two steps for rounding), and the final test on the root
    itself decides.
    """
    if m1 < t0 or m0 >= t1:
        return count
    k0 = _commanded(p0, step_dist)
    k1 = _commanded(p1, step_dist)
    if k0 == k1:
        return count
    first, last, direction = _threshold_range(k0, k1)
    if m0 < t0 or m1 > t1:
        e0 = _commanded(_position(mode, segs, cols, coefs, shifts, hst, advance, t0),
                        step_dist) if m0 < t0 else k0
        e1 = _commanded(_position(mode, segs, cols, coefs, shifts, hst, advance, t1),
                        step_dist) if m1 > t1 else k1
        lo_j, hi_j = (e0 - 2, e1 + 1) if direction > 0 else (e1 - 2, e0 + 1)
        if direction > 0:
            first = max(first, lo_j)
            last = min(last, hi_j)
        else:
            first = min(first, hi_j)
            last = max(last, lo_j)
    j = first
    rising = direction > 0
    floor_t = m0
    while (j <= last) if rising else (j >= last):
        thr = (j + 0.5) * step_dist
        if mode == _MODE_QUADRATIC:
            t = a + _quadratic_root(c0 - thr, c1, c2, direction)
        else:
            t = _refine(segs, hst, advance, False, thr, rising, m0, m1, p0, p1)
        # Keep the piece's steps in order even where rounding (or a jump in the
        # position, which puts many crossings at one instant) would swap them.
        if t < floor_t:
            t = floor_t
        elif t > m1:
            t = m1
        floor_t = t
        if t0 <= t < t1:
            count = _emit(out_t, out_d, count, t, direction)
        j += direction
    return count


@numba.njit(cache=True, nogil=True)
def _quadratic_interval(segs, cols, coefs, shifts, step_dist, t0, t1, a, b, pa, pb,
                        out_t, out_d, count):
    """Steps of the stream sum on [a, b], where it is a single quadratic in t - a."""
    mid = a + 0.5 * (b - a)
    c0 = 0.0
    c1 = 0.0
    c2 = 0.0
    for k in range(cols.shape[0]):
        col = cols[k]
        w = coefs[k]
        xm = mid - shifts[k]
        j = _find_row(segs, xm)
        if j >= 0 and xm < segs[j, PRINT_TIME] + segs[j, MOVE_T]:
            o = (a - shifts[k]) - segs[j, PRINT_TIME]
            r = segs[j, AXES_R_X + col]
            v = segs[j, START_V]
            h = segs[j, HALF_ACCEL]
            c0 += w * (segs[j, START_X + col] + r * ((v + h * o) * o))
            c1 += w * (r * (v + 2.0 * h * o))
            c2 += w * (r * h)
        else:
            c0 += w * _held_value(segs, j, col)
    split = b
    if c2 != 0.0:
        vertex = a + (-c1 / (2.0 * c2))
        if a < vertex < b:
            split = vertex
    if split < b:
        pv = _stream_position(segs, cols, coefs, shifts, split)
        count = _piece(_MODE_QUADRATIC, segs, cols, coefs, shifts, 0.0, 0.0, step_dist, t0, t1,
                       a, c0, c1, c2, a, split, pa, pv, out_t, out_d, count)
        return _piece(_MODE_QUADRATIC, segs, cols, coefs, shifts, 0.0, 0.0, step_dist, t0, t1,
                      a, c0, c1, c2, split, b, pv, pb, out_t, out_d, count)
    return _piece(_MODE_QUADRATIC, segs, cols, coefs, shifts, 0.0, 0.0, step_dist, t0, t1,
                  a, c0, c1, c2, a, b, pa, pb, out_t, out_d, count)


@numba.njit(cache=True, nogil=True)
def _curvature_roots(segs, hst, advance, a, b):
    """Zeros inside (a, b) of the smoothed position's second derivative.

    That derivative is (pa(t + h) - 2 pa(t) + pa(t - h)) / h^2 and, between
    breakpoints, each pa term comes from one fixed row, so it is a quadratic in
    t - a whose coefficients are summed here. Returns the zeros as absolute times
    (NaN where absent), earliest first.
    """
    mid = a + 0.5 * (b - a)
    d0 = 0.0
    d1 = 0.0
    d2 = 0.0
    for i in range(3):
        offset = (i - 1) * hst
        w = -2.0 if i == 1 else 1.0
        xm = mid + offset
        j = _find_row(segs, xm)
        if j >= 0 and xm < segs[j, PRINT_TIME] + segs[j, MOVE_T]:
            o = (a + offset) - segs[j, PRINT_TIME]
            r = segs[j, AXES_R_X]
            v = segs[j, START_V]
            h = segs[j, HALF_ACCEL]
            f = advance * segs[j, AXES_R_Y]
            vel = r * (v + 2.0 * h * o)
            d0 += w * (segs[j, START_X] + r * ((v + h * o) * o) + f * vel)
            d1 += w * (vel + f * 2.0 * r * h)
            d2 += w * (r * h)
        else:
            d0 += w * _held_value(segs, j, 0)
    r1 = np.nan
    r2 = np.nan
    if d2 == 0.0:
        if d1 != 0.0:
            r1 = -d0 / d1
    else:
        disc = d1 * d1 - 4.0 * d2 * d0
        if disc >= 0.0:
            q = -0.5 * (d1 + math.copysign(math.sqrt(disc), d1))
            r1 = q / d2
            if q != 0.0:
                r2 = d0 / q
    if r1 == r1 and r2 == r2 and r2 < r1:
        r1, r2 = r2, r1
    out1 = np.nan
    out2 = np.nan
    if r1 == r1:
        t = a + r1
        if a < t < b:
            out1 = t
    if r2 == r2:
        t = a + r2
        if a < t < b:
            if out1 == out1:
                out2 = t
            else:
                out1 = t
    return out1, out2


@numba.njit(cache=True, nogil=True)
def _pa_interval(segs, cols, coefs, shifts, hst, advance, step_dist, t0, t1, a, b, pa, pb,
                 out_t, out_d, count):
    """Steps of the smoothed extruder position on one breakpoint interval [a, b].

    The slope is monotonic between the curvature zeros, so each of those stretches
    holds at most one turning point, found where the slope changes sign; between
    turning points the position is monotonic and goes to `_piece`. A slope of
    exactly zero at a mark is a turning point only if the sign differs on its two
    sides, which is what `sign` (the last non-zero slope sign) tracks.
    """
    z1, z2 = _curvature_roots(segs, hst, advance, a, b)
    start = a
    p_start = pa
    s_prev = _pa_eval(segs, a, hst, advance, True)
    sign = 0.0 if s_prev == 0.0 else math.copysign(1.0, s_prev)
    u1 = a
    for i in range(3):
        # stretches [a, z1], [z1, z2], [z2, b], skipping absent zeros
        mark = z1 if i == 0 else (z2 if i == 1 else b)
        if not (mark == mark and mark > u1):
            continue
        u0 = u1
        u1 = mark
        s_next = _pa_eval(segs, u1, hst, advance, True)
        turn = np.nan
        if (s_prev < 0.0 < s_next) or (s_next < 0.0 < s_prev):
            turn = _refine(segs, hst, advance, True, 0.0, s_next > 0.0, u0, u1, s_prev, s_next)
        elif s_prev == 0.0 and s_next != 0.0 and sign * s_next < 0.0:
            turn = u0
        if start < turn < b:
            p_turn = _pa_eval(segs, turn, hst, advance, False)
            count = _piece(_MODE_PRESSURE_ADVANCE, segs, cols, coefs, shifts, hst, advance,
                           step_dist, t0, t1, start, 0.0, 0.0, 0.0, start, turn, p_start, p_turn,
                           out_t, out_d, count)
            start = turn
            p_start = p_turn
        if s_next != 0.0:
            sign = math.copysign(1.0, s_next)
        s_prev = s_next
    return _piece(_MODE_PRESSURE_ADVANCE, segs, cols, coefs, shifts, hst, advance, step_dist,
                  t0, t1, start, 0.0, 0.0, 0.0, start, b, p_start, pb, out_t, out_d, count)


# --------------------------------------------------------------------------- driver

@numba.njit(cache=True, nogil=True)
def _boundaries(segs):
    """Sorted, distinct row start and end times."""
    n = segs.shape[0]
    out = np.empty(2 * n, np.float64)
    m = 0
    for j in range(n):
        pt = segs[j, PRINT_TIME]
        end = pt + segs[j, MOVE_T]
        if m == 0 or pt > out[m - 1]:
            out[m] = pt
            m += 1
        if end > out[m - 1]:
            out[m] = end
            m += 1
    return out[:m]


@numba.njit(cache=True, nogil=True)
def _count_below(bd, shift, limit):
    """How many breakpoints bd[i] + shift lie strictly below `limit`."""
    lo = 0
    hi = bd.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if bd[mid] + shift < limit:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(cache=True, nogil=True)
def generate_steps_kernel(segs, cols, coefs, shifts, hst, advance, step_dist, t0, t1,
                          out_t, out_d):
    """Write the steps in [t0, t1) to out_t/out_d; returns how many there are.

    With `hst` > 0 the position is the pressure-advance smoothed extruder and the
    stream arrays are ignored; otherwise it is the sum of the streams
    coefs[k] * column cols[k] at time t - shifts[k]. Steps beyond the capacity of
    the output arrays are counted but not written, so a caller seeing a count
    above the capacity can size the arrays exactly and call again.
    """
    count = 0
    if segs.shape[0] == 0 or not (t0 < t1):
        return count
    mode = _MODE_PRESSURE_ADVANCE if hst > 0.0 else _MODE_QUADRATIC
    if mode == _MODE_PRESSURE_ADVANCE:
        bshift = np.array([-hst, 0.0, hst])
    else:
        bshift = shifts
    ns = bshift.shape[0]
    bd = _boundaries(segs)
    nb = bd.shape[0]
    # Start at the last breakpoint before t0: the interval it opens may hold a root at t0.
    cur = -np.inf
    for k in range(ns):
        below = _count_below(bd, bshift[k], t0)
        if below > 0 and bd[below - 1] + bshift[k] > cur:
            cur = bd[below - 1] + bshift[k]
    if cur == -np.inf:
        cur = np.inf
        for k in range(ns):
            if bd[0] + bshift[k] < cur:
                cur = bd[0] + bshift[k]
    ptr = np.empty(ns, np.int64)
    for k in range(ns):
        ptr[k] = _count_below(bd, bshift[k], cur)
        while ptr[k] < nb and bd[ptr[k]] + bshift[k] <= cur:
            ptr[k] += 1
    p_cur = _position(mode, segs, cols, coefs, shifts, hst, advance, cur)
    while cur < t1:
        nxt = np.inf
        for k in range(ns):
            if ptr[k] < nb:
                v = bd[ptr[k]] + bshift[k]
                if v < nxt:
                    nxt = v
        if nxt == np.inf:
            break
        p_nxt = _position(mode, segs, cols, coefs, shifts, hst, advance, nxt)
        if mode == _MODE_QUADRATIC:
            count = _quadratic_interval(segs, cols, coefs, shifts, step_dist, t0, t1,
                                        cur, nxt, p_cur, p_nxt, out_t, out_d, count)
        else:
            count = _pa_interval(segs, cols, coefs, shifts, hst, advance, step_dist, t0, t1,
                                 cur, nxt, p_cur, p_nxt, out_t, out_d, count)
        for k in range(ns):
            while ptr[k] < nb and bd[ptr[k]] + bshift[k] <= nxt:
                ptr[k] += 1
        cur = nxt
        p_cur = p_nxt
    return count


@numba.njit(cache=True, nogil=True)
def position_kernel(segs, cols, coefs, shifts, hst, advance, step_dist, t):
    """(position in mm, commanded step) of the stepper at time t."""
    mode = _MODE_PRESSURE_ADVANCE if hst > 0.0 else _MODE_QUADRATIC
    p = _position(mode, segs, cols, coefs, shifts, hst, advance, t)
    return p, _commanded(p, step_dist)


# --------------------------------------------------------------------------- Python API

Shaper = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True, eq=False)
class StepperModel:
    """Everything that turns segments into one stepper's position.

    `kind` is one of the module constants; `step_dist` is the microstep length in
    mm. `shaper_x`/`shaper_y` are (amplitudes, times) from `shaper.shaper_pulses`
    and apply to the kinds that read that coordinate (CoreXY motors read both).
    `pressure_advance` (s) and `smooth_time` (s) apply to EXTRUDER only; as in
    Klipper, an advance of zero means the plain filament position. The extruder
    reads the `extruder_segments` array, every other kind `toolhead_segments`.
    """

    kind: int
    step_dist: float
    shaper_x: Shaper | None = None
    shaper_y: Shaper | None = None
    pressure_advance: float = 0.0
    smooth_time: float = 0.0
    cols: np.ndarray = field(init=False, repr=False)
    coefs: np.ndarray = field(init=False, repr=False)
    shifts: np.ndarray = field(init=False, repr=False)
    half_smooth_time: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in range(len(KIND_NAMES)):
            raise ValueError(f"unknown stepper kind {self.kind!r}")
        if not (math.isfinite(self.step_dist) and self.step_dist > 0.0):
            raise ValueError(f"step_dist must be positive, got {self.step_dist!r}")
        for name in ("pressure_advance", "smooth_time"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        if self.kind == EXTRUDER:
            if self.shaper_x is not None or self.shaper_y is not None:
                raise ValueError("input shaping applies to the toolhead axes, not the extruder")
            if self.pressure_advance > 0.0 and self.smooth_time <= 0.0:
                raise ValueError("pressure advance needs a positive smooth_time")
        elif self.pressure_advance or self.smooth_time:
            raise ValueError("pressure advance applies to the extruder only")
        # (column, sign) of the coordinates this kind adds up
        terms = {CARTESIAN_X: ((0, 1.0),), CARTESIAN_Y: ((1, 1.0),), CARTESIAN_Z: ((2, 1.0),),
                 COREXY_A: ((0, 1.0), (1, 1.0)), COREXY_B: ((0, 1.0), (1, -1.0)),
                 EXTRUDER: ((0, 1.0),)}[self.kind]
        cols: list[int] = []
        coefs: list[float] = []
        shifts: list[float] = []
        for col, sign in terms:
            shaper = (self.shaper_x, self.shaper_y, None)[col] if self.kind != EXTRUDER else None
            if shaper is None:
                amps, times = np.ones(1), np.zeros(1)
            else:
                amps = np.asarray(shaper[0], dtype=np.float64)
                times = np.asarray(shaper[1], dtype=np.float64)
                if amps.shape != times.shape or amps.ndim != 1 or len(amps) == 0:
                    raise ValueError("a shaper is two equal-length 1-D arrays (amplitudes, times)")
                if not (np.isfinite(amps).all() and np.isfinite(times).all()):
                    raise ValueError("shaper pulses must be finite")
            for amp, delay in zip(amps, times):
                cols.append(col)
                coefs.append(sign * float(amp))
                shifts.append(float(delay))
        object.__setattr__(self, "cols", np.array(cols, dtype=np.int64))
        object.__setattr__(self, "coefs", np.array(coefs, dtype=np.float64))
        object.__setattr__(self, "shifts", np.array(shifts, dtype=np.float64))
        hst = 0.5 * self.smooth_time if self.pressure_advance > 0.0 else 0.0
        object.__setattr__(self, "half_smooth_time", hst)

    def margins(self) -> tuple[float, float]:
        """How far before t0 and after t1 the segments must reach for a range [t0, t1).

        The position at t reads the motion from t - before to t + after (shaper
        delays, or half the smoothing window). When streaming, steps up to t1 can
        only be generated once the motion up to t1 + after is known.
        """
        if self.half_smooth_time > 0.0:
            return self.half_smooth_time, self.half_smooth_time
        return max(0.0, float(self.shifts.max())), max(0.0, float(-self.shifts.min()))


class StepBatch(NamedTuple):
    times: np.ndarray      # float64 print times of the steps, ascending
    dirs: np.ndarray       # int8, +1 or -1 per step
    position: int          # commanded step position after the last step


def generate_steps(segs: np.ndarray, model: StepperModel, t0: float, t1: float,
                   position: int) -> StepBatch:
    """Steps of the stepper in print time [t0, t1), starting from commanded `position`.

    `segs` must cover [t0 - before, t1 + after] (see `StepperModel.margins`); it
    may be a window of a longer array (`trapq.window`). `position` is the
    commanded step position before t0: from a previous batch, or
    `commanded_position` at the time the motion starts.
    """
    segs = trapq.check_segments(segs)
    if not (math.isfinite(t0) or t0 == -math.inf) or math.isnan(t1):
        raise ValueError(f"invalid time range [{t0!r}, {t1!r})")
    capacity = 256
    while True:
        out_t = np.empty(capacity, dtype=np.float64)
        out_d = np.empty(capacity, dtype=np.int8)
        count = generate_steps_kernel(segs, model.cols, model.coefs, model.shifts,
                                      model.half_smooth_time, model.pressure_advance,
                                      model.step_dist, float(t0), float(t1), out_t, out_d)
        if count <= capacity:
            break
        capacity = count
    dirs = out_d[:count]
    return StepBatch(out_t[:count], dirs, int(position) + int(dirs.sum(dtype=np.int64)))


def stepper_position(segs: np.ndarray, model: StepperModel, t: float) -> float:
    """The stepper's exact (unrounded) position in mm at print time t."""
    segs = trapq.check_segments(segs)
    if len(segs) == 0:
        raise ValueError("no segments")
    return float(position_kernel(segs, model.cols, model.coefs, model.shifts,
                                 model.half_smooth_time, model.pressure_advance,
                                 model.step_dist, float(t))[0])


def commanded_position(segs: np.ndarray, model: StepperModel, t: float) -> int:
    """The step the motor is commanded to at time t: the position rounded to a step."""
    segs = trapq.check_segments(segs)
    if len(segs) == 0:
        raise ValueError("no segments")
    return int(position_kernel(segs, model.cols, model.coefs, model.shifts,
                               model.half_smooth_time, model.pressure_advance,
                               model.step_dist, float(t))[1])


def models_from_settings(settings: Settings) -> dict[str, StepperModel]:
    """One model per stepper of the configured printer, keyed x, y, z, extruder.

    For CoreXY, "x" and "y" are the A and B motors, as in the [steppers] section.
    """
    from printhost.control.shaper import shaper_pulses

    shaping = settings.input_shaper
    sx = shaper_pulses(shaping, "x")
    sy = shaper_pulses(shaping, "y")
    st = settings.steppers
    if settings.printer.kinematics == "corexy":
        a = StepperModel(COREXY_A, st.x.step_distance_mm, sx, sy)
        b = StepperModel(COREXY_B, st.y.step_distance_mm, sx, sy)
    else:
        a = StepperModel(CARTESIAN_X, st.x.step_distance_mm, sx, None)
        b = StepperModel(CARTESIAN_Y, st.y.step_distance_mm, None, sy)
    ext = settings.extruder
    return {
        "x": a,
        "y": b,
        "z": StepperModel(CARTESIAN_Z, st.z.step_distance_mm),
        "extruder": StepperModel(EXTRUDER, st.extruder.step_distance_mm,
                                 pressure_advance=ext.pressure_advance,
                                 smooth_time=ext.pressure_advance_smooth_time),
    }


def warm_up() -> None:
    """Compile (or load from the cache) every kernel, so the first print does not wait."""
    segs = np.array([[0.0, 0.1, 0.0, 50.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]])
    generate_steps(segs, StepperModel(COREXY_A, 0.01), 0.0, 1.0, 0)
    generate_steps(segs, StepperModel(EXTRUDER, 0.01, pressure_advance=0.05,
                                      smooth_time=0.04), 0.0, 1.0, 0)
    commanded_position(segs, StepperModel(CARTESIAN_X, 0.01), 0.5)
