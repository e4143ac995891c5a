"""Pi-local GPIO devices on gpiozero's mock pins."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from printhost.hw.gpio import (
    EStopButton,
    EStopSettings,
    Fan,
    FanSettings,
    LedSettings,
    PsuRelay,
    RelaySettings,
    RunoutSettings,
    RunoutSwitch,
    StatusLed,
)

WAIT_S = 2.0      # upper bound for a callback that is due; only reached on failure


@pytest.fixture
def factory():
    f = MockFactory()
    yield f
    f.reset()


@pytest.fixture
def pwm_factory():
    f = MockFactory(pin_class=MockPWMPin)
    yield f
    f.reset()


class Calls:
    """A callback that counts calls and lets a test wait for the n-th."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._cond = threading.Condition()

    def __call__(self) -> None:
        with self._cond:
            self.times.append(time.monotonic())
            self._cond.notify_all()

    @property
    def count(self) -> int:
        return len(self.times)

    def wait_for(self, n: int, timeout: float = WAIT_S) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.times) >= n, timeout)


# --------------------------------------------------------------------------- fan


def test_fan_duty_frequency_and_scaling(pwm_factory):
    fan = Fan(FanSettings(pin="GPIO18", pwm_frequency_hz=250.0, max_power=0.8, off_below=0.2),
              pin_factory=pwm_factory)
    pin = pwm_factory.pin("GPIO18")
    assert pin.function == "output" and pin.frequency == 250.0 and pin.state == 0.0
    fan.set_speed(0.5)
    assert pin.state == pytest.approx(0.4) and fan.duty == pytest.approx(0.4) and fan.speed == 0.5
    fan.set_speed(0.1)                              # below off_below: off, not 8 %
    assert pin.state == 0.0 and fan.speed == 0.0
    fan.set_speed(3.0)                              # clamped like M106 S300
    assert pin.state == pytest.approx(0.8)
    fan.set_speed(-1.0)
    assert pin.state == 0.0
    with pytest.raises(ValueError):
        fan.set_speed(float("nan"))
    fan.set_speed(1.0)
    fan.close()
    assert pin.state == 0.0 and pin.function == "input"
    fan.close()                                     # idempotent


def test_inverted_fan_and_its_close(pwm_factory):
    fan = Fan(FanSettings(pin="GPIO13", active_high=False), pin_factory=pwm_factory)
    pin = pwm_factory.pin("GPIO13")
    assert pin.state == 1.0                         # off from the start
    fan.set_speed(0.3)
    assert pin.state == pytest.approx(0.7)
    fan.close()
    # driven back to its off level before gpiozero released the pin
    assert [s.state for s in pin.states][-2] == 1.0
    assert pin.function == "input"


# --------------------------------------------------------------------------- relay, LED


@pytest.mark.parametrize("active_high", [True, False])
def test_psu_relay_levels_and_close(factory, active_high):
    relay = PsuRelay(RelaySettings(pin="GPIO17", active_high=active_high), pin_factory=factory)
    pin = factory.pin("GPIO17")
    off_level, on_level = (False, True) if active_high else (True, False)
    assert pin.state == off_level and not relay.is_on
    relay.on()
    assert pin.state == on_level and relay.is_on
    relay.close()
    assert pin.state == off_level and pin.function == "input"


@pytest.mark.parametrize("active_high", [True, False])
def test_status_led_blinks_and_close_leaves_it_off(factory, active_high):
    led = StatusLed(LedSettings(pin="GPIO27", active_high=active_high), pin_factory=factory)
    pin = factory.pin("GPIO27")
    off_level = not active_high
    assert pin.state == off_level
    led.on()
    assert pin.state != off_level and led.is_lit
    led.off()
    pin.clear_states()
    led.blink(on_s=0.01, off_s=0.01)
    deadline = time.monotonic() + WAIT_S
    while len(pin.states) < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(pin.states) >= 4                     # it toggles on its own
    led.close()
    assert pin.state == off_level and pin.function == "input"
    settled = len(pin.states)
    time.sleep(0.05)
    assert len(pin.states) == settled               # the blink thread is gone
    with pytest.raises(ValueError):
        StatusLed(LedSettings(pin="GPIO5"), pin_factory=factory).blink(on_s=0.0)


# --------------------------------------------------------------------------- e-stop


def test_normally_open_estop_calls_on_the_press_edge(factory):
    calls = Calls()
    button = EStopButton(EStopSettings(pin="GPIO22", normally_closed=False), calls,
                         pin_factory=factory)
    pin = factory.pin("GPIO22")
    assert pin.pull == "up" and calls.count == 0 and not button.is_pressed
    pin.drive_low()                                 # contact closes to GND
    assert calls.count == 1 and button.is_pressed   # before drive_low returned
    pin.drive_high()
    assert calls.count == 1 and not button.is_pressed
    pin.drive_low()
    assert calls.count == 2
    button.close()
    pin.drive_high()
    pin.drive_low()
    assert calls.count == 2


def test_normally_closed_estop_and_a_cut_wire(factory):
    calls = Calls()
    pin = factory.pin("GPIO22")
    # Pull-up and nothing holding the pin low: an open NC circuit, i.e. pressed (or a cut
    # wire). The callback runs before the constructor returns.
    button = EStopButton(EStopSettings(pin="GPIO22"), calls, pin_factory=factory)
    assert calls.count == 1 and button.is_pressed
    pin.drive_low()                                 # contact closed: released
    assert calls.count == 1 and not button.is_pressed
    pin.drive_high()                                # pressed
    assert calls.count == 2
    button.close()


def test_estop_with_pull_down(factory):
    calls = Calls()
    EStopButton(EStopSettings(pin="GPIO24", pull_up=False, normally_closed=False), calls,
                pin_factory=factory)
    pin = factory.pin("GPIO24")
    assert pin.pull == "down" and calls.count == 0
    pin.drive_high()                                # contact closes to 3.3 V
    assert calls.count == 1


def test_failing_estop_callback_is_logged_and_does_not_stop_later_presses(factory, caplog):
    seen: list[int] = []

    def explode() -> None:
        seen.append(1)
        raise RuntimeError("boom")

    EStopButton(EStopSettings(pin="GPIO22", normally_closed=False), explode, pin_factory=factory)
    pin = factory.pin("GPIO22")
    with caplog.at_level(logging.ERROR, logger="printhost.hw.gpio"):
        pin.drive_low()
        pin.drive_high()
        pin.drive_low()
    assert len(seen) == 2
    assert "emergency stop callback failed" in caplog.text


# --------------------------------------------------------------------------- runout


def runout(factory, debounce_s=0.05, **kwargs):
    gone, back = Calls(), Calls()
    switch = RunoutSwitch(RunoutSettings(pin="GPIO23", debounce_s=debounce_s, **kwargs),
                          gone, back, pin_factory=factory)
    return switch, factory.pin("GPIO23"), gone, back


def test_runout_after_a_bouncing_contact_settles(factory):
    switch, pin, gone, back = runout(factory, debounce_s=0.05)
    assert not switch.filament_present             # pull-up, contact open: no filament
    pin.drive_low()                                 # filament closes the contact
    assert back.wait_for(1) and switch.filament_present and gone.count == 0
    for _ in range(5):                              # the contact chatters as the end passes
        pin.drive_high()
        pin.drive_low()
    pin.drive_high()
    last_edge = time.monotonic()
    assert gone.wait_for(1)
    assert gone.times[0] - last_edge >= 0.05 * 0.9  # only after a quiet debounce window
    time.sleep(0.15)
    assert gone.count == 1 and back.count == 1 and not switch.filament_present
    switch.close()


def test_glitch_shorter_than_debounce_is_ignored(factory):
    switch, pin, gone, back = runout(factory, debounce_s=0.1)
    pin.drive_low()
    assert back.wait_for(1)
    pin.drive_high()                                # a spike, back within microseconds
    pin.drive_low()
    time.sleep(0.3)
    assert gone.count == 0 and back.count == 1 and switch.filament_present
    switch.close()


def test_switch_that_opens_while_filament_is_in(factory):
    switch, pin, gone, back = runout(factory, present_when_closed=False)
    assert switch.filament_present                  # contact open = filament present
    pin.drive_low()
    assert gone.wait_for(1) and not switch.filament_present
    switch.close()


def test_runout_close_stops_the_watcher(factory):
    switch, pin, gone, back = runout(factory)
    watcher = switch._thread
    assert watcher.is_alive()
    switch.close()
    assert not watcher.is_alive()
    assert pin.function == "input"
    pin.drive_low()
    time.sleep(0.1)
    assert gone.count == back.count == 0


def test_runout_without_insert_callback(factory):
    gone = Calls()
    switch = RunoutSwitch(RunoutSettings(pin="GPIO23", debounce_s=0.02), gone, pin_factory=factory)
    pin = factory.pin("GPIO23")
    pin.drive_low()
    time.sleep(0.1)
    assert switch.filament_present
    pin.drive_high()
    assert gone.wait_for(1)
    switch.close()


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("pin", ["GPIO28", "17", "gpio17", "BCM17", "GPIO", "GPIO017", "GPIO07",
                                 17, ""])
def test_pin_names_are_checked(pin):
    for cls in (FanSettings, RelaySettings, LedSettings, EStopSettings, RunoutSettings):
        with pytest.raises(ValueError, match="GPIO0..GPIO27"):
            cls(pin=pin)


@pytest.mark.parametrize("cls, kwargs", [
    (FanSettings, {"max_power": 0.0}), (FanSettings, {"max_power": 1.5}),
    (FanSettings, {"off_below": -0.1}), (FanSettings, {"pwm_frequency_hz": 0.0}),
    (RunoutSettings, {"debounce_s": 0.0}), (RunoutSettings, {"debounce_s": float("nan")}),
])
def test_out_of_range_settings_are_refused(cls, kwargs):
    with pytest.raises(ValueError):
        cls(**kwargs)


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        FanSettings().pin = "GPIO12"  # type: ignore[misc]


def test_every_setting_is_documented():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "devices.md").read_text(encoding="utf-8")
    for cls in (FanSettings, RelaySettings, LedSettings, EStopSettings, RunoutSettings):
        assert f"`{cls.__name__}`" in doc
        for f in dataclasses.fields(cls):
            assert f"`{f.name}" in doc, f"{cls.__name__}.{f.name}"
