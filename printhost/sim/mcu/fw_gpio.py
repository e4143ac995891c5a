"""Digital outputs, software PWM and hardware PWM of the simulated MCU.

Heaters are driven through these, so their safety net matters more than their speed:
with `max_duration` set, an output may only stay away from its default value for that
long unless the host has already queued the next change. If the host falls silent the
MCU turns the heater off by shutting down ("Missed scheduling of next digital out
event", or "... hard pwm event"), and a queued change that would come later than the
allowed time is refused when it is queued or loaded ("... will exceed max_duration").
Those checks are reproduced exactly, including which of the two messages fires where.

The board model is told the output's duty (0..1) whenever it changes. Software PWM is
reported as its duty `on_ticks / cycle_ticks` rather than as every pin toggle: a
thermal model needs the average power, and the toggles have no other effect - the
firmware's next load always falls on the queued clock or the max_duration limit,
whatever the toggle phase, so the simulator schedules only the loads.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from printhost.sim.mcu.fw_clock import Timer

if TYPE_CHECKING:  # pragma: no cover
    from printhost.sim.mcu.firmware import SimFirmware


class DigitalOut:
    """A digital output pin, optionally toggled as software PWM."""

    def __init__(self, fw: SimFirmware, oid: int, pin: str, value: int, default_value: int,
                 max_duration: int) -> None:
        self.fw = fw
        self.oid = oid
        self.pin = pin
        self.on = bool(value)
        self.default_on = bool(default_value)
        self.max_duration = max_duration
        self.cycle_ticks = 0
        self.toggling = False  # soft PWM running
        self.check_end = False  # a load is due at end_time
        self.end_time = 0
        self.on_ticks = 0
        self.queue: deque[tuple[int, int]] = deque()  # (clock, on_ticks)
        self.timer = Timer(self._load_event, f"digital_out {oid}")

    def duty(self, on_ticks: int) -> float:
        if not on_ticks:
            return 0.0
        if on_ticks >= self.cycle_ticks:
            return 1.0
        return on_ticks / self.cycle_ticks

    def _load_event(self, timer: Timer) -> int | None:
        fw = self.fw
        if not self.queue:
            fw.shutdown("Missed scheduling of next digital out event")
        _, on_ticks = self.queue.popleft()
        wake = timer.waketime
        on = bool(on_ticks)
        fw.set_output(self.pin, self.duty(on_ticks))
        end_time = 0
        check_end = toggling = False
        if not on or on_ticks >= self.cycle_ticks:
            if on != self.default_on and self.max_duration:
                end_time = wake + self.max_duration
                check_end = True
        else:
            toggling = True
            if self.max_duration:
                end_time = wake + self.max_duration
                check_end = True
        if self.queue:
            next_clock = self.queue[0][0]
            if check_end and end_time < next_clock:
                fw.shutdown("Scheduled digital out event will exceed max_duration")
            end_time = next_clock
            check_end = True
        self.end_time = end_time
        self.on = on
        self.toggling = toggling
        self.check_end = check_end
        self.on_ticks = on_ticks
        return end_time if check_end else None

    # --- commands ---

    def set_cycle(self, cycle_ticks: int) -> None:
        if self.queue:
            self.fw.shutdown("Can not set soft pwm cycle ticks while updates pending")
        self.cycle_ticks = cycle_ticks

    def queue_value(self, clock: int, on_ticks: int) -> None:
        fw = self.fw
        fw.move_alloc()
        self.queue.append((clock, on_ticks))
        if len(self.queue) > 1:
            return  # checked when the entry before it loads
        if self.check_end and self.end_time < clock:
            fw.shutdown("Scheduled digital out event will exceed max_duration")
        self.end_time = clock
        self.check_end = True
        # A running soft PWM keeps toggling until `clock` and loads then; a steady pin
        # loads at `clock` directly. Either way the load falls exactly on `clock`, and
        # a `clock` already past is refused as any timer in the past is.
        fw.sched.delete(self.timer)
        fw.add_timer(self.timer, clock)

    def update(self, value: int) -> None:
        fw = self.fw
        fw.sched.delete(self.timer)
        if self.queue:
            fw.shutdown("update_digital_out not valid with active queue")
        on = bool(value)
        fw.set_output(self.pin, 1.0 if on else 0.0)
        self.on = on
        self.toggling = False
        if on != self.default_on and self.max_duration:
            self.end_time = fw.now + self.max_duration
            self.check_end = True
            fw.add_timer(self.timer, self.end_time)
        else:
            self.check_end = False

    def on_shutdown(self) -> None:
        self.fw.set_output(self.pin, 1.0 if self.default_on else 0.0)
        self.on = self.default_on
        self.toggling = self.check_end = False
        self.queue.clear()

    def pending(self, at: int) -> int:
        """Queued updates still holding a pool entry at `at`: each is freed when it is
        applied, at its clock."""
        return sum(1 for clock, _ in self.queue if clock > at)


class PwmOut:
    """A hardware PWM output: the timer only applies queued values and guards them."""

    def __init__(self, fw: SimFirmware, oid: int, pin: str, cycle_ticks: int, value: int,
                 default_value: int, max_duration: int) -> None:
        self.fw = fw
        self.oid = oid
        self.pin = pin
        self.cycle_ticks = cycle_ticks
        self.value = value
        self.default_value = default_value
        self.max_duration = max_duration
        self.queue: deque[tuple[int, int]] = deque()  # (clock, value)
        self.timer = Timer(self._apply_event, f"pwm_out {oid}")
        self.guarding = False  # the timer is the max_duration guard, not an update

    def _apply_event(self, timer: Timer) -> int | None:
        fw = self.fw
        if self.guarding:
            fw.shutdown("Missed scheduling of next hard pwm event")
        _, value = self.queue.popleft()
        self.value = value
        fw.set_output(self.pin, fw.pwm_duty(value))
        wake = timer.waketime
        limited = value != self.default_value and self.max_duration
        if not self.queue:
            if not limited:
                return None
            self.guarding = True
            return wake + self.max_duration
        next_clock = self.queue[0][0]
        if limited and wake + self.max_duration < next_clock:
            fw.shutdown("Scheduled pwm event will exceed max_duration")
        return next_clock

    # --- commands ---

    def queue_value(self, clock: int, value: int) -> None:
        fw = self.fw
        fw.move_alloc()
        self.queue.append((clock, value))
        if len(self.queue) > 1:
            return
        fw.sched.delete(self.timer)
        if self.guarding and self.timer.waketime < clock:
            fw.shutdown("Scheduled pwm event will exceed max_duration")
        self.guarding = False
        fw.add_timer(self.timer, clock)

    def on_shutdown(self) -> None:
        self.fw.set_output(self.pin, self.fw.pwm_duty(self.default_value))
        self.value = self.default_value
        self.guarding = False
        self.queue.clear()

    def pending(self, at: int) -> int:
        """Queued updates still holding a pool entry at `at`: each is freed when it is
        applied, at its clock."""
        return sum(1 for clock, _ in self.queue if clock > at)
