"""Step compression: every expanded step inside its window, Klipper's formula, the search.

The step streams come from the step generator on seeded random jobs
(`reference.random_moves`) converted to MCU ticks, plus synthetic sequences for the
edge cases.
"""

import math

import numpy as np
import pytest

from printhost.control.kernels import reference as ref
from printhost.control.kernels import stepcompress as sc
from printhost.control.kernels import steppers as st
from printhost.control.kernels import trapq
from printhost.control import shaper


def step_stream(seed, freq, kind=st.COREXY_A, shaped=True, n=40):
    moves = ref.random_moves(seed, n)
    segs = (trapq.extruder_segments if kind == st.EXTRUDER else trapq.toolhead_segments)(moves, 0.5)
    if kind == st.EXTRUDER:
        model = st.StepperModel(kind, 0.0105, pressure_advance=0.04, smooth_time=0.03)
    else:
        pulses = shaper.make_shaper("mzv", 45.0, 0.1) if shaped else None
        model = st.StepperModel(kind, 0.0125, pulses, pulses)
    batch = st.generate_steps(segs, model, -math.inf, math.inf, 0)
    return batch.times * freq, batch.dirs


def expand(result, last_clock=0, last_dir=0):
    return ref.expand_commands(last_clock, last_dir, result.interval, result.count, result.add,
                               result.set_dir, result.first_clock)


def check_windows(clocks, dirs, ticks, got_dirs, max_error):
    ticks = np.array(ticks, dtype=np.int64)
    assert len(ticks) == len(clocks)
    np.testing.assert_array_equal(got_dirs, dirs)
    assert (ticks <= clocks).all(), "a step was sent late"
    if max_error >= 1.0:
        assert (ticks >= clocks - max_error).all(), "a step was sent too early"
    else:
        assert (ticks >= np.floor(clocks)).all()
    assert (np.diff(ticks) >= 0).all()


def check_ranges(result):
    assert result.interval.dtype == np.uint32
    assert result.count.dtype == np.uint16 and result.add.dtype == np.int16
    assert (result.count >= 1).all()
    assert set(np.unique(result.set_dir)) <= {-1, 0, 1}


CASES = [(seed, freq, err_s, kind)
         for seed, kind in ((1, st.COREXY_A), (2, st.CARTESIAN_X), (3, st.EXTRUDER))
         for freq, err_s in ((16e6, 25e-6), (72e6, 25e-6), (400e6, 1e-6))]


@pytest.mark.parametrize("seed,freq,err_s,kind", CASES)
def test_expanded_steps_stay_in_their_windows(seed, freq, err_s, kind):
    clocks, dirs = step_stream(seed, freq, kind)
    max_error = err_s * freq
    got = sc.compress_steps(clocks, dirs, 0, max_error)
    check_ranges(got)
    assert got.consumed == len(clocks)
    ticks, got_dirs = expand(got)
    check_windows(clocks, dirs, ticks, got_dirs, max_error)
    assert got.last_clock == ticks[-1] and got.last_dir == dirs[-1]
    # direction commands exactly where the direction changes
    changes = np.concatenate([[True], dirs[1:] != dirs[:-1]])
    firsts = np.concatenate([[0], np.cumsum(got.count.astype(np.int64))[:-1]])
    np.testing.assert_array_equal(got.set_dir != 0, changes[firsts])
    assert changes.sum() == (got.set_dir != 0).sum()
    # and it actually compresses (the slow, reversing extruder stream least)
    assert len(got.count) * (1.5 if kind == st.EXTRUDER else 10) < len(clocks)


@pytest.mark.parametrize("seed,freq,err_s,kind", CASES[:6])
def test_same_commands_as_reference(seed, freq, err_s, kind):
    clocks, dirs = step_stream(seed, freq, kind, n=15)
    max_error = err_s * freq
    got = sc.compress_steps(clocks, dirs, 1000, max_error, last_dir=1)
    want, consumed, last, last_dir = ref.compress_steps(clocks, dirs, 1000, max_error, 1)
    rows = list(zip(got.interval.tolist(), got.count.tolist(), got.add.tolist(),
                    got.set_dir.tolist(), got.first_clock.tolist()))
    assert rows == want
    assert (got.consumed, got.last_clock, got.last_dir) == (consumed, last, last_dir)


def test_klipper_step_formula():
    # step n of (interval, count, add) after `last` is at last + n*interval + add*n*(n-1)/2
    ticks, dirs = ref.expand_commands(1000, 1, [100, 50], [4, 3], [10, -5], [0, -1],
                                      [1100, 1460 + 50])
    assert ticks == [1100, 1210, 1330, 1460, 1510, 1555, 1595]
    assert dirs == [1, 1, 1, 1, -1, -1, -1]
    got = sc.compress_steps(np.array(ticks, dtype=float), np.array(dirs), 1000, 0.0, last_dir=1)
    assert got.interval.tolist() == [100, 50] and got.count.tolist() == [4, 3]
    assert got.add.tolist() == [10, -5] and got.set_dir.tolist() == [0, -1]


def test_constant_rate_is_one_command_up_to_the_count_limit():
    clocks = 500.0 + 1000.0 * np.arange(1, 70001)
    got = sc.compress_steps(clocks, np.ones(70000, dtype=np.int8), 500, 10.0)
    assert got.count.tolist() == [65535, 70000 - 65535]
    assert got.interval.tolist() == [1000, 1000] and got.add.tolist() == [0, 0]
    assert got.set_dir.tolist() == [1, 0]


def test_constant_acceleration_needs_few_commands():
    # 20000 steps of a ramp from rest at 72 MHz, 25 us allowed error
    a, step, freq = 3000.0, 0.0125, 72e6
    t = np.sqrt(2.0 * (np.arange(20000) + 0.5) * step / a) + 0.01
    got = sc.compress_steps(t * freq, np.ones(len(t), dtype=np.int8), 0, 25e-6 * freq)
    assert len(got.count) < 150
    assert (got.add != 0).any()
    ticks, _ = expand(got)
    check_windows(t * freq, np.ones(len(t)), ticks, np.ones(len(t)), 25e-6 * freq)


def test_known_direction_needs_no_command():
    clocks = np.array([100.0, 200.0, 300.0])
    back = np.array([-1, -1, -1])
    assert sc.compress_steps(clocks, back, 0, 5.0, last_dir=-1).set_dir.tolist() == [0]
    assert sc.compress_steps(clocks, back, 0, 5.0, last_dir=1).set_dir.tolist() == [-1]
    assert sc.compress_steps(clocks, np.array([1, 1, 1]), 0, 5.0).set_dir.tolist() == [1]


def test_fractional_clocks_and_small_errors():
    rng = np.random.default_rng(9)
    clocks = np.cumsum(rng.uniform(3.0, 400.0, 5000)) + rng.random()
    dirs = np.where(rng.random(5000) < 0.95, 1, -1).astype(np.int8)
    for max_error in (0.0, 0.5, 1.0, 7.3):
        got = sc.compress_steps(clocks, dirs, 0, max_error)
        check_ranges(got)
        ticks, got_dirs = expand(got)
        check_windows(clocks, dirs, ticks, got_dirs, max_error)
        if max_error < 1.0:   # no freedom at all: every step on the tick just before it
            np.testing.assert_array_equal(ticks, np.floor(clocks))


def test_half_way_rule_keeps_order_of_close_steps():
    # With a large allowed error, steps 3 ticks apart may still not swap or collide.
    clocks = np.array([10.0, 13.0, 16.0, 400.0, 403.0, 2000.0, 2001.0])
    got = sc.compress_steps(clocks, np.ones(7, dtype=np.int8), 0, 1000.0)
    ticks, dirs = expand(got)
    check_windows(clocks, np.ones(7), ticks, dirs, 1000.0)
    assert (np.diff(ticks) > 0).all()


def test_steps_on_the_same_tick():
    clocks = np.array([100.2, 100.7, 100.9, 250.0])
    dirs = np.array([1, -1, -1, -1])
    got = sc.compress_steps(clocks, dirs, 0, 50.0)
    ticks, got_dirs = expand(got)
    check_windows(clocks, dirs, ticks, got_dirs, 50.0)
    # no command may ask for several steps at one instant
    assert not ((got.interval == 0) & (got.add == 0) & (got.count > 1)).any()


def test_far_step_wraps_its_interval():
    far = float(sc.CLOCK_DIFF_MAX) * 7 + 0.5        # beyond 2**32 ticks after the last step
    clocks = np.array([100.0, 200.0, 100.0 + far, 200.0 + far])
    got = sc.compress_steps(clocks, np.ones(4, dtype=np.int8), 0, 10.0)
    assert got.count.tolist() == [2, 1, 1]
    big = int(math.floor(100.0 + far)) - 200
    assert got.interval[1] == big % (1 << 32) and big >= 1 << 32
    assert got.first_clock[1] == int(math.floor(100.0 + far))
    ticks, _ = expand(got)
    check_windows(clocks, np.ones(4), ticks, np.ones(4), 10.0)


def test_until_stops_early_and_the_rest_continues():
    clocks, dirs = step_stream(5, 72e6, n=20)
    err = 1800.0
    whole = sc.compress_steps(clocks, dirs, 0, err)
    mid = int(clocks[len(clocks) // 2])
    part = sc.compress_steps(clocks, dirs, 0, err, until=mid)
    assert 0 < part.consumed < len(clocks) and part.last_clock >= mid
    rest = sc.compress_steps(clocks[part.consumed:], dirs[part.consumed:], part.last_clock, err,
                             last_dir=part.last_dir)
    t1, d1 = expand(part)
    t2, d2 = expand(rest, part.last_clock, part.last_dir)
    check_windows(clocks, dirs, t1 + t2, np.array(d1 + d2), err)
    # stopping at a command boundary of the whole run changes nothing
    assert part.count.tolist() == whole.count[:len(part.count)].tolist()


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        sc.compress_steps(np.array([5.0, 4.0]), np.array([1, 1]), 0, 1.0)
    for bad in (0, 2, -2, -128):
        with pytest.raises(ValueError, match="directions must be"):
            sc.compress_steps(np.array([5.0, 6.0]), np.array([1, bad], np.int8), 0, 1.0)
    with pytest.raises(ValueError):
        sc.compress_steps(np.array([5.0, 6.0]), np.array([1, 1]), 10, 1.0)
    with pytest.raises(ValueError):
        sc.compress_steps(np.array([5.0, 6.0]), np.array([1, 1]), 0, -1.0)
    with pytest.raises(ValueError):
        sc.compress_steps(np.array([5.0, 6.0]), np.array([1]), 0, 1.0)
    empty = sc.compress_steps(np.zeros(0), np.zeros(0, dtype=np.int8), 42, 1.0, last_dir=1)
    assert len(empty.count) == 0 and empty.last_clock == 42 and empty.last_dir == 1
