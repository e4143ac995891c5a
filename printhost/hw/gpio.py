"""Pi-local devices through gpiozero: fan, PSU relay, status LED, e-stop, runout switch.

Each device is built from a frozen settings dataclass defined here (the shape the
configuration loader produces) and an optional gpiozero pin factory; tests pass
gpiozero's `MockFactory`, the Pi uses gpiozero's default (lgpio).

Outputs start off and are driven off again by `close()` before the pin is released.
After release gpiozero leaves the pin an input without pull, so what holds the load
off from then on — and before printhost starts, and if it crashes — is the circuit: a
pull-down on a MOSFET gate, the pull-up an active-low relay board has on its input.
docs/devices.md shows such wiring.

Inputs run their callbacks on gpiozero's event thread. The emergency stop calls its
callback on the edge itself, with no debounce, because any delay is time the heaters
and motors keep running; a bouncing contact therefore calls it more than once, and the
callback must be idempotent (an emergency stop is). The runout switch, where a false
alarm pauses a print, calls its callbacks only once the input has been stable for
`debounce_s`.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpiozero import LED, DigitalInputDevice, DigitalOutputDevice, PWMOutputDevice

log = logging.getLogger(__name__)

_PIN = re.compile(r"GPIO(0|[1-9][0-9]?)")


def check_pin(pin: str) -> str:
    """Accept BCM names GPIO0..GPIO27 (the 40-pin header); anything else is a typo."""
    m = _PIN.fullmatch(pin) if isinstance(pin, str) else None
    if m is None or int(m.group(1)) > 27:
        raise ValueError(f"pin must be a name GPIO0..GPIO27 (BCM numbering), got {pin!r}")
    return pin


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"{name} must be {lo}..{hi}, got {value!r}")


def _call(callback: Callable[[], None], what: str) -> None:
    """Run a user callback; an exception is logged, not raised into gpiozero's thread,
    where it would be lost and could stop further events."""
    try:
        callback()
    except Exception:
        log.exception("%s callback failed", what)


# --------------------------------------------------------------------------- outputs

@dataclass(frozen=True)
class FanSettings:
    """A PWM fan (through a MOSFET or the fan's PWM input)."""
    pin: str = "GPIO18"
    active_high: bool = True          # False: the pin is low when the fan runs
    pwm_frequency_hz: float = 100.0   # Klipper's default cycle_time 0.010 s
    max_power: float = 1.0            # duty cycle at full speed
    off_below: float = 0.0            # requested speeds below this turn the fan off

    def __post_init__(self) -> None:
        check_pin(self.pin)
        _check_range("pwm_frequency_hz", self.pwm_frequency_hz, 1.0, 10000.0)
        _check_range("max_power", self.max_power, 0.01, 1.0)
        _check_range("off_below", self.off_below, 0.0, 1.0)


class Fan:
    """A fan with Klipper's fan semantics (max_power, off_below), so M106 values and a
    Klipper [fan] section mean the same here."""

    def __init__(self, settings: FanSettings, *, pin_factory: Any = None) -> None:
        self.settings = settings
        self.speed = 0.0
        self._out = PWMOutputDevice(settings.pin, active_high=settings.active_high,
                                    initial_value=0.0, frequency=settings.pwm_frequency_hz,
                                    pin_factory=pin_factory)

    def set_speed(self, speed: float) -> None:
        """Requested speed 0..1 (values outside are clamped, as M106 S300 is)."""
        if not isinstance(speed, (int, float)) or math.isnan(speed):
            raise ValueError(f"fan speed must be a number, got {speed!r}")
        speed = min(1.0, max(0.0, float(speed)))
        if speed < self.settings.off_below:
            speed = 0.0
        self.speed = speed
        self._out.value = speed * self.settings.max_power

    @property
    def duty(self) -> float:
        """The duty cycle the fan receives (speed scaled by max_power)."""
        return float(self._out.value)

    def off(self) -> None:
        self.set_speed(0.0)

    def close(self) -> None:
        if not self._out.closed:
            self.off()
            self._out.close()


class Light:
    """A dimmable light (LED strip through a MOSFET): brightness 0..1 as PWM duty."""

    def __init__(self, pin: str, active_high: bool = True, frequency_hz: float = 1000.0, *,
                 pin_factory: Any = None) -> None:
        check_pin(pin)
        self.brightness = 0.0
        self._out = PWMOutputDevice(pin, active_high=active_high, initial_value=0.0,
                                    frequency=frequency_hz, pin_factory=pin_factory)

    def set_brightness(self, value: float) -> None:
        if not isinstance(value, (int, float)) or math.isnan(value):
            raise ValueError(f"brightness must be a number, got {value!r}")
        self.brightness = min(1.0, max(0.0, float(value)))
        self._out.value = self.brightness

    def close(self) -> None:
        if not self._out.closed:
            self._out.value = 0.0
            self._out.close()


@dataclass(frozen=True)
class RelaySettings:
    """The relay (or SSR) that switches the printer's power supply."""
    pin: str = "GPIO17"
    active_high: bool = True          # many relay boards switch on a low input: False

    def __post_init__(self) -> None:
        check_pin(self.pin)


class PsuRelay:
    """Printer power on/off; starts off, so a host reboot never powers the printer up."""

    def __init__(self, settings: RelaySettings, *, pin_factory: Any = None) -> None:
        self.settings = settings
        self._out = DigitalOutputDevice(settings.pin, active_high=settings.active_high,
                                        initial_value=False, pin_factory=pin_factory)

    @property
    def is_on(self) -> bool:
        return bool(self._out.value)

    def on(self) -> None:
        self._out.on()

    def off(self) -> None:
        self._out.off()

    def close(self) -> None:
        if not self._out.closed:
            self._out.off()
            self._out.close()


@dataclass(frozen=True)
class LedSettings:
    """A status LED (with its series resistor) on a GPIO pin."""
    pin: str = "GPIO27"
    active_high: bool = True          # False when the LED goes from 3.3 V to the pin

    def __post_init__(self) -> None:
        check_pin(self.pin)


class StatusLed:
    """A single LED that shows the host's state at a glance (steady, blinking, off)."""

    def __init__(self, settings: LedSettings, *, pin_factory: Any = None) -> None:
        self.settings = settings
        self._led = LED(settings.pin, active_high=settings.active_high,
                        initial_value=False, pin_factory=pin_factory)

    @property
    def is_lit(self) -> bool:
        return bool(self._led.is_lit)

    def on(self) -> None:
        self._led.on()

    def off(self) -> None:
        self._led.off()

    def blink(self, on_s: float = 0.5, off_s: float = 0.5) -> None:
        """Blink in the background until on(), off() or close()."""
        _check_range("on_s", on_s, 0.01, 60.0)
        _check_range("off_s", off_s, 0.01, 60.0)
        self._led.blink(on_time=on_s, off_time=off_s, background=True)

    def close(self) -> None:
        if not self._led.closed:
            self._led.off()      # stops a blink first, then drives the pin off
            self._led.close()


# --------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class EStopSettings:
    """An emergency-stop button between the pin and GND (or 3.3 V with pull_up off)."""
    pin: str = "GPIO22"
    pull_up: bool = True              # True: internal pull-up, switch to GND; False: pull-down
    normally_closed: bool = True      # NC contact: pressing opens it, a cut wire reads pressed

    def __post_init__(self) -> None:
        check_pin(self.pin)


class EStopButton:
    """Calls `on_press` on the press edge itself; also once at start-up if the button
    is already pressed, so a printer cannot start with its e-stop engaged."""

    def __init__(self, settings: EStopSettings, on_press: Callable[[], None], *,
                 pin_factory: Any = None) -> None:
        self.settings = settings
        self._on_press = on_press
        self._in = DigitalInputDevice(settings.pin, pull_up=settings.pull_up,
                                      bounce_time=None, pin_factory=pin_factory)
        # gpiozero's "active" means the contact is closed (pin pulled away from its pull).
        if settings.normally_closed:
            self._in.when_deactivated = self._pressed
        else:
            self._in.when_activated = self._pressed
        if self.is_pressed:
            self._pressed()

    @property
    def is_pressed(self) -> bool:
        return bool(self._in.is_active) != self.settings.normally_closed

    def _pressed(self) -> None:
        log.warning("emergency stop pressed (%s)", self.settings.pin)
        _call(self._on_press, "emergency stop")

    def close(self) -> None:
        self._in.close()


@dataclass(frozen=True)
class RunoutSettings:
    """A filament runout switch: a contact that filament holds closed (or open)."""
    pin: str = "GPIO23"
    pull_up: bool = True              # True: internal pull-up, switch to GND; False: pull-down
    present_when_closed: bool = True  # False for switches that open while filament is in
    debounce_s: float = 0.1           # the input must be stable this long to count

    def __post_init__(self) -> None:
        check_pin(self.pin)
        _check_range("debounce_s", self.debounce_s, 0.001, 5.0)


class RunoutSwitch:
    """Calls `on_runout` when filament has been gone for `debounce_s`, and `on_insert`
    (if given) when it has been back that long.

    `filament_present` is the debounced state; it starts from the pin as read at
    construction, with no callback, so the caller decides what a missing filament at
    start-up means. A watcher thread restarts its quiet window on every edge, so a
    glitch shorter than `debounce_s` does nothing and a bouncing contact gives one call.
    """

    def __init__(self, settings: RunoutSettings, on_runout: Callable[[], None],
                 on_insert: Callable[[], None] | None = None, *, pin_factory: Any = None) -> None:
        self.settings = settings
        self._on_runout = on_runout
        self._on_insert = on_insert
        self._in = DigitalInputDevice(settings.pin, pull_up=settings.pull_up,
                                      bounce_time=None, pin_factory=pin_factory)
        self._cond = threading.Condition()
        self._edges = 0
        self._handled = 0
        self._closed = False
        self._present = self._read_present()
        self._in.when_activated = self._edge
        self._in.when_deactivated = self._edge
        self._thread = threading.Thread(target=self._watch, name=f"runout-{settings.pin}",
                                        daemon=True)
        self._thread.start()

    @property
    def filament_present(self) -> bool:
        with self._cond:
            return self._present

    def _read_present(self) -> bool:
        return bool(self._in.is_active) == self.settings.present_when_closed

    def _edge(self) -> None:
        with self._cond:
            self._edges += 1
            self._cond.notify_all()

    def _watch(self) -> None:
        while True:
            with self._cond:
                while not self._closed and self._edges == self._handled:
                    self._cond.wait()
                while not self._closed:          # wait for debounce_s without an edge
                    seen = self._edges
                    self._cond.wait(self.settings.debounce_s)
                    if self._edges == seen:
                        break
                if self._closed:
                    return
                self._handled = self._edges
                present = self._read_present()
                changed = present != self._present
            # The callback runs before the new state is published: whoever sees
            # `filament_present` change finds the event already delivered.
            if changed and not present:
                log.warning("filament runout (%s)", self.settings.pin)
                _call(self._on_runout, "runout")
            elif changed and self._on_insert is not None:
                _call(self._on_insert, "filament insert")
            if changed:
                with self._cond:
                    self._present = present

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        self._in.close()
