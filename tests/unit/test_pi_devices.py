"""The Pi's devices as the control process uses them: `PiDevices`, the chamber sensor
poller and heater relay, and their wiring into `Printer`, on the simulated Pi (gpiozero
mock pins, the simulated I2C bus and chamber, in real time)."""

from __future__ import annotations

import math
import time

import pytest

from printhost.config import ConfigError, parse_settings
from printhost.control.clock import ManualClock
from printhost.control.gcode import parse_line
from printhost.control.heaters import HeaterFault
from printhost.control.interpreter import CommandError
from printhost.control.printer import Printer
from printhost.hw.chamber import FAILURE_LIMIT_S
from printhost.hw.devices import DeviceEvent, PiDevices, PrinterView, any_configured
from printhost.ipc.channel import Command, ErrorKind, Request
from printhost.sensors import SensorError
from printhost.sim.pi import SimPi

WAIT_S = 3.0     # upper bound for something that is due; only reached on failure

ALL_DEVICES = {
    "psu": {"pin": "GPIO17"}, "status_led": {"pin": "GPIO27"}, "estop": {"pin": "GPIO22"},
    "runout": {"pin": "GPIO23"}, "hotend_fan": {"pin": "GPIO18"},
    "controller_fan": {"pin": "GPIO13", "idle_timeout_s": 30.0},
}


def _settings(devices=None, chamber=None, time_factor=1.0):
    return parse_settings({"devices": devices or {}, "chamber": chamber or {},
                           "simulation": {"time_factor": time_factor}})


@pytest.fixture
def rig():
    """A simulated Pi and the devices on it; both closed afterwards."""
    made = []

    def make(devices=None, chamber=None, time_factor=1.0):
        settings = _settings(devices, chamber, time_factor)
        sim = SimPi(settings)
        made.append(sim)
        dev = PiDevices(settings, pin_factory=sim.factory, bus=sim.bus)
        made.append(dev)
        return settings, sim, dev

    yield make
    for thing in reversed(made):
        thing.close()


def _until(predicate, what: str, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"{what}: not within {timeout_s} s")


# --------------------------------------------------------------------------- outputs

def test_nothing_configured_means_no_devices():
    assert not any_configured(_settings())
    assert any_configured(_settings(chamber={"sensor": "aht10"}))
    assert any_configured(_settings({"runout": {"pin": "GPIO5"}}))


def test_psu_starts_on_and_an_emergency_cuts_it(rig):
    _, sim, dev = rig(ALL_DEVICES)
    assert sim.outputs()["psu"] == 1.0 and dev.get_status()["psu_on"] is True
    assert dev.power(False) and sim.outputs()["psu"] == 0.0
    assert dev.power(True) and sim.outputs()["psu"] == 1.0
    dev.emergency()
    assert sim.outputs()["psu"] == 0.0


def test_psu_can_stay_off_at_start_and_on_in_an_emergency(rig):
    _, sim, dev = rig({"psu": {"pin": "GPIO17", "on_at_start": False,
                               "off_on_emergency": False, "active_high": False}})
    # Active low: off means the pin is high.
    assert dev.get_status()["psu_on"] is False and sim.outputs()["psu"] == 1.0
    dev.power(True)
    assert sim.outputs()["psu"] == 0.0
    dev.emergency()
    assert dev.get_status()["psu_on"] is True


def test_power_without_a_relay_says_so(rig):
    _, _, dev = rig({"runout": {"pin": "GPIO23"}})
    assert dev.power(True) is False


def test_hotend_fan_follows_the_extruder(rig):
    _, sim, dev = rig(ALL_DEVICES)
    dev.update(PrinterView("idle", math.nan, 0.0, False))
    assert sim.outputs()["hotend_fan"] == 0.0
    dev.update(PrinterView("idle", 30.0, 200.0, True))          # a target: on
    assert sim.outputs()["hotend_fan"] == 1.0
    dev.update(PrinterView("error", 120.0, 0.0, False))         # hot after a fault: on
    assert sim.outputs()["hotend_fan"] == 1.0
    dev.update(PrinterView("error", 49.0, 0.0, False))          # cooled down: off
    assert sim.outputs()["hotend_fan"] == 0.0


def test_controller_fan_runs_while_busy_and_for_the_idle_timeout(rig):
    _, sim, dev = rig(ALL_DEVICES)
    dev.update(PrinterView("idle", 20.0, 0.0, False), now_s=100.0)
    assert sim.outputs()["controller_fan"] == 0.0
    dev.update(PrinterView("printing", 20.0, 0.0, True), now_s=100.0)
    assert sim.outputs()["controller_fan"] == 1.0
    dev.update(PrinterView("idle", 20.0, 0.0, False), now_s=129.9)
    assert sim.outputs()["controller_fan"] == 1.0
    dev.update(PrinterView("idle", 20.0, 0.0, False), now_s=130.1)
    assert sim.outputs()["controller_fan"] == 0.0


def test_status_led_is_steady_when_ready_and_blinks_after_a_fault(rig):
    _, sim, dev = rig(ALL_DEVICES)
    dev.update(PrinterView("idle", 20.0, 0.0, False))
    for _ in range(5):
        assert sim.outputs()["status_led"] == 1.0
        time.sleep(0.03)
    dev.update(PrinterView("error", 20.0, 0.0, False))
    seen: set[float] = set()
    _until(lambda: seen.add(sim.outputs()["status_led"]) or seen == {0.0, 1.0},
           "LED blinking")


def test_close_drives_every_output_off(rig):
    _, sim, dev = rig(ALL_DEVICES, {"sensor": "aht10", "heater_pin": "GPIO5"})
    dev.update(PrinterView("idle", 100.0, 200.0, True))
    dev.chamber_heater.set_duty(1.0)
    assert sim.outputs() == {"psu": 1.0, "status_led": 1.0, "hotend_fan": 1.0,
                             "controller_fan": 1.0, "chamber_heater": 1.0}
    dev.close()
    assert set(sim.outputs().values()) == {0.0}, sim.outputs()


# --------------------------------------------------------------------------- inputs

def test_estop_reports_one_event_per_press_even_when_bouncing(rig):
    _, sim, dev = rig(ALL_DEVICES)
    assert dev.take_events() == [] and dev.get_status()["estop_pressed"] is False
    for _ in range(5):                      # a bouncing contact
        sim.press_estop(True)
        sim.press_estop(False)
    sim.press_estop(True)
    assert dev.take_events() == [DeviceEvent.ESTOP]
    assert dev.take_events() == []
    assert dev.get_status()["estop_pressed"] is True


def test_estop_already_pressed_at_start_is_reported_at_once():
    settings = _settings(ALL_DEVICES)
    sim = SimPi(settings)
    try:
        sim.press_estop(True)
        dev = PiDevices(settings, pin_factory=sim.factory, bus=sim.bus)
        try:
            assert dev.take_events() == [DeviceEvent.ESTOP]
        finally:
            dev.close()
    finally:
        sim.close()


def test_runout_and_insert_are_debounced_events(rig):
    _, sim, dev = rig(ALL_DEVICES)
    assert dev.filament_present is True
    sim.set_filament(False)
    sim.set_filament(True)                  # a 0 ms glitch: nothing
    time.sleep(0.25)
    assert dev.take_events() == [] and dev.filament_present is True
    sim.set_filament(False)
    _until(lambda: dev.filament_present is False, "runout seen")
    assert dev.take_events() == [DeviceEvent.RUNOUT]
    sim.set_filament(True)
    _until(lambda: dev.filament_present is True, "insert seen")
    assert dev.take_events() == [DeviceEvent.INSERT]


# --------------------------------------------------------------------------- chamber

@pytest.mark.parametrize("sensor", ["aht10", "aht20", "ads1115"])
def test_chamber_sensor_reads_the_simulated_chamber(rig, sensor):
    _, sim, dev = rig(chamber={"sensor": sensor, "heater_pin": "GPIO5"}, time_factor=200.0)
    hw = dev.chamber_heater
    _until(lambda: hw.has_reading, "first reading")
    assert hw.read_temp_c() == pytest.approx(22.0, abs=0.2)
    hw.set_duty(1.0)
    assert sim.outputs()["chamber_heater"] == 1.0
    # 200x: the 8000 J/K chamber at 200 W gains several degrees within a few seconds.
    _until(lambda: hw.read_temp_c() > 24.0, "chamber warming", timeout_s=10.0)
    assert hw.read_temp_c() == pytest.approx(sim.chamber_sensor_c(), abs=0.5)
    humidity = dev.get_status()["chamber"]["humidity"]
    assert humidity == (None if sensor == "ads1115" else 40.0)


@pytest.mark.parametrize("kind", ["stuck", "nack", "oserror"])
def test_chamber_heater_hardware_fails_within_the_limit(rig, kind):
    _, sim, dev = rig(chamber={"sensor": "aht10", "heater_pin": "GPIO5"})
    hw = dev.chamber_heater
    _until(lambda: hw.has_reading, "first reading")
    sim.bus.inject_fault(kind)
    start = time.monotonic()

    def failed():
        try:
            hw.read_temp_c()
        except SensorError as exc:
            return exc
        return None
    error = _until(failed, "sensor failure", timeout_s=2.0)
    assert time.monotonic() - start <= FAILURE_LIMIT_S + 0.05
    assert "chamber sensor (AHT10 at 0x38): no reading" in str(error)
    assert dev.get_status()["chamber"]["temperature"] is None
    assert dev.get_status()["chamber"]["sensor_error"]
    sim.bus.clear_faults()
    _until(lambda: failed() is None, "readings back")


def test_a_glitch_the_retries_absorb_is_not_a_failure(rig):
    _, sim, dev = rig(chamber={"sensor": "aht10", "heater_pin": "GPIO5"})
    hw = dev.chamber_heater
    _until(lambda: hw.has_reading, "first reading")
    before = dev.chamber_sensor.failures
    sim.bus.inject_fault("oserror", count=2)
    end = time.monotonic() + 1.2
    while time.monotonic() < end:
        hw.read_temp_c()            # never raises
        time.sleep(0.02)
    assert dev.chamber_sensor.failures == before
    assert any(t.error is not None for t in sim.bus.transfer_log())


def test_a_sensor_that_never_answers_trips_instead_of_waiting():
    settings = _settings(chamber={"sensor": "aht10", "heater_pin": "GPIO5"})
    sim = SimPi(settings)
    sim.bus.inject_fault("nack")
    dev = PiDevices(settings, pin_factory=sim.factory, bus=sim.bus)
    try:
        hw = dev.chamber_heater
        assert not hw.has_reading
        _until(lambda: hw.has_reading, "gave up waiting")
        with pytest.raises(SensorError, match="no acknowledge"):
            hw.read_temp_c()
    finally:
        dev.close()
        sim.close()


def test_chamber_config_is_checked():
    with pytest.raises(ConfigError, match="needs chamber.sensor"):
        _settings(chamber={"heater_pin": "GPIO5"})
    with pytest.raises(ConfigError, match="already used by the I2C bus"):
        _settings({"psu": {"pin": "GPIO3"}}, {"sensor": "aht10"})
    with pytest.raises(ConfigError, match="already used by devices.estop.pin"):
        _settings({"estop": {"pin": "GPIO5"}, "runout": {"pin": "GPIO5"}})
    with pytest.raises(ConfigError, match="not an address of ads1115"):
        _settings(chamber={"sensor": "ads1115", "i2c_address": 0x38})
    with pytest.raises(ConfigError, match="sensor_type"):
        _settings(chamber={"sensor": "ads1115", "sensor_type": "Nope"})


# --------------------------------------------------------------------------- printer

@pytest.fixture
def printer_rig(rig):
    """A simulated printer with every Pi device and a chamber heater attached."""
    settings, sim, dev = rig(ALL_DEVICES, {"sensor": "aht10", "heater_pin": "GPIO5"})
    clock = ManualClock()
    printer = Printer.simulated(settings, clock)
    printer.attach_devices(dev)
    _until(lambda: dev.chamber_heater.has_reading, "first chamber reading")
    return printer, clock, sim, dev


def _tick(printer: Printer, clock: ManualClock, seconds: float, dt: float = 0.05) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        clock.advance(dt)
        printer.tick()
        time.sleep(0.004)


def _gcode(printer: Printer, line: str):
    return printer.interp.execute(parse_line(line, 1))


def test_chamber_heater_is_a_heater_of_the_printer(printer_rig):
    printer, clock, sim, dev = printer_rig
    assert printer.heaters.names() == ["extruder", "heater_bed", "chamber"]
    _gcode(printer, "M141 S40")
    _tick(printer, clock, 0.2)
    assert sim.outputs()["chamber_heater"] == 1.0
    st = printer.get_status()["printer"]
    assert st["target_chamber_temp"] == 40.0 and st["chamber_power"] == 1.0
    assert st["chamber_temp"] == pytest.approx(22.0, abs=0.5) and st["chamber_humidity"] == 40.0
    wait = _gcode(printer, "M191 S40")
    assert wait is not None and not wait()
    with pytest.raises(CommandError, match="above max_temp"):
        _gcode(printer, "M141 S90")
    reply = printer.handle(Request(1, Command.PID_TUNE, {"heater": "chamber", "target": 40}))
    assert not reply.ok and reply.error == ErrorKind.CONFLICT and "watermark" in reply.message
    printer.heaters.all_off()
    assert sim.outputs()["chamber_heater"] == 0.0


def test_i2c_failure_shuts_every_heater_down(printer_rig):
    printer, clock, sim, dev = printer_rig
    _gcode(printer, "M104 S200")
    _gcode(printer, "M141 S45")
    _tick(printer, clock, 0.2)
    assert sim.outputs()["chamber_heater"] == 1.0
    sim.bus.inject_fault("stuck")
    start = time.monotonic()

    def tick_until_error():
        clock.advance(0.01)
        printer.tick()
        return printer.error
    _until(tick_until_error, "shutdown", timeout_s=2.0)
    assert time.monotonic() - start <= 1.0
    assert printer.error.startswith("heater chamber shut down: cannot read the temperature")
    assert sim.outputs()["chamber_heater"] == 0.0
    assert all(h.target_c == 0.0 and h.duty == 0.0 for h in printer.heaters)
    sim.bus.clear_faults()
    _tick(printer, clock, 0.5)
    with pytest.raises(HeaterFault, match="still shut down"):
        printer.heaters["chamber"].set_target(40.0)


def test_estop_shuts_down_and_cuts_the_power(printer_rig):
    printer, clock, sim, dev = printer_rig
    _gcode(printer, "M141 S45")
    _tick(printer, clock, 0.1)
    sim.press_estop(True)
    printer.tick()
    assert printer.error == "emergency stop button pressed"
    assert sim.outputs()["psu"] == 0.0 and sim.outputs()["chamber_heater"] == 0.0
    assert printer.get_status()["state"] == "error"


def test_m80_m81_switch_the_psu_and_m81_turns_heaters_off_first(printer_rig):
    printer, clock, sim, dev = printer_rig
    _gcode(printer, "M104 S200")
    wait = _gcode(printer, "M81")
    assert printer.heaters["extruder"].target_c == 0.0
    assert wait is not None and wait() is True
    assert sim.outputs()["psu"] == 0.0
    assert _gcode(printer, "M80") is None and sim.outputs()["psu"] == 1.0


def test_m141_without_a_chamber_heater_is_an_error():
    printer = Printer.simulated(_settings(), ManualClock())
    with pytest.raises(CommandError, match="no chamber heater"):
        printer.interp.execute(parse_line("M141 S40", 7))
    # Without a relay M81 still turns the heaters off.
    printer.heaters["extruder"].set_target(100.0)
    assert printer.interp.execute(parse_line("M81", 8)) is None
    assert printer.heaters["extruder"].target_c == 0.0


def test_outputs_are_forced_off_from_outside_the_control_process():
    from gpiozero import DigitalOutputDevice
    from gpiozero.pins.mock import MockFactory

    from printhost.hw.devices import force_outputs_off, output_pins_off_levels
    settings = _settings({**ALL_DEVICES, "psu": {"pin": "GPIO17", "active_high": False}},
                         {"sensor": "aht10", "heater_pin": "GPIO5"})
    levels = output_pins_off_levels(settings)
    assert levels == {"GPIO5": False, "GPIO18": False, "GPIO13": False, "GPIO27": False,
                      "GPIO17": True}
    factory = MockFactory()
    # What a dead control process leaves behind: every output on, lines released.
    for pin, off in levels.items():
        DigitalOutputDevice(pin, initial_value=not off, pin_factory=factory).close()
    assert force_outputs_off(settings, pin_factory=factory) == []
    for pin, off in levels.items():
        assert factory.pin(int(pin[4:])).state == off, pin
    # Without off_on_emergency the PSU is left alone.
    keep = _settings({"psu": {"pin": "GPIO17", "off_on_emergency": False}})
    assert output_pins_off_levels(keep) == {}


# --------------------------------------------------------------------------- real printer

def test_simulated_devices_on_a_real_printer_are_announced_in_log_and_status(caplog, tmp_path):
    """A real board (control.backend = "mcu") with devices.backend = "simulated" runs, but
    says so: a warning in the control process's log and `devices.warning` in status."""
    from printhost.control.process import attach_pi_devices
    settings = parse_settings({
        "control": {"backend": "mcu"}, "server": {"state_dir": str(tmp_path)},
        "devices": {"backend": "simulated", "psu": {"pin": "GPIO17"},
                    "estop": {"pin": "GPIO22"}}})
    printer = Printer.simulated(settings, ManualClock())
    with caplog.at_level("WARNING", logger="printhost.control"):
        closers = attach_pi_devices(settings, printer)
    try:
        assert closers, printer.error
        devices = printer.get_status()["printer"]["devices"]
    finally:
        for close in closers:
            close()
    expected = ("SIMULATED Pi devices on a real printer: devices.psu, devices.estop are not "
                "wired to anything")
    assert devices["backend"] == "simulated"
    assert devices["warning"].startswith(expected)
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
            and r.getMessage().startswith(expected)]


def test_no_warning_on_the_simulated_printer_or_with_the_pis_own_pins():
    from printhost.hw.devices import simulated_on_real_printer
    estop = {"estop": {"pin": "GPIO22"}}
    assert simulated_on_real_printer(parse_settings({"devices": estop})) is None
    real = parse_settings({"control": {"backend": "mcu"},
                           "devices": {"backend": "pi", **estop}})
    assert simulated_on_real_printer(real) is None
    assert simulated_on_real_printer(parse_settings({"control": {"backend": "mcu"}})) is None
