"""Digital and PWM outputs on the MCU: heaters, fans, stepper enables.

Heater pins carry a `max_duration`: the firmware itself turns the pin back to its
default (off) and shuts down when the host has not renewed a non-default value within
that time. So a host that dies, freezes or loses the link cannot leave a heater on.
"""

from __future__ import annotations

from printhost.mcu.mcu import Mcu
from printhost.mcu.pins import PinSpec

# Klipper's limit for heater pins: the host must renew the value at least this often.
HEATER_MAX_DURATION_S = 3.0


class McuPwmOutput:
    """A software-PWM pin (`config_digital_out` + `set_digital_out_pwm_cycle`).

    Values are duty cycles 0..1 at a print time; an inverted pin (`!`) is driven with the
    complement, so callers always think in "on" terms. Off is the default and shutdown
    value.
    """

    def __init__(self, mcu: Mcu, pin: PinSpec, cycle_time_s: float,
                 max_duration_s: float = 0.0) -> None:
        self.mcu = mcu
        self.pin = pin
        self.cycle_time_s = cycle_time_s
        self.max_duration_s = max_duration_s
        self.oid = mcu.create_oid()
        self.cycle_ticks = 0
        self.value = 0.0
        self.last_time = 0.0
        mcu.register_config(self._build_config)

    def _build_config(self) -> None:
        mcu = self.mcu
        mcu.check_format("config_digital_out oid=%c pin=%u value=%c default_value=%c "
                         "max_duration=%u")
        mcu.check_format("set_digital_out_pwm_cycle oid=%c cycle_ticks=%u")
        mcu.check_format("queue_digital_out oid=%c clock=%u on_ticks=%u")
        off = int(self.pin.invert)
        self.cycle_ticks = max(1, int(self.cycle_time_s * mcu.clock_freq))
        mcu.add_config_cmd("config_digital_out", oid=self.oid, pin=self.pin.name, value=off,
                           default_value=off,
                           max_duration=int(self.max_duration_s * mcu.clock_freq))
        mcu.add_config_cmd("set_digital_out_pwm_cycle", oid=self.oid,
                           cycle_ticks=self.cycle_ticks)

    def set(self, print_time: float, duty: float) -> float:
        """Schedule `duty` at `print_time` (moved later if that is too soon or before the
        previous update); returns the print time it was scheduled for."""
        duty = min(1.0, max(0.0, float(duty)))
        when = max(print_time, self.mcu.earliest_schedule_time(), self.last_time + 1e-6)
        on_ticks = int(round(duty * self.cycle_ticks))
        if self.pin.invert:
            on_ticks = self.cycle_ticks - on_ticks
        self.mcu.send("queue_digital_out", oid=self.oid,
                      clock=self.mcu.clock_of(when) & 0xFFFFFFFF, on_ticks=on_ticks)
        self.value = duty
        self.last_time = when
        return when
