"""The chamber: an I2C temperature sensor polled in its own thread, and a heater relay.

I2C transfers block: an AHT10 measurement takes 80 ms, an ADS1115 conversion ~9 ms,
and a stuck bus holds each attempt until the controller's timeout. The control loop
runs every 20 ms (4 ms in a fast simulation) and must never wait for any of that, so
a `SensorPoller` thread does the transfers and the loop only looks at its latest
result.

What the loop looks at is the *age* of the last good reading, not the poller's last
error: that also covers a poller that hangs inside a transfer. A heater that depends on
the sensor (`GpioHeaterHardware`) raises `SensorError` from `read_temp_c` once no good
reading is younger than `FAILURE_LIMIT_S`, and the heater code turns that into a
latched shutdown (docs/safety.md row 8: after at most 1 s of failure the heater is off).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpiozero import DigitalOutputDevice

from printhost.config import ChamberSettings
from printhost.hw.gpio import check_pin
from printhost.sensors import SensorError
from printhost.sensors.adc import AdcTemperatureSensor
from printhost.sensors.ads1115 import ADS1115, ADS1115Settings
from printhost.sensors.aht10 import AHT10, AHT10Settings
from printhost.sensors.i2c import I2CBus
from printhost.sensors.thermistor import sensor as make_sensor

log = logging.getLogger(__name__)

# A heater trips when its sensor has had no good reading for this long. With the
# longest poll interval (0.25 s) a healthy sensor's reading is at most ~0.35 s old (an
# AHT10 measurement takes 80 ms), so this leaves room for a late poll on a busy Pi;
# a failure is acted on at most this long after the last good reading, inside the
# 1 s of docs/safety.md row 8 with room for the control loop and the status path.
FAILURE_LIMIT_S = 0.7


@dataclass(frozen=True)
class Reading:
    temp_c: float
    humidity_pct: float | None
    at_s: float            # time.monotonic() of the reading


def make_reader(settings: ChamberSettings, bus: I2CBus) -> tuple[str, Callable[[], Reading]]:
    """The chamber sensor named in the settings as a description and a read function."""
    kind = settings.sensor
    if kind in ("aht10", "aht20"):
        address = settings.i2c_address or 0x38
        chip = AHT10(bus, AHT10Settings(variant=kind, address=address))

        def read_aht() -> Reading:
            r = chip.measure()
            return Reading(r.temp_c, r.humidity_pct, time.monotonic())
        return f"{kind.upper()} at 0x{address:02x}", read_aht
    if kind == "ads1115":
        address = settings.i2c_address or 0x48
        adc = ADS1115(bus, ADS1115Settings(address=address, reference_v=settings.reference_v))
        divider = AdcTemperatureSensor(make_sensor(settings.sensor_type),
                                       settings.pullup_resistor)
        channel = settings.adc_channel

        def read_ads() -> Reading:
            temp_c = divider.temp_c(adc.read_fraction(channel))
            if not math.isfinite(temp_c):
                raise SensorError(f"ADS1115 0x{address:02x} input {channel}: thermistor "
                                  f"{'open' if temp_c < 0 else 'shorted'} (reading at the rail)")
            return Reading(temp_c, None, time.monotonic())
        return f"{settings.sensor_type} on ADS1115 0x{address:02x} input {channel}", read_ads
    raise ValueError(f"no chamber sensor configured (sensor = {kind!r})")


class SensorPoller:
    """Reads a sensor every `interval_s` in a daemon thread; keeps the latest result.

    Errors are counted and the last one kept for status and for the heater's fault
    message; the next poll simply tries again (the I2C layer already retried).
    """

    def __init__(self, name: str, read: Callable[[], Reading], interval_s: float) -> None:
        if not 0.01 <= interval_s <= 10.0:
            raise ValueError(f"poll interval must be 0.01..10 s, got {interval_s!r}")
        self.name = name
        self._read = read
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._latest: Reading | None = None
        self._last_error: str | None = None
        self._failing_since: float | None = None
        self.polls = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sensor-{name}", daemon=True)
        self._started_s = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        next_s = time.monotonic()
        while not self._stop.is_set():
            try:
                reading = self._read()
            except Exception as exc:      # any failure is a failed poll, never a crash
                self._failed(exc)
            else:
                with self._lock:
                    self._latest = reading
                    self.polls += 1
                    if self._failing_since is not None:
                        log.info("%s: readings are back", self.name)
                    self._failing_since = None
            next_s = max(next_s + self.interval_s, time.monotonic())
            self._stop.wait(max(0.0, next_s - time.monotonic()))

    def _failed(self, exc: Exception) -> None:
        text = str(exc) or type(exc).__name__
        with self._lock:
            self.polls += 1
            self.failures += 1
            first = self._failing_since is None
            if first:
                self._failing_since = time.monotonic()
            self._last_error = text
        if first:
            log.warning("%s: %s", self.name, text)

    def latest(self) -> Reading | None:
        with self._lock:
            return self._latest

    @property
    def last_error(self) -> str | None:
        with self._lock:
            return self._last_error

    def age_s(self, now_s: float | None = None) -> float:
        """Seconds since the last good reading (since start-up if there was none)."""
        now_s = time.monotonic() if now_s is None else now_s
        latest = self.latest()
        return now_s - (latest.at_s if latest is not None else self._started_s)

    def fresh(self, limit_s: float = FAILURE_LIMIT_S) -> Reading | None:
        """The latest reading if it is younger than `limit_s`, else None."""
        latest = self.latest()
        if latest is None or time.monotonic() - latest.at_s > limit_s:
            return None
        return latest

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            # A transfer in progress may hold the thread up to a bus timeout; it is a
            # daemon, so the process never waits for it beyond this.
            self._thread.join(timeout=1.0)


class GpioHeaterHardware:
    """A heater switched by a relay or SSR on a Pi GPIO, measured by a `SensorPoller`.

    Any duty above zero switches it on (the heater uses watermark control, which only
    asks for 0 or full power). Until the first reading arrives the heater reports no
    reading, as an MCU sensor does before its first report; after that a reading older
    than FAILURE_LIMIT_S is a sensor failure.
    """

    def __init__(self, pin: str, active_high: bool, poller: SensorPoller, *,
                 pin_factory: Any = None) -> None:
        check_pin(pin)
        self.pin = pin
        self.poller = poller
        self._out = DigitalOutputDevice(pin, active_high=active_high, initial_value=False,
                                        pin_factory=pin_factory)

    @property
    def has_reading(self) -> bool:
        if self.poller.latest() is not None:
            return True
        # Never read at all: once the limit has passed since start-up, let read_temp_c
        # report the failure instead of waiting for a first reading forever.
        return self.poller.age_s() > FAILURE_LIMIT_S

    def read_temp_c(self) -> float:
        reading = self.poller.fresh()
        if reading is None:
            raise SensorError(f"{self.poller.name}: no reading for "
                              f"{self.poller.age_s():.1f} s ({self.poller.last_error or 'no answer'})")
        return reading.temp_c

    def set_duty(self, duty: float) -> None:
        if self._out.closed:
            return
        on = duty > 0.0
        if bool(self._out.value) != on:
            self._out.value = on

    @property
    def is_on(self) -> bool:
        return not self._out.closed and bool(self._out.value)

    def close(self) -> None:
        if not self._out.closed:
            self._out.off()
            self._out.close()
