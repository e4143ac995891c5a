"""A simulated I2C bus with an ADS1115 ADC and an AHT10/AHT20 sensor on it.

The devices follow their datasheets at the byte level — pointer and register layout,
byte order, config bits, conversion and measurement times, status bits, the AHT20's
CRC — so a driver that works here sends what the real chips expect. Anything a real
chip would silently misread (a write to a read-only register, a stray pointer bit, a
measurement triggered while one is running, a wrong command byte) raises
`ProtocolViolation` instead, which is not an `OSError`: the bus's retry logic does not
swallow it and a test fails at the exact transfer.

Time comes from a clock the bus reads at each transfer. With no clock given the bus
keeps its own virtual time that only moves when a driver sleeps (through `bus.sleep`),
so a test that waits for ten conversions runs instantly and deterministically.

Faults are injected at the bus (`inject_fault`): an I/O error, a NACK, or a stuck bus,
for a number of transfers or until cleared, the errnos being those Linux reports.
Every attempt is logged in `transfers`, so a test can check the exact bytes sent and
the number of retries.
"""

from __future__ import annotations

import errno
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from printhost.control.clock import ManualClock
from printhost.sensors.i2c import I2CBus

FAULT_ERRNOS = {"oserror": errno.EIO, "nack": errno.EREMOTEIO, "stuck": errno.ETIMEDOUT}
# A held-low SDA or SCL is reported only when the controller's timeout runs out; each
# attempt on a stuck bus takes this long before it fails (the Pi's controller reports
# a clock-stretch timeout after about 35 ms; slower timeouts only make things later).
STUCK_TIMEOUT_S = 0.035


class ProtocolViolation(AssertionError):
    """A driver sent something the simulated chip's datasheet does not allow."""


@dataclass(frozen=True)
class Transfer:
    """One transfer attempt as seen on the bus."""
    time: float
    address: int
    write: bytes
    read_length: int
    reply: bytes | None      # None when the attempt failed
    error: int | None        # errno of a failed attempt
    violation: str | None = None   # the ProtocolViolation it raised, if any


@dataclass
class _Fault:
    kind: str
    address: int | None
    remaining: int | None


class SimI2CDevice:
    """A device on the simulated bus. Methods may raise OSError (e.g. a NACK)."""

    address: int = 0

    def write(self, data: bytes, now: float) -> None:
        raise ProtocolViolation(f"0x{self.address:02x} does not accept writes")

    def read(self, length: int, now: float) -> bytes:
        raise ProtocolViolation(f"0x{self.address:02x} does not accept reads")


Device = TypeVar("Device", bound=SimI2CDevice)


class SimI2CBus(I2CBus):
    """The simulated bus; the retry behaviour is the real one from `I2CBus`."""

    name = "sim-i2c"

    def __init__(self, clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], None] | None = None, *,
                 retries: int = 2, retry_delay_s: float = 0.005, log_size: int = 1000) -> None:
        if clock is None:
            virtual = ManualClock()
            clock, sleep = virtual.now, (sleep or virtual.advance)
        super().__init__(retries=retries, retry_delay_s=retry_delay_s, sleep=sleep or time.sleep)
        self.clock = clock
        self.devices: dict[int, SimI2CDevice] = {}
        self.transfers: deque[Transfer] = deque(maxlen=log_size)
        self._faults: list[_Fault] = []

    def attach(self, device: Device) -> Device:
        if device.address in self.devices:
            raise ValueError(f"address 0x{device.address:02x} is already in use")
        self.devices[device.address] = device
        return device

    def inject_fault(self, kind: str, *, address: int | None = None,
                     count: int | None = None) -> None:
        """Fail the next `count` transfers (all of them if None) with `kind`:
        "oserror" (EIO), "nack" (EREMOTEIO) or "stuck" (ETIMEDOUT, every address)."""
        if kind not in FAULT_ERRNOS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_ERRNOS)}, got {kind!r}")
        if kind == "stuck" and address is not None:
            raise ValueError("a stuck bus affects every address")
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ValueError("count must be at least 1")
        # The lock of the transfers: a driver may be polling in another thread.
        with self._lock:
            self._faults.append(_Fault(kind, address, count))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def transfer_log(self) -> list[Transfer]:
        """A copy of the logged attempts, safe while another thread is transferring."""
        with self._lock:
            return list(self.transfers)

    def _take_fault(self, address: int) -> int | None:
        for fault in self._faults:
            if fault.address is None or fault.address == address:
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                return FAULT_ERRNOS[fault.kind]
        return None

    def _transfer(self, address: int, write: bytes, read_length: int) -> bytes:
        now = self.clock()
        try:
            code = self._take_fault(address)
            if code == errno.ETIMEDOUT:
                self.sleep(STUCK_TIMEOUT_S)
            if code is not None:
                raise OSError(code, os.strerror(code))
            device = self.devices.get(address)
            if device is None:
                raise OSError(errno.EREMOTEIO, os.strerror(errno.EREMOTEIO))
            if write:
                device.write(write, now)
            reply = device.read(read_length, now) if read_length else b""
        except OSError as exc:
            self.transfers.append(Transfer(now, address, write, read_length, None, exc.errno))
            raise
        except ProtocolViolation as exc:
            self.transfers.append(Transfer(now, address, write, read_length, None, None, str(exc)))
            raise
        self.transfers.append(Transfer(now, address, write, read_length, reply, None))
        return reply


# --------------------------------------------------------------------------- ADS1115

_PGA_FULL_SCALE_V = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256, 0.256, 0.256)
_DATA_RATE_SPS = (8, 16, 32, 64, 128, 250, 475, 860)
_DIFF_PAIRS = ((0, 1), (0, 3), (1, 3), (2, 3))
ADS1115_POWER_ON_CONFIG = 0x8583


class SimADS1115(SimI2CDevice):
    """An ADS1115: four inputs (volts against GND, constant or a function of time).

    `stalled` makes conversions never finish (OS bit stays 0), for bounded-wait tests.
    `conversions` counts completed conversions.
    """

    def __init__(self, address: int = 0x48) -> None:
        if address not in (0x48, 0x49, 0x4A, 0x4B):
            raise ValueError(f"an ADS1115 answers at 0x48..0x4b, got 0x{address:02x}")
        self.address = address
        self.inputs: list[float | Callable[[float], float]] = [0.0, 0.0, 0.0, 0.0]
        self.stalled = False
        self.power_on_reset()

    def power_on_reset(self) -> None:
        """Registers back to their power-on values, as after a brown-out."""
        self.pointer = 0
        self.config = ADS1115_POWER_ON_CONFIG & 0x7FFF   # stored without the OS bit
        self.lo_thresh, self.hi_thresh = 0x8000, 0x7FFF
        self.conversion = 0
        self.conversions = 0
        self._done_at: float | None = None
        self._converting_config = 0
        self._next_continuous = 0.0

    def set_input(self, channel: int, volts: float | Callable[[float], float]) -> None:
        self.inputs[channel] = volts

    def input_v(self, channel: int, now: float) -> float:
        source = self.inputs[channel]
        return float(source(now)) if callable(source) else float(source)

    def _code(self, config: int, now: float) -> int:
        mux = (config >> 12) & 0x7
        if mux >= 4:
            volts = self.input_v(mux - 4, now)
        else:
            plus, minus = _DIFF_PAIRS[mux]
            volts = self.input_v(plus, now) - self.input_v(minus, now)
        full_scale = _PGA_FULL_SCALE_V[(config >> 9) & 0x7]
        return max(-32768, min(32767, round(volts / full_scale * 32768.0)))

    def _period(self, config: int) -> float:
        return 1.0 / _DATA_RATE_SPS[(config >> 5) & 0x7]

    def _single_shot(self) -> bool:
        return bool(self.config & 0x0100)

    def _update(self, now: float) -> None:
        if self.stalled:
            return
        if self._done_at is not None and now >= self._done_at:
            self.conversion = self._code(self._converting_config, self._done_at)
            self.conversions += 1
            self._done_at = None
        if not self._single_shot() and now >= self._next_continuous:
            self.conversion = self._code(self.config, now)
            self.conversions += 1
            self._next_continuous = now + self._period(self.config)

    def write(self, data: bytes, now: float) -> None:
        self._update(now)
        pointer = data[0]
        if pointer & 0xFC:
            raise ProtocolViolation(f"ADS1115 pointer byte 0x{pointer:02x}: bits 7:2 must be 0")
        if len(data) == 1:
            self.pointer = pointer
            return
        if len(data) != 3:
            raise ProtocolViolation(f"ADS1115 register write of {len(data) - 1} bytes; "
                                    "registers take exactly 2 (MSB first)")
        self.pointer = pointer
        value = (data[1] << 8) | data[2]
        if pointer == 0:
            raise ProtocolViolation("ADS1115 conversion register (0x00) is read-only")
        if pointer == 2:
            self.lo_thresh = value
        elif pointer == 3:
            self.hi_thresh = value
        else:
            start = bool(value & 0x8000)
            self.config = value & 0x7FFF
            if not self._single_shot():
                self._done_at = None
                self._next_continuous = now + self._period(self.config)
            elif start and self._done_at is None:
                # OS=1 starts a conversion only from power-down; mid-conversion it is ignored.
                self._converting_config = self.config
                self._done_at = now + self._period(self.config)

    def read(self, length: int, now: float) -> bytes:
        self._update(now)
        if length != 2:
            raise ProtocolViolation(f"ADS1115 read of {length} bytes; registers are 2 bytes")
        if self.pointer == 0:
            value = self.conversion & 0xFFFF
        elif self.pointer == 1:
            idle = self._single_shot() and self._done_at is None
            value = self.config | (0x8000 if idle else 0)
        elif self.pointer == 2:
            value = self.lo_thresh
        else:
            value = self.hi_thresh
        return value.to_bytes(2, "big")


# --------------------------------------------------------------------------- AHT10 / AHT20

_AHT_INIT = {"aht10": 0xE1, "aht20": 0xBE}


def _aht_crc(data: bytes) -> int:
    """CRC-8/0x31, init 0xFF, fed bit by bit (a different formulation from the driver's)."""
    reg = 0xFF
    for byte in data:
        for i in range(7, -1, -1):
            feedback = ((reg >> 7) ^ (byte >> i)) & 1
            reg = (reg << 1) & 0xFF
            if feedback:
                reg ^= 0x31
    return reg


class SimAHT10(SimI2CDevice):
    """An AHT10 or AHT20 measuring `temperature_c` and `humidity_pct`.

    An AHT10 must be sent its calibration command after power-on; an AHT20 comes up
    calibrated (`calibrated_at_power_on` overrides either). Like the real chip, an
    uncalibrated one still measures but reports status bit 3 clear, which is how a
    driver notices a chip that lost power. `power_on()` is such a brown-out. Fault
    hooks: `stuck_busy` keeps the busy bit set; `corrupt_crc` spoils the CRC of the
    next that many frames.
    """

    RESET_S = 0.020
    INIT_S = 0.010

    def __init__(self, variant: str = "aht10", address: int = 0x38, *,
                 calibrated_at_power_on: bool | None = None) -> None:
        if variant not in _AHT_INIT:
            raise ValueError(f"variant must be aht10 or aht20, got {variant!r}")
        self.variant = variant
        self.address = address
        self.calibrated_at_power_on = (variant == "aht20" if calibrated_at_power_on is None
                                       else calibrated_at_power_on)
        self.temperature_c = 25.0
        self.humidity_pct = 40.0
        # When set, called with the bus time as each measurement completes (a simulated
        # chamber whose temperature moves); otherwise `temperature_c` is used as is.
        self.temperature_source: Callable[[float], float] | None = None
        self.measure_s = 0.080
        self.stuck_busy = False
        self.corrupt_crc = 0
        self.measurements = 0
        self.power_on()

    def power_on(self) -> None:
        self.calibrated = self.calibrated_at_power_on
        self._data = bytes(5)
        self._busy_until = 0.0
        self._measuring = False
        self._reset_until = 0.0

    def _nack_if_resetting(self, now: float) -> None:
        if now < self._reset_until:
            raise OSError(errno.EREMOTEIO, "no acknowledge: sensor is resetting")

    def _update(self, now: float) -> None:
        if self._measuring and now >= self._busy_until and not self.stuck_busy:
            self._measuring = False
            self.measurements += 1
            if self.temperature_source is not None:
                self.temperature_c = float(self.temperature_source(now))
            h = max(0, min((1 << 20) - 1, round(self.humidity_pct / 100.0 * (1 << 20))))
            t = max(0, min((1 << 20) - 1, round((self.temperature_c + 50.0) / 200.0 * (1 << 20))))
            self._data = bytes((h >> 12, (h >> 4) & 0xFF, ((h & 0xF) << 4) | (t >> 16),
                                (t >> 8) & 0xFF, t & 0xFF))

    def _busy(self, now: float) -> bool:
        return self.stuck_busy or now < self._busy_until

    def write(self, data: bytes, now: float) -> None:
        self._nack_if_resetting(now)
        self._update(now)
        command, args = data[0], bytes(data[1:])
        if command == 0xBA:
            if args:
                raise ProtocolViolation("AHT soft reset 0xBA takes no arguments")
            self.power_on()
            self._reset_until = now + self.RESET_S
        elif command == 0xAC:
            if args != b"\x33\x00":
                raise ProtocolViolation(f"AHT measure command 0xAC needs 0x33 0x00, "
                                        f"got {args.hex()}")
            if self.stuck_busy:
                return                      # a hung chip ignores commands
            if now < self._busy_until:
                raise ProtocolViolation("AHT measurement triggered while the sensor is busy")
            self._measuring = True
            self._busy_until = now + self.measure_s
        elif command in _AHT_INIT.values():
            if command != _AHT_INIT[self.variant]:
                raise ProtocolViolation(f"the {self.variant.upper()}'s calibration command is "
                                        f"0x{_AHT_INIT[self.variant]:02X}, got 0x{command:02X}")
            if args != b"\x08\x00":
                raise ProtocolViolation(f"AHT calibration command needs 0x08 0x00, "
                                        f"got {args.hex()}")
            self.calibrated = True
            self._busy_until = now + self.INIT_S
        else:
            raise ProtocolViolation(f"unknown AHT command 0x{command:02X}")

    def read(self, length: int, now: float) -> bytes:
        self._nack_if_resetting(now)
        self._update(now)
        frame_length = 7 if self.variant == "aht20" else 6
        if length > frame_length:
            raise ProtocolViolation(f"{self.variant.upper()} frames are {frame_length} bytes, "
                                    f"read {length}")
        status = (0x80 if self._busy(now) else 0) | (0x08 if self.calibrated else 0)
        if self.variant == "aht20":
            status |= 0x10
        frame = bytes((status,)) + self._data
        if frame_length == 7:
            crc = _aht_crc(frame)
            if length == 7 and self.corrupt_crc > 0:
                self.corrupt_crc -= 1
                crc ^= 0x5A
            frame += bytes((crc,))
        return frame[:length]
