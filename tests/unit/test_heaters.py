"""Heater control: PID quality on the simulated printer, target checks and safety trips."""

from __future__ import annotations

import dataclasses
import math

import pytest

from printhost.config import HeaterSettings, Settings
from printhost.control.clock import ManualClock
from printhost.control.heaters import (
    BED_CHECK_GAIN_TIME_S,
    EXTRUDER_CHECK_GAIN_TIME_S,
    Heater,
    HeaterBank,
    HeaterFault,
)
from printhost.sim.heaters import SimulatedHeaterHardware, build_simulated_heaters
from printhost.sim.thermal import ThermalModel

TICK_S = 0.1


class FakeHardware:
    """A thermistor whose reading the test sets directly, and a recorded PWM output."""

    def __init__(self, temp_c: float = 22.0) -> None:
        self.temp_c = temp_c
        self.duties: list[float] = []

    def read_temp_c(self) -> float:
        return self.temp_c

    def set_duty(self, duty: float) -> None:
        assert 0.0 <= duty <= 1.0
        self.duties.append(duty)

    @property
    def duty(self) -> float:
        return self.duties[-1] if self.duties else 0.0


def pid_only(kp: float = 0.0, ki: float = 0.0, kd: float = 0.0, **kw) -> HeaterSettings:
    return HeaterSettings(pid_kp=kp, pid_ki=ki, pid_kd=kd, **kw)


def simulated(name: str = "extruder"):
    clock = ManualClock()
    bank, hardware = build_simulated_heaters(Settings(), clock)
    return clock, bank, bank[name], hardware[name]


def run(clock: ManualClock, bank: HeaterBank, seconds: float) -> list[float]:
    """Update the bank every TICK_S simulated seconds; returns the heater temperatures."""
    temps = []
    for _ in range(round(seconds / TICK_S)):
        clock.advance(TICK_S)
        bank.update(clock.now())
        temps.append(tuple(h.temperature_c for h in bank))
    return temps


# ------------------------------------------------------------------ control quality

@pytest.mark.parametrize("name,target_c,heat_s,hold_s", [
    ("extruder", 210.0, 200.0, 100.0),
    ("extruder", 250.0, 250.0, 100.0),
    ("heater_bed", 60.0, 250.0, 150.0),
    ("heater_bed", 100.0, 400.0, 150.0),
])
def test_default_gains_reach_and_hold_the_target(name, target_c, heat_s, hold_s):
    clock, bank, heater, _ = simulated(name)
    index = bank.names().index(name)
    heater.set_target(target_c)
    temps = [t[index] for t in run(clock, bank, heat_s + hold_s)]
    assert max(temps) - target_c < 10.0, "overshoot"
    settled = temps[round(heat_s / TICK_S):]
    assert all(abs(t - target_c) <= 2.0 for t in settled)
    assert heater.wait_reached(clock.now())
    # The other heater was never asked to heat.
    other = bank[[n for n in bank.names() if n != name][0]]
    assert other.duty == 0.0 and other.target_c == 0.0


def test_extruder_holds_when_the_part_fan_starts():
    clock, bank, heater, hw = simulated("extruder")
    heater.set_target(210.0)
    run(clock, bank, 300.0)
    hw.fan = 1.0
    temps = [t[0] for t in run(clock, bank, 120.0)]
    assert min(temps) > 210.0 - 5.0
    assert abs(temps[-1] - 210.0) <= 1.0
    # Holding against the fan needs more power than the model needs without it.
    assert heater.duty > hw.model.body.loss_w_k * (210.0 - 22.0) / hw.model.body.heater_power_w


def test_lowering_the_target_cools_and_settles_without_fault():
    clock, bank, heater, _ = simulated("extruder")
    heater.set_target(240.0)
    run(clock, bank, 250.0)
    heater.set_target(200.0)
    temps = [t[0] for t in run(clock, bank, 300.0)]
    assert min(temps) > 200.0 - 5.0
    assert abs(temps[-1] - 200.0) <= 1.0


# ------------------------------------------------------------------ PID form and units

def test_gains_are_in_klipper_units():
    hw = FakeHardware(200.0)
    heater = Heater("extruder", pid_only(kp=22.0), hw)
    heater.set_target(205.0)
    heater.update(0.0)
    assert heater.duty == pytest.approx(5.0 * 22.0 / 255.0)
    assert hw.duty == heater.duty


def test_integral_accumulates_error_times_seconds():
    hw = FakeHardware(200.0)
    heater = Heater("extruder", pid_only(ki=2.55), hw)
    heater.set_target(201.0)
    for i in range(11):
        heater.update(i * 1.0)
    # 1 C of error for 10 s at Ki = 2.55/255 per C*s.
    assert heater.duty == pytest.approx(10.0 * 2.55 / 255.0)


def test_derivative_opposes_a_rise():
    hw = FakeHardware(150.0)
    heater = Heater("extruder", pid_only(kp=22.0, kd=110.0), hw)
    heater.set_target(155.0)
    for i in range(40):
        hw.temp_c = 150.0 + 0.5 * i * 0.1      # rising 0.5 C/s
        heater.update(i * 0.1)
    # The slope estimate follows the true 0.5 C/s through a 1 s smoothing filter.
    slope = 0.5 * (1.0 - 0.9 ** 39)
    expected = 22.0 / 255.0 * (155.0 - hw.temp_c) - 110.0 / 255.0 * slope
    assert heater.duty == pytest.approx(expected, rel=1e-9)
    assert heater.duty < 22.0 / 255.0 * (155.0 - hw.temp_c) - 0.2


def test_derivative_smooths_a_one_tick_jump():
    hw = FakeHardware(150.0)
    heater = Heater("extruder", pid_only(kp=22.0, kd=110.0), hw)
    heater.set_target(160.0)
    heater.update(0.0)
    hw.temp_c = 151.0                           # 1 C in one 0.1 s tick: 10 C/s raw
    heater.update(0.1)
    # Smoothed over 1 s the jump counts as 1 C/s, not 10 C/s.
    assert heater.duty == pytest.approx(22.0 / 255.0 * 9.0 - 110.0 / 255.0 * 1.0)


def test_changing_the_target_does_not_kick_the_derivative():
    hw = FakeHardware(100.0)
    heater = Heater("extruder", pid_only(kp=0.0, kd=1000.0), hw)
    heater.set_target(100.0)
    heater.update(0.0)
    heater.set_target(200.0)
    heater.update(0.1)
    assert heater.duty == 0.0


def test_output_is_limited_to_max_power():
    hw = FakeHardware(22.0)
    heater = Heater("extruder", pid_only(kp=100.0, max_power=0.6), hw)
    heater.set_target(250.0)
    heater.update(0.0)
    assert heater.duty == 0.6


def test_integral_does_not_wind_up_during_a_long_heat_up():
    hw = FakeHardware(30.0)
    # A huge check_gain_time keeps the heating check out of this PID-only test.
    heater = Heater("extruder", pid_only(kp=22.0, ki=1.1), hw, check_gain_time_s=1e9)
    heater.set_target(210.0)
    for i in range(3000):           # 300 s flat out, far below target
        heater.update(i * 0.1)
    assert heater.duty == 1.0
    hw.temp_c = 215.0               # now above target: the output must fall at once
    heater.update(300.0)
    assert heater.duty < 0.1


def test_integral_is_capped_so_it_alone_gives_at_most_max_power():
    # A fast final approach: the D term brakes hard, which keeps the output inside
    # 0..1 so the anti-windup rule lets the integral grow. Only the cap stops it
    # from growing past what max_power needs; without the cap the heater would stay
    # flat out for tens of seconds once the temperature stops rising above target.
    hw = FakeHardware(200.0)
    heater = Heater("extruder", pid_only(kp=12.75, ki=12.75, kd=127.5), hw,
                    check_gain_time_s=1e9)
    heater.set_target(210.0)
    t = 0.0
    for _ in range(100):                        # 10 s just below target
        heater.update(t)
        t += 0.1
    while hw.temp_c < 210.5:                    # then 2 C/s up to just above it
        hw.temp_c += 0.2
        heater.update(t)
        t += 0.1
    for _ in range(60):                         # 6 s holding 0.5 C above target
        heater.update(t)
        t += 0.1
    assert heater.duty < 0.9


# ------------------------------------------------------------------ targets

@pytest.mark.parametrize("value,message", [
    (300.0, "target 300.0 C for extruder is above max_temp 280.0 C"),
    (-5.0, "target -5.0 C for extruder is negative"),
    (math.nan, "target nan for extruder is not a finite number"),
    (math.inf, "target inf for extruder is not a finite number"),
    ("hot", "target for extruder must be a number, got 'hot'"),
])
def test_invalid_targets_are_refused_with_a_clear_message(value, message):
    heater = Heater("extruder", HeaterSettings(), FakeHardware())
    heater.set_target(100.0)
    with pytest.raises(ValueError) as err:
        heater.set_target(value)
    assert str(err.value) == message
    assert heater.target_c == 100.0


def test_target_up_to_max_temp_is_accepted_and_zero_means_off():
    hw = FakeHardware(22.0)
    heater = Heater("extruder", HeaterSettings(), hw)
    heater.set_target(280.0)
    heater.update(0.0)
    assert heater.duty == 1.0
    heater.set_target(0)
    heater.update(1.0)
    assert heater.duty == 0.0 and hw.duty == 0.0


def test_turn_off_cuts_the_duty_immediately():
    hw = FakeHardware(22.0)
    heater = Heater("extruder", HeaterSettings(), hw)
    heater.set_target(200.0)
    heater.update(0.0)
    assert hw.duty == 1.0
    heater.turn_off()
    assert hw.duty == 0.0
    assert heater.target_c == 0.0
    assert heater.get_status() == {"temperature": 22.0, "target": 0.0, "power": 0.0,
                                   "fault": None, "unavailable": None}


def test_wait_reached():
    hw = FakeHardware(150.0)
    heater = Heater("extruder", HeaterSettings(), hw)
    assert heater.wait_reached(0.0)          # off
    heater.set_target(200.0)
    assert not heater.wait_reached(0.0)      # no reading yet
    heater.update(0.0)
    assert not heater.wait_reached(0.0)
    hw.temp_c = 198.9
    heater.update(1.0)
    assert not heater.wait_reached(1.0)
    hw.temp_c = 199.0
    heater.update(2.0)
    assert heater.wait_reached(2.0)
    assert not heater.wait_reached(2.0 + 6.0)  # the control loop stalled
    hw.temp_c = 230.0                          # above target counts as reached
    heater.update(3.0)
    assert heater.wait_reached(3.0)


# ------------------------------------------------------------------ safety

@pytest.mark.parametrize("reading,words", [(500.0, "above max_temp"),
                                           (-100.0, "below min_temp"),
                                           (math.nan, "returned nan")])
def test_bad_readings_fault_and_force_duty_zero(reading, words):
    clock, bank, heater, hw = simulated("extruder")
    heater.set_target(210.0)
    run(clock, bank, 5.0)
    assert hw.duty > 0.0
    hw.model.sensor_override_c = reading
    clock.advance(TICK_S)
    with pytest.raises(HeaterFault) as err:
        heater.update(clock.now())
    assert words in str(err.value)
    assert "extruder" in str(err.value)
    assert hw.duty == 0.0 and heater.duty == 0.0 and heater.target_c == 0.0


def test_a_sensor_that_cannot_be_read_faults():
    class DeadSensor(FakeHardware):
        def read_temp_c(self) -> float:
            raise OSError("ADC timeout")

    hw = DeadSensor()
    heater = Heater("heater_bed", HeaterSettings(), hw)
    heater.set_target(60.0)
    with pytest.raises(HeaterFault, match="cannot read the temperature sensor .ADC timeout"):
        heater.update(0.0)
    assert hw.duty == 0.0 and heater.fault is not None


def test_reading_above_max_temp_faults_even_when_heater_is_off():
    hw = FakeHardware(300.0)
    heater = Heater("extruder", HeaterSettings(), hw)
    with pytest.raises(HeaterFault, match="above max_temp 280.0 C"):
        heater.update(0.0)


def test_a_fault_latches_until_cleared():
    hw = FakeHardware(-50.0)
    heater = Heater("extruder", HeaterSettings(), hw)
    heater.set_target(200.0)
    with pytest.raises(HeaterFault):
        heater.update(0.0)
    hw.temp_c = 22.0
    heater.update(1.0)              # the reading is fine again, but the heater stays off
    assert heater.duty == 0.0
    with pytest.raises(HeaterFault, match="still shut down"):
        heater.set_target(200.0)
    heater.set_target(0.0)          # turning off is always allowed
    heater.clear_fault()
    heater.set_target(200.0)
    heater.update(2.0)
    assert heater.duty > 0.0


@pytest.mark.parametrize("name,target_c,gain_time_s", [
    ("extruder", 210.0, EXTRUDER_CHECK_GAIN_TIME_S),
    ("heater_bed", 60.0, BED_CHECK_GAIN_TIME_S),
])
def test_broken_heater_trips_the_heating_check(name, target_c, gain_time_s):
    clock, bank, heater, hw = simulated(name)
    assert heater.check_gain_time_s == gain_time_s
    hw.model.heater_broken = True
    heater.set_target(target_c)
    with pytest.raises(HeaterFault, match="not heating at expected rate") as err:
        run(clock, bank, gain_time_s + 5.0)
    assert err.value.heater == name
    assert clock.now() >= gain_time_s - 1.0
    assert all(h.duty == 0.0 and h.target_c == 0.0 for h in bank)


def test_changing_targets_do_not_hide_a_broken_heater():
    """A job that raises the target every few seconds must not restart the heating
    window each time: only a real gain does, so a dead heater is still found in time."""
    clock, bank, heater, hw = simulated("extruder")
    hw.model.heater_broken = True
    targets = iter([150.0, 170.0, 190.0, 200.0, 210.0, 220.0, 230.0, 240.0])
    heater.set_target(next(targets))
    with pytest.raises(HeaterFault, match="not heating at expected rate"):
        for _ in range(8):
            run(clock, bank, 4.0)
            heater.set_target(next(targets, 240.0))
        run(clock, bank, EXTRUDER_CHECK_GAIN_TIME_S)
    assert clock.now() <= EXTRUDER_CHECK_GAIN_TIME_S + 1.0


def test_heater_failing_while_holding_trips_the_heating_check():
    clock, bank, heater, hw = simulated("extruder")
    heater.set_target(210.0)
    run(clock, bank, 200.0)
    hw.model.heater_broken = True
    start_s = clock.now()
    with pytest.raises(HeaterFault, match="not heating"):
        run(clock, bank, 60.0)
    assert clock.now() - start_s < 40.0


def test_slow_but_steady_heating_does_not_trip():
    # 0.15 C/s is slow, but 2 C every 20 s is all the check asks for.
    hw = FakeHardware(22.0)
    heater = Heater("extruder", HeaterSettings(), hw)
    heater.set_target(100.0)
    for i in range(int(530 / 0.5)):
        hw.temp_c = min(100.0, 22.0 + 0.15 * i * 0.5)
        heater.update(i * 0.5)
    assert hw.temp_c == 100.0


def test_bank_turns_every_heater_off_on_any_fault():
    clock, bank, extruder, hw = simulated("extruder")
    bed = bank["heater_bed"]
    extruder.set_target(200.0)
    bed.set_target(60.0)
    run(clock, bank, 10.0)
    assert extruder.duty > 0.0 and bed.duty > 0.0
    hw.model.sensor_override_c = 400.0
    with pytest.raises(HeaterFault):
        run(clock, bank, 1.0)
    for heater in bank:
        assert heater.duty == 0.0 and heater.target_c == 0.0
    assert bank.get_status()["heater_bed"]["power"] == 0.0


def test_bank_all_off():
    clock, bank, extruder, _ = simulated("extruder")
    extruder.set_target(200.0)
    bank["heater_bed"].set_target(60.0)
    run(clock, bank, 1.0)
    bank.all_off()
    assert all(h.duty == 0.0 and h.target_c == 0.0 for h in bank)


def test_bank_refuses_duplicate_names():
    bank = HeaterBank([Heater("extruder", HeaterSettings(), FakeHardware())])
    with pytest.raises(ValueError, match="duplicate"):
        bank.add(Heater("extruder", HeaterSettings(), FakeHardware()))


# ------------------------------------------------------------------ simulated hardware

def test_simulated_hardware_integrates_the_last_duty_over_elapsed_time():
    settings = Settings()
    clock = ManualClock(100.0)
    hw = SimulatedHeaterHardware(ThermalModel(settings.simulation.hotend, 22.0), clock)
    reference = ThermalModel(settings.simulation.hotend, 22.0)
    hw.set_duty(1.0)
    clock.advance(7.0)
    hw.set_duty(0.25)                # the first 7 s ran at full power
    clock.advance(3.0)
    hw.fan = 1.0                     # the fan counts only from the moment it is set
    first = hw.read_temp_c()
    reference.step(7.0, 1.0)
    reference.step(3.0, 0.25)
    assert first == pytest.approx(reference.sensor_c, abs=1e-12)
    assert hw.read_temp_c() == first     # no time passed, nothing changes
    clock.advance(5.0)
    reference.step(5.0, 0.25, fan=1.0)
    assert hw.read_temp_c() == pytest.approx(reference.sensor_c, abs=1e-12)


def test_simulated_hardware_refuses_bad_duty():
    hw = SimulatedHeaterHardware(ThermalModel(Settings().simulation.hotend, 22.0),
                                 ManualClock())
    for bad in (-0.1, 1.1, math.nan):
        with pytest.raises(ValueError):
            hw.set_duty(bad)


def test_build_simulated_heaters_uses_the_configured_bodies_and_limits():
    settings = Settings()
    bank, hardware = build_simulated_heaters(settings, ManualClock())
    assert bank.names() == ["extruder", "heater_bed"]
    assert hardware["extruder"].model.body == settings.simulation.hotend
    assert hardware["heater_bed"].model.body == settings.simulation.bed
    assert bank["heater_bed"].check_gain_time_s == BED_CHECK_GAIN_TIME_S
    assert bank["extruder"].check_gain_time_s == EXTRUDER_CHECK_GAIN_TIME_S
    with pytest.raises(ValueError, match="above max_temp 130.0 C"):
        bank["heater_bed"].set_target(140.0)
    custom = dataclasses.replace(settings, simulation=dataclasses.replace(
        settings.simulation, ambient_c=30.0))
    _, hw = build_simulated_heaters(custom, ManualClock())
    assert hw["extruder"].read_temp_c() == 30.0


# ------------------------------------------------------------------ settling (issue 5)

def test_hotend_settles_from_25_to_210_within_2_c_overshoot_and_holds_half_a_degree():
    """The acceptance test of the calibrated model with the default gains: from a
    25 C room, overshoot at most 2 C, then within +-0.5 C for five minutes."""
    settings = Settings()
    settings = dataclasses.replace(settings, simulation=dataclasses.replace(
        settings.simulation, ambient_c=25.0))
    clock = ManualClock()
    bank, _ = build_simulated_heaters(settings, clock)
    heater = bank["extruder"]
    heater.set_target(210.0)
    temps = [t[0] for t in run(clock, bank, 500.0)]
    assert temps[0] == pytest.approx(25.0, abs=0.5)
    assert max(temps) - 210.0 <= 2.0
    settle_s = TICK_S * (1 + max(i for i, t in enumerate(temps) if abs(t - 210.0) > 0.5))
    assert settle_s <= 180.0
    held = temps[round(200.0 / TICK_S):]
    assert max(abs(t - 210.0) for t in held) <= 0.5


# ------------------------------------------------------------------ watermark control

def test_watermark_heater_holds_within_its_band_plus_the_sensor_lag():
    settings = Settings()
    bed = dataclasses.replace(settings.heaters.heater_bed, control="watermark", max_delta=1.0)
    settings = dataclasses.replace(settings, heaters=dataclasses.replace(
        settings.heaters, heater_bed=bed))
    clock = ManualClock()
    bank, _ = build_simulated_heaters(settings, clock)
    heater = bank["heater_bed"]
    heater.set_target(60.0)
    temps = [t[1] for t in run(clock, bank, 900.0)]
    late = temps[round(500.0 / TICK_S):]
    assert 58.0 < min(late) and max(late) < 62.0
    assert max(late) > 60.5 and min(late) < 59.5     # it really switches
    assert heater.duty in (0.0, 1.0)


def test_watermark_output_is_max_power_or_nothing():
    hw = FakeHardware(100.0)
    heater = Heater("extruder", HeaterSettings(control="watermark", max_power=0.7), hw)
    heater.set_target(200.0)
    heater.update(0.0)
    assert hw.duty == 0.7
    hw.temp_c = 202.0
    heater.update(1.0)
    assert hw.duty == 0.0


# ------------------------------------------------------------------ override

def test_override_replaces_the_control_output_clamped_to_max_power():
    hw = FakeHardware(100.0)
    heater = Heater("extruder", HeaterSettings(max_power=0.8), hw)
    heater.set_target(200.0)
    heater.set_override(0.3)
    heater.update(0.0)
    assert hw.duty == 0.3 and heater.override == 0.3
    heater.set_override(5.0)
    heater.update(0.1)
    assert hw.duty == 0.8
    heater.set_override(-1.0)
    heater.update(0.2)
    assert hw.duty == 0.0
    heater.set_override(None)
    heater.update(0.3)
    assert hw.duty == 0.8 and heater.override is None       # the PID again, far below target


@pytest.mark.parametrize("bad", [math.nan, math.inf, "1", True])
def test_override_refuses_non_numbers(bad):
    heater = Heater("extruder", HeaterSettings(), FakeHardware())
    with pytest.raises(ValueError):
        heater.set_override(bad)
    assert heater.override is None


def test_override_acts_only_while_a_target_is_set_and_ends_on_turn_off():
    hw = FakeHardware(100.0)
    heater = Heater("extruder", HeaterSettings(), hw)
    heater.set_override(1.0)
    heater.update(0.0)
    assert hw.duty == 0.0                                     # no target: off
    heater.set_target(150.0)
    heater.update(0.1)
    assert hw.duty == 1.0
    heater.turn_off()
    assert hw.duty == 0.0 and heater.override is None
    heater.set_target(150.0)
    heater.set_override(1.0)
    heater.set_target(0.0)
    assert heater.override is None


@pytest.mark.parametrize("reading,words", [(500.0, "above max_temp"),
                                           (-100.0, "below min_temp"),
                                           (math.nan, "returned nan")])
def test_override_keeps_every_range_check(reading, words):
    hw = FakeHardware(100.0)
    heater = Heater("extruder", HeaterSettings(), hw)
    heater.set_target(200.0)
    heater.set_override(1.0)
    heater.update(0.0)
    hw.temp_c = reading
    with pytest.raises(HeaterFault, match=words):
        heater.update(0.1)
    assert hw.duty == 0.0 and heater.override is None
    with pytest.raises(HeaterFault, match="still shut down"):
        heater.set_override(0.5)


def test_override_keeps_the_heating_check():
    clock, bank, heater, hw = simulated("extruder")
    hw.model.heater_broken = True
    heater.set_target(210.0)
    heater.set_override(1.0)
    with pytest.raises(HeaterFault, match="not heating at expected rate"):
        run(clock, bank, EXTRUDER_CHECK_GAIN_TIME_S + 5.0)
    assert hw.duty == 0.0 and heater.override is None


def test_a_broken_clock_trips_the_heater_before_any_kernel_runs():
    hw = FakeHardware(100.0)
    heater = Heater("extruder", HeaterSettings(), hw)
    heater.set_target(200.0)
    heater.update(0.0)
    with pytest.raises(HeaterFault, match="control clock returned nan"):
        heater.update(math.nan)
    assert hw.duty == 0.0


class NumberedReadings(FakeHardware):
    """Hardware that numbers its readings, as an MCU's ADC reports do."""

    def __init__(self, temp_c: float = 22.0) -> None:
        super().__init__(temp_c)
        self.reading_seq = 0
        self.reads = 0

    def read_temp_c(self) -> float:
        self.reads += 1
        return self.temp_c

    def report(self, temp_c: float) -> None:
        self.temp_c = temp_c
        self.reading_seq += 1


def test_numbered_readings_are_controlled_once_each_and_a_new_target_at_once():
    """An MCU reports every 0.3 s while the loop runs every 20 ms: the control law and the
    checks run once per reading (as Klipper's do), and a target or override change is
    acted on at the next pass, without waiting for a reading."""
    hw = NumberedReadings()
    heater = Heater("extruder", pid_only(kp=20.0, ki=1.0, kd=10.0), hw)
    hw.report(22.0)
    t = 0.0
    for _ in range(10):                      # one reading, ten passes
        t += 0.02
        heater.update(t)
    assert hw.reads == 1 and hw.duties == [0.0]
    heater.set_target(200.0)
    heater.update(t + 0.02)                  # the new target acts now
    assert hw.reads == 2 and hw.duties[-1] > 0.0
    for _ in range(5):
        t += 0.02
        heater.update(t)
    assert hw.reads == 2
    hw.report(30.0)
    heater.update(t + 0.3)
    assert hw.reads == 3
    heater.set_override(0.25)
    heater.update(t + 0.32)
    assert hw.reads == 4 and hw.duties[-1] == 0.25
    # A reading out of range still trips on the reading that shows it, and a faulted
    # heater keeps writing 0 on every pass.
    hw.report(heater.settings.max_temp + 5.0)
    with pytest.raises(HeaterFault):
        heater.update(t + 0.6)
    writes = len(hw.duties)
    heater.update(t + 0.62)
    heater.update(t + 0.64)
    assert hw.duties[writes:] == [0.0, 0.0]


def test_a_reading_just_past_a_limit_is_written_so_that_it_is():
    from printhost.control.heaters import _past
    # "26.0 C is above max_temp 26.0 C" would say nothing: enough decimals to differ.
    assert _past(26.04, 26.0) == "26.04"
    assert _past(26.0004, 26.0) == "26.0004"
    assert _past(251.3, 250.0) == "251.3"
    assert _past(-14.96, -15.0) == "-14.96"
