"""The clock the control code reads, and a clock that moves only when told to.

Heaters, the job runner and the motion executor take the time from a `Clock`: on a
printer it is the MCU's print time (`printhost.mcu.mcu.McuClock`), in the simulated
printer a clock that may run faster than the wall clock (`printhost.sim.clock.SimClock`).
`wall_seconds` converts a span of print time into host time, for anything that must
wait on the host's own clock.

`ManualClock` is deterministic: batch runs and unit tests advance it explicitly, so
their results never depend on how fast the machine is.
"""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    """Print time in seconds, and how long a span of it takes on the host's clock."""

    def now(self) -> float: ...

    def wall_seconds(self, print_seconds: float) -> float: ...


class ManualClock:
    """A clock that only moves when `advance` is called; one print second is one wall second."""

    def __init__(self, start: float = 0.0) -> None:
        self.t = float(start)
        self.time_factor = 1.0

    def now(self) -> float:
        return self.t

    def advance(self, dt: float) -> float:
        self.t += dt
        return self.t

    def wall_seconds(self, sim_seconds: float) -> float:
        return sim_seconds
