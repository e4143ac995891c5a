"""Every device wired to the Pi, built from `[devices]` and `[chamber]`, in one object.

`PiDevices` lives in the control process. Inputs (e-stop, runout) call back on
gpiozero's or the runout watcher's thread; those callbacks only record an event, and
the control loop takes the events in a pass (`take_events`), so every state change of
the printer happens on one thread. Recording an event also calls `on_event`, the
control loop's wake-up, which runs that pass at once instead of up to a loop period
(20 ms on a printer) later.

Outputs follow the printer's state, computed by the loop and handed to `update`: the
hotend fan runs while the extruder is hot, the controller fan while anything moves or
heats (and `idle_timeout_s` after), the status LED shows ready / printing / fault.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from printhost.config import Settings
from printhost.hw.chamber import GpioHeaterHardware, SensorPoller, make_reader
from printhost.hw.gpio import (EStopButton, EStopSettings, Fan, FanSettings, LedSettings, Light,
                               PsuRelay, RelaySettings, RunoutSettings, RunoutSwitch, StatusLed)
from printhost.sensors.i2c import I2CBus

log = logging.getLogger(__name__)


class DeviceEvent(enum.Enum):
    ESTOP = "estop"
    RUNOUT = "runout"
    INSERT = "insert"


# Status LED patterns (on, off) in seconds; None is steady on.
LED_PATTERNS: dict[str, tuple[float, float] | None] = {
    "idle": None,
    "printing": (1.0, 1.0),
    "paused": (0.25, 1.75),
    "error": (0.1, 0.1),
}


@dataclass(frozen=True)
class PrinterView:
    """What the device logic needs to know about the printer on each tick."""
    state: str                 # idle / printing / paused / error
    extruder_temp_c: float     # NaN before the first reading
    extruder_target_c: float
    busy: bool                 # moving or any heater has a target


class PiDevices:
    """The Pi-side devices; any of them may be absent (its pin left empty)."""

    def __init__(self, settings: Settings, *, pin_factory: Any = None,
                 bus: I2CBus | None = None, on_event: Callable[[], None] | None = None) -> None:
        d, c = settings.devices, settings.chamber
        self.settings = settings
        # Called (on the input's thread) after an event is recorded: the control loop's
        # wake-up, so an e-stop is acted on at once rather than at the next pass.
        self.on_event = on_event
        self._events: list[DeviceEvent] = []
        self._events_lock = threading.Lock()
        self._closers: list[Any] = []
        self.psu = self.led = self.estop = self.runout = None
        self.hotend_fan = self.controller_fan = None
        self.light: Light | None = None
        self.chamber_sensor: SensorPoller | None = None
        self.chamber_heater: GpioHeaterHardware | None = None
        self._led_pattern: str | None = None
        self._controller_until = -1.0
        try:
            if d.psu.pin:
                self.psu = self._keep(PsuRelay(RelaySettings(d.psu.pin, d.psu.active_high),
                                               pin_factory=pin_factory))
                if d.psu.on_at_start:
                    self.psu.on()
            if d.status_led.pin:
                self.led = self._keep(StatusLed(LedSettings(d.status_led.pin,
                                                            d.status_led.active_high),
                                                pin_factory=pin_factory))
            if d.light.pin:
                self.light = self._keep(Light(d.light.pin, d.light.active_high,
                                              d.light.pwm_frequency_hz,
                                              pin_factory=pin_factory))
                self.light.set_brightness(d.light.brightness_at_start)
            for name in ("hotend_fan", "controller_fan"):
                fs = getattr(d, name)
                if fs.pin:
                    fan = Fan(FanSettings(fs.pin, fs.active_high, fs.pwm_frequency_hz,
                                          fs.max_power, fs.off_below), pin_factory=pin_factory)
                    setattr(self, name, self._keep(fan))
            if c.sensor != "none":
                if bus is None:
                    raise ValueError("a chamber sensor is configured but there is no I2C bus")
                label, read = make_reader(c, bus)
                self.chamber_sensor = self._keep(SensorPoller(f"chamber sensor ({label})",
                                                              read, c.poll_interval_s))
                if c.heater_pin:
                    self.chamber_heater = self._keep(GpioHeaterHardware(
                        c.heater_pin, c.heater_active_high, self.chamber_sensor,
                        pin_factory=pin_factory))
            # Inputs last: an e-stop already pressed at start-up reports at once, and
            # everything it must switch off exists by then.
            if d.runout.pin:
                r = d.runout
                self.runout = self._keep(RunoutSwitch(
                    RunoutSettings(r.pin, r.pull_up, r.present_when_closed, r.debounce_s),
                    lambda: self._event(DeviceEvent.RUNOUT),
                    lambda: self._event(DeviceEvent.INSERT), pin_factory=pin_factory))
            if d.estop.pin:
                e = d.estop
                self.estop = self._keep(EStopButton(
                    EStopSettings(e.pin, e.pull_up, e.normally_closed),
                    lambda: self._event(DeviceEvent.ESTOP), pin_factory=pin_factory))
        except BaseException:
            self.close()
            raise

    def _keep(self, device: Any) -> Any:
        self._closers.append(device)
        return device

    def _event(self, event: DeviceEvent) -> None:
        with self._events_lock:
            # An e-stop bouncing ten times is one emergency.
            if event not in self._events:
                self._events.append(event)
        if self.on_event is not None:
            self.on_event()

    def take_events(self) -> list[DeviceEvent]:
        with self._events_lock:
            events, self._events = self._events, []
        return events

    @property
    def filament_present(self) -> bool | None:
        return None if self.runout is None else self.runout.filament_present

    # ------------------------------------------------------------------ outputs
    def update(self, view: PrinterView, now_s: float | None = None) -> None:
        """Drive fans and the LED from the printer's state; cheap when nothing changes."""
        now_s = time.monotonic() if now_s is None else now_s
        if self.hotend_fan is not None:
            fs = self.settings.devices.hotend_fan
            hot = (view.extruder_target_c > 0.0
                   or view.extruder_temp_c > fs.heater_temp)   # NaN compares False
            speed = fs.fan_speed if hot else 0.0
            if self.hotend_fan.speed != speed:
                self.hotend_fan.set_speed(speed)
        if self.controller_fan is not None:
            fs = self.settings.devices.controller_fan
            if view.busy:
                self._controller_until = now_s + fs.idle_timeout_s
            speed = fs.fan_speed if now_s < self._controller_until else 0.0
            if self.controller_fan.speed != speed:
                self.controller_fan.set_speed(speed)
        if self.led is not None and view.state != self._led_pattern:
            self._led_pattern = view.state
            pattern = LED_PATTERNS.get(view.state)
            if pattern is None:
                self.led.on()
            else:
                self.led.blink(*pattern)

    def power(self, on: bool) -> bool:
        """M80/M81: switch the PSU relay; False when there is none."""
        if self.psu is None:
            return False
        (self.psu.on if on else self.psu.off)()
        log.info("printer power %s (%s)", "on" if on else "off", self.settings.devices.psu.pin)
        return True

    def set_light(self, brightness: float) -> bool:
        """Set the light's brightness (0..1); False when no light is fitted."""
        if self.light is None:
            return False
        self.light.set_brightness(brightness)
        return True

    def emergency(self) -> None:
        """E-stop or M112: the chamber heater off and, if configured, the power cut."""
        if self.chamber_heater is not None:
            self.chamber_heater.set_duty(0.0)
        if self.psu is not None and self.settings.devices.psu.off_on_emergency:
            self.psu.off()
            log.warning("printer power cut (emergency stop)")

    def get_status(self) -> dict[str, Any]:
        chamber: dict[str, Any] | None = None
        if self.chamber_sensor is not None:
            fresh = self.chamber_sensor.fresh()
            chamber = {
                "temperature": round(fresh.temp_c, 2) if fresh is not None else None,
                "humidity": (round(fresh.humidity_pct, 1)
                             if fresh is not None and fresh.humidity_pct is not None else None),
                "sensor_error": None if fresh is not None else self.chamber_sensor.last_error,
            }
        return {
            "backend": self.settings.devices.backend,
            "warning": simulated_on_real_printer(self.settings),
            "psu_on": None if self.psu is None else self.psu.is_on,
            "estop_pressed": None if self.estop is None else self.estop.is_pressed,
            "filament_present": self.filament_present,
            "hotend_fan": None if self.hotend_fan is None else round(self.hotend_fan.speed, 3),
            "controller_fan": (None if self.controller_fan is None
                               else round(self.controller_fan.speed, 3)),
            "light": None if self.light is None else round(self.light.brightness, 3),
            "chamber": chamber,
        }

    def close(self) -> None:
        """Outputs off, inputs released; each device even if another fails."""
        for device in reversed(self._closers):
            try:
                device.close()
            except Exception:
                log.exception("closing %s failed", type(device).__name__)
        self._closers.clear()


def output_pins_off_levels(settings: Settings) -> dict[str, bool]:
    """Each configured output pin and the level that means off: the chamber heater,
    the fans, the LED, and the PSU relay where an emergency cuts it."""
    d, c = settings.devices, settings.chamber
    pins: dict[str, bool] = {}
    if c.heater_pin:
        pins[c.heater_pin] = not c.heater_active_high
    for fan in (d.hotend_fan, d.controller_fan):
        if fan.pin:
            pins[fan.pin] = not fan.active_high
    if d.status_led.pin:
        pins[d.status_led.pin] = not d.status_led.active_high
    if d.light.pin:
        pins[d.light.pin] = not d.light.active_high
    if d.psu.pin and d.psu.off_on_emergency:
        pins[d.psu.pin] = not d.psu.active_high
    return pins


def force_outputs_off(settings: Settings, *, pin_factory: Any = None) -> list[str]:
    """Drive every Pi output pin to off from outside the control process.

    A Pi GPIO keeps its level when the process that drove it dies, so after the
    control process has gone (killed, crashed, frozen and killed) the supervisor claims
    each line, writes its off level and releases it again. Returns the pins it could
    not claim; the caller logs them.
    """
    from gpiozero import DigitalOutputDevice
    failed: list[str] = []
    for pin, off_level in output_pins_off_levels(settings).items():
        try:
            out = DigitalOutputDevice(pin, initial_value=off_level, pin_factory=pin_factory)
            out.close()
        except Exception as exc:
            log.error("could not switch %s off after the control process ended: %s", pin, exc)
            failed.append(pin)
    return failed


def any_configured(settings: Settings) -> bool:
    return bool(settings.pi_devices())


def simulated_on_real_printer(settings: Settings) -> str | None:
    """The warning for a real board whose Pi devices are simulated, else None.

    A configuration may ask for it (`devices.backend = "simulated"` with
    `control.backend = "mcu"`, to try a board before the Pi is wired), but an e-stop
    button or PSU relay that only exists in a model must never pass for a real one: the
    log and the status both say so."""
    if settings.control.backend != "mcu" or settings.devices.backend != "simulated":
        return None
    fitted = settings.pi_devices()
    if not fitted:
        return None
    return ("SIMULATED Pi devices on a real printer: " + ", ".join(fitted) + " are not "
            "wired to anything (devices.backend = \"simulated\"); an e-stop button, runout "
            "switch or PSU relay on the Pi does nothing")
