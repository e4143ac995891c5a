"""Step times for one stepper motor, computed from the move-segment array.

The stepper's position is a function of print time (`position`: a sum of
coordinate streams, or the pressure-advance average for the extruder). With
`step_dist` the distance of one microstep, the motor is commanded to step k while
its position lies in [(k - 1/2) step_dist, (k + 1/2) step_dist): it steps forward
at the moment the position reaches (k + 1/2) step_dist and back at the moment it
drops below (k - 1/2) step_dist. This is the half-step rule of Klipper's
itersolve, on a grid anchored at zero instead of at wherever the position was last
set, so that the commanded step position is always the rounding of the true
position and nothing depends on history.

Every stream is a quadratic in time between the segment boundaries shifted by its
delay, so the sum is exactly quadratic between consecutive such breakpoints, and
its step times are roots of quadratics, solved in closed form. The pressure-advance
position is a quartic between the breakpoints {boundary - h, boundary,
boundary + h}. There the pieces are split at the zeros of the derivative (found
through the zeros of the second derivative, which is a quadratic) and each
crossing is bracketed and refined with the Illinois variant of regula falsi to
well under a nanosecond.

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

This module holds only the compiled search; `steppers` is the Python interface
(`StepperModel`, `generate_steps`) that validates input and sizes the output.
numba's cache checks only the file a function is defined in, so after editing
`position` clear the cache (see `printhost.control.kernels`).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from printhost.control.kernels import trapq
from printhost.control.kernels.position import (MODE_PRESSURE_ADVANCE, MODE_QUADRATIC,
                                                commanded_step, find_row, held_value, pa_eval,
                                                position_at, position_kernel, stream_position)
from printhost.control.kernels.trapq import (AXES_R_X, AXES_R_Y, HALF_ACCEL, MOVE_T,
                                             PRINT_TIME, START_V, START_X)

# Step times from the iterative solver are refined until the bracket is this narrow.
ROOT_TOLERANCE_S = 1e-11
_MAX_ITERATIONS = 200


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
            # A piece at rest reaches the threshold only where it starts on it; a step
            # it owes otherwise comes from a jump at its end (the caller clamps there).
            return 0.0 if c == 0.0 else math.inf
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
        fx = pa_eval(segs, x, hst, advance, derivative) - target
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
    k0 = commanded_step(p0, step_dist)
    k1 = commanded_step(p1, step_dist)
    if k0 == k1:
        return count
    first, last, direction = _threshold_range(k0, k1)
    if m0 < t0 or m1 > t1:
        e0 = commanded_step(position_at(mode, segs, cols, coefs, shifts, hst, advance, t0),
                            step_dist) if m0 < t0 else k0
        e1 = commanded_step(position_at(mode, segs, cols, coefs, shifts, hst, advance, t1),
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
        if mode == MODE_QUADRATIC:
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
        j = find_row(segs, xm)
        if j >= 0 and xm < segs[j, PRINT_TIME] + segs[j, MOVE_T]:
            o = (a - shifts[k]) - segs[j, PRINT_TIME]
            r = segs[j, AXES_R_X + col]
            v = segs[j, START_V]
            h = segs[j, HALF_ACCEL]
            c0 += w * (segs[j, START_X + col] + r * ((v + h * o) * o))
            c1 += w * (r * (v + 2.0 * h * o))
            c2 += w * (r * h)
        else:
            c0 += w * held_value(segs, j, col)
    split = b
    if c2 != 0.0:
        vertex = a + (-c1 / (2.0 * c2))
        if a < vertex < b:
            split = vertex
    if split < b:
        pv = stream_position(segs, cols, coefs, shifts, split)
        count = _piece(MODE_QUADRATIC, segs, cols, coefs, shifts, 0.0, 0.0, step_dist, t0, t1,
                       a, c0, c1, c2, a, split, pa, pv, out_t, out_d, count)
        return _piece(MODE_QUADRATIC, segs, cols, coefs, shifts, 0.0, 0.0, step_dist, t0, t1,
                      a, c0, c1, c2, split, b, pv, pb, out_t, out_d, count)
    return _piece(MODE_QUADRATIC, segs, cols, coefs, shifts, 0.0, 0.0, step_dist, t0, t1,
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
        j = find_row(segs, xm)
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
            d0 += w * held_value(segs, j, 0)
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
    s_prev = pa_eval(segs, a, hst, advance, True)
    sign = 0.0 if s_prev == 0.0 else math.copysign(1.0, s_prev)
    u1 = a
    for i in range(3):
        # stretches [a, z1], [z1, z2], [z2, b], skipping absent zeros
        mark = z1 if i == 0 else (z2 if i == 1 else b)
        if not (mark == mark and mark > u1):
            continue
        u0 = u1
        u1 = mark
        s_next = pa_eval(segs, u1, hst, advance, True)
        turn = np.nan
        if (s_prev < 0.0 < s_next) or (s_next < 0.0 < s_prev):
            turn = _refine(segs, hst, advance, True, 0.0, s_next > 0.0, u0, u1, s_prev, s_next)
        elif s_prev == 0.0 and s_next != 0.0 and sign * s_next < 0.0:
            turn = u0
        if start < turn < b:
            p_turn = pa_eval(segs, turn, hst, advance, False)
            count = _piece(MODE_PRESSURE_ADVANCE, segs, cols, coefs, shifts, hst, advance,
                           step_dist, t0, t1, start, 0.0, 0.0, 0.0, start, turn, p_start, p_turn,
                           out_t, out_d, count)
            start = turn
            p_start = p_turn
        if s_next != 0.0:
            sign = math.copysign(1.0, s_next)
        s_prev = s_next
    return _piece(MODE_PRESSURE_ADVANCE, segs, cols, coefs, shifts, hst, advance, step_dist,
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
    mode = MODE_PRESSURE_ADVANCE if hst > 0.0 else MODE_QUADRATIC
    if mode == MODE_PRESSURE_ADVANCE:
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
    p_cur = position_at(mode, segs, cols, coefs, shifts, hst, advance, cur)
    while cur < t1:
        nxt = np.inf
        for k in range(ns):
            if ptr[k] < nb:
                v = bd[ptr[k]] + bshift[k]
                if v < nxt:
                    nxt = v
        if nxt == np.inf:
            break
        p_nxt = position_at(mode, segs, cols, coefs, shifts, hst, advance, nxt)
        if mode == MODE_QUADRATIC:
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


def warm_up() -> None:
    """Compile (or load from the cache) every kernel, so the first print does not wait.

    numba keeps one compiled version per combination of argument types, so the
    arguments have the types `steppers` passes: C-contiguous float64 segments (from
    `trapq.check_segments`), int64 columns, float64 coefficients and shifts, Python
    floats, float64 and int8 output. Other types would warm up a version no caller runs.
    """
    segs = trapq.check_segments(np.array([[0.0, 0.1, 0.0, 50.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]]))
    out_t = np.empty(256, dtype=np.float64)
    out_d = np.empty(256, dtype=np.int8)
    # (cols, coefs, shifts) of a CoreXY motor (two streams) and of a single stream.
    corexy = (np.array([0, 1], dtype=np.int64), np.ones(2), np.zeros(2))
    single = (np.zeros(1, dtype=np.int64), np.ones(1), np.zeros(1))
    generate_steps_kernel(segs, *corexy, 0.0, 0.0, 0.01, 0.0, 1.0, out_t, out_d)
    # The pressure-advance extruder.
    generate_steps_kernel(segs, *single, 0.02, 0.05, 0.01, 0.0, 1.0, out_t, out_d)
    position_kernel(segs, *single, 0.0, 0.0, 0.01, 0.5)
