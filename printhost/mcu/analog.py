"""ADC inputs on the MCU (thermistors), sampled and range-checked by the firmware.

The firmware samples on its own schedule and reports sums; it also checks each sum
against a band and shuts itself down when the reading leaves it several times in a row.
That band is derived from the heater's min_temp/max_temp, so an MCU whose host has died
still turns its heaters off when a thermistor breaks or the block overheats.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from printhost.mcu.mcu import Mcu
from printhost.mcu.pins import PinSpec

# Klipper's heater sampling: 8 samples 1 ms apart, one report every 0.3 s, and a
# range violation must be seen in 4 consecutive reports before the MCU shuts down.
SAMPLE_TIME_S = 0.001
SAMPLE_COUNT = 8
REPORT_TIME_S = 0.300
RANGE_CHECK_COUNT = 4
# Sampling starts this long after configuration (the clock must be in the future).
START_DELAY_S = 0.2


class McuAnalogIn:
    """One ADC pin; `callback(fraction, print_time)` gets each report as a fraction of
    full scale (0..1), with the MCU time the samples were taken."""

    def __init__(self, mcu: Mcu, pin: PinSpec, callback: Callable[[float, float], None],
                 *, min_fraction: float = 0.0, max_fraction: float = 1.0) -> None:
        self.mcu = mcu
        self.pin = pin
        self.callback = callback
        self.min_fraction = min_fraction
        self.max_fraction = max_fraction
        self.oid = mcu.create_oid()
        self.reports = 0
        self._adc_max = 0.0
        mcu.register_config(self._build_config)
        mcu.add_init_step(self._start)
        mcu.register_response("analog_in_state", self._on_state, self.oid)

    def _build_config(self) -> None:
        self.mcu.check_format("config_analog_in oid=%c pin=%u")
        self.mcu.check_format("query_analog_in oid=%c clock=%u sample_ticks=%u sample_count=%c "
                              "rest_ticks=%u bytes_per_report=%c min_value=%hu max_value=%hu "
                              "range_check_count=%c")
        self.mcu.add_config_cmd("config_analog_in", oid=self.oid, pin=self.pin.name)

    def _start(self) -> None:
        mcu = self.mcu
        freq = mcu.clock_freq
        self._adc_max = mcu.dictionary.constant_float("ADC_MAX") * SAMPLE_COUNT
        lo = max(0, int(self.min_fraction * self._adc_max))
        hi = min(0xFFFF, int(self.max_fraction * self._adc_max + 0.999))
        start = mcu.clock_of(mcu.earliest_schedule_time() + START_DELAY_S)
        mcu.send("query_analog_in", oid=self.oid, clock=start & 0xFFFFFFFF,
                 sample_ticks=int(SAMPLE_TIME_S * freq), sample_count=SAMPLE_COUNT,
                 rest_ticks=int(REPORT_TIME_S * freq), bytes_per_report=2,
                 min_value=lo, max_value=hi, range_check_count=RANGE_CHECK_COUNT)

    def _on_state(self, params: dict[str, Any], _t: float) -> None:
        data = bytes(params["values"])
        if len(data) < 2 or not self._adc_max:
            return
        # Each report is a little-endian sum; the last one is the newest, taken one
        # report period before the next sampling starts.
        value = int.from_bytes(data[-2:], "little")
        when = self.mcu.print_time_of_clock32(int(params["next_clock"])) - REPORT_TIME_S
        self.reports += 1
        self.callback(value / self._adc_max, when)
