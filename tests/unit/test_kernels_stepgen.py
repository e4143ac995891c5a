"""Step generation: the compiled kernel against the plain-Python reference and the definition.

Random jobs come from `reference.random_moves`: seeded trapezoid moves in XY with
exact reversals and non-zero junction speeds, Z moves, retracts, unretracts and
dwells. The first test run compiles the kernels (about 12 s on a
small machine); numba caches them in __pycache__ for later runs.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from printhost.config import InputShaperSettings, Settings, with_overrides
from printhost.control import shaper
from printhost.control.kernels import reference as ref
from printhost.control.kernels import steppers as st
from printhost.control.kernels import trapq
from printhost.control.kernels.position import position_kernel


# --------------------------------------------------------------------------- random jobs

def job(seed, n=25, **kw):
    moves = ref.random_moves(seed, n, **kw)
    return trapq.toolhead_segments(moves, 1.0), trapq.extruder_segments(moves, 1.0)


MZV = shaper.make_shaper("mzv", 45.0, 0.1)
EI = shaper.make_shaper("ei", 38.0, 0.05)
ZV = shaper.make_shaper("zv", 60.0, 0.0)
HUMP3 = shaper.make_shaper("3hump_ei", 55.0, 0.1)


def toolhead_models(step):
    return {
        "x": st.StepperModel(st.CARTESIAN_X, step),
        "y": st.StepperModel(st.CARTESIAN_Y, step),
        "z": st.StepperModel(st.CARTESIAN_Z, step / 5),
        "a": st.StepperModel(st.COREXY_A, step),
        "b": st.StepperModel(st.COREXY_B, step),
        "x_mzv": st.StepperModel(st.CARTESIAN_X, step, MZV, EI),
        "y_ei": st.StepperModel(st.CARTESIAN_Y, step, MZV, EI),
        "a_shaped": st.StepperModel(st.COREXY_A, step, ZV, HUMP3),
        "b_shaped": st.StepperModel(st.COREXY_B, step, ZV, HUMP3),
    }


def extruder_models(step):
    return {
        "e": st.StepperModel(st.EXTRUDER, step),
        "e_pa": st.StepperModel(st.EXTRUDER, step, pressure_advance=0.05, smooth_time=0.04),
        "e_pa_strong": st.StepperModel(st.EXTRUDER, step, pressure_advance=0.4,
                                       smooth_time=0.015),
    }


def run(segs, model, t0=-math.inf, t1=math.inf):
    start = st.commanded_position(segs, model, -1e9)
    return start, st.generate_steps(segs, model, t0, t1, start)


# --------------------------------------------------------------------------- kernel vs reference

REF_CASES = ([("toolhead", name) for name in toolhead_models(1.0)]
             + [("extruder", name) for name in extruder_models(1.0)])


@pytest.mark.parametrize("source,name", REF_CASES)
def test_matches_reference(source, name):
    th, ex = job(seed=7, n=22)
    if source == "toolhead":
        segs, model = th, toolhead_models(0.05)[name]
    else:
        segs, model = ex, extruder_models(0.02)[name]
    start, got = run(segs, model)
    times, dirs, final = ref.generate_steps(segs, model, -math.inf, math.inf, start)
    assert len(got.times) == len(times) > 20
    np.testing.assert_array_equal(got.dirs, dirs)
    assert np.abs(got.times - np.array(times)).max() < 1e-9
    assert got.position == final
    assert got.position == ref.commanded(ref.stepper_position(segs, model, 1e9), model.step_dist)


@pytest.mark.parametrize("name", ["x", "a_shaped", "b_shaped"])
def test_positions_match_reference(name):
    th, _ = job(seed=3, n=15)
    model = toolhead_models(0.0125)[name]
    rng = np.random.default_rng(1)
    for t in rng.uniform(0.9, trapq.end_time(th) + 0.1, 200):
        assert st.stepper_position(th, model, t) == pytest.approx(
            ref.stepper_position(th, model, t), abs=1e-11)


def test_pressure_advance_positions_match_reference():
    _, ex = job(seed=4, n=15)
    model = extruder_models(0.01)["e_pa"]
    rng = np.random.default_rng(2)
    for t in rng.uniform(0.9, trapq.end_time(ex) + 0.1, 200):
        assert st.stepper_position(ex, model, t) == pytest.approx(
            ref.stepper_position(ex, model, t), abs=1e-11)


# --------------------------------------------------------------------------- properties

ALL_MODELS = {**{("toolhead", k): v for k, v in toolhead_models(0.0125).items()},
              **{("extruder", k): v for k, v in extruder_models(0.0105).items()}}


def _sampled_commanded(segs, model, times):
    return np.array([position_kernel(segs, model.cols, model.coefs, model.shifts,
                                     model.half_smooth_time, model.pressure_advance,
                                     model.step_dist, float(t))[1] for t in times])


@pytest.mark.parametrize("key", list(ALL_MODELS))
def test_no_step_lost_or_invented(key):
    """At every sample time, the steps so far add up to the rounded position."""
    th, ex = job(seed=11, n=40)
    segs = th if key[0] == "toolhead" else ex
    model = ALL_MODELS[key]
    start, got = run(segs, model)
    assert (np.diff(got.times) >= 0.0).all()
    assert set(np.unique(got.dirs)) <= {-1, 1}
    assert got.position - start == int(got.dirs.astype(np.int64).sum())
    assert got.position == st.commanded_position(segs, model, 1e9)
    samples = np.linspace(0.9, trapq.end_time(segs) + 0.1, 6000)
    idx = np.searchsorted(got.times, samples, side="right")
    near = np.minimum(np.abs(got.times[np.clip(idx, 0, len(got.times) - 1)] - samples),
                      np.abs(got.times[np.clip(idx - 1, 0, len(got.times) - 1)] - samples))
    keep = near > 1e-9
    cum = np.concatenate([[0], np.cumsum(got.dirs.astype(np.int64))])
    expected = start + cum[idx]
    np.testing.assert_array_equal(_sampled_commanded(segs, model, samples[keep]), expected[keep])


@pytest.mark.parametrize("key", [("toolhead", "a_shaped"), ("toolhead", "y"),
                                 ("extruder", "e_pa_strong")])
def test_each_step_sits_on_its_half_step_point(key):
    th, ex = job(seed=12, n=20)
    segs = th if key[0] == "toolhead" else ex
    model = ALL_MODELS[key]
    start, got = run(segs, model)
    before = start + np.concatenate([[0], np.cumsum(got.dirs.astype(np.int64))[:-1]])
    rng = np.random.default_rng(0)
    for i in rng.choice(len(got.times), 150, replace=False):
        j = before[i] if got.dirs[i] > 0 else before[i] - 1
        threshold = (j + 0.5) * model.step_dist
        assert ref.stepper_position(segs, model, got.times[i]) == pytest.approx(threshold, abs=1e-8)


@pytest.mark.parametrize("key", list(ALL_MODELS))
def test_chunked_equals_one_shot(key):
    th, ex = job(seed=21, n=40)
    segs = th if key[0] == "toolhead" else ex
    model = ALL_MODELS[key]
    start, one = run(segs, model)
    rng = np.random.default_rng(5)
    cuts = np.concatenate([rng.uniform(0.9, trapq.end_time(segs) + 0.2, 60),
                           one.times[rng.integers(0, len(one.times), 15)],   # on a step
                           segs[rng.integers(0, len(segs), 15), 0]])         # on a boundary
    edges = np.concatenate([[-math.inf], np.sort(cuts), [math.inf]])
    before, after = model.margins()
    pos, times, dirs = start, [], []
    for a, b in zip(edges[:-1], edges[1:]):
        w = segs if math.isinf(a) or math.isinf(b) else trapq.window(segs, a, b, before, after)
        batch = st.generate_steps(w, model, a, b, pos)
        times.append(batch.times)
        dirs.append(batch.dirs)
        pos = batch.position
    np.testing.assert_array_equal(np.concatenate(times), one.times)
    np.testing.assert_array_equal(np.concatenate(dirs), one.dirs)
    assert pos == one.position


def test_corexy_motors_follow_x_plus_and_minus_y():
    th_x, _ = job(seed=31, n=30, z=False, axes="x")
    th_y, _ = job(seed=32, n=30, z=False, axes="y")
    # put the axis that stands still at 0, so that x + y and x - y are x or -y exactly
    assert (th_x[:, trapq.AXES_R_Y] == 0).all() and (th_y[:, trapq.AXES_R_X] == 0).all()
    th_x[:, trapq.START_Y] = 0.0
    th_y[:, trapq.START_X] = 0.0
    step = 0.0125
    x = st.StepperModel(st.CARTESIAN_X, step)
    y = st.StepperModel(st.CARTESIAN_Y, step)
    a = st.StepperModel(st.COREXY_A, step)
    b = st.StepperModel(st.COREXY_B, step)
    # Moving X alone, both motors turn with X; moving Y alone, A follows Y and B opposes it.
    for segs, axis, b_sign in ((th_x, x, 1), (th_y, y, -1)):
        _, ref_steps = run(segs, axis)
        _, a_steps = run(segs, a)
        _, b_steps = run(segs, b)
        assert len(a_steps.times) == len(b_steps.times) == len(ref_steps.times) > 1000
        np.testing.assert_array_equal(a_steps.dirs, ref_steps.dirs)
        np.testing.assert_array_equal(b_steps.dirs, b_sign * ref_steps.dirs)
        np.testing.assert_allclose(a_steps.times, ref_steps.times, rtol=0, atol=1e-12)
        np.testing.assert_allclose(b_steps.times, ref_steps.times, rtol=0, atol=1e-12)
    # In general the motors end on the rounding of x + y and x - y.
    th, _ = job(seed=33, n=30)
    end = trapq.position_at(th, 1e9)
    assert run(th, a)[1].position == ref.commanded(end[0] + end[1], step)
    assert run(th, b)[1].position == ref.commanded(end[0] - end[1], step)


# --------------------------------------------------------------------------- hand-made cases

def _row(t, move_t, v, half_accel, x, rx=1.0, ry=0.0, rz=0.0, y=0.0, z=0.0):
    return [t, move_t, v, half_accel, x, y, z, rx, ry, rz]


def test_constant_acceleration_from_rest():
    # d = 50 t^2: the k-th step is where 50 t^2 = (k + 1/2) * 0.01
    segs = np.array([_row(2.0, 0.2, 0.0, 50.0, 0.0)])
    got = st.generate_steps(segs, st.StepperModel(st.CARTESIAN_X, 0.01), -1.0, 10.0, 0)
    k = np.arange(200)
    np.testing.assert_allclose(got.times, 2.0 + np.sqrt((k + 0.5) * 0.01 / 50.0),
                               rtol=0, atol=1e-14)
    assert (got.dirs == 1).all() and got.position == 200


def test_reversal_inside_a_segment():
    # d = 10 t - 50 t^2 rises to 0.5 at t = 0.1 and falls back to 0 at t = 0.2.
    segs = np.array([_row(0.0, 0.2, 10.0, -50.0, 0.0)])
    got = st.generate_steps(segs, st.StepperModel(st.CARTESIAN_X, 0.01), 0.0, 1.0, 0)
    assert got.dirs.tolist() == [1] * 50 + [-1] * 50
    assert got.position == 0
    up = (np.arange(50) + 0.5) * 0.01
    t_up = (10.0 - np.sqrt(100.0 - 200.0 * up)) / 100.0
    t_down = (10.0 + np.sqrt(100.0 - 200.0 * up[::-1])) / 100.0
    np.testing.assert_allclose(got.times, np.concatenate([t_up, t_down]), rtol=0, atol=1e-12)


def test_gaps_zero_length_and_zero_speed_rows():
    segs = np.array([
        _row(0.0, 0.1, 1.0, 0.0, 0.0),          # 0 -> 0.1 at 1 mm/s
        _row(0.1, 0.0, 5.0, 0.0, 0.1),          # zero length
        _row(0.1, 0.3, 0.0, 0.0, 0.1),          # standing still
        _row(0.5, 0.1, 1.0, 0.0, 0.1),          # after a gap: 0.1 -> 0.2
        _row(0.6, 0.1, 1.0, 0.0, 0.2, rx=0.0),  # moving, but not on this axis
    ])
    got = st.generate_steps(segs, st.StepperModel(st.CARTESIAN_X, 0.01), -math.inf, math.inf, 0)
    assert got.position == 20
    assert (got.dirs == 1).all()
    first, second = got.times[:10], got.times[10:]
    np.testing.assert_allclose(first, (np.arange(10) + 0.5) * 0.01, atol=1e-14)
    np.testing.assert_allclose(second, 0.5 + (np.arange(10) + 0.5) * 0.01, atol=1e-14)


def test_steps_before_the_range_are_not_repeated():
    segs = np.array([_row(0.0, 1.0, 1.0, 0.0, 0.0)])
    m = st.StepperModel(st.CARTESIAN_X, 0.1)
    a = st.generate_steps(segs, m, 0.0, 0.45, 0)
    b = st.generate_steps(segs, m, 0.45, 0.45, a.position)
    c = st.generate_steps(segs, m, 0.45, 2.0, a.position)
    assert len(a.times) == 4 and len(b.times) == 0 and len(c.times) == 6
    assert c.position == 10


def test_pressure_advance_in_steady_cruise_leads_by_k_times_velocity():
    # Long constant-rate extrusion: far from its ends, the smoothed advanced position is
    # exactly e(t) + K * e'(t).
    k, rate = 0.08, 2.0
    segs = np.array([_row(0.0, 5.0, 40.0, 0.0, 0.0, rx=rate / 40.0, ry=1.0)])
    model = st.StepperModel(st.EXTRUDER, 0.01, pressure_advance=k, smooth_time=0.04)
    for t in (1.0, 2.5, 4.0):
        assert st.stepper_position(segs, model, t) == pytest.approx(rate * t + k * rate, abs=1e-12)
    # Rows that may not advance (retracts, Z moves) get none.
    no_pa = segs.copy()
    no_pa[0, trapq.AXES_R_Y] = 0.0
    assert st.stepper_position(no_pa, model, 2.5) == pytest.approx(rate * 2.5, abs=1e-12)
    # The advance is pushed in ahead of the move and taken back at its end: net zero.
    _, got = run(segs, model)
    assert got.position == 1000
    assert got.times[0] < 0.0 and got.dirs[-1] == -1
    path = np.cumsum(got.dirs.astype(np.int64))
    assert 1000 + 0.5 * k * rate / 0.01 <= path.max() <= 1000 + k * rate / 0.01


def test_zero_pressure_advance_is_the_plain_position():
    _, ex = job(seed=41, n=30)
    plain = st.StepperModel(st.EXTRUDER, 0.0105)
    zero_pa = st.StepperModel(st.EXTRUDER, 0.0105, pressure_advance=0.0, smooth_time=0.04)
    a, b = run(ex, plain)[1], run(ex, zero_pa)[1]
    np.testing.assert_array_equal(a.times, b.times)
    np.testing.assert_array_equal(a.dirs, b.dirs)


def test_shaping_keeps_the_net_motion_and_smooths_it():
    th, _ = job(seed=43, n=30)
    plain = run(th, st.StepperModel(st.CARTESIAN_X, 0.0125))[1]
    shaped = run(th, st.StepperModel(st.CARTESIAN_X, 0.0125, MZV))[1]
    assert plain.position == shaped.position
    # shaped steps start earlier (the first pulse leads) and end later
    assert shaped.times[0] < plain.times[0] and shaped.times[-1] > plain.times[-1]


def test_big_output_grows_the_buffer():
    segs = np.array([_row(0.0, 10.0, 300.0, 0.0, 0.0)])
    got = st.generate_steps(segs, st.StepperModel(st.CARTESIAN_X, 0.0125), 0.0, 20.0, 0)
    assert len(got.times) == got.position == 240000


@pytest.mark.parametrize("capacity", [0, 1, 1000, 240000, 500000])
def test_capacity_is_only_a_size_hint(capacity):
    """Too small or too large, the first buffer's size never changes the steps."""
    segs = np.array([_row(0.0, 10.0, 300.0, 0.0, 0.0)])
    model = st.StepperModel(st.CARTESIAN_X, 0.0125)
    want = st.generate_steps(segs, model, 0.0, 20.0, 0)
    got = st.generate_steps(segs, model, 0.0, 20.0, 0, capacity)
    assert np.array_equal(got.times.view(np.int64), want.times.view(np.int64))
    assert np.array_equal(got.dirs, want.dirs) and got.position == want.position
    with pytest.raises(ValueError):
        st.generate_steps(segs, model, 0.0, 20.0, 0, -1)


# --------------------------------------------------------------------------- API

def test_model_validation():
    with pytest.raises(ValueError):
        st.StepperModel(99, 0.01)
    with pytest.raises(ValueError):
        st.StepperModel(st.CARTESIAN_X, 0.0)
    with pytest.raises(ValueError):
        st.StepperModel(st.EXTRUDER, 0.01, shaper_x=MZV)
    with pytest.raises(ValueError):
        st.StepperModel(st.EXTRUDER, 0.01, pressure_advance=0.05, smooth_time=0.0)
    with pytest.raises(ValueError):
        st.StepperModel(st.CARTESIAN_X, 0.01, pressure_advance=0.05, smooth_time=0.04)
    with pytest.raises(ValueError):
        st.StepperModel(st.CARTESIAN_X, 0.01, shaper_x=(np.ones(2), np.zeros(3)))
    segs = np.array([_row(0.0, 1.0, 1.0, 0.0, 0.0)])
    with pytest.raises(ValueError):
        st.generate_steps(segs, st.StepperModel(st.CARTESIAN_X, 0.1), math.nan, 1.0, 0)
    with pytest.raises(ValueError):
        st.commanded_position(segs[:0], st.StepperModel(st.CARTESIAN_X, 0.1), 0.0)
    empty = st.generate_steps(segs[:0], st.StepperModel(st.CARTESIAN_X, 0.1), 0.0, 1.0, 7)
    assert len(empty.times) == 0 and empty.position == 7


def test_margins():
    assert st.StepperModel(st.CARTESIAN_X, 0.01).margins() == (0.0, 0.0)
    amps, times = MZV
    assert st.StepperModel(st.COREXY_A, 0.01, MZV, ZV).margins() == (
        max(times.max(), ZV[1].max()), -min(times.min(), ZV[1].min()))
    assert st.StepperModel(st.EXTRUDER, 0.01, pressure_advance=0.1,
                           smooth_time=0.04).margins() == (0.02, 0.02)


def test_models_from_settings():
    s = with_overrides(Settings(), input_shaper={"shaper_freq_x": 40.0, "shaper_type_x": "zv"},
                       extruder={"pressure_advance": 0.05})
    models = st.models_from_settings(s)
    assert models["x"].kind == st.CARTESIAN_X and models["y"].kind == st.CARTESIAN_Y
    assert models["x"].step_dist == s.steppers.x.step_distance_mm
    assert len(models["x"].coefs) == 2 and len(models["y"].coefs) == 1
    assert models["extruder"].half_smooth_time == pytest.approx(0.02)
    corexy = with_overrides(s, printer={"kinematics": "corexy"})
    models = st.models_from_settings(corexy)
    assert (models["x"].kind, models["y"].kind) == (st.COREXY_A, st.COREXY_B)
    assert len(models["x"].coefs) == 3 and models["z"].kind == st.CARTESIAN_Z
    assert InputShaperSettings().shaper_freq_x == 0.0


def test_configure_cache(tmp_path):
    from printhost.control.kernels import configure_cache

    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = (
        "import sys\n"
        "from printhost.control.kernels import configure_cache\n"
        "assert configure_cache(sys.argv[1]) is True\n"
        "from printhost.control.kernels import stepcompress\n"
        "print(stepcompress.compress_kernel._cache.cache_path)\n")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "nc")], env=env,
                         cwd=root, capture_output=True, text=True, check=True).stdout
    assert out.strip().startswith(str(tmp_path / "nc"))
    # An operator's NUMBA_CACHE_DIR wins.
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "mine")
    script = ("import os, sys\n"
              "from printhost.control.kernels import configure_cache\n"
              "assert configure_cache(sys.argv[1]) is False\n"
              "print(os.environ['NUMBA_CACHE_DIR'])\n")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "nc")], env=env,
                         cwd=root, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(tmp_path / "mine")
    # Too late once the kernels are defined (this process imported them above).
    if not os.environ.get("NUMBA_CACHE_DIR"):
        with pytest.raises(RuntimeError):
            configure_cache(tmp_path / "late")
