"""Analog inputs of the simulated MCU (thermistors and the like).

The host starts periodic sampling once with `query_analog_in`; from then on the MCU
reads `sample_count` samples `sample_ticks` apart every `rest_ticks`, checks the *sum*
against the host's limits and reports sums as little-endian 16-bit values, several per
`analog_in_state` when `bytes_per_report` allows. The range check runs on the MCU
because it is the last line of defence against a thermal runaway: if the host stops
listening, `range_check_count` bad sums in a row still shut the heaters down ("ADC out
of range"). Sampling goes on after a shutdown so the host can keep showing
temperatures, as on the real firmware.

The sums are 16-bit like the firmware's, so a host asking for more samples than fit
in 16 bits sees the same wrapped values it would see on a board. Samples are taken at
their nominal clocks; the few microseconds a real ADC conversion adds never show on
the wire, since reports carry the nominal `next_clock`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from printhost.sim.mcu.fw_clock import Timer, low32

if TYPE_CHECKING:  # pragma: no cover
    from printhost.sim.mcu.firmware import SimFirmware

#: The firmware's report buffer: `bytes_per_report` above this is refused.
REPORT_BUFFER_BYTES = 48
BYTES_PER_SAMPLE = 2


class AnalogIn:
    """One analog input pin with its sampling schedule and pending report bytes."""

    def __init__(self, fw: SimFirmware, oid: int, pin: str) -> None:
        self.fw = fw
        self.oid = oid
        self.pin = pin
        self.timer = Timer(self._event, f"analog_in {oid}")
        self.rest_ticks = 0
        self.sample_ticks = 0
        self.next_begin = 0
        self.value = 0
        self.min_value = 0
        self.max_value = 0
        self.invalid_count = 0
        self.range_check_count = 0
        self.sample_count = 0
        # Sample index in the current burst; sample_count means "sum ready to report"
        # and anything above it "idle until the next burst" (8-bit, as the firmware's).
        self.state = 1
        self.bytes_per_report = 0
        self.data = bytearray()

    def _event(self, timer: Timer) -> int | None:
        fw = self.fw
        sample = int(fw.board.adc_sample(self.pin, fw.now)) & 0xFFFF
        if self.state >= self.sample_count:
            self.state = 0
            self.value = sample
        else:
            self.value = (self.value + sample) & 0xFFFF
        self.state = (self.state + 1) & 0xFF
        if self.state < self.sample_count:
            return timer.waketime + self.sample_ticks
        if self.min_value <= self.value <= self.max_value:
            self.invalid_count = 0
        else:
            self.invalid_count = (self.invalid_count + 1) & 0xFF
            if self.invalid_count >= self.range_check_count:
                fw.try_shutdown("ADC out of range")
                self.invalid_count = 0
        fw.wake_task(self.report_task)
        self.next_begin += self.rest_ticks
        return self.next_begin

    def report_task(self) -> None:
        if self.state != self.sample_count:
            return
        self.state = (self.state + 1) & 0xFF
        self.data += self.value.to_bytes(BYTES_PER_SAMPLE, "little")
        if len(self.data) + BYTES_PER_SAMPLE > self.bytes_per_report:
            self.fw.send("analog_in_state", {"oid": self.oid,
                                             "next_clock": low32(self.next_begin),
                                             "values": bytes(self.data)})
            self.data.clear()

    # --- commands ---

    def query(self, clock: int, sample_ticks: int, sample_count: int, rest_ticks: int,
              bytes_per_report: int, min_value: int, max_value: int,
              range_check_count: int) -> None:
        fw = self.fw
        fw.sched.delete(self.timer)
        self.next_begin = clock
        self.timer.waketime = clock
        self.sample_ticks = sample_ticks
        self.sample_count = sample_count
        self.state = (sample_count + 1) & 0xFF
        self.rest_ticks = rest_ticks
        self.bytes_per_report = bytes_per_report
        self.data.clear()
        self.min_value = min_value
        self.max_value = max_value
        self.range_check_count = range_check_count
        if not sample_count:
            return
        if bytes_per_report > REPORT_BUFFER_BYTES:
            fw.shutdown("Invalid analog_in bytes_per_report")
        fw.add_timer(self.timer, clock)

    def on_shutdown(self) -> None:
        """Keep sampling through a shutdown, restarting at the next burst."""
        if self.sample_count:
            self.state = (self.sample_count + 1) & 0xFF
            self.next_begin += self.rest_ticks
            self.fw.add_timer(self.timer, self.next_begin)
