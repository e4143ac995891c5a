"""Endstops and trigger synchronisation (trsync) of the simulated MCU.

Homing on Klipper is split in two: an endstop only watches its pin and, once the pin
has shown the wanted level for `sample_count` samples in a row, "triggers" a trsync; the
trsync is what halts the steppers registered on it and tells the host. The split lets
one trigger stop steppers on several MCUs (the host relays it) and lets the host give
up with a timeout (`trsync_set_timeout`), which triggers with `expire_reason`.

Observable details kept from the firmware, because Klipper's host depends on them:
the trigger instant the host reconstructs is `next_clock - rest_ticks` from
`endstop_state`, i.e. the first sample of the matching run; an endstop's "homing" flag
stays set after it triggers until homing is switched off with `sample_count=0`; trsync
reports are sent from the main loop after the timer that caused them, so a trigger and
a `trsync_trigger` command in the same breath produce a single report.

A real endstop samples its pin every `rest_ticks` while it waits, a few microseconds of
work each. Here a sample costs far more (every motor's position, then the kinematics),
and homing samples once per step: at a high time factor that is tens of thousands of
samples per host second, more than the process can compute, and a process at real-time
priority that never sleeps starves the kernel's own workers (the pty's among them, which
the host's serial thread then waits for). So while the pin does not show the wanted
level the endstop skips samples that cannot match: until the end of the moves running
now every motor turns one way only, the watched coordinate is linear in the motors'
positions, and where their contributions all point the same way the coordinate is
monotonic, so the first sample on the same grid that shows the level is found by
bisection. Outcomes are the same sample for sample; a move queued meanwhile makes the
endstop look again from the next sample due.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from printhost.sim.mcu.fw_clock import Timer, low32

if TYPE_CHECKING:  # pragma: no cover
    from printhost.sim.mcu.firmware import SimFirmware
    from printhost.sim.mcu.fw_steppers import Stepper


class Trsync:
    """A trigger that halts registered steppers and reports its state to the host."""

    def __init__(self, fw: SimFirmware, oid: int) -> None:
        self.fw = fw
        self.oid = oid
        self.report_timer = Timer(self._report_event, f"trsync {oid} report")
        self.expire_timer = Timer(self._expire_event, f"trsync {oid} expire")
        self.report_ticks = 0
        self.signals: list[Stepper] = []
        self.can_trigger = False
        self.report_due = False
        self.trigger_reason = 0
        self.expire_reason = 0

    def add_signal(self, stepper: Stepper) -> None:
        if stepper.signal_armed:
            self.fw.shutdown("Can't add signal that is already active")
        stepper.signal_armed = True
        self.signals.append(stepper)

    def trigger(self, reason: int) -> None:
        """Fire (once): halt the registered steppers now and queue a report."""
        if not self.can_trigger:
            return
        self.trigger_reason = reason
        self.can_trigger = False
        self.report_due = True
        signals, self.signals = self.signals, []
        for stepper in reversed(signals):  # most recently registered first
            stepper.signal_armed = False
            stepper.stop(self.fw.now)
        self.fw.wake_task(self.report_task)

    def clear(self) -> None:
        self.fw.sched.delete(self.report_timer)
        self.fw.sched.delete(self.expire_timer)
        for stepper in self.signals:
            stepper.signal_armed = False
        self.signals = []
        self.can_trigger = self.report_due = False
        self.trigger_reason = self.expire_reason = 0

    def _report_event(self, timer: Timer) -> int | None:
        self.report_due = True
        self.fw.wake_task(self.report_task)
        return timer.waketime + self.report_ticks

    def _expire_event(self, timer: Timer) -> int | None:
        self.trigger(self.expire_reason)
        return None

    def report_task(self) -> None:
        if not self.report_due:
            return
        self.report_due = False
        self._send(self.can_trigger, self.trigger_reason, self.fw.now)

    def _send(self, can_trigger: bool, reason: int, clock: int) -> None:
        self.fw.send("trsync_state", {"oid": self.oid, "can_trigger": int(can_trigger),
                                      "trigger_reason": reason, "clock": low32(clock)})

    # --- commands ---

    def start(self, report_clock: int, report_ticks: int, expire_reason: int) -> None:
        self.clear()
        self.can_trigger = True
        self.report_ticks = report_ticks
        if report_ticks:
            self.fw.add_timer(self.report_timer, report_clock)
        self.expire_reason = expire_reason

    def set_timeout(self, clock: int) -> None:
        if self.can_trigger:
            self.fw.sched.delete(self.expire_timer)
            self.fw.add_timer(self.expire_timer, clock)

    def trigger_command(self, reason: int) -> None:
        self.trigger(reason)
        self.fw.sched.delete(self.report_timer)
        self.fw.sched.delete(self.expire_timer)
        self.can_trigger = self.report_due = False
        self._send(False, self.trigger_reason, 0)


class Endstop:
    """Samples one input pin and triggers a trsync when it shows the wanted level."""

    def __init__(self, fw: SimFirmware, oid: int, pin: str, pull_up: int) -> None:
        self.fw = fw
        self.oid = oid
        self.pin = pin
        self.pull_up = pull_up
        self.timer = Timer(self._event, f"endstop {oid}")
        self.rest_ticks = 0
        self.sample_ticks = 0
        self.sample_count = 0
        self.trigger_count = 0
        self.trigger_reason = 0
        self.next_wake = 0
        self.homing = False
        self.pin_value = 0
        self.confirming = False  # inside a run of matching samples
        self.trsync: Trsync | None = None
        self.last_sample = 0  # clock of the latest sample taken (the grid's origin)
        self._gradient: dict[str, float] | None = None

    def level(self) -> int:
        fw = self.fw
        return int(fw.board.endstop_level(self.pin, fw.now, fw.stepper_positions(fw.now)))

    def level_at(self, clock: int) -> int:
        fw = self.fw
        return int(fw.board.endstop_level(self.pin, clock, fw.stepper_positions(clock)))

    def _event(self, timer: Timer) -> int | None:
        self.last_sample = timer.waketime
        matches = self.level() == self.pin_value
        if not self.confirming:
            if not matches:
                return self._next_possible_sample(timer.waketime)
            # First matching sample: it counts as the first of the run.
            self.next_wake = timer.waketime + self.rest_ticks
            self.confirming = True
        if not matches:
            self.confirming = False
            self.trigger_count = self.sample_count
            return self.next_wake
        remaining = (self.trigger_count - 1) & 0xFF
        if not remaining:
            assert self.trsync is not None
            self.trsync.trigger(self.trigger_reason)
            return None
        self.trigger_count = remaining
        return timer.waketime + self.sample_ticks

    def _next_possible_sample(self, sampled: int) -> int | None:
        """The first sample after `sampled` (which did not match) that can show the
        wanted level, judged from the moves queued now; None when no motor has a step
        queued (only a new move can change the level then)."""
        fw = self.fw
        rest = self.rest_ticks
        if self._gradient is None:
            self._gradient = fw.board.endstop_gradient(self.pin)
        if not self._gradient:
            return sampled + rest
        end: int | None = None
        direction = 0
        for stepper in fw.steppers:
            motion = stepper.motion_after(sampled)
            if motion is None:
                continue
            sign, last = motion
            end = last if end is None else min(end, last)
            weight = self._gradient.get(stepper.step_pin, 0.0) * sign
            if weight:
                way = 1 if weight > 0 else -1
                if direction and way != direction:
                    return sampled + rest  # not monotonic: sample by sample
                direction = way
        if end is None:
            return None
        samples = (end - sampled) // rest      # grid samples up to the end of the moves
        if samples < 2:
            return sampled + rest
        if direction and self.level_at(sampled + samples * rest) == self.pin_value:
            lo, hi = 1, samples                 # the first matching sample is in (lo-1, hi]
            while lo < hi:
                mid = (lo + hi) // 2
                if self.level_at(sampled + mid * rest) == self.pin_value:
                    hi = mid
                else:
                    lo = mid + 1
            return sampled + lo * rest
        return sampled + (samples + 1) * rest   # the level cannot change before then

    def motion_changed(self) -> None:
        """A move was queued: a waiting endstop looks again from its next sample due."""
        if not self.homing or self.confirming or self.trsync is None:
            return
        fw = self.fw
        rest = self.rest_ticks
        if self.timer.scheduled and self.timer.waketime <= fw.now + rest:
            return
        if not self.timer.scheduled and self.last_sample == 0:
            return
        behind = max(0, fw.now - self.last_sample)
        due = self.last_sample + -(-behind // rest) * rest
        if self.timer.scheduled:
            if self.timer.waketime <= due:
                return
            fw.sched.delete(self.timer)
        fw.add_timer(self.timer, due)

    # --- commands ---

    def home(self, clock: int, sample_ticks: int, sample_count: int, rest_ticks: int,
             pin_value: int, trsync: int, reason: int) -> None:
        fw = self.fw
        fw.sched.delete(self.timer)
        self.timer.waketime = clock
        self.sample_ticks = sample_ticks
        self.sample_count = sample_count
        if not sample_count:
            self.trsync = None
            self.homing = False
            self.pin_value = 0
            return
        self.rest_ticks = rest_ticks
        self.confirming = False
        self.trigger_count = sample_count
        self.homing = True
        self.pin_value = 1 if pin_value else 0
        self.trsync = fw.lookup(trsync, Trsync)
        self.trigger_reason = reason
        self.last_sample = 0
        fw.add_timer(self.timer, clock)

    def query_state(self) -> None:
        self.fw.send("endstop_state", {"oid": self.oid, "homing": int(self.homing),
                                       "next_clock": low32(self.next_wake),
                                       "pin_value": self.level()})
