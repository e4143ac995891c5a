"""The simulated printer's heaters: `Heater`s on thermal models instead of pins.

The control code (`printhost.control.heaters`) is the same as on a printer; only the
`HeaterHardware` behind it is a `ThermalModel` advanced by a simulated clock. Used by
the in-process simulated printer, PID tuning on the model (`printhost pid-tune`),
`printhost batch` (which has nothing to heat) and tests.
"""

from __future__ import annotations

import math

from printhost.config import Settings
from printhost.control.heaters import (BED_CHECK_GAIN_TIME_S, EXTRUDER_CHECK_GAIN_TIME_S,
                                       Heater, HeaterBank)
from printhost.sim.thermal import ThermalModel


class SimulatedHeaterHardware:
    """Heater hardware backed by a `ThermalModel` that follows a simulated clock.

    The model is advanced lazily: whenever the temperature is read or the duty
    changes, it first catches up on the simulated time that passed since the last
    advance, using the duty and fan that were in force during that time. So the
    result does not depend on how often anyone looks, only on when the inputs changed.
    """

    def __init__(self, model: ThermalModel, clock) -> None:
        self.model = model
        self.clock = clock
        self._fan = 0.0
        self._duty = 0.0
        self._last_s = clock.now()

    @property
    def duty(self) -> float:
        return self._duty

    @property
    def fan(self) -> float:
        """Part-fan speed 0..1 blowing on this body."""
        return self._fan

    @fan.setter
    def fan(self, speed: float) -> None:
        # Catch up first so the new speed only affects time after this moment.
        if not (math.isfinite(speed) and 0.0 <= speed <= 1.0):
            raise ValueError(f"fan speed must be between 0 and 1, got {speed!r}")
        self.advance()
        self._fan = float(speed)

    def advance(self) -> None:
        """Bring the model up to the clock's current time."""
        now_s = self.clock.now()
        dt_s = now_s - self._last_s
        if dt_s > 0.0:
            self.model.step(dt_s, self._duty, self._fan)
        # A clock that steps backwards is ignored rather than integrated backwards.
        self._last_s = max(self._last_s, now_s)

    def read_temp_c(self) -> float:
        self.advance()
        return self.model.sensor_c

    def set_duty(self, duty: float) -> None:
        if not (math.isfinite(duty) and 0.0 <= duty <= 1.0):
            raise ValueError(f"duty must be between 0 and 1, got {duty!r}")
        self.advance()
        self._duty = float(duty)


def build_simulated_heaters(settings: Settings, clock
                            ) -> tuple[HeaterBank, dict[str, SimulatedHeaterHardware]]:
    """The simulated printer's extruder and bed, each on its own thermal model.

    Returns the bank and the hardware by heater name, so the simulator can drive the
    part fan and tests can inject faults into the models.
    """
    sim = settings.simulation
    specs = (
        ("extruder", sim.hotend, settings.heaters.extruder, EXTRUDER_CHECK_GAIN_TIME_S),
        ("heater_bed", sim.bed, settings.heaters.heater_bed, BED_CHECK_GAIN_TIME_S),
    )
    bank = HeaterBank()
    hardware: dict[str, SimulatedHeaterHardware] = {}
    for name, body, heater_settings, gain_time_s in specs:
        hw = SimulatedHeaterHardware(ThermalModel(body, sim.ambient_c), clock)
        hardware[name] = hw
        bank.add(Heater(name, heater_settings, hw, check_gain_time_s=gain_time_s))
    return bank, hardware
