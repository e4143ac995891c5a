"""Plain-Python statements of what the compiled kernels compute, for the tests.

Each function here is written for obviousness rather than speed: positions are
evaluated straight from their definition, crossings are found by plain bisection,
pressure-advance averages by Gauss-Legendre quadrature instead of closed-form
moments, and turning points from sampled slopes instead of coefficient algebra.
Where the kernels and these references agree, two different routes have reached
the same steps.

The step compressor is the exception: "the same commands as Klipper's greedy
search" is only definable by the search itself, so `compress_steps` is the same
algorithm transcribed loop for loop, and the independent checks live in the tests
(every expanded step inside its window, via `expand_commands`).
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from printhost.control.kernels import steppers as _st
from printhost.control.motion import PlannedMove
from printhost.control.kernels.stepcompress import (CLOCK_DIFF_MAX, MAX_ADD, MAX_COUNT,
                                                    MIN_ADD)

_BISECT_TOL_S = 1e-12

# 3-point Gauss-Legendre on [-1, 1]: exact for polynomials up to degree 5; the
# pressure-advance integrands are at most cubic on each stretch.
_GAUSS = ((-math.sqrt(0.6), 5.0 / 9.0), (0.0, 8.0 / 9.0), (math.sqrt(0.6), 5.0 / 9.0))


class _Track:
    """The segment rows as Python lists, with the gap rules of `trapq`."""

    def __init__(self, segs: np.ndarray) -> None:
        self.rows = [list(map(float, r)) for r in np.asarray(segs, dtype=np.float64)]
        self.starts = [r[0] for r in self.rows]
        if not self.rows:
            raise ValueError("no segments")

    def locate(self, x: float) -> tuple[int, bool]:
        """(row index, inside that row?); index -1 means before the first row."""
        j = bisect.bisect_right(self.starts, x) - 1
        if j < 0:
            return -1, False
        r = self.rows[j]
        return j, x < r[0] + r[1]

    def held(self, j: int, col: int) -> float:
        if j + 1 < len(self.rows):
            return self.rows[j + 1][4 + col]
        r = self.rows[j]
        return r[4 + col] + r[7 + col] * ((r[2] + r[3] * r[1]) * r[1])

    def coord(self, col: int, x: float) -> float:
        j, inside = self.locate(x)
        if inside:
            r = self.rows[j]
            dt = x - r[0]
            return r[4 + col] + r[7 + col] * ((r[2] + r[3] * dt) * dt)
        return self.held(j, col)

    def velocity(self, col: int, x: float) -> float:
        j, inside = self.locate(x)
        if not inside:
            return 0.0
        r = self.rows[j]
        return r[7 + col] * (r[2] + 2.0 * r[3] * (x - r[0]))

    def boundaries(self) -> list[float]:
        out: set[float] = set()
        for r in self.rows:
            out.add(r[0])
            out.add(r[0] + r[1])
        return sorted(out)


# --------------------------------------------------------------------------- positions

def _pulses(shaper) -> list[tuple[float, float]]:
    if shaper is None:
        return [(1.0, 0.0)]
    return [(float(a), float(t)) for a, t in zip(shaper[0], shaper[1])]


def _terms(model: _st.StepperModel) -> list[tuple[int, float, list[tuple[float, float]]]]:
    """(column, sign, shaper pulses) of each coordinate the stepper adds up."""
    if model.kind == _st.CARTESIAN_X:
        return [(0, 1.0, _pulses(model.shaper_x))]
    if model.kind == _st.CARTESIAN_Y:
        return [(1, 1.0, _pulses(model.shaper_y))]
    if model.kind == _st.CARTESIAN_Z:
        return [(2, 1.0, _pulses(None))]
    if model.kind == _st.COREXY_A:
        return [(0, 1.0, _pulses(model.shaper_x)), (1, 1.0, _pulses(model.shaper_y))]
    if model.kind == _st.COREXY_B:
        return [(0, 1.0, _pulses(model.shaper_x)), (1, -1.0, _pulses(model.shaper_y))]
    return [(0, 1.0, _pulses(None))]


def _uses_pa(model: _st.StepperModel) -> bool:
    return model.kind == _st.EXTRUDER and model.pressure_advance > 0.0


def _shaped(track: _Track, model: _st.StepperModel, t: float, velocity: bool) -> float:
    total = 0.0
    for col, sign, pulses in _terms(model):
        value = 0.0
        for amp, delay in pulses:
            f = track.velocity if velocity else track.coord
            value += amp * f(col, t - delay)
        total += sign * value
    return total


def _advanced(track: _Track, model: _st.StepperModel, x: float) -> float:
    """e(x) + K * e'(x) on rows that may advance, e(x) elsewhere."""
    j, inside = track.locate(x)
    e = track.coord(0, x)
    if inside and track.rows[j][8] != 0.0:
        e += model.pressure_advance * track.rows[j][8] * track.velocity(0, x)
    return e


def _pa_average(track: _Track, model: _st.StepperModel, t: float, slope: bool) -> float:
    """Triangle-weighted mean of the advanced position (or the sign-weighted slope)."""
    h = 0.5 * model.smooth_time
    cuts = [t - h, t, t + h]
    for b in track.boundaries():
        if t - h < b < t + h:
            cuts.append(b)
    cuts.sort()
    total = 0.0
    for lo, hi in zip(cuts, cuts[1:]):
        if hi <= lo:
            continue
        mid = 0.5 * (lo + hi)
        half = 0.5 * (hi - lo)
        for z, w in _GAUSS:
            x = mid + half * z
            u = x - t
            weight = (1.0 if u > 0 else -1.0) if slope else (h - abs(u))
            total += w * half * weight * _advanced(track, model, x)
    return total / (h * h)


def _value(track: _Track, model: _st.StepperModel, t: float) -> float:
    if _uses_pa(model):
        return _pa_average(track, model, t, slope=False)
    return _shaped(track, model, t, velocity=False)


def stepper_position(segs: np.ndarray, model: _st.StepperModel, t: float) -> float:
    """The stepper position at t in mm, straight from the definition."""
    return _value(_Track(segs), model, t)


def commanded(p: float, step_dist: float) -> int:
    """The step k with (k - 1/2) step_dist <= p < (k + 1/2) step_dist."""
    k = math.floor(p / step_dist + 0.5)
    while (k + 0.5) * step_dist <= p:
        k += 1
    while (k - 0.5) * step_dist > p:
        k -= 1
    return k


# --------------------------------------------------------------------------- step generation

def _crossing(f, lo: float, hi: float, target: float, rising: bool) -> float:
    """Bisection for the moment f reaches target (>= when rising, < when falling)."""
    while hi - lo > _BISECT_TOL_S:
        mid = 0.5 * (lo + hi)
        if not lo < mid < hi:
            break
        v = f(mid)
        if (v >= target) if rising else (v < target):
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def _monotonic_steps(f, m0: float, m1: float, p0: float, p1: float, step_dist: float,
                     out: list[tuple[float, int]]) -> None:
    k0 = commanded(p0, step_dist)
    k1 = commanded(p1, step_dist)
    if k1 > k0:
        for j in range(k0, k1):
            out.append((_crossing(f, m0, m1, (j + 0.5) * step_dist, True), 1))
    else:
        for j in range(k0 - 1, k1 - 1, -1):
            out.append((_crossing(f, m0, m1, (j + 0.5) * step_dist, False), -1))


def _quadratic_turns(track: _Track, model: _st.StepperModel, a: float, b: float) -> list[float]:
    """The vertex of the quadratic on (a, b), from the velocity at two inner points."""
    s1, s2 = a + 0.25 * (b - a), a + 0.75 * (b - a)
    v1 = _shaped(track, model, s1, velocity=True)
    v2 = _shaped(track, model, s2, velocity=True)
    if v1 == v2:
        return []
    t = s1 - v1 * (s2 - s1) / (v2 - v1)
    return [t] if a < t < b else []


def _solve(m: list[list[float]], rhs: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting."""
    n = len(rhs)
    a = [row[:] + [v] for row, v in zip(m, rhs)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(a[r][c]))
        a[c], a[p] = a[p], a[c]
        for r in range(c + 1, n):
            f = a[r][c] / a[c][c]
            for k in range(c, n + 1):
                a[r][k] -= f * a[c][k]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (a[r][n] - sum(a[r][k] * x[k] for k in range(r + 1, n))) / a[r][r]
    return x


def _pa_turns(track: _Track, model: _st.StepperModel, a: float, b: float) -> list[float]:
    """Turning points of the smoothed position on (a, b).

    The slope is a cubic there: fit it through four Chebyshev nodes, split (a, b)
    where its derivative vanishes, and bisect every stretch whose end slopes
    (evaluated directly) differ in sign.
    """
    def slope(x: float) -> float:
        return _pa_average(track, model, x, slope=True)

    mid, half = 0.5 * (a + b), 0.5 * (b - a)
    nodes = [math.cos((2 * i + 1) * math.pi / 8.0) for i in range(4)]
    coef = _solve([[z ** k for k in range(4)] for z in nodes],
                  [slope(mid + half * z) for z in nodes])
    marks = []
    c1, c2, c3 = coef[1], 2.0 * coef[2], 3.0 * coef[3]
    if c3 != 0.0:
        disc = c2 * c2 - 4.0 * c3 * c1
        if disc >= 0.0:
            marks += [(-c2 - math.sqrt(disc)) / (2.0 * c3), (-c2 + math.sqrt(disc)) / (2.0 * c3)]
    elif c2 != 0.0:
        marks.append(-c1 / c2)
    points = [a] + sorted(mid + half * z for z in marks if -1.0 < z < 1.0) + [b]
    turns = []
    sign = 0.0
    prev = slope(a)
    if prev != 0.0:
        sign = math.copysign(1.0, prev)
    for u0, u1 in zip(points, points[1:]):
        nxt = slope(u1)
        if prev * nxt < 0.0:
            turns.append(_crossing(slope, u0, u1, 0.0, nxt > 0.0))
        elif prev == 0.0 and nxt != 0.0 and sign * nxt < 0.0:
            turns.append(u0)
        if nxt != 0.0:
            sign = math.copysign(1.0, nxt)
        prev = nxt
    return [t for t in turns if a < t < b]


def generate_steps(segs: np.ndarray, model: _st.StepperModel, t0: float, t1: float,
                   position: int) -> tuple[list[float], list[int], int]:
    """Steps in [t0, t1): (times, directions, final commanded position)."""
    track = _Track(segs)
    if _uses_pa(model):
        h = 0.5 * model.smooth_time
        shifts = [-h, 0.0, h]
    else:
        shifts = sorted({delay for _, _, pulses in _terms(model) for _, delay in pulses})
    points = sorted({b + s for b in track.boundaries() for s in shifts})

    def f(t: float) -> float:
        return _value(track, model, t)

    steps: list[tuple[float, int]] = []
    for a, b in zip(points, points[1:]):
        if b < t0 or a >= t1:
            continue
        turns = (_pa_turns if _uses_pa(model) else _quadratic_turns)(track, model, a, b)
        cuts = [a] + turns + [b]
        for m0, m1 in zip(cuts, cuts[1:]):
            _monotonic_steps(f, m0, m1, f(m0), f(m1), model.step_dist, steps)
    kept = [(t, d) for t, d in steps if t0 <= t < t1]
    return [t for t, _ in kept], [d for _, d in kept], position + sum(d for _, d in kept)


# --------------------------------------------------------------------------- compression

def _windows(clocks: list[float], max_error: float) -> tuple[list[int], list[int]]:
    latest = [math.floor(c) for c in clocks]
    earliest = [min(math.ceil(c - max_error), hi) for c, hi in zip(clocks, latest)]
    return latest, earliest


def compress_steps(clocks, dirs, last_clock: int, max_error: float, last_dir: int = 0,
                   until: int | None = None):
    """The greedy search of `stepcompress`, as plain loops over Python ints.

    Returns (commands, consumed, last_clock, last_dir) with commands as tuples
    (interval, count, add, set_dir, first_clock); the interval is the full tick
    difference, without the 32-bit wrap.
    """
    clocks = [float(c) for c in clocks]
    dirs = [int(d) for d in dirs]
    latest, earliest = _windows(clocks, max_error)
    err_ticks = math.floor(max_error)
    limit = math.inf if until is None else until

    def window(first: int, i: int, last: int) -> tuple[int, int]:
        hi = latest[i] - last
        prev = latest[i - 1] - last if i > first else 0
        lo = max(hi - (hi - prev) // 2, earliest[i] - last)
        return lo, hi

    def best(first: int, stop: int, last: int) -> tuple[int, int, int]:
        outer_lo, outer_hi = window(first, first, last)
        add, min_add, max_add = 0, MIN_ADD, MAX_ADD
        best_iv, best_n, best_add, best_reach = 0, 1, 0, -math.inf
        zero_iv = zero_n = 0
        while True:
            lo_i, hi_i = outer_lo, outer_hi
            interval = hi_i
            n = 1
            while True:
                n += 1
                if first + n - 1 >= stop:
                    return interval, n - 1, add
                p_lo, p_hi = window(first, first + n - 1, last)
                bend = add * (n * (n - 1) // 2)
                lo_i = max(lo_i, -((bend - p_lo) // n))
                hi_i = min(hi_i, (p_hi - bend) // n)
                if lo_i > hi_i:
                    break
                interval = hi_i
            count = n - 1
            reach = add * (count * (count - 1) // 2) + interval * count
            if reach > best_reach or (reach == best_reach and interval > best_iv):
                best_iv, best_n, best_add, best_reach = interval, count, add, reach
                if add == 0:
                    zero_iv, zero_n = interval, count
                if count > 0x200:
                    break
            n_bend = n * (n - 1) // 2
            if add * n_bend + interval * n < p_lo:
                min_add, outer_hi = add + 1, hi_i
            else:
                max_add, outer_lo = add - 1, lo_i
            if count > 1:
                spread = err_ticks * 11 // (count * count)
                min_add = max(min_add, add - spread)
                max_add = min(max_add, add + spread)
            min_add = max(min_add, -((outer_hi * n - p_lo) // n_bend))
            max_add = min(max_add, (p_hi - outer_lo * n) // n_bend)
            if min_add > max_add:
                break
            add = max_add - (max_add - min_add) // 4
        if zero_n + zero_n // 16 >= best_n:
            return zero_iv, zero_n, 0
        return best_iv, best_n, best_add

    commands = []
    last, cur_dir, pos = int(last_clock), int(last_dir), 0
    while pos < len(clocks) and last < limit:
        d = dirs[pos]
        marker = d if d != cur_dir else 0
        cur_dir = d
        if latest[pos] - last >= CLOCK_DIFF_MAX:
            interval, count, add = latest[pos] - last, 1, 0
        else:
            stop = pos + 1
            while (stop < min(len(clocks), pos + MAX_COUNT) and dirs[stop] == d
                   and latest[stop] - latest[stop - 1] < CLOCK_DIFF_MAX):
                stop += 1
            interval, count, add = best(pos, stop, last)
            if interval == 0 and add == 0:
                count = 1
        commands.append((interval, count, add, marker, last + interval))
        last += interval * count + add * (count * (count - 1) // 2)
        pos += count
    return commands, pos, last, cur_dir


def expand_commands(last_clock: int, last_dir: int, interval, count, add, set_dir,
                    first_clock) -> tuple[list[int], list[int]]:
    """Replay commands the way the MCU does: (tick, direction) of every step.

    The MCU only keeps 32 bits of time, so an interval is added modulo 2**32; the
    replay follows the absolute `first_clock` to unwrap it, and insists that the
    wrapped interval lands on the same tick.
    """
    clocks: list[int] = []
    dirs: list[int] = []
    clock, d = int(last_clock), int(last_dir)
    for iv, n, a, sd, first in zip(interval, count, add, set_dir, first_clock):
        iv, n, a, sd, first = int(iv), int(n), int(a), int(sd), int(first)
        if n < 1:
            raise ValueError("a command must have count >= 1")
        if (clock + iv - first) % (1 << 32):
            raise ValueError(f"interval {iv} does not lead from {clock} to {first}")
        if sd:
            d = sd
        clock = first
        clocks.append(clock)
        dirs.append(d)
        step = iv
        for _ in range(n - 1):
            step += a
            clock += step
            clocks.append(clock)
            dirs.append(d)
    return clocks, dirs


# --------------------------------------------------------------------------- test jobs

def _trapezoid(start, end, distance: float, v0: float, vc: float, v1: float,
               accel: float) -> PlannedMove:
    """A consistent trapezoid: v1 reachable from v0 over the distance, peak capped."""
    v1 = min(v1, math.sqrt(v0 * v0 + 2 * accel * distance))
    v1 = max(v1, math.sqrt(max(0.0, v0 * v0 - 2 * accel * distance)))
    vc = min(max(vc, v0, v1), math.sqrt(accel * distance + 0.5 * (v0 * v0 + v1 * v1)))
    vc = max(vc, v0, v1)
    at, dt = (vc - v0) / accel, (vc - v1) / accel
    cd = max(0.0, distance - 0.5 * (v0 + vc) * at - 0.5 * (v1 + vc) * dt)
    return PlannedMove(start, end, distance, v0, vc, v1, accel, at, cd / vc if vc > 0 else 0.0, dt)


def random_moves(seed: int, n: int, z: bool = True, area: float = 20.0,
                 axes: str = "xy") -> list[PlannedMove]:
    """`n` seeded random moves, the material of the kernels' property tests.

    XY moves in random directions (limited to "x" or "y" by `axes`) of 0.05 to
    15 mm, most of them extruding, with random junction speeds and, now and then,
    an exact reversal; Z moves when `z`; retracts and unretracts; short dwells.
    The trapezoids are self-consistent, so positions are continuous, but they do
    not come from the planner: these tests must not depend on its heuristics.
    """
    rng = np.random.default_rng(seed)
    pos = [rng.uniform(0, area), rng.uniform(0, area), rng.uniform(0, 2), rng.uniform(0, 5)]
    moves: list[PlannedMove] = []
    prev_dir: tuple[float, float] | None = None
    v_prev = 0.0
    for _ in range(n):
        r = rng.random()
        new = list(pos)
        if r < 0.1:                                   # retract / unretract
            new[3] += float(rng.choice([-1.0, 1.0])) * rng.uniform(0.2, 1.5)
            m = _trapezoid(tuple(pos), tuple(new), abs(new[3] - pos[3]), 0.0,
                           rng.uniform(10, 40), 0.0, rng.uniform(500, 2000))
            prev_dir = None
        elif r < 0.15:
            moves.append(PlannedMove.dwell(tuple(pos), rng.uniform(0.0, 0.05)))
            prev_dir = None
            continue
        elif r < 0.25 and z:
            new[2] += rng.uniform(-1, 1)
            m = _trapezoid(tuple(pos), tuple(new), abs(new[2] - pos[2]), 0.0,
                           rng.uniform(2, 10), 0.0, rng.uniform(50, 200))
            prev_dir = None
        else:
            if prev_dir is not None and rng.random() < 0.3:
                d = (-prev_dir[0], -prev_dir[1])      # exact reversal
            else:
                ang = rng.uniform(0, 2 * math.pi)
                d = (math.cos(ang), math.sin(ang))
            if axes == "x":
                d = (math.copysign(1.0, d[0]), 0.0)
            elif axes == "y":
                d = (0.0, math.copysign(1.0, d[1]))
            length = rng.uniform(0.05, 15.0)
            new[0] += d[0] * length
            new[1] += d[1] * length
            if rng.random() < 0.8:
                new[3] += length * rng.uniform(0.02, 0.06)
            dist = math.hypot(new[0] - pos[0], new[1] - pos[1])
            vc, acc = rng.uniform(20, 250), rng.uniform(500, 5000)
            reversal = prev_dir is not None and d[0] * prev_dir[0] + d[1] * prev_dir[1] < -0.99
            v0 = 0.0 if (prev_dir is None or reversal) else min(v_prev, vc)
            v1 = rng.uniform(0, vc) if rng.random() < 0.7 else 0.0
            m = _trapezoid(tuple(pos), tuple(new), dist, v0, vc, v1, acc)
            prev_dir = d
        moves.append(m)
        v_prev = m.end_v
        pos = new
    return moves
