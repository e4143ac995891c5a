import math

import numpy as np
import pytest

from printhost.config import SHAPER_TYPES, InputShaperSettings
from printhost.control import shaper

COUNTS = {"zv": 2, "mzv": 3, "zvd": 3, "ei": 3, "2hump_ei": 4, "3hump_ei": 5}


def residual_vibration(amps, times, freq, damping):
    """Amplitude left in a damped oscillator at `freq` after the pulse train, per unit input.

    Each pulse starts a decaying oscillation; after the last pulse they add up to
    exp(-z w t_n) * |sum A_i exp(z w t_i) exp(i w_d t_i)|.
    """
    w = 2.0 * math.pi * freq
    wd = w * math.sqrt(1.0 - damping * damping)
    tn = times[-1]
    c = sum(a * math.exp(damping * w * (t - tn)) * math.cos(wd * t) for a, t in zip(amps, times))
    s = sum(a * math.exp(damping * w * (t - tn)) * math.sin(wd * t) for a, t in zip(amps, times))
    return math.hypot(c, s)


@pytest.mark.parametrize("name", SHAPER_TYPES)
@pytest.mark.parametrize("freq,damping", [(20.0, 0.0), (47.5, 0.1), (80.0, 0.2)])
def test_normalised_and_centred(name, freq, damping):
    amps, times = shaper.make_shaper(name, freq, damping)
    assert amps.dtype == np.float64 and times.dtype == np.float64
    assert len(amps) == len(times) == COUNTS[name]
    assert math.isclose(float(amps.sum()), 1.0, abs_tol=1e-15)
    assert abs(float(np.dot(amps, times))) < 1e-17
    assert (np.diff(times) > 0.0).all()
    assert (amps > 0.0).all()


@pytest.mark.parametrize("name", SHAPER_TYPES)
@pytest.mark.parametrize("damping", [0.0, 0.1])
def test_suppresses_vibration_at_its_frequency(name, damping):
    amps, times = shaper.make_shaper(name, 50.0, damping)
    v = residual_vibration(amps, times, 50.0, damping)
    if name in ("zv", "mzv", "zvd"):
        assert v < 1e-9          # exact zeros by construction
    else:
        assert v < 0.052         # EI designs accept 5 % at the design frequency
    # An unshaped impulse leaves all of it.
    assert residual_vibration([1.0], [0.0], 50.0, damping) == pytest.approx(1.0)


def test_zv_undamped_is_two_equal_pulses_half_a_period_apart():
    amps, times = shaper.zv(40.0, 0.0)
    np.testing.assert_allclose(amps, [0.5, 0.5], rtol=0, atol=1e-15)
    np.testing.assert_allclose(times, [-0.00625, 0.00625], rtol=0, atol=1e-15)
    assert times[1] - times[0] == pytest.approx(0.5 / 40.0, abs=1e-15)


def test_zv_damped_from_definition():
    f, z = 50.0, 0.1
    df = math.sqrt(1 - z * z)
    k = math.exp(-z * math.pi / df)
    half_period = 0.5 / (f * df)
    a = np.array([1.0, k]) / (1.0 + k)
    t = np.array([0.0, half_period]) - a[1] * half_period
    amps, times = shaper.zv(f, z)
    np.testing.assert_allclose(amps, a, rtol=1e-14)
    np.testing.assert_allclose(times, t, rtol=0, atol=1e-16)
    # hand-computed: K = exp(-0.1 pi / 0.99499) = 0.729245..., A = [0.578286, 0.421714]
    np.testing.assert_allclose(amps, [0.5782861817, 0.4217138183], rtol=0, atol=1e-9)
    np.testing.assert_allclose(times, [-0.0042383833, 0.0058119948], rtol=0, atol=1e-9)


def test_zvd_is_zv_convolved_with_itself():
    a1, t1 = shaper.zv(35.0, 0.15)
    amps = {}
    for x, s in zip(a1, t1):
        for y, u in zip(a1, t1):
            key = round(s + u, 12)
            amps[key] = amps.get(key, 0.0) + x * y
    times = np.array(sorted(amps))
    conv = np.array([amps[k] for k in sorted(amps)])
    za, zt = shaper.zvd(35.0, 0.15)
    np.testing.assert_allclose(za, conv, rtol=1e-13)
    np.testing.assert_allclose(zt, times - np.dot(conv, times), rtol=0, atol=1e-12)


def test_mzv_matches_the_zero_placement_system():
    """Klipper derives MZV (n = 3 pulses over 3/4 of a period) from a linear system.

    The amplitudes sum to one and put zeros of the response at f and at
    f * (1 + 1 / tau) with tau = 0.75 / 0.5; damping then scales pulse i by K^i.
    """
    f, z = 42.0, 0.12
    n, span = 3, 0.75
    tau = span * (n - 2) / (n - 2 * span - 1)
    t = [i * span / (n - 1) for i in range(n)]
    rows, rhs = [[1.0] * n], [1.0]
    for i in range(n - 1):
        w = [2 * math.pi * (1 + i / tau) * tj for tj in t]
        rows += [[math.cos(x) for x in w], [math.sin(x) for x in w]]
        rhs += [0.0, 0.0]
    a = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    df = math.sqrt(1 - z * z)
    k = math.exp(-2 * span * z * math.pi / ((n - 1) * df))
    a = a * k ** np.arange(n)
    times = np.array(t) / (f * df)
    a /= a.sum()
    amps, got_t = shaper.mzv(f, z)
    np.testing.assert_allclose(amps, a, rtol=1e-12)
    np.testing.assert_allclose(got_t, times - np.dot(a, times), rtol=0, atol=1e-15)
    # undamped: 1 - 1/sqrt(2), sqrt(2) - 1, 1 - 1/sqrt(2)
    np.testing.assert_allclose(shaper.mzv(f, 0.0)[0], [0.2928932188, 0.4142135624, 0.2928932188],
                               rtol=0, atol=1e-10)


def test_ei_undamped_hand_computed():
    # a1 = 0.24968 + 0.24961/20, a3 = 0.25149 + 0.21474/20, a2 = 1 - a1 - a3,
    # middle pulse at 0.4999 periods, last at one period (25 ms at 40 Hz).
    amps, times = shaper.ei(40.0, 0.0)
    np.testing.assert_allclose(amps, [0.2621605, 0.4756125, 0.262227], rtol=0, atol=1e-12)
    mean = 0.4756125 * 0.4999 / 40 + 0.262227 * 0.025
    np.testing.assert_allclose(times, np.array([0.0, 0.4999 / 40, 0.025]) - mean,
                               rtol=0, atol=1e-15)


def test_hump_ei_undamped_use_the_constant_terms():
    amps, times = shaper.two_hump_ei(50.0, 0.0)
    a = np.array([0.16054, 0.33911, 0.34089, 0.15997])
    a /= a.sum()
    t = np.array([0.0, 0.49890, 0.99748, 1.49920]) / 50.0
    np.testing.assert_allclose(amps, a, rtol=1e-12)
    np.testing.assert_allclose(times, t - np.dot(a, t), rtol=0, atol=1e-15)
    amps, times = shaper.three_hump_ei(50.0, 0.0)
    a = np.array([0.11275, 0.23698, 0.30008, 0.23775, 0.11244])
    a /= a.sum()
    t = np.array([0.0, 0.49974, 0.99849, 1.49870, 1.99960]) / 50.0
    np.testing.assert_allclose(amps, a, rtol=1e-12)
    np.testing.assert_allclose(times, t - np.dot(a, t), rtol=0, atol=1e-15)


def test_hump_ei_damping_enters_as_a_cubic():
    # Pulse 2 of the two-hump EI at z = 0.2, straight from its coefficient row.
    z = 0.2
    t1 = 0.49890 + 0.16270 * z - 0.54262 * z ** 2 + 6.16180 * z ** 3
    t0 = 0.0
    amps, times = shaper.two_hump_ei(30.0, z)
    assert times[1] - times[0] == pytest.approx((t1 - t0) / 30.0, abs=1e-15)


def test_higher_frequency_means_shorter_shaper():
    for name in SHAPER_TYPES:
        _, slow = shaper.make_shaper(name, 20.0, 0.1)
        _, fast = shaper.make_shaper(name, 80.0, 0.1)
        np.testing.assert_allclose(fast, slow / 4.0, rtol=1e-12, atol=1e-17)


def test_shaper_pulses_from_settings():
    s = InputShaperSettings(shaper_type_x="zv", shaper_freq_x=40.0, damping_ratio_x=0.0,
                            shaper_type_y="3hump_ei", shaper_freq_y=0.0)
    amps, times = shaper.shaper_pulses(s, "x")
    np.testing.assert_allclose(amps, [0.5, 0.5])
    assert shaper.shaper_pulses(s, "y") is None
    assert shaper.shaper_pulses(InputShaperSettings(), "x") is None   # default: off
    with pytest.raises(ValueError):
        shaper.shaper_pulses(s, "z")
    s2 = InputShaperSettings(shaper_type_y="ei", shaper_freq_y=55.0, damping_ratio_y=0.05)
    np.testing.assert_array_equal(shaper.shaper_pulses(s2, "y")[1], shaper.ei(55.0, 0.05)[1])


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        shaper.make_shaper("nope", 40.0, 0.1)
    with pytest.raises(ValueError):
        shaper.make_shaper("zv", 0.0, 0.1)
    with pytest.raises(ValueError):
        shaper.make_shaper("zv", 40.0, 1.0)
    # The fitted EI shapers are limited to the damping they were fitted for.
    with pytest.raises(ValueError):
        shaper.make_shaper("3hump_ei", 40.0, 0.21)
    with pytest.raises(ValueError):
        shaper.make_shaper("ei", 40.0, 0.41)
    with pytest.raises(ValueError):
        shaper.shaper_pulses(InputShaperSettings(shaper_type_x="2hump_ei", shaper_freq_x=40.0,
                                                 damping_ratio_x=0.5), "x")


@pytest.mark.parametrize("name", SHAPER_TYPES)
def test_well_formed_up_to_the_damping_limit(name):
    amps, times = shaper.make_shaper(name, 40.0, shaper.MAX_DAMPING_RATIO[name])
    assert (amps > 0.0).all() and (np.diff(times) > 0.0).all()
