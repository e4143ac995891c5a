"""Heater control as it runs in the control process.

A `Heater` reads its thermistor, computes a duty cycle with its control law (PID or
watermark, the compiled kernels of `printhost.control.kernels.heater`) and writes it,
and shuts itself down when a reading is out of range or the temperature stops
following the heater. It only talks to a `HeaterHardware`, so the same code drives
MCU pins, Pi GPIO and the simulated printer (`printhost.sim.heaters`).

The PID gains in the configuration are in Klipper's units: Klipper scales its
configured pid_Kp/pid_Ki/pid_Kd down by 255 (a legacy of 8-bit PWM) before using them
with temperatures in degrees C, times in seconds and a duty cycle of 0..1. Reading the
gains the same way lets a user paste the numbers from their printer.cfg or from
PID_CALIBRATE unchanged. The kernels are imported when the first heater is built,
not with this module: the kernel cache must be configured before they load.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import NoReturn, Protocol

from printhost.config import HeaterSettings

# Klipper divides its configured PID gains by this before use (the kernels do it).
KLIPPER_PID_SCALE = 255.0
# Time constant of the filter on the temperature slope used by the D term; Klipper's
# default smooth_time. Without it the D term would amplify sensor noise.
DERIVATIVE_SMOOTH_S = 1.0
# M109/M190 count a target as reached this close below it.
REACHED_TOLERANCE_C = 1.0
# A reading older than this cannot prove that a target was reached: the control loop
# has stalled and the true temperature is unknown.
STALE_READING_S = 5.0
# Klipper's verify_heater defaults.
VERIFY_HYSTERESIS_C = 5.0
VERIFY_MAX_ERROR_C_S = 120.0
VERIFY_HEATING_GAIN_C = 2.0
EXTRUDER_CHECK_GAIN_TIME_S = 20.0
BED_CHECK_GAIN_TIME_S = 60.0



def _past(temp_c: float, limit_c: float) -> str:
    """A reading beyond a limit, with as many decimals as it takes not to print the
    limit itself ("26.04 C is above max_temp 26.0 C", not "26.0 C is above 26.0 C")."""
    for digits in (1, 2, 3):
        text = f"{temp_c:.{digits}f}"
        if float(text) != limit_c:
            return text
    return repr(temp_c)

class HeaterHardware(Protocol):
    """What a heater needs from the machine: one thermistor and one PWM output."""

    def read_temp_c(self) -> float: ...

    def set_duty(self, duty: float) -> None: ...


class HeaterFault(Exception):
    """A heater was shut down for safety; the message says which one and why."""

    def __init__(self, heater: str, reason: str) -> None:
        super().__init__(f"heater {heater} shut down: {reason}")
        self.heater = heater
        self.reason = reason


class _HeatingCheck:
    """Detects a heater that is not heating (Klipper's verify_heater, re-derived).

    Below target - hysteresis, the shortfall is integrated over time. While a new
    target is being approached the heater gets check_gain_time seconds to gain each
    heating_gain degrees; every such gain clears the integral. Once the temperature
    stops rising in time, or once it sags below the band while holding, the integral
    quickly exceeds max_error and the heater is declared faulty. A thermistor that
    fell off the block or a dead heater both look like this.

    Only a gain renews the window. A target changed during an approach does not:
    otherwise a job that keeps changing the target every few seconds would keep a dead
    heater from ever being found.
    """

    def __init__(self, check_gain_time_s: float) -> None:
        self.check_gain_time_s = check_gain_time_s
        self.error_c_s = 0.0
        self.approaching = False
        self.goal_c = 0.0
        self.goal_deadline_s = 0.0
        self.last_target_c = 0.0
        self.last_s: float | None = None

    def check(self, now_s: float, temp_c: float, target_c: float) -> str | None:
        """Return a fault reason, or None while the heater behaves."""
        dt_s = 0.0 if self.last_s is None else max(0.0, now_s - self.last_s)
        self.last_s = now_s if self.last_s is None else max(self.last_s, now_s)
        target_changed = target_c != self.last_target_c
        self.last_target_c = target_c

        if target_c <= 0.0 or temp_c >= target_c - VERIFY_HYSTERESIS_C:
            self.approaching = False
            if temp_c <= target_c + VERIFY_HYSTERESIS_C:
                self.error_c_s = 0.0
            return None

        self.error_c_s += (target_c - VERIFY_HYSTERESIS_C - temp_c) * dt_s
        if not self.approaching:
            if target_changed:
                # A new target starts an approach: the heater gets a fresh window.
                self._new_goal(now_s, temp_c)
                self.approaching = True
            elif self.error_c_s >= VERIFY_MAX_ERROR_C_S:
                return (f"not heating at expected rate: {temp_c:.1f} C with target "
                        f"{target_c:.1f} C (no {VERIFY_HEATING_GAIN_C:.0f} C rise within "
                        f"{self.check_gain_time_s:.0f} s, or could not hold the target)")
        elif temp_c >= self.goal_c:
            self.error_c_s = 0.0
            self._new_goal(now_s, temp_c)
        elif now_s >= self.goal_deadline_s:
            self.approaching = False
        return None

    def _new_goal(self, now_s: float, temp_c: float) -> None:
        self.goal_c = temp_c + VERIFY_HEATING_GAIN_C
        self.goal_deadline_s = now_s + self.check_gain_time_s


class Heater:
    """One heater (PID or watermark control) with its safety checks.

    A fault latches: the heater keeps its duty at 0 and refuses new targets until
    `clear_fault()`, so nothing can quietly re-enable a heater whose sensor or wiring
    was just found to be broken.
    """

    def __init__(self, name: str, settings: HeaterSettings, hardware: HeaterHardware,
                 check_gain_time_s: float = EXTRUDER_CHECK_GAIN_TIME_S,
                 smooth_s: float = DERIVATIVE_SMOOTH_S) -> None:
        if not check_gain_time_s > 0.0:
            raise ValueError("check_gain_time_s must be positive")
        self.name = name
        self.settings = settings
        self.hardware = hardware
        self.check_gain_time_s = check_gain_time_s
        # Imported here, after the kernel cache is configured; compiles and self-tests.
        from printhost.control.kernels.heater import make_control
        self._control = make_control(settings, smooth_s)
        self._check = _HeatingCheck(check_gain_time_s)
        self._override: float | None = None
        self._target_c = 0.0
        self._temp_c = math.nan
        self._read_s: float | None = None
        self._duty = 0.0
        self.fault: str | None = None
        self._counts_readings = hasattr(hardware, "reading_seq")
        self._inputs: tuple | None = None

    @property
    def temperature_c(self) -> float:
        """Last sensor reading (NaN before the first update)."""
        return self._temp_c

    @property
    def target_c(self) -> float:
        return self._target_c

    @property
    def unavailable(self) -> str | None:
        """Why `temperature_c` is not the current temperature (its source is gone or has
        not reported for a while), or None. Hardware that cannot tell is always live."""
        probe = getattr(self.hardware, "unavailable", None)
        return probe() if callable(probe) else None

    @property
    def duty(self) -> float:
        return self._duty

    @property
    def override(self) -> float | None:
        """The duty forced by `set_override`, or None while the control law decides."""
        return self._override

    def set_target(self, target_c: float) -> None:
        """Set the target in C; 0 turns the heater off. Out-of-range targets are refused."""
        if not isinstance(target_c, (int, float)) or isinstance(target_c, bool):
            raise ValueError(f"target for {self.name} must be a number, got {target_c!r}")
        target_c = float(target_c)
        if not math.isfinite(target_c):
            raise ValueError(f"target {target_c} for {self.name} is not a finite number")
        if target_c < 0.0:
            raise ValueError(f"target {target_c:.1f} C for {self.name} is negative")
        if target_c > self.settings.max_temp:
            raise ValueError(f"target {target_c:.1f} C for {self.name} is above max_temp "
                             f"{self.settings.max_temp:.1f} C")
        if target_c > 0.0 and self.fault is not None:
            raise HeaterFault(self.name, f"still shut down after a fault ({self.fault})")
        if target_c == 0.0:
            self._off_state()
        self._target_c = target_c

    def set_override(self, duty: float | None) -> None:
        """Output `duty` (clamped to 0..max_power) instead of the control law's; None ends it.

        For open-loop tools such as PID autotune's relay test. Every safety check stays
        active (the heating check watches the target, so the caller sets one). It acts
        only while the target is above 0 and turning off or a fault ends it, so off
        always means off. Afterwards the control law restarts from the next reading.
        """
        if duty is None:
            if self._override is not None:
                self._control.reset()
            self._override = None
            return
        if not isinstance(duty, (int, float)) or isinstance(duty, bool):
            raise ValueError(f"override duty for {self.name} must be a number, got {duty!r}")
        duty = float(duty)
        if not math.isfinite(duty):
            raise ValueError(f"override duty {duty} for {self.name} is not a finite number")
        if self.fault is not None:
            raise HeaterFault(self.name, f"still shut down after a fault ({self.fault})")
        self._override = min(self.settings.max_power, max(0.0, duty))

    def turn_off(self) -> None:
        """Target 0 and duty 0 now, without waiting for the next update."""
        self._target_c = 0.0
        self._off_state()
        self._write_duty(0.0)

    def clear_fault(self) -> None:
        """Allow targets again after a fault (the equivalent of a firmware restart)."""
        self.fault = None
        self._control.reset()
        self._check = _HeatingCheck(self.check_gain_time_s)

    def update(self, now_s: float) -> None:
        """Read the sensor, run the safety checks and the control law, write the duty.

        Raises HeaterFault, with the heater already off, when the reading is outside
        min_temp..max_temp or the heater does not heat as it should.
        """
        if not math.isfinite(now_s):
            # A broken clock leaves the control law and the heating check blind.
            self._trip(f"control clock returned {now_s}")
        if self._counts_readings and self.fault is None:
            # Hardware that numbers its readings (an MCU reports every 0.3 s) is
            # controlled once per reading, as Klipper's heaters are, not on every pass
            # of the loop: the same reading gives nothing new to check, and the duty
            # goes to the MCU once per reading anyway. A new target or override acts at
            # once.
            inputs = (self.hardware.reading_seq, self._target_c, self._override)
            if inputs == self._inputs:
                return
            self._inputs = inputs
        if not getattr(self.hardware, "has_reading", True):
            # An MCU sensor reports for the first time shortly after configuration;
            # until then the heater stays off (and an M109 cannot finish).
            self._write_duty(0.0)
            return
        try:
            temp_c = float(self.hardware.read_temp_c())
        except Exception as exc:
            self._trip(f"cannot read the temperature sensor ({exc})")
        self._temp_c = temp_c
        self._read_s = now_s
        if self.fault is not None:
            self._write_duty(0.0)
            return
        s = self.settings
        if not math.isfinite(temp_c):
            self._trip(f"temperature sensor returned {temp_c}")
        if temp_c > s.max_temp:
            self._trip(f"temperature {_past(temp_c, s.max_temp)} C is above max_temp "
                       f"{s.max_temp:.1f} C")
        if temp_c < s.min_temp:
            self._trip(f"temperature {_past(temp_c, s.min_temp)} C is below min_temp "
                       f"{s.min_temp:.1f} C (thermistor disconnected or shorted?)")
        reason = self._check.check(now_s, temp_c, self._target_c)
        if reason is not None:
            self._trip(reason)
        if self._override is not None:
            duty = self._override
        else:
            duty = self._control.update(now_s, temp_c, self._target_c)
        self._write_duty(duty if self._target_c > 0.0 else 0.0)

    def wait_reached(self, now_s: float) -> bool:
        """Whether an M109/M190-style wait for the current target may finish.

        True when the heater is off or the last reading is at or above target - 1 C.
        A reading older than STALE_READING_S at `now_s` never counts, because a
        stalled control loop says nothing about the real temperature.
        """
        if self._target_c <= 0.0:
            return True
        if self._read_s is None or now_s - self._read_s > STALE_READING_S:
            return False
        return self._temp_c >= self._target_c - REACHED_TOLERANCE_C

    def get_status(self) -> dict:
        """The heater as status shows it: a temperature whose source is gone or stale is
        null, with the reason in `unavailable`."""
        reason = self.unavailable
        temp = None if reason is not None or not math.isfinite(self._temp_c) else round(
            self._temp_c, 2)
        if reason is None and temp is None:
            reason = "no reading yet"
        return {"temperature": temp, "target": round(self._target_c, 2),
                "power": round(self._duty, 3), "fault": self.fault, "unavailable": reason}

    def _write_duty(self, duty: float) -> None:
        self._duty = duty
        self.hardware.set_duty(duty)

    def _trip(self, reason: str) -> NoReturn:
        # The first fault is the root cause; later ones (a sensor that also stops
        # answering, say) must not hide it.
        if self.fault is None:
            self.fault = reason
        self._target_c = 0.0
        self._off_state()
        self._write_duty(0.0)
        raise HeaterFault(self.name, reason)

    def _off_state(self) -> None:
        """Off ends any override and empties the integral, so the next heat-up starts clean."""
        if self._override is not None:
            self._override = None
            self._control.reset()
        self._control.reset_integral()


class HeaterBank:
    """All heaters of the printer, updated together and shut down together.

    A fault in one heater turns every heater off: when one thermistor or heater is
    misbehaving the printer is in an unknown state and nothing should stay hot.
    """

    def __init__(self, heaters: Iterable[Heater] = ()) -> None:
        self._heaters: dict[str, Heater] = {}
        for heater in heaters:
            self.add(heater)

    def add(self, heater: Heater) -> None:
        if heater.name in self._heaters:
            raise ValueError(f"duplicate heater name {heater.name!r}")
        self._heaters[heater.name] = heater

    def __getitem__(self, name: str) -> Heater:
        return self._heaters[name]

    def __contains__(self, name: object) -> bool:
        return name in self._heaters

    def __iter__(self) -> Iterator[Heater]:
        return iter(self._heaters.values())

    def __len__(self) -> int:
        return len(self._heaters)

    def names(self) -> list[str]:
        return list(self._heaters)

    def update(self, now_s: float) -> None:
        """Update every heater; on the first fault turn all off and re-raise it."""
        for heater in self._heaters.values():
            try:
                heater.update(now_s)
            except HeaterFault:
                self.all_off()
                raise

    def all_off(self) -> None:
        """Turn every heater off, even if turning one of them off fails."""
        first_error: Exception | None = None
        for heater in self._heaters.values():
            try:
                heater.turn_off()
            except Exception as exc:  # keep going: the other heaters must still go off
                if first_error is None:
                    first_error = exc
        if first_error is not None:
            raise first_error

    def get_status(self) -> dict[str, dict]:
        return {name: heater.get_status() for name, heater in self._heaters.items()}
