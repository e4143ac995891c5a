"""Driver for the TI ADS1115, a 16-bit, 4-input I2C ADC.

It gives the Pi analogue inputs, e.g. for a chamber thermistor in a pull-up divider
(`read_fraction` feeds `AdcTemperatureSensor.temp_c`). Every reading is a single-shot
conversion: the driver writes the whole config register (input, range, rate, start
bit), waits one conversion period, polls the OS bit until the device reports that the
conversion is done, and only then reads the result. Writing the whole register every
time means a device that reset itself (a brown-out) is reconfigured on the next read
instead of silently measuring with its power-on defaults; reading the config back and
comparing it catches a device that did not take the write.

Registers are 16 bits, most significant byte first, selected by a pointer byte: write
[pointer, msb, lsb] to set one, write [pointer] and read two bytes to read one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from printhost.sensors import SensorError
from printhost.sensors.i2c import I2CBus

REG_CONVERSION = 0x00
REG_CONFIG = 0x01
REG_LO_THRESH = 0x02
REG_HI_THRESH = 0x03

CONFIG_OS = 0x8000            # write 1: start a conversion; read 1: no conversion running
CONFIG_MODE_SINGLE = 0x0100   # single-shot: convert once, then power down
CONFIG_COMP_DISABLE = 0x0003  # COMP_QUE = 11: comparator off, ALERT/RDY high-impedance
MUX_SHIFT, PGA_SHIFT, DR_SHIFT = 12, 9, 5

# PGA code -> full-scale range in volts (codes 110 and 111 are both 0.256 V).
FULL_SCALES_V = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256)
# DR code -> samples per second.
DATA_RATES_SPS = (8, 16, 32, 64, 128, 250, 475, 860)
# Differential pairs the multiplexer offers (MUX codes 000..011).
DIFFERENTIAL_MUX = {(0, 1): 0b000, (0, 3): 0b001, (1, 3): 0b010, (2, 3): 0b011}
ADDRESSES = (0x48, 0x49, 0x4A, 0x4B)   # ADDR pin to GND, VDD, SDA, SCL

# The datasheet allows the internal oscillator 10 % error; the first OS poll comes
# after this share of a nominal conversion period, the rest at a quarter period.
_FIRST_WAIT = 1.1
_MAX_POLLS = 10

Channel = int | tuple[int, int]


@dataclass(frozen=True)
class ADS1115Settings:
    """One ADS1115 on the Pi's I2C bus."""
    address: int = 0x48          # 0x48..0x4B, set by the ADDR pin
    full_scale_v: float = 4.096  # PGA range; read_fraction needs it to cover reference_v
    data_rate_sps: int = 128     # conversions per second; slower is quieter
    reference_v: float = 3.3     # voltage at the top of the pull-up divider
    reference_channel: int = -1  # 0..3: measure the divider supply there instead (ratiometric)

    def __post_init__(self) -> None:
        if self.address not in ADDRESSES:
            raise ValueError(f"ADS1115 address must be one of "
                             f"{', '.join(f'0x{a:02x}' for a in ADDRESSES)}, got {self.address!r}")
        if self.full_scale_v not in FULL_SCALES_V:
            raise ValueError(f"full_scale_v must be one of {FULL_SCALES_V}, "
                             f"got {self.full_scale_v!r}")
        if self.data_rate_sps not in DATA_RATES_SPS:
            raise ValueError(f"data_rate_sps must be one of {DATA_RATES_SPS}, "
                             f"got {self.data_rate_sps!r}")
        if not -1 <= self.reference_channel <= 3:
            raise ValueError(f"reference_channel must be -1 (none) or 0..3, "
                             f"got {self.reference_channel!r}")
        if not (math.isfinite(self.reference_v) and 0.0 < self.reference_v <= 5.5):
            raise ValueError(f"reference_v must be 0..5.5 V, got {self.reference_v!r}")


class ADS1115:
    """Single-shot readings from an ADS1115."""

    def __init__(self, bus: I2CBus, settings: ADS1115Settings | None = None, *,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.bus = bus
        self.settings = settings or ADS1115Settings()
        self._sleep = sleep or bus.sleep
        self._pga = FULL_SCALES_V.index(self.settings.full_scale_v)
        self._dr = DATA_RATES_SPS.index(self.settings.data_rate_sps)
        self.conversion_s = 1.0 / self.settings.data_rate_sps

    def config_word(self, channel: Channel) -> int:
        """The config register value that starts one conversion of `channel`."""
        return (CONFIG_OS | _mux(channel) << MUX_SHIFT | self._pga << PGA_SHIFT
                | CONFIG_MODE_SINGLE | self._dr << DR_SHIFT | CONFIG_COMP_DISABLE)

    def read_raw(self, channel: Channel) -> int:
        """One conversion as a signed code, -32768..32767 (32767 is +full scale).

        `channel` is 0..3 for an input against GND, or a pair such as (0, 1) for the
        difference AIN0 - AIN1.
        """
        address = self.settings.address
        config = self.config_word(channel)
        self.bus.write(address, bytes((REG_CONFIG, config >> 8, config & 0xFF)))
        self._sleep(self.conversion_s * _FIRST_WAIT)
        for poll in range(_MAX_POLLS):
            if poll:
                self._sleep(self.conversion_s / 4.0)
            status = int.from_bytes(self.bus.write_read(address, (REG_CONFIG,), 2), "big")
            if (status & ~CONFIG_OS) != (config & ~CONFIG_OS):
                raise SensorError(f"ADS1115 0x{address:02x}: config reads back as 0x{status:04x}, "
                                  f"wrote 0x{config:04x} (device reset, or not an ADS1115?)")
            if status & CONFIG_OS:
                break
        else:
            waited_ms = self.conversion_s * (_FIRST_WAIT + (_MAX_POLLS - 1) / 4.0) * 1000.0
            raise SensorError(f"ADS1115 0x{address:02x}: conversion not finished after "
                              f"{waited_ms:.0f} ms")
        data = self.bus.write_read(address, (REG_CONVERSION,), 2)
        return int.from_bytes(data, "big", signed=True)

    def read_voltage(self, channel: Channel) -> float:
        """One conversion in volts (a clipped reading shows as +/- full scale)."""
        return self.read_raw(channel) * self.settings.full_scale_v / 32768.0

    def read_fraction(self, channel: int) -> float:
        """A divider reading as a fraction of its supply, for `AdcTemperatureSensor`.

        The supply is `reference_v`, or measured on `reference_channel` just before,
        which cancels drift in the 3.3 V rail. A reading clipped at the top of the range
        is reported as 1.0 (open sensor) and one clipped at the bottom as 0.0 (short):
        a clipped value is not a measurement and must not pass as a temperature.
        """
        ref_channel = self.settings.reference_channel
        if not isinstance(channel, int) or not 0 <= channel <= 3:
            raise ValueError(f"a divider is read on input 0..3, got {channel!r}")
        if channel == ref_channel:
            raise ValueError(f"input {channel} is the reference channel")
        if ref_channel < 0 and self.settings.reference_v > self.settings.full_scale_v:
            # A cold (high-resistance) sensor would clip at full scale and read as open.
            raise ValueError(f"full_scale_v {self.settings.full_scale_v} V cannot measure a "
                             f"divider up to reference_v {self.settings.reference_v} V")
        if ref_channel >= 0:
            ref_raw = self.read_raw(ref_channel)
            if not 0 < ref_raw < 32767:
                raise SensorError(f"ADS1115 0x{self.settings.address:02x}: reference input "
                                  f"{ref_channel} reads {ref_raw} (unconnected or out of range)")
            reference_v = ref_raw * self.settings.full_scale_v / 32768.0
        else:
            reference_v = self.settings.reference_v
        raw = self.read_raw(channel)
        if raw >= 32767:
            return 1.0
        if raw <= -32768:
            return 0.0
        return raw * self.settings.full_scale_v / 32768.0 / reference_v


def _mux(channel: Channel) -> int:
    if isinstance(channel, tuple):
        try:
            return DIFFERENTIAL_MUX[channel]
        except KeyError:
            raise ValueError(f"the ADS1115 has no differential pair {channel!r} "
                             f"(pairs: {', '.join(map(str, DIFFERENTIAL_MUX))})") from None
    if isinstance(channel, int) and not isinstance(channel, bool) and 0 <= channel <= 3:
        return 0b100 | channel
    raise ValueError(f"channel must be 0..3 or a pair such as (0, 1), got {channel!r}")
