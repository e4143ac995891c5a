"""The printer's hardware on a Klipper MCU: heaters, fan and steppers as MCU objects.

`McuHardware` registers every object with the `Mcu` before it connects (their config
commands need the firmware's dictionary, so they are built during `configure()`), and
afterwards gives the control process what `Printer` expects: a heater bank whose
readings come from the MCU's ADC reports and whose outputs are MCU PWM pins with a
`max_duration`, a part fan, and a motion executor whose steps go to the MCU.
"""

from __future__ import annotations

import logging
import math
import time

from printhost.config import HeaterSettings, Settings
from printhost.control.heaters import (BED_CHECK_GAIN_TIME_S, EXTRUDER_CHECK_GAIN_TIME_S,
                                       Heater, HeaterBank)
from printhost.mcu.analog import REPORT_TIME_S, McuAnalogIn
from printhost.mcu.endstops import McuEndstop
from printhost.mcu.mcu import MAX_SCHEDULE_AHEAD_S, Mcu, McuClock
from printhost.mcu.outputs import HEATER_MAX_DURATION_S, McuPwmOutput
from printhost.mcu.pins import parse_pin
from printhost.mcu.steppers import McuStepper, StepSender
from printhost.sensors.adc import AdcTemperatureSensor
from printhost.sensors.thermistor import sensor as make_sensor

log = logging.getLogger(__name__)

# A heater's value is renewed at least this often in print time, well inside its
# max_duration: a renewal may wait for the previous update to be applied and then goes
# out a schedule margin ahead, so it lands at most about 1.1 + 2 x 0.25 s after the last.
HEATER_REFRESH_S = 0.75 * HEATER_MAX_DURATION_S * 0.5
# Motion is committed to the MCU this far ahead of its execution, in print time, as
# Klipper keeps about 1-2 s queued. It is at least twice the schedule margin (a noisy
# line widens that)...
MOTION_LEAD_S = 1.0
# ...and never less than this much host time: what the lead protects against is the host
# not running (a busy machine, a stalled VM), and a stall lasts so many wall seconds
# whatever the MCU's clock rate. On a board (time factor 1) the print-time lead is the
# larger; a simulation at 10x would otherwise keep 0.1 s of wall time queued, and a
# real-time control process was seen woken 101 ms late beside two CPU-bound processes.
MOTION_LEAD_MIN_WALL_S = 0.3
# The MCU shuts down when a reading stays this far outside min_temp..max_temp (its own
# check, which works even when the host is gone); the host checks the exact limits.
ADC_RANGE_MARGIN_C = 5.0
# A temperature is shown as live only while its sensor keeps reporting: a reading is
# stale once this many report periods (of print time) passed without a new one, and
# never sooner than STALE_MIN_WALL_S of host time (at a high time factor a few report
# periods are a few tens of milliseconds, less than a busy host's hiccup).
STALE_REPORTS = 4
STALE_MIN_WALL_S = 1.0


def motion_lead_s(mcu: Mcu) -> float:
    """How far ahead (print seconds) motion is committed on this MCU: MOTION_LEAD_S, twice
    the schedule margin or MOTION_LEAD_MIN_WALL_S of host time, whichever is largest,
    within what the firmware's clock comparison allows (MAX_SCHEDULE_AHEAD_S)."""
    return min(MAX_SCHEDULE_AHEAD_S,
               max(MOTION_LEAD_S, 2.0 * mcu.schedule_margin_s(),
                   mcu.wall_to_print_s(MOTION_LEAD_MIN_WALL_S)))


def mcu_unavailable(mcu: Mcu) -> str | None:
    """Why nothing the MCU reports can be current, or None while it runs. A lost link
    comes first: a board that restarted by itself and then obeyed our stop is shut down
    too, but the loss is what happened."""
    if mcu.lost_reason is not None:
        return mcu.lost_reason
    if mcu.shutdown_reason is not None:
        return f"MCU shutdown: {mcu.shutdown_reason}"
    if not mcu.configured:
        return "MCU not configured"
    return None


class McuHeaterHardware:
    """A heater's thermistor (MCU ADC) and output (MCU soft PWM with max_duration)."""

    def __init__(self, mcu: Mcu, name: str, settings: HeaterSettings) -> None:
        self.mcu = mcu
        self.name = name
        self.sensor = AdcTemperatureSensor(make_sensor(settings.sensor_type),
                                           settings.pullup_resistor)
        lo, hi = self.sensor.fraction_range(settings.min_temp - ADC_RANGE_MARGIN_C,
                                            settings.max_temp + ADC_RANGE_MARGIN_C)
        self.adc = McuAnalogIn(mcu, parse_pin(settings.sensor_pin, can_pull=True),
                               self._on_reading, min_fraction=lo, max_fraction=hi)
        self.output = McuPwmOutput(mcu, parse_pin(settings.heater_pin),
                                   settings.pwm_cycle_time, HEATER_MAX_DURATION_S)
        self._temp_c = math.nan
        self._reading_s = -math.inf
        self._reading_wall_s = -math.inf
        self._sent_duty = 0.0
        self._sent_s = -math.inf
        self._sent_reading_s = -math.inf

    def _on_reading(self, fraction: float, print_time: float) -> None:
        self._temp_c = self.sensor.temp_c(fraction)
        self._reading_s = print_time
        self._reading_wall_s = time.monotonic()

    @property
    def has_reading(self) -> bool:
        return self.adc.reports > 0

    @property
    def reading_seq(self) -> int:
        """How many readings have arrived: the heater runs its control law on each new one."""
        return self.adc.reports

    def read_temp_c(self) -> float:
        return self._temp_c

    def unavailable(self) -> str | None:
        """Why the latest reading is not the current temperature (the MCU is shut down
        or lost, no reading yet, or none for several report periods), or None."""
        reason = mcu_unavailable(self.mcu)
        if reason is not None:
            return reason
        if not self.has_reading:
            return "no reading yet"
        age_s = time.monotonic() - self._reading_wall_s
        limit_s = max(STALE_MIN_WALL_S,
                      STALE_REPORTS * REPORT_TIME_S / max(1e-9, self.mcu.wall_to_print_s(1.0)))
        if age_s > limit_s:
            return f"no reading for {age_s:.1f} s"
        return None

    def set_duty(self, duty: float) -> None:
        """Send a new value with each new reading, at once when switching off, and at
        least every HEATER_REFRESH_S while on; never on every control tick. A heater that
        is off and stays off sends nothing: off is the pin's default, which max_duration
        does not limit (Klipper's heaters do the same). An idle printer then keeps the
        line quiet; at 20x its two heaters' refreshes were 130 urgent messages a second,
        and one held back behind a slow acknowledgement ended an idle loaded test run
        with "Timer too close"."""
        if not self.mcu.connected:
            return
        if duty == 0.0 and self._sent_duty == 0.0:
            return
        now = self.mcu.print_time()
        off_now = duty == 0.0 and self._sent_duty != 0.0
        fresh = self._reading_s > self._sent_reading_s
        stale = duty != 0.0 and now - self._sent_s >= HEATER_REFRESH_S
        if not (off_now or fresh or stale):
            return
        self.output.set(now, duty)
        self._sent_duty = duty
        self._sent_s = now
        self._sent_reading_s = self._reading_s


class McuFan:
    def __init__(self, mcu: Mcu, pin: str, cycle_time_s: float) -> None:
        self.mcu = mcu
        self.output = McuPwmOutput(mcu, parse_pin(pin), cycle_time_s) if pin else None

    def set_speed(self, speed: float) -> None:
        if self.output is not None and self.mcu.connected:
            self.output.set(self.mcu.print_time(), speed)


class McuHardware:
    """Everything the printer drives through one MCU."""

    def __init__(self, settings: Settings, mcu: Mcu) -> None:
        self.settings = settings
        self.mcu = mcu
        self.clock = McuClock(mcu)
        self.heater_hw = {
            "extruder": McuHeaterHardware(mcu, "extruder", settings.heaters.extruder),
            "heater_bed": McuHeaterHardware(mcu, "heater_bed", settings.heaters.heater_bed),
        }
        self.fan = McuFan(mcu, settings.fan.pin, settings.fan.cycle_time)
        self.steppers: dict[str, McuStepper] = {}
        for name in ("x", "y", "z", "extruder"):
            st = getattr(settings.steppers, name)
            self.steppers[name] = McuStepper(
                mcu, name, parse_pin(st.step_pin), parse_pin(st.dir_pin),
                parse_pin(st.enable_pin) if st.enable_pin else None)
        self.sender = StepSender(mcu, list(self.steppers.values()))
        # Every output that queues updates on the MCU (each holds one pool entry).
        self.outputs = [hw.output for hw in self.heater_hw.values()]
        if self.fan.output is not None:
            self.outputs.append(self.fan.output)
        # Each axis endstop stops the motors that move that axis (both on CoreXY X/Y).
        self.endstops: dict[str, McuEndstop] = {}
        for axis in ("x", "y", "z"):
            pin = getattr(settings.steppers, axis).endstop_pin
            if not pin:
                continue
            motors = ([self.steppers["x"], self.steppers["y"]]
                      if settings.printer.kinematics == "corexy" and axis in "xy"
                      else [self.steppers[axis]])
            self.endstops[axis] = McuEndstop(mcu, parse_pin(pin, can_pull=True), motors)

    def flush(self) -> None:
        """Send what waits for room on the MCU: steps, then held pin updates."""
        self.sender.flush()
        for out in self.outputs:
            out.flush()

    def restart_step_clocks(self) -> None:
        """After steppers were stopped by a trigger the firmware needs a new step-clock
        base before their next move; every stepper is idle here, so all restart at 0."""
        for stepper in self.steppers.values():
            self.mcu.send("reset_step_clock", oid=stepper.oid, clock=0)

    def heater_bank(self) -> HeaterBank:
        gains = {"extruder": EXTRUDER_CHECK_GAIN_TIME_S, "heater_bed": BED_CHECK_GAIN_TIME_S}
        return HeaterBank(Heater(name, getattr(self.settings.heaters, name), hw,
                                 check_gain_time_s=gains[name])
                          for name, hw in self.heater_hw.items())

    def executor(self, start_position: tuple[float, float, float, float]):
        # Imported here: the compiled kernels load after the cache directory is chosen.
        from printhost.control.executor import StepFollowingExecutor
        mcu = self.mcu
        return StepFollowingExecutor(
            self.clock, self.settings, lead_time_s=motion_lead_s(mcu),
            start_position=start_position, clock_freq=mcu.clock_freq,
            oids={name: st.oid for name, st in self.steppers.items()},
            on_commands=self.sender.queue, lead_source=lambda: motion_lead_s(mcu))
