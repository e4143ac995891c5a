"""A lumped thermal model of one heated body (hotend block or bed) and its thermistor.

The simulator needs temperatures that behave like a printer's: heating slows as the
block approaches the point where losses equal heater power, the part fan pulls the
temperature down, and the thermistor reports the block late. Two first-order nodes
capture all three:

    C * dT_block/dt  = P * duty - (loss + fan_loss * fan) * (T_block - T_ambient)
    lag * dT_sensor/dt = T_block - T_sensor

With duty and fan held constant over a step, both equations have a closed-form
solution, so `step` is exact for any step length. That matters because the simulated
clock can run many times faster than the wall clock: a control loop that wakes late
may hand over ten simulated seconds at once, and an explicit Euler step that long
would overshoot or oscillate.
"""

from __future__ import annotations

import math

from printhost.config import ThermalBodySettings


def _decay_difference(k_a: float, k_b: float, t_s: float) -> float:
    """(exp(-k_a*t) - exp(-k_b*t)) / (k_b - k_a), evaluated without cancellation.

    This factor couples the block's exponential into the sensor's. When the two rates
    are (nearly) equal the plain quotient divides two vanishing numbers; rewriting it
    with expm1 keeps full precision and tends smoothly to t*exp(-k*t).
    """
    gap = k_b - k_a
    x = gap * t_s
    if abs(x) < 1e-12:
        return t_s * math.exp(-k_a * t_s)
    return -math.exp(-k_a * t_s) * math.expm1(-x) / gap


class ThermalModel:
    """Block and sensor temperatures of one heated body, advanced in exact steps.

    Two fault hooks let tests reproduce failures the control code must catch:
    `sensor_override_c` makes the thermistor read a fixed value (an open or shorted
    thermistor reads absurdly cold or hot), and `heater_broken` makes the heater
    produce no heat whatever duty it is given (a snapped wire or a dead MOSFET).
    """

    def __init__(self, body: ThermalBodySettings, ambient_c: float) -> None:
        if not math.isfinite(ambient_c):
            raise ValueError(f"ambient temperature must be finite, got {ambient_c!r}")
        self.body = body
        self.ambient_c = float(ambient_c)
        self._block_c = self.ambient_c
        self._sensor_c = self.ambient_c
        self.sensor_override_c: float | None = None
        self.heater_broken = False

    @property
    def block_c(self) -> float:
        """True temperature of the heated block."""
        return self._block_c

    @property
    def sensor_c(self) -> float:
        """What the thermistor reports: the lagged block temperature, unless overridden."""
        if self.sensor_override_c is not None:
            return float(self.sensor_override_c)
        return self._sensor_c

    def steady_state_c(self, duty: float, fan: float = 0.0) -> float:
        """Temperature the block settles at if `duty` and `fan` are held forever."""
        power_w, loss_w_k = self._inputs(duty, fan)
        return self.ambient_c + power_w / loss_w_k

    def step(self, dt_s: float, duty: float, fan: float = 0.0) -> None:
        """Advance `dt_s` seconds with `duty` and `fan` (both 0..1) held constant.

        Exact for any `dt_s`, so one long step and many short ones with the same
        inputs land on the same temperatures.
        """
        if not math.isfinite(dt_s) or dt_s < 0.0:
            raise ValueError(f"time step must be a finite, non-negative number, got {dt_s!r}")
        if dt_s == 0.0:
            return
        power_w, loss_w_k = self._inputs(duty, fan)
        body = self.body
        k_block = loss_w_k / body.heat_capacity_j_k
        final_c = self.ambient_c + power_w / loss_w_k
        block_gap_c = self._block_c - final_c
        block_decay = math.exp(-k_block * dt_s)
        new_block_c = final_c + block_gap_c * block_decay

        if body.sensor_lag_s <= 0.0:
            new_sensor_c = new_block_c
        else:
            k_sensor = 1.0 / body.sensor_lag_s
            # The sensor relaxes towards the moving block temperature: its own decay
            # plus the part it inherits from the block's decay.
            new_sensor_c = (final_c
                            + (self._sensor_c - final_c) * math.exp(-k_sensor * dt_s)
                            + k_sensor * block_gap_c
                            * _decay_difference(k_block, k_sensor, dt_s))
        self._block_c = new_block_c
        self._sensor_c = new_sensor_c

    def _inputs(self, duty: float, fan: float) -> tuple[float, float]:
        """Heater power in W and total loss in W/K for the given duty and fan."""
        for label, value in (("duty", duty), ("fan", fan)):
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{label} must be between 0 and 1, got {value!r}")
        body = self.body
        power_w = 0.0 if self.heater_broken else body.heater_power_w * duty
        loss_w_k = body.loss_w_k + body.fan_loss_w_k * fan
        return power_w, loss_w_k
