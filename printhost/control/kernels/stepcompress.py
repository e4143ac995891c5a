"""Packing step times into Klipper `queue_step` commands.

Klipper's MCU firmware does not take step times one by one: a `queue_step
interval count add` command makes it step `count` times, the first step `interval`
ticks after the previous step and each later one after an interval grown by `add`.
So, counting from the clock of the last step already sent, step n (1-based) of a
command lands at

    last + n * interval + add * n * (n - 1) / 2

and the last of them becomes the reference for the next command. A
`set_next_step_dir` command sent before a `queue_step` changes the direction
from that command's first step on.

Compression must never move a step later than its true time (a late step could
pile up behind the next one) and may move it earlier by at most `max_error` ticks;
as in Klipper it is also never moved earlier than halfway back to the previous
step, which keeps the steps in order and the intervals positive. Within those
windows the compressor greedily takes the longest run of steps one command can
express, searching over `add` the way Klipper's compress_bisect_add does: for a
trial `add` the admissible interval range is narrowed step by step until it
becomes empty, and whether the failing step came too early or too late tells
which half of the `add` range to try next. Commands never span a direction
change, hold at most 65535 steps and keep `add` within 16 bits.

Step clocks come in as real-valued MCU ticks. The latest admissible tick of a
step is floor(clock), the earliest ceil(clock - max_error), so every emitted tick
lies in [clock - max_error, clock] exactly as stated; with max_error below one
tick a step between two ticks goes on the tick before it.

A step more than CLOCK_DIFF_MAX ticks after the previous one is sent on its own
with the interval taken modulo 2**32, as Klipper does: the MCU adds intervals to
a 32-bit timer, so the wrapped value lands on the right tick, provided the
command is not transmitted more than about 2**31 ticks ahead of that step
(`first_clock` tells the sender when that is).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

CLOCK_DIFF_MAX = 3 << 28
MAX_COUNT = 0xFFFF
MIN_ADD = -0x8000
MAX_ADD = 0x7FFF
# Largest difference in `add` between two sequences that both fit `count` points
# within max_error is (6 + 4 sqrt 2) * max_error / count^2; Klipper rounds the
# factor down to 11, which prunes the search a little harder and loses nothing
# measurable. Same here, so both compressors explore the same candidates.
_QUADRATIC_DEV = 11
_GREEDY_GUARD = 0x200

_ERR_CHECK = -2


@numba.njit(cache=True, nogil=True)
def _ceil_div(n, d):
    return -((-n) // d)


@numba.njit(cache=True, nogil=True)
def _window(latest, earliest, first, i, last):
    """(min, max) admissible tick of step i, relative to `last`; `first` opens the command."""
    hi = latest[i] - last
    prev = latest[i - 1] - last if i > first else np.int64(0)
    lo = hi - (hi - prev) // 2
    e = earliest[i] - last
    if e > lo:
        lo = e
    return lo, hi


@numba.njit(cache=True, nogil=True)
def _best_command(latest, earliest, first, stop, last, err_ticks):
    """(interval, count, add) covering as many steps from index `first` as possible."""
    outer_lo, outer_hi = _window(latest, earliest, first, first, last)
    add = np.int64(0)
    min_add = np.int64(MIN_ADD)
    max_add = np.int64(MAX_ADD)
    best_interval = np.int64(0)
    best_count = np.int64(1)
    best_add = np.int64(0)
    best_reach = np.int64(-(1 << 62))
    zero_interval = np.int64(0)
    zero_count = np.int64(0)
    while True:
        # Longest sequence with this `add`: shrink [lo_i, hi_i] of admissible
        # intervals point by point until it is empty.
        lo_i = outer_lo
        hi_i = outer_hi
        interval = hi_i
        n = np.int64(1)
        p_lo = np.int64(0)
        p_hi = np.int64(0)
        while True:
            n += 1
            if first + n - 1 >= stop:
                return interval, n - 1, add
            p_lo, p_hi = _window(latest, earliest, first, first + n - 1, last)
            bend = add * (n * (n - 1) // 2)
            if lo_i * n < p_lo - bend:
                lo_i = _ceil_div(p_lo - bend, n)
            if hi_i * n > p_hi - bend:
                hi_i = (p_hi - bend) // n
            if lo_i > hi_i:
                break
            interval = hi_i
        count = n - 1
        reach = add * (count * (count - 1) // 2) + interval * count
        if reach > best_reach or (reach == best_reach and interval > best_interval):
            best_interval = interval
            best_count = count
            best_add = add
            best_reach = reach
            if add == 0:
                zero_interval = interval
                zero_count = count
            if count > _GREEDY_GUARD:
                break
        # Was the failing point missed by being too early or too late? That says
        # whether a larger or a smaller add could reach it.
        n_bend = n * (n - 1) // 2
        if add * n_bend + interval * n < p_lo:
            min_add = add + 1
            outer_hi = hi_i
        else:
            max_add = add - 1
            outer_lo = lo_i
        if count > 1:
            spread = err_ticks * _QUADRATIC_DEV // (count * count)
            if min_add < add - spread:
                min_add = add - spread
            if max_add > add + spread:
                max_add = add + spread
        # The failing point itself bounds add, given the surviving interval range.
        if min_add * n_bend < p_lo - outer_hi * n:
            min_add = _ceil_div(p_lo - outer_hi * n, n_bend)
        if max_add * n_bend > p_hi - outer_lo * n:
            max_add = (p_hi - outer_lo * n) // n_bend
        if min_add > max_add:
            break
        add = max_add - (max_add - min_add) // 4
    if zero_count + zero_count // 16 >= best_count:
        return zero_interval, zero_count, np.int64(0)
    return best_interval, best_count, best_add


@numba.njit(cache=True, nogil=True)
def compress_kernel(clocks, dirs, last_clock, last_dir, max_error, until,
                    out_interval, out_count, out_add, out_dir, out_first):
    """Compress steps into commands until the last sent step reaches `until`.

    Returns (commands written, steps consumed, new last clock, new direction), or
    a negative command count if a command failed its own verification.
    """
    n = clocks.shape[0]
    latest = np.empty(n, np.int64)
    earliest = np.empty(n, np.int64)
    for i in range(n):
        hi = np.int64(math.floor(clocks[i]))
        lo = np.int64(math.ceil(clocks[i] - max_error))
        latest[i] = hi
        earliest[i] = lo if lo < hi else hi
    err_ticks = np.int64(math.floor(max_error))
    last = np.int64(last_clock)
    cur_dir = np.int64(last_dir)
    pos = 0
    nout = 0
    while pos < n and last < until:
        d = np.int64(dirs[pos])
        marker = np.int64(0)
        if d != cur_dir:
            marker = d
            cur_dir = d
        if latest[pos] - last >= CLOCK_DIFF_MAX:
            interval = latest[pos] - last
            count = np.int64(1)
            add = np.int64(0)
        else:
            stop = pos + 1
            limit = min(n, pos + MAX_COUNT)
            while (stop < limit and dirs[stop] == d
                   and latest[stop] - latest[stop - 1] < CLOCK_DIFF_MAX):
                stop += 1
            interval, count, add = _best_command(latest, earliest, pos, stop, last, err_ticks)
            if interval == 0 and add == 0:
                count = 1
            # Verify every step against its window, as Klipper's check_line does.
            t = last
            step = interval
            for i in range(count):
                t += step
                lo, hi = _window(latest, earliest, pos, pos + i, last)
                if t - last < lo or t - last > hi or step < 0 or step >= 0x80000000:
                    return _ERR_CHECK, pos, last, cur_dir
                step += add
        out_interval[nout] = interval
        out_count[nout] = count
        out_add[nout] = add
        out_dir[nout] = marker
        out_first[nout] = last + interval
        nout += 1
        last = last + interval * count + add * (count * (count - 1) // 2)
        pos += count
    return nout, pos, last, cur_dir


class Commands(NamedTuple):
    """Compressed steps: one row per `queue_step`, in sending order."""

    interval: np.ndarray    # uint32
    count: np.ndarray       # uint16, >= 1
    add: np.ndarray         # int16
    set_dir: np.ndarray     # int8: 0, or +1/-1 = send set_next_step_dir first
    first_clock: np.ndarray  # int64 absolute tick of each command's first step
    consumed: int           # how many of the input steps these commands cover
    last_clock: int         # tick of the last step sent
    last_dir: int           # direction of that step (0 if none was ever sent)


def compress_steps(clocks: np.ndarray, dirs: np.ndarray, last_clock: int, max_error: float,
                   last_dir: int = 0, until: int | None = None) -> Commands:
    """Turn step clocks (absolute, real-valued MCU ticks) into `queue_step` commands.

    `last_clock` is the tick of the last step already sent and `last_dir` its
    direction (0 when unknown, which forces a direction command first).
    `max_error` is how many ticks early a step may be sent. Without `until` every
    step is compressed; with it, compression stops once the last sent step reaches
    that tick, and the steps not consumed should be passed again, with more
    behind them, next time: a command formed with the following steps in view
    covers more of them.
    """
    c = np.ascontiguousarray(clocks, dtype=np.float64)
    d = np.ascontiguousarray(dirs, dtype=np.int8)
    if c.ndim != 1 or c.shape != d.shape:
        raise ValueError("clocks and dirs must be 1-D arrays of the same length")
    if not (math.isfinite(max_error) and max_error >= 0.0):
        raise ValueError(f"max_error must be finite and >= 0, got {max_error!r}")
    if last_dir not in (-1, 0, 1):
        raise ValueError(f"last_dir must be -1, 0 or 1, got {last_dir!r}")
    if len(c):
        if not np.isfinite(c).all():
            raise ValueError("step clocks must be finite")
        if (np.diff(c) < 0.0).any():
            raise ValueError("step clocks must not decrease")
        # Not np.isin: it sorts both arrays, ten times the cost of this on every slice
        # a live print compresses.
        if not (np.abs(d) == 1).all():
            raise ValueError("step directions must be +1 or -1")
        if math.floor(c[0]) < last_clock:
            raise ValueError(f"first step (clock {c[0]!r}) precedes the last sent step "
                             f"({last_clock})")
    n = len(c)
    out_i = np.empty(n, dtype=np.int64)
    out_c = np.empty(n, dtype=np.int64)
    out_a = np.empty(n, dtype=np.int64)
    out_d = np.empty(n, dtype=np.int64)
    out_f = np.empty(n, dtype=np.int64)
    stop = np.iinfo(np.int64).max if until is None else int(until)
    nout, consumed, last, cur_dir = compress_kernel(c, d, int(last_clock), int(last_dir),
                                                    float(max_error), stop,
                                                    out_i, out_c, out_a, out_d, out_f)
    if nout < 0:
        raise RuntimeError(f"step compression produced an invalid command at step {consumed}")
    return Commands((out_i[:nout] & 0xFFFFFFFF).astype(np.uint32),
                    out_c[:nout].astype(np.uint16), out_a[:nout].astype(np.int16),
                    out_d[:nout].astype(np.int8), out_f[:nout].copy(),
                    int(consumed), int(last), int(cur_dir))


def warm_up() -> None:
    """Compile (or load from the cache) the compressor."""
    compress_steps(np.array([10.5, 20.0, 30.2, 41.0]), np.array([1, 1, -1, -1]), 0, 2.0)
