"""A small I2C bus interface: raw transfers with bounded retries.

Sensor drivers speak in I2C messages, not in SMBus "register" calls: the AHT10 has no
registers at all (a read is a bare read, with no command byte written first), and an
SMBus word read would hand the ADS1115's big-endian registers back byte-swapped. So
the interface offers exactly three transfers — write, read, and write-then-read with a
repeated start — and a driver writes the bytes its datasheet asks for.

Retries live here, once, for every driver: an I2C bus next to stepper wiring sees the
odd corrupted transfer, and one failed transfer should not stop a print. The number of
attempts is bounded (`retries` + 1), so a device that is gone or a bus that is stuck
turns into an `I2CError` within a few milliseconds instead of a hang, and the error
says which of the two it probably is.

`SMBusI2C` is the implementation on a Pi (Linux i2c-dev through smbus2);
`printhost.sim.i2c.SimI2CBus` is the simulated one. Both inherit the retry logic.
"""

from __future__ import annotations

import abc
import errno
import threading
import time
from collections.abc import Callable
from typing import Any

from printhost.sensors import SensorError

MAX_TRANSFER_BYTES = 255

# What Linux I2C adapters report, per Documentation/i2c/fault-codes.rst.
_NO_ACK = {errno.ENXIO, errno.EREMOTEIO, errno.ENODEV}
_BUS_STUCK = {errno.ETIMEDOUT, errno.EAGAIN, errno.EBUSY}


class I2CError(SensorError):
    """An I2C transfer failed on every attempt. `errno` is the last OS error code."""

    def __init__(self, message: str, *, address: int, error_code: int | None,
                 attempts: int) -> None:
        super().__init__(message)
        self.address = address
        self.errno = error_code
        self.attempts = attempts


def describe_errno(code: int | None) -> str:
    """A cause a person can act on, for an errno from an I2C transfer."""
    if code in _NO_ACK:
        return "no acknowledge (device not connected, unpowered, or wrong address)"
    if code in _BUS_STUCK:
        return "bus timeout (SDA or SCL held low; power-cycle the devices on the bus)"
    if code is None:
        return "I/O error"
    return f"I/O error ({errno.errorcode.get(code, code)})"


class I2CBus(abc.ABC):
    """Raw I2C transfers to 7-bit addresses, each retried up to `retries` times.

    Transfers on one bus are serialised by a lock, so drivers polled from different
    threads cannot interleave the halves of a write-then-read.
    """

    name = "i2c"

    def __init__(self, *, retries: int = 2, retry_delay_s: float = 0.005,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not 0 <= retries <= 10:
            raise ValueError(f"retries must be 0..10, got {retries!r}")
        if not 0.0 <= retry_delay_s <= 1.0:
            raise ValueError(f"retry_delay_s must be 0..1 s, got {retry_delay_s!r}")
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self.sleep = sleep
        self._lock = threading.Lock()

    def write(self, address: int, data: bytes | bytearray | list[int]) -> None:
        """One write message: START, address+W, the bytes, STOP."""
        payload = _as_bytes(data)
        if not payload:
            raise ValueError("nothing to write")
        self._run(address, payload, 0)

    def read(self, address: int, length: int) -> bytes:
        """One read message: START, address+R, `length` bytes, STOP."""
        _check_length(length)
        return self._run(address, b"", length)

    def write_read(self, address: int, data: bytes | bytearray | list[int], length: int) -> bytes:
        """A write then a read joined by a repeated start (no other master can cut in)."""
        payload = _as_bytes(data)
        if not payload:
            raise ValueError("nothing to write")
        _check_length(length)
        return self._run(address, payload, length)

    def close(self) -> None:
        """Release the bus. Further transfers fail."""

    @abc.abstractmethod
    def _transfer(self, address: int, write: bytes, read_length: int) -> bytes:
        """One attempt: write `write` (if any), then read `read_length` bytes (if any).

        Raises OSError for a failed transfer, like the kernel does.
        """

    def _run(self, address: int, write: bytes, read_length: int) -> bytes:
        if not (isinstance(address, int) and 0x03 <= address <= 0x77):
            raise ValueError(f"I2C address must be 0x03..0x77, got {address!r}")
        last: OSError | None = None
        attempts = self.retries + 1
        for attempt in range(attempts):
            if attempt:
                self.sleep(self.retry_delay_s)
            try:
                with self._lock:
                    data = self._transfer(address, write, read_length)
            except OSError as exc:
                last = exc
                continue
            if len(data) != read_length:
                raise I2CError(f"{self.name} 0x{address:02x}: short read, {len(data)} of "
                               f"{read_length} bytes", address=address, error_code=None,
                               attempts=attempt + 1)
            return bytes(data)
        code = last.errno if last is not None else None
        raise I2CError(f"{self.name} 0x{address:02x}: {describe_errno(code)} after {attempts} "
                       f"attempt{'s' if attempts != 1 else ''}", address=address, error_code=code,
                       attempts=attempts) from last


class SMBusI2C(I2CBus):
    """The Pi's I2C bus through Linux i2c-dev (/dev/i2c-N), using smbus2's i2c_rdwr.

    `bus` is the bus number (1 is the bus on the 40-pin header, pins 3 and 5) or an
    already open object with smbus2's `i2c_rdwr` and `close` methods.
    """

    def __init__(self, bus: int | Any = 1, *, retries: int = 2, retry_delay_s: float = 0.005,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(retries=retries, retry_delay_s=retry_delay_s, sleep=sleep)
        from smbus2 import SMBus, i2c_msg   # imported here so the simulator never needs it

        self._msg = i2c_msg
        if isinstance(bus, int):
            self.name = f"i2c-{bus}"
            try:
                self._bus = SMBus(bus)
            except OSError as exc:
                raise I2CError(f"cannot open /dev/i2c-{bus}: {exc.strerror} (is I2C enabled? "
                               "raspi-config > Interface Options > I2C)",
                               address=0, error_code=exc.errno, attempts=1) from exc
        else:
            self._bus = bus
        self._closed = False

    def _transfer(self, address: int, write: bytes, read_length: int) -> bytes:
        if self._closed:
            raise I2CError(f"{self.name}: bus is closed", address=address, error_code=None,
                           attempts=0)
        messages = []
        if write:
            messages.append(self._msg.write(address, write))
        reply = None
        if read_length:
            reply = self._msg.read(address, read_length)
            messages.append(reply)
        self._bus.i2c_rdwr(*messages)
        return bytes(reply) if reply is not None else b""

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._bus.close()


def _as_bytes(data: bytes | bytearray | list[int]) -> bytes:
    try:
        return bytes(data)
    except (TypeError, ValueError):
        raise ValueError(f"I2C data must be bytes 0..255, got {data!r}") from None


def _check_length(length: int) -> None:
    if not (isinstance(length, int) and 1 <= length <= MAX_TRANSFER_BYTES):
        raise ValueError(f"read length must be 1..{MAX_TRANSFER_BYTES}, got {length!r}")
