"""Homing by endstop on an MCU: move until the switch closes, then believe the switch.

For each axis (X, Y, Z order) the sequence is:
1. wait until all queued motion has run (the position must be settled);
2. arm the endstop on the MCU for the start of a homing move, and queue that move: from
   where the host believes the toolhead is, 1.5 times the axis' travel towards the
   endstop, at the axis' homing speed (so it reaches the switch from anywhere);
3. the MCU stops the axis' steppers the moment the switch reads triggered; the host
   sees the trsync report, drops the rest of the move, tells the steppers to restart
   their step clocks, and takes the axis to be at `position_endstop`.
When the host's clock says the move is over without a trigger, the host does not
conclude anything yet: it asks the MCU to end the trsync ("past end time") and waits
for its answer. An MCU running late (a busy simulated board, a slow link) may still
report the switch first, and that report wins; only "past end time" means the move
really ended without a trigger, which is an error naming the axis, as is a trsync that
expired (the host stopped extending it). The wait returned to the G-code interpreter
finishes when all requested axes are homed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from printhost.config import Settings
from printhost.control.gcode import GCodeError
from printhost.mcu.endstops import REASON_ENDSTOP_HIT, REASON_PAST_END_TIME

log = logging.getLogger(__name__)

_AXES = "xyz"
# The homing move covers this multiple of the axis' travel (Klipper's choice too).
HOMING_TRAVEL_FACTOR = 1.5


# How long (host time) the MCU gets to answer the request to end a homing move.
END_ANSWER_TIMEOUT_S = 2.0


class HomingError(GCodeError):
    """Homing failed; the message names the axis and why (the job adds the line)."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)
        self.lineno = 0
        self.message = message


class McuHoming:
    def __init__(self, settings: Settings, hardware, toolhead) -> None:
        self.settings = settings
        self.hw = hardware
        self.toolhead = toolhead
        self.endstops = hardware.endstops  # axis -> McuEndstop

    def start(self, axes: str) -> Callable[[], bool]:
        wanted = [a for a in _AXES if not axes or a in axes]
        for axis in wanted:
            if axis not in self.endstops:
                raise HomingError(f"cannot home {axis.upper()}: no endstop_pin configured")
        self.toolhead.flush()
        queue = list(wanted)
        state = {"phase": "idle"}

        def step() -> bool:
            while queue:
                axis = queue[0]
                phase = state["phase"]
                if phase == "idle":
                    if not self.toolhead.is_idle():
                        return False
                    self._begin(axis)
                    state["phase"] = "moving"
                    return False
                endstop = self.endstops[axis]
                if not endstop.triggered:
                    if self.toolhead.is_idle():
                        if phase == "moving":
                            endstop.request_end(REASON_PAST_END_TIME)
                            state["phase"] = "ending"
                            state["ending_since"] = time.monotonic()
                        elif time.monotonic() - state["ending_since"] > END_ANSWER_TIMEOUT_S:
                            endstop.disarm()
                            raise HomingError(f"homing {axis.upper()}: the MCU did not answer "
                                              f"the end of the move")
                    return False
                if endstop.trigger_reason == REASON_PAST_END_TIME:
                    endstop.disarm()
                    raise HomingError(f"no trigger on {axis.upper()} after full movement "
                                      f"(is the endstop wired to {endstop.pin}?)")
                self._finish(axis)
                queue.pop(0)
                state["phase"] = "idle"
            return True

        return step

    def _begin(self, axis: str) -> None:
        th = self.toolhead
        index = _AXES.index(axis)
        ax = getattr(self.settings.printer.axes, axis)
        at_min = (ax.position_endstop - ax.position_min) <= (ax.position_max - ax.position_endstop)
        travel = HOMING_TRAVEL_FACTOR * (ax.position_max - ax.position_min)
        target = list(th.commanded_position)
        target[index] += -travel if at_min else travel
        executor = th.executor
        start = max(executor.queue_end_time(), executor.now() + executor.lead_time_s)
        # Sample once per step of the fastest motor: the endstop is then seen within a
        # step of closing, which is as exact as the position can be anyway.
        step_mm = min(getattr(self.settings.steppers, name).step_distance_mm
                      for name in (("x", "y") if self.settings.printer.kinematics == "corexy"
                                   and axis in "xy" else (axis,)))
        self.endstops[axis].arm(start, rest_time_s=max(4 * 0.000015, step_mm / ax.homing_speed))
        log.info("homing %s at %.1f mm/s", axis.upper(), ax.homing_speed)
        th.homing_move(tuple(target), ax.homing_speed)

    def _finish(self, axis: str) -> None:
        endstop = self.endstops[axis]
        reason = endstop.trigger_reason
        endstop.disarm()
        if reason != REASON_ENDSTOP_HIT:
            raise HomingError(f"homing {axis.upper()} stopped without a trigger "
                              f"(trsync reason {reason}: the host did not keep up)")
        ax = getattr(self.settings.printer.axes, axis)
        position = list(self.toolhead.commanded_position)
        position[_AXES.index(axis)] = ax.position_endstop
        self.hw.sender.drop_pending()
        self.hw.restart_step_clocks()
        self.toolhead.rebase((position[0], position[1], position[2], position[3]), axis)
        log.info("homed %s at %.3f mm", axis.upper(), ax.position_endstop)
