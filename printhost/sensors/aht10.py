"""Driver for the Aosong AHT10 and AHT20 temperature/humidity sensors (I2C).

Typical use is the enclosure: chamber temperature and humidity for the status page, or
a check that the filament dryer works. The two chips share the protocol apart from two
details, which `variant` selects:

* the calibration ("initialise") command is 0xE1 0x08 0x00 on the AHT10 and
  0xBE 0x08 0x00 on the AHT20 (AHT21/AHT25 follow the AHT20);
* the AHT20 appends a CRC-8 byte to each measurement frame, which is checked.

The chips have no registers. A measurement is: write 0xAC 0x33 0x00, wait at least
80 ms, read the frame. The frame's first byte is the status (bit 7 busy, bit 3
calibrated); while busy the data bytes are stale, so the driver keeps reading, a
bounded number of times, until the busy bit clears. Humidity and temperature are 20
bits each, packed across bytes 1..5 with byte 3 shared between them.

A frame that fails its CRC is read again (the data in the chip is unchanged, so a
clean re-read is as good as a new measurement); one that keeps failing, a chip that
stays busy or that forgot its calibration raises `SensorError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from printhost.sensors import SensorError
from printhost.sensors.i2c import I2CBus, I2CError

CMD_MEASURE = bytes((0xAC, 0x33, 0x00))
CMD_SOFT_RESET = bytes((0xBA,))
CMD_INIT = {"aht10": bytes((0xE1, 0x08, 0x00)), "aht20": bytes((0xBE, 0x08, 0x00))}
STATUS_BUSY = 0x80
STATUS_CALIBRATED = 0x08
VARIANTS = tuple(CMD_INIT)

RESET_S = 0.020       # a soft reset completes within 20 ms
INIT_S = 0.010        # the calibration command needs 10 ms
MEASURE_S = 0.080     # a measurement takes about 75-80 ms
POLL_S = 0.010        # then the status is polled this often ...
MAX_POLLS = 10        # ... at most this many times
CRC_READS = 3         # reads of one frame before a CRC mismatch is an error

_FULL = float(1 << 20)


@dataclass(frozen=True)
class AHT10Settings:
    """One AHT10 or AHT20 on the Pi's I2C bus."""
    variant: str = "aht10"   # "aht10", or "aht20" for AHT20/AHT21/AHT25
    address: int = 0x38      # AHT10: 0x38, or 0x39 with ADDR high; AHT20: 0x38 only
    check_crc: bool = True   # AHT20: verify the CRC byte of every frame

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        allowed = (0x38, 0x39) if self.variant == "aht10" else (0x38,)
        if self.address not in allowed:
            raise ValueError(f"an {self.variant.upper()} answers at "
                             f"{' or '.join(f'0x{a:02x}' for a in allowed)}, got {self.address!r}")


@dataclass(frozen=True)
class AHTReading:
    temp_c: float
    humidity_pct: float


def crc8(data: bytes) -> int:
    """The AHT20's CRC-8: polynomial x^8 + x^5 + x^4 + 1 (0x31), initial value 0xFF."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def decode(frame: bytes) -> AHTReading:
    """Temperature and humidity from the six bytes status, data1..data5."""
    if len(frame) < 6:
        raise ValueError(f"an AHT frame has 6 bytes, got {len(frame)}")
    humidity_raw = (frame[1] << 12) | (frame[2] << 4) | (frame[3] >> 4)
    temp_raw = ((frame[3] & 0x0F) << 16) | (frame[4] << 8) | frame[5]
    return AHTReading(temp_c=temp_raw * 200.0 / _FULL - 50.0,
                      humidity_pct=humidity_raw * 100.0 / _FULL)


class AHT10:
    """Measurements from one AHT10/AHT20.

    The first `measure` initialises the chip (soft reset, then the calibration command
    if the status does not show it calibrated); after an I2C failure the next call
    initialises again, because the failure may have been the chip losing power.
    """

    def __init__(self, bus: I2CBus, settings: AHT10Settings | None = None, *,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.bus = bus
        self.settings = settings or AHT10Settings()
        self._sleep = sleep or bus.sleep
        self._crc = self.settings.variant == "aht20" and self.settings.check_crc
        self._ready = False

    @property
    def name(self) -> str:
        return f"{self.settings.variant.upper()} 0x{self.settings.address:02x}"

    def initialize(self) -> None:
        """Reset the chip and make sure it is calibrated."""
        self._ready = False
        address = self.settings.address
        self.bus.write(address, CMD_SOFT_RESET)
        self._sleep(RESET_S)
        if not self._idle_status() & STATUS_CALIBRATED:
            self.bus.write(address, CMD_INIT[self.settings.variant])
            self._sleep(INIT_S)
            if not self._idle_status() & STATUS_CALIBRATED:
                raise SensorError(f"{self.name}: not calibrated after the calibration command "
                                  "(is the variant right?)")
        self._ready = True

    def measure(self) -> AHTReading:
        """One measurement; raises SensorError (or its subclass I2CError) on failure."""
        if not self._ready:
            self.initialize()
        try:
            return decode(self._measure_frame())
        except I2CError:
            self._ready = False
            raise

    def _idle_status(self) -> int:
        for poll in range(MAX_POLLS):
            if poll:
                self._sleep(POLL_S)
            status = self.bus.read(self.settings.address, 1)[0]
            if not status & STATUS_BUSY:
                return status
        raise SensorError(f"{self.name}: still busy after {MAX_POLLS} status polls")

    def _measure_frame(self) -> bytes:
        address = self.settings.address
        length = 7 if self._crc else 6
        self.bus.write(address, CMD_MEASURE)
        self._sleep(MEASURE_S)
        frame = b""
        for poll in range(MAX_POLLS):
            if poll:
                self._sleep(POLL_S)
            frame = self.bus.read(address, length)
            if not frame[0] & STATUS_BUSY:
                break
        else:
            waited_ms = (MEASURE_S + (MAX_POLLS - 1) * POLL_S) * 1000.0
            raise SensorError(f"{self.name}: measurement still busy after {waited_ms:.0f} ms")
        if not frame[0] & STATUS_CALIBRATED:
            self._ready = False
            raise SensorError(f"{self.name}: lost its calibration (reset or power loss)")
        if self._crc:
            for attempt in range(1, CRC_READS + 1):
                if crc8(frame[:6]) == frame[6]:
                    break
                if attempt == CRC_READS:
                    raise SensorError(f"{self.name}: CRC mismatch on {CRC_READS} reads "
                                      "(noise on SDA/SCL, or a long cable)")
                frame = self.bus.read(address, length)
        return frame[:6]
