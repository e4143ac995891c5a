"""Temperature sensors: resistance and ADC math, and drivers for I2C sensors on the Pi.

`thermistor` and `adc` are pure math with no hardware imports, so the control process
and the simulated MCU can use them on any machine. `i2c`, `ads1115` and `aht10` talk
to devices on the Pi's I2C bus; the simulated bus in `printhost.sim.i2c` stands in for
the hardware in tests.

The submodules are not imported here: the control process needs the thermistor math
but must not pay for (or depend on) the I2C stack when no I2C sensor is configured.
"""

from __future__ import annotations


class SensorError(Exception):
    """A sensor could not deliver a reading that can be trusted.

    Raised instead of returning a made-up value: a heater loop that received a stale or
    corrupt temperature would heat on wrong information, so every driver either
    returns a checked reading or raises this, and the caller treats it as a fault.
    """
