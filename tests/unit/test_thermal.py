"""The simulated heated body must heat, cool and lag like a real printer's."""

from __future__ import annotations

import dataclasses
import math

import pytest

from printhost.config import SimulationSettings, ThermalBodySettings
from printhost.sim.thermal import ThermalModel

AMBIENT_C = 22.0


def hotend() -> ThermalBodySettings:
    return SimulationSettings().hotend


def bed() -> ThermalBodySettings:
    return SimulationSettings().bed


def reference_step(model_body: ThermalBodySettings, block_c: float, sensor_c: float,
                   seconds: float, duty: float, fan: float = 0.0,
                   dt_s: float = 0.001) -> tuple[float, float]:
    """Classic RK4 on the model's ODEs: an independent check of the closed form."""
    b = model_body
    loss = b.loss_w_k + b.fan_loss_w_k * fan

    def deriv(tb: float, ts: float) -> tuple[float, float]:
        d_block = (b.heater_power_w * duty - loss * (tb - AMBIENT_C)) / b.heat_capacity_j_k
        d_sensor = (tb - ts) / b.sensor_lag_s
        return d_block, d_sensor

    steps = round(seconds / dt_s)
    for _ in range(steps):
        k1 = deriv(block_c, sensor_c)
        k2 = deriv(block_c + k1[0] * dt_s / 2, sensor_c + k1[1] * dt_s / 2)
        k3 = deriv(block_c + k2[0] * dt_s / 2, sensor_c + k2[1] * dt_s / 2)
        k4 = deriv(block_c + k3[0] * dt_s, sensor_c + k3[1] * dt_s)
        block_c += dt_s / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        sensor_c += dt_s / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
    return block_c, sensor_c


def time_to_reach(model: ThermalModel, temp_c: float, duty: float = 1.0,
                  dt_s: float = 0.1, limit_s: float = 1000.0) -> float:
    t = 0.0
    while model.block_c < temp_c:
        model.step(dt_s, duty)
        t += dt_s
        assert t < limit_s, "never reached the temperature"
    return t


def test_starts_at_ambient():
    m = ThermalModel(hotend(), AMBIENT_C)
    assert m.block_c == AMBIENT_C
    assert m.sensor_c == AMBIENT_C


def test_default_hotend_reaches_200c_at_full_power_in_a_realistic_time():
    t = time_to_reach(ThermalModel(hotend(), AMBIENT_C), 200.0)
    assert 40.0 <= t <= 150.0


def test_default_bed_reaches_60c_at_full_power_in_a_realistic_time():
    t = time_to_reach(ThermalModel(bed(), AMBIENT_C), 60.0)
    assert 30.0 <= t <= 300.0


def test_heating_slows_down_as_the_block_gets_hotter():
    m = ThermalModel(hotend(), AMBIENT_C)
    rises = []
    for _ in range(5):
        before = m.block_c
        m.step(20.0, 1.0)
        rises.append(m.block_c - before)
    assert all(a > b for a, b in zip(rises, rises[1:]))


@pytest.mark.parametrize("duty,fan", [(1.0, 0.0), (0.4, 0.0), (0.4, 1.0), (0.0, 0.5)])
def test_steady_state_is_ambient_plus_power_over_loss(duty, fan):
    body = hotend()
    m = ThermalModel(body, AMBIENT_C)
    m.step(20000.0, duty, fan)
    expected = AMBIENT_C + body.heater_power_w * duty / (body.loss_w_k + body.fan_loss_w_k * fan)
    assert m.block_c == pytest.approx(expected, abs=1e-6)
    assert m.sensor_c == pytest.approx(expected, abs=1e-6)
    assert m.steady_state_c(duty, fan) == pytest.approx(expected)


def test_part_fan_lowers_the_temperature():
    with_fan = ThermalModel(hotend(), AMBIENT_C)
    without = ThermalModel(hotend(), AMBIENT_C)
    with_fan.step(300.0, 0.5, fan=1.0)
    without.step(300.0, 0.5, fan=0.0)
    assert with_fan.block_c < without.block_c - 10.0


def test_cools_towards_ambient_exponentially():
    body = hotend()
    m = ThermalModel(body, AMBIENT_C)
    time_to_reach(m, 200.0)
    start_c = m.block_c
    previous = start_c
    for _ in range(30):
        m.step(10.0, 0.0)
        assert AMBIENT_C < m.block_c < previous
        previous = m.block_c
    tau_s = body.heat_capacity_j_k / body.loss_w_k
    expected = AMBIENT_C + (start_c - AMBIENT_C) * math.exp(-300.0 / tau_s)
    assert m.block_c == pytest.approx(expected, abs=1e-9)
    m.step(100000.0, 0.0)
    assert m.block_c == pytest.approx(AMBIENT_C, abs=1e-9)


def test_sensor_lags_the_block_both_ways():
    m = ThermalModel(hotend(), AMBIENT_C)
    m.step(30.0, 1.0)
    assert m.sensor_c < m.block_c - 1.0
    m.step(30.0, 0.0)
    assert m.sensor_c > m.block_c


def test_zero_sensor_lag_reads_the_block():
    m = ThermalModel(dataclasses.replace(hotend(), sensor_lag_s=0.0), AMBIENT_C)
    m.step(30.0, 1.0)
    assert m.sensor_c == m.block_c
    assert m.block_c > 100.0


def test_one_big_step_equals_many_small_ones():
    big = ThermalModel(hotend(), AMBIENT_C)
    small = ThermalModel(hotend(), AMBIENT_C)
    big.step(10.0, 0.7, fan=0.3)
    for _ in range(1000):
        small.step(0.01, 0.7, fan=0.3)
    assert big.block_c == pytest.approx(small.block_c, abs=1e-6)
    assert big.sensor_c == pytest.approx(small.sensor_c, abs=1e-6)
    big.step(10.0, 0.0)
    for _ in range(7):
        small.step(10.0 / 7, 0.0)
    assert big.block_c == pytest.approx(small.block_c, abs=1e-6)
    assert big.sensor_c == pytest.approx(small.sensor_c, abs=1e-6)


@pytest.mark.parametrize("body", [
    hotend(),
    bed(),
    # Sensor time constant equal to the block's: the degenerate case of the formula.
    ThermalBodySettings(heater_power_w=40.0, heat_capacity_j_k=12.0, loss_w_k=0.09,
                        fan_loss_w_k=0.0, sensor_lag_s=12.0 / 0.09),
    # Nearly equal, where a naive quotient loses its precision.
    ThermalBodySettings(heater_power_w=40.0, heat_capacity_j_k=12.0, loss_w_k=0.09,
                        fan_loss_w_k=0.0, sensor_lag_s=12.0 / 0.09 * (1 + 1e-10)),
])
def test_closed_form_matches_numerical_integration(body):
    m = ThermalModel(body, AMBIENT_C)
    m.step(5.0, 1.0)
    block0, sensor0 = m.block_c, m.sensor_c
    m.step(3.0, 0.25)
    ref_block, ref_sensor = reference_step(body, block0, sensor0, 3.0, 0.25)
    assert m.block_c == pytest.approx(ref_block, abs=1e-6)
    assert m.sensor_c == pytest.approx(ref_sensor, abs=1e-6)


def test_sensor_override_replaces_the_reading_only():
    m = ThermalModel(hotend(), AMBIENT_C)
    m.sensor_override_c = -100.0
    m.step(10.0, 1.0)
    assert m.sensor_c == -100.0
    assert m.block_c > AMBIENT_C + 10.0
    m.sensor_override_c = None
    assert AMBIENT_C < m.sensor_c < m.block_c


def test_broken_heater_produces_no_heat():
    m = ThermalModel(hotend(), AMBIENT_C)
    m.heater_broken = True
    m.step(60.0, 1.0)
    assert m.block_c == pytest.approx(AMBIENT_C)
    m.heater_broken = False
    m.step(60.0, 1.0)
    assert m.block_c > AMBIENT_C + 50.0


@pytest.mark.parametrize("dt,duty,fan", [(-1.0, 0.5, 0.0), (math.nan, 0.5, 0.0),
                                         (1.0, 1.5, 0.0), (1.0, -0.1, 0.0),
                                         (1.0, math.nan, 0.0), (1.0, 0.5, 2.0)])
def test_invalid_inputs_are_refused(dt, duty, fan):
    m = ThermalModel(hotend(), AMBIENT_C)
    with pytest.raises(ValueError):
        m.step(dt, duty, fan)
    assert m.block_c == AMBIENT_C
