"""ADC reading <-> temperature for a resistive sensor behind a pull-up resistor.

The usual printer circuit is a divider: a pull-up resistor from the ADC reference to
the ADC pin, and the sensor (optionally with a resistor in series, `inline_ohm`) from
the pin to ground. The ADC then reads

    fraction = R_total / (R_pullup + R_total),   R_total = R_sensor + R_inline

as a fraction of its full scale. This is the quantity Klipper's MCU reports and the
same formula Klipper's thermistor code uses, so `pullup_resistor` and
`inline_resistor` values from a Klipper config mean the same here (default pull-up
4700 ohm). The host converts readings to temperatures with `temp_c`; the simulated MCU
turns its model temperature into readings with `fraction`; and `fraction_range` gives
the band the MCU's own range check must enforce.

A divider's failure modes land on the rails: an open sensor lets the pull-up pull the
pin to full scale (fraction 1), a short pulls it to 0. Those map to infinite
temperatures rather than clamped plausible ones, so a min/max check cannot miss them.
"""

from __future__ import annotations

import math

from printhost.sensors.thermistor import ResistiveSensor


class AdcTemperatureSensor:
    """A `Thermistor` or `PT1000` read through a pull-up divider."""

    def __init__(self, sensor: ResistiveSensor, pullup_ohm: float = 4700.0,
                 inline_ohm: float = 0.0) -> None:
        if not (math.isfinite(pullup_ohm) and pullup_ohm > 0.0):
            raise ValueError(f"pull-up resistance must be a positive number, got {pullup_ohm!r}")
        if not (math.isfinite(inline_ohm) and inline_ohm >= 0.0):
            raise ValueError(f"inline resistance must be a number >= 0, got {inline_ohm!r}")
        self.sensor = sensor
        self.pullup_ohm = float(pullup_ohm)
        self.inline_ohm = float(inline_ohm)

    def resistance_ohm(self, fraction: float) -> float:
        """The sensor's resistance for an ADC fraction: inf at or above 1, 0 at or below
        0 or below the inline resistor alone (both impossible for an intact circuit)."""
        f = float(fraction)
        if math.isnan(f):
            return math.nan
        if f >= 1.0:
            return math.inf
        if f <= 0.0:
            return 0.0
        return max(0.0, self.pullup_ohm * f / (1.0 - f) - self.inline_ohm)

    def temp_c(self, fraction: float) -> float:
        """Temperature for an ADC reading given as a fraction of full scale (0..1).

        NaN in gives NaN out. At the rails the result is infinite (for an NTC: open
        is -inf, short is +inf; for a PT1000 the other way round). Callers must treat
        any non-finite result as a sensor fault: NaN fails every comparison, so a plain
        `min_temp <= t <= max_temp` test is the safe way round to write the check.
        """
        return self.sensor.temp_c(self.resistance_ohm(fraction))

    def fraction(self, temp_c: float) -> float:
        """The ADC fraction the divider produces at `temp_c` (the inverse of `temp_c`)."""
        r = self.sensor.resistance_ohm(temp_c)
        if math.isnan(r):
            return math.nan
        if math.isinf(r):
            return 1.0
        total = r + self.inline_ohm
        return total / (self.pullup_ohm + total)

    def fraction_range(self, min_temp_c: float, max_temp_c: float) -> tuple[float, float]:
        """(low, high) ADC fractions between which the temperature lies in
        [min_temp_c, max_temp_c]; for an NTC `low` belongs to `max_temp_c`.

        The MCU compares raw samples against this band on its own, so an out-of-range
        temperature shuts the heater down even if the host stops responding.
        """
        if not (math.isfinite(min_temp_c) and math.isfinite(max_temp_c)):
            raise ValueError("temperature limits must be finite")
        if not min_temp_c < max_temp_c:
            raise ValueError(f"min_temp_c ({min_temp_c}) must be below max_temp_c ({max_temp_c})")
        a, b = self.fraction(min_temp_c), self.fraction(max_temp_c)
        return (a, b) if a <= b else (b, a)
