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

A pause or cancel aborts a homing move: the host triggers the trsync itself ("host
request"), which halts the axis' motors in the firmware at once. The MCU's step counters
of those motors, read when the move began and again after the stop, give where the
toolhead stopped; the axis is left unhomed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from printhost.config import Settings
from printhost.control.gcode import GCodeError
from printhost.mcu.endstops import (REASON_ENDSTOP_HIT, REASON_HOST_REQUEST,
                                    REASON_PAST_END_TIME)

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


class _Homing:
    """One G28 in progress: the axes still to home and where the current one stands."""

    def __init__(self, axes: list[str]) -> None:
        self.queue = axes
        self.phase = "idle"             # idle, moving, ending
        self.ending_since = 0.0
        # Where the toolhead was when the current axis' homing move began, and the MCU
        # step counters of that axis' motors then (read back with stepper_get_position).
        self.start_position: tuple[float, float, float, float] | None = None
        self.start_steps: dict[str, int] | None = None
        # Set once the move is aborted: when, and whether the counters were asked again.
        self.aborted_since: float | None = None
        self.stop_asked = False
        self.warned = False

    @property
    def axis(self) -> str:
        return self.queue[0]


class McuHoming:
    def __init__(self, settings: Settings, hardware, toolhead) -> None:
        self.settings = settings
        self.hw = hardware
        self.toolhead = toolhead
        self.endstops = hardware.endstops  # axis -> McuEndstop
        self._session: _Homing | None = None
        # A homing move stopped by `abort()` whose end position is still being read back.
        self._aborting: _Homing | None = None

    @property
    def moving_axis(self) -> str | None:
        """The axis whose homing move is on the MCU (running, ending or being aborted)."""
        for session in (self._aborting, self._session):
            if session is not None and session.phase != "idle":
                return session.axis
        return None

    @property
    def stopping(self) -> bool:
        """An aborted homing move is being read back from a working MCU."""
        return self._aborting is not None and self.hw.mcu.connected

    def start(self, axes: str) -> Callable[[], bool]:
        wanted = [a for a in _AXES if not axes or a in axes]
        for axis in wanted:
            if axis not in self.endstops:
                raise HomingError(f"cannot home {axis.upper()}: no endstop_pin configured")
        self.toolhead.flush()
        session = _Homing(wanted)
        self._session = session

        def step() -> bool:
            if self._session is not session:
                raise HomingError("homing was aborted")
            try:
                done = self._step(session)
            except HomingError:
                self._session = None
                raise
            if done:
                self._session = None
            return done

        return step

    def _step(self, session: _Homing) -> bool:
        queue = session.queue
        while queue:
            axis = queue[0]
            phase = session.phase
            if phase == "idle":
                # A homing move stopped by an abort must be read back first.
                if self._aborting is not None or not self.toolhead.is_idle():
                    return False
                self._begin(session)
                session.phase = "moving"
                return False
            endstop = self.endstops[axis]
            if not endstop.triggered:
                if self.toolhead.is_idle():
                    if phase == "moving":
                        endstop.request_end(REASON_PAST_END_TIME)
                        session.phase = "ending"
                        session.ending_since = time.monotonic()
                    elif time.monotonic() - session.ending_since > END_ANSWER_TIMEOUT_S:
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
            session.phase = "idle"
        return True

    def _begin(self, session: _Homing) -> None:
        axis = session.axis
        th = self.toolhead
        index = _AXES.index(axis)
        ax = getattr(self.settings.printer.axes, axis)
        at_min = (ax.position_endstop - ax.position_min) <= (ax.position_max - ax.position_endstop)
        travel = HOMING_TRAVEL_FACTOR * (ax.position_max - ax.position_min)
        session.start_position = th.commanded_position
        session.start_steps = None
        # The motors' step counters before the move (every earlier move has run): an
        # abort reads them again and converts the difference into the stop position.
        for stepper in self.endstops[axis].steppers:
            stepper.query_position()
        target = list(th.commanded_position)
        target[index] += -travel if at_min else travel
        executor = th.executor
        start = max(executor.queue_end_time(), executor.earliest_start())
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

    def restart_step_clocks(self) -> None:
        """Before the position is set by hand (`Toolhead.set_position`), at a standstill."""
        self.hw.sender.drop_pending()
        self.hw.restart_step_clocks()

    # ------------------------------------------------------------------ abort
    def abort(self) -> tuple[str, tuple[float, float, float, float]] | None:
        """Give up the G28 in progress (pause, cancel, shutdown).

        A homing move on the MCU is stopped at once, as Klipper's host does: the trsync
        is triggered with "host request", which halts the axis' motors in the firmware.
        Returns the axis and where the toolhead was before that move (the other axes
        are still there); `update()` then reads the motors' step counters back and
        moves the toolhead to where they stopped. None when no homing move had begun.
        """
        session, self._session = self._session, None
        if session is None or session.phase == "idle":
            return None
        endstop = self.endstops[session.axis]
        if self.hw.mcu.connected:
            endstop.request_end(REASON_HOST_REQUEST)
        session.aborted_since = time.monotonic()
        self._aborting = session
        log.info("homing %s aborted: stopping its motors", session.axis.upper())
        assert session.start_position is not None
        return session.axis, session.start_position

    def update(self) -> None:
        """Called every control tick: note the step counters read at the start of a homing
        move, and finish an abort once the MCU has answered."""
        session = self._session
        if session is not None and session.phase != "idle" and session.start_steps is None:
            session.start_steps = self._read_steps(session)
        if session is not None and session.phase != "idle":
            self.endstops[session.axis].keep_alive()
        session = self._aborting
        if session is None:
            return
        axis = session.axis
        endstop = self.endstops[axis]
        if not self.hw.mcu.connected:
            # Shut down or lost: the MCU has stopped every motor and reads nothing back.
            endstop.armed = False
            self._aborting = None
            self.toolhead.rebase(session.start_position, None)
            log.warning("homing %s aborted with the MCU unavailable: position unknown",
                        axis.upper())
            return
        if not session.warned and time.monotonic() - session.aborted_since > END_ANSWER_TIMEOUT_S:
            session.warned = True
            log.warning("homing %s aborted: still waiting for the MCU's answer", axis.upper())
        if not endstop.triggered:
            return                      # the trsync has not confirmed the stop yet
        if session.start_steps is None:
            session.start_steps = self._read_steps(session)
            if session.start_steps is None:
                return
        if not session.stop_asked:
            # Asked after the stop was confirmed, so the counters no longer change.
            for stepper in endstop.steppers:
                stepper.query_position()
            session.stop_asked = True
            return
        stop_steps = self._read_steps(session)
        if stop_steps is None:
            return
        position = self._stop_position(session, stop_steps)
        endstop.disarm()
        self.hw.sender.drop_pending()
        self.hw.restart_step_clocks()
        self.toolhead.rebase(position, None)
        self._aborting = None
        log.info("homing %s aborted: motors stopped at %s=%.3f mm; the axis is not homed",
                 axis.upper(), axis.upper(), position[_AXES.index(axis)])

    def _read_steps(self, session: _Homing) -> dict[str, int] | None:
        steppers = self.endstops[session.axis].steppers
        if any(st.position is None for st in steppers):
            return None
        return {st.name: int(st.position) for st in steppers}

    def _stop_position(self, session: _Homing,
                       stop_steps: dict[str, int]) -> tuple[float, float, float, float]:
        """The start position moved by the steps the motors made before they stopped."""
        assert session.start_position is not None and session.start_steps is not None
        moved: dict[str, float] = {}
        for stepper in self.endstops[session.axis].steppers:
            steps = stop_steps[stepper.name] - session.start_steps[stepper.name]
            # The firmware counts along its direction pin; an inverted pin counts backwards.
            if stepper.dir_pin.invert:
                steps = -steps
            moved[stepper.name] = steps * getattr(self.settings.steppers,
                                                  stepper.name).step_distance_mm
        pos = list(session.start_position)
        if self.settings.printer.kinematics == "corexy" and session.axis in "xy":
            a, b = moved.get("x", 0.0), moved.get("y", 0.0)
            pos[0] += 0.5 * (a + b)
            pos[1] += 0.5 * (a - b)
        else:
            pos[_AXES.index(session.axis)] += moved[session.axis]
        return (pos[0], pos[1], pos[2], pos[3])
