"""Simulated time that can run faster than the wall clock.

Every simulated component (thermal model, motion executor) reads the same `SimClock`,
so a test can run a whole print at 50x while temperatures, moves and timeouts stay
consistent with each other. `time_factor` 1.0 is real time. It is a
`printhost.control.clock.Clock`, like the deterministic `ManualClock` there.
"""

from __future__ import annotations

import time


class SimClock:
    """Monotonic simulated seconds since construction, scaled by `time_factor`."""

    def __init__(self, time_factor: float = 1.0, monotonic=time.monotonic) -> None:
        if not time_factor > 0.0:
            raise ValueError("time_factor must be positive")
        self.time_factor = float(time_factor)
        self._monotonic = monotonic
        self._wall_start = monotonic()

    def now(self) -> float:
        return (self._monotonic() - self._wall_start) * self.time_factor

    def wall_seconds(self, sim_seconds: float) -> float:
        """How long `sim_seconds` of simulated time takes on the wall clock."""
        return sim_seconds / self.time_factor

