"""The compiled heater control laws against their plain-Python references, and their behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest

from printhost.config import HeaterSettings
from printhost.control.kernels import heater as hk


def random_sequence(seed: int, n: int = 2000):
    """Readings with irregular spacing (repeated times, steps backwards), noise and
    target changes, so every branch of both laws is taken."""
    rng = np.random.default_rng(seed)
    gaps = rng.uniform(0.0, 0.5, n)
    gaps[rng.random(n) < 0.05] = 0.0
    gaps[rng.random(n) < 0.02] = -0.3
    times = 100.0 + np.cumsum(gaps)
    temps = 180.0 + np.cumsum(rng.normal(0.0, 2.0, n))
    targets = rng.choice([0.0, 150.0, 180.0, 210.0], n)
    return times, temps, targets


GAINS = [(22.0, 1.1, 110.0, 1.0, 1.0), (25.0, 1.0, 115.0, 1.0, 0.6),
         (70.0, 1.2, 900.0, 2.0, 1.0), (10.0, 0.0, 0.0, 0.0, 0.8),
         (40.0, 5.0, 50.0, 0.3, 0.25)]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("params", GAINS)
def test_pid_kernel_matches_reference(seed, params):
    times, temps, targets = random_sequence(seed)
    state = np.zeros(hk.PID_STATE_SIZE)
    ref = [0.0] * hk.PID_STATE_SIZE
    for t, c, g in zip(times, temps, targets):
        got = hk.pid_update(state, float(t), float(c), float(g), *params)
        want = hk.pid_reference(ref, float(t), float(c), float(g), *params)
        assert abs(got - want) <= 1e-12
    assert np.allclose(state, ref, rtol=0.0, atol=1e-9)
    # The sequence kernel gives the same duties as stepping one reading at a time.
    out = np.empty(len(times))
    hk.pid_run(np.zeros(hk.PID_STATE_SIZE), times, temps, targets, *params, out)
    ref = [0.0] * hk.PID_STATE_SIZE
    want = [hk.pid_reference(ref, float(t), float(c), float(g), *params)
            for t, c, g in zip(times, temps, targets)]
    assert np.max(np.abs(out - want)) <= 1e-12


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_delta,max_power", [(2.0, 1.0), (0.0, 0.5), (5.0, 0.8)])
def test_watermark_kernel_matches_reference(seed, max_delta, max_power):
    _, temps, targets = random_sequence(seed)
    state = np.zeros(hk.WATERMARK_STATE_SIZE)
    ref = [0.0]
    got = [hk.watermark_update(state, float(c), float(g), max_delta, max_power)
           for c, g in zip(temps, targets)]
    want = [hk.watermark_reference(ref, float(c), float(g), max_delta, max_power)
            for c, g in zip(temps, targets)]
    assert got == want
    assert 0.0 < sum(1 for d in got if d) < len(got)      # both states visited
    out = np.empty(len(temps))
    hk.watermark_run(np.zeros(1), temps, targets, max_delta, max_power, out)
    assert list(out) == want


def test_pid_first_reading_only_primes():
    pid = hk.PidControl(25.5, 2.55, 255.0, 1.0, 1.0)
    assert pid.update(10.0, 200.0, 204.0) == pytest.approx(0.1 * 4.0)
    assert pid.state[hk.PID_INTEGRAL] == 0.0 and pid.state[hk.PID_SLOPE] == 0.0


def test_pid_integral_is_capped_at_max_power_over_ki():
    pid = hk.PidControl(0.0, 25.5, 0.0, 1.0, 0.5)
    for i in range(200):
        duty = pid.update(float(i), 100.0, 101.0)
    assert duty == 0.5
    assert pid.state[hk.PID_INTEGRAL] == pytest.approx(0.5 / 0.1)


def test_pid_output_clamps_and_keeps_integral_while_saturated():
    pid = hk.PidControl(255.0, 2.55, 0.0, 1.0, 0.7)
    pid.update(0.0, 100.0, 200.0)
    assert pid.update(1.0, 100.0, 200.0) == 0.7
    assert pid.state[hk.PID_INTEGRAL] == 0.0          # saturated: not committed
    assert pid.update(2.0, 250.0, 200.0) == 0.0       # never negative


def test_pid_reset_forgets_state():
    pid = hk.PidControl(22.0, 1.1, 110.0, 1.0, 1.0)
    for i in range(10):
        pid.update(float(i), 200.0 + i, 205.0)
    pid.reset()
    assert not pid.state.any()


def test_watermark_band():
    wm = hk.WatermarkControl(2.0, 0.8)
    seq = [(195.0, 0.8), (201.9, 0.8), (202.0, 0.0), (199.0, 0.0), (198.1, 0.0),
           (198.0, 0.8), (200.0, 0.8)]
    for temp, duty in seq:
        assert wm.update(0.0, temp, 200.0) == duty


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("slot", range(3))
def test_wrappers_refuse_non_finite_inputs(bad, slot):
    for control in (hk.PidControl(22.0, 1.1, 110.0, 1.0, 1.0), hk.WatermarkControl(2.0, 1.0)):
        args = [1.0, 200.0, 210.0]
        args[slot] = bad
        before = control.state.copy()
        with pytest.raises(ValueError, match="not a finite number"):
            control.update(*args)
        assert np.array_equal(control.state, before)


@pytest.mark.parametrize("args", [(math.nan, 1.0, 1.0, 1.0, 1.0), (1.0, -1.0, 1.0, 1.0, 1.0),
                                  (1.0, 1.0, 1.0, 1.0, 0.0), (1.0, 1.0, 1.0, 1.0, 1.5)])
def test_pid_refuses_bad_parameters(args):
    with pytest.raises(ValueError):
        hk.PidControl(*args)


def test_make_control_follows_the_settings():
    assert isinstance(hk.make_control(HeaterSettings(), 1.0), hk.PidControl)
    wm = hk.make_control(HeaterSettings(control="watermark", max_delta=3.0, max_power=0.5), 1.0)
    assert isinstance(wm, hk.WatermarkControl) and wm.params == (3.0, 0.5)


def test_warm_up_self_test_passes():
    hk.warm_up()
    assert hk._READY


def test_kernel_module_is_fingerprinted_for_the_cache():
    from printhost.control import kernels
    assert "printhost.control.kernels.heater" in kernels._KERNEL_MODULES
