"""Shared pieces for the simulated-firmware tests (this module holds no tests itself).

`Harness` drives `SimFirmware` the way the simulated MCU process does: every command
is encoded with the host's `MessageCodec`, decoded again as the MCU side would, and
handed to `handle`; every response is encoded in the MCU's form and decoded by the
host's codec, so a response with a wrong name, a missing parameter or a value out of
its field's range fails the test. `FakeBoard` stands in for the printer hardware.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from printhost.mcu.codec import MessageCodec
from printhost.mcu.sim_dictionary import SIM_CLOCK_FREQ, sim_dictionary
from printhost.sim.mcu.firmware import SimFirmware

US = SIM_CLOCK_FREQ // 1_000_000  # ticks per microsecond
MS = 1000 * US


class FakeBoard:
    """Hardware stand-in: ADC readings and endstop levels from functions, outputs logged."""

    def __init__(self) -> None:
        self.adc: dict[str, Callable[[int], int]] = {}
        self.endstops: dict[str, Callable[[int, Mapping[str, int]], int]] = {}
        # Per endstop pin, how its coordinate moves per step of each motor (by step
        # pin). Left empty, the level is an arbitrary function and is sampled each time.
        self.gradients: dict[str, dict[str, float]] = {}
        self.output_log: list[tuple[str, float, int]] = []
        self.adc_log: list[tuple[str, int]] = []

    def adc_sample(self, pin: str, clock: int) -> int:
        self.adc_log.append((pin, clock))
        return self.adc.get(pin, lambda c: 0)(clock)

    def set_output(self, pin: str, duty: float, clock: int) -> None:
        self.output_log.append((pin, duty, clock))

    def endstop_level(self, pin: str, clock: int, positions: Mapping[str, int]) -> int:
        return self.endstops.get(pin, lambda c, p: 0)(clock, positions)

    def endstop_gradient(self, pin: str) -> dict[str, float]:
        return self.gradients.get(pin, {})

    def outputs_of(self, pin: str) -> list[tuple[float, int]]:
        return [(duty, clock) for p, duty, clock in self.output_log if p == pin]


class Harness:
    """A firmware, a fake board, and both ends of the message codec."""

    def __init__(self, *, move_count: int = 500, stats: bool = False, **kwargs: Any) -> None:
        self.host = MessageCodec(sim_dictionary())
        self.mcu = MessageCodec(sim_dictionary(), mcu_form=True)
        self.board = FakeBoard()
        self.sent: list[tuple[str, dict[str, Any], int]] = []
        self.fw = SimFirmware(self.board, self._send, move_count=move_count, stats=stats,
                              **kwargs)

    def _send(self, name: str, params: dict[str, Any]) -> None:
        wire = self.mcu.encode(name, **params)
        ((decoded_name, decoded),) = self.host.decode(wire)
        assert decoded_name == name
        self.sent.append((name, decoded, self.fw.now))

    def cmd(self, text: str, clock: int) -> None:
        """Send one command in Klipper's text form (e.g. "get_clock") at `clock`."""
        for name, params in self.mcu.decode(self.host.encode_text(text)):
            self.fw.handle(name, params, clock)

    def take(self, name: str | None = None) -> list[tuple[str, dict[str, Any], int]]:
        """Responses sent so far (optionally only `name`), clearing the log."""
        out = [m for m in self.sent if name is None or m[0] == name]
        self.sent = [m for m in self.sent if not (name is None or m[0] == name)]
        return out

    def last(self, name: str) -> dict[str, Any]:
        found = [p for n, p, _ in self.sent if n == name]
        assert found, f"no {name} among {[n for n, _, _ in self.sent]}"
        return found[-1]

    def shutdown_reason(self) -> str | None:
        return self.fw.shutdown_reason

    def configure(self, *lines: str, oids: int = 10, clock: int = 0) -> None:
        self.cmd(f"allocate_oids count={oids}", clock)
        for line in lines:
            self.cmd(line, clock)
        self.cmd("finalize_config crc=1", clock)
        assert not self.fw.is_shutdown, self.fw.shutdown_reason

