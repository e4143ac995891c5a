"""Stepper motors of the simulated MCU, computed per move instead of per step.

A print is millions of steps, far too many to run one Python event each. The firmware's
step timing is fully determined the moment a `queue_step` arrives, though: the move's
steps follow `interval` and `add` from the previous move's last scheduled step, and the
only thing that can bend them is the firmware's rule that a step may not come sooner
than the step pulse allows after the previous one (the step is then pushed back, while
the ideal schedule of the following steps carries on unchanged). So each queued move is
stored once with the clocks of all its steps in closed form:

    ideal step i = base + (i + 1) * interval + add * i * (i + 1) / 2

and only the rare move whose steps would come too close (or whose first step has to
wait for the previous move's last pulse) gets its actual step clocks materialised with
numpy. "Where is the motor at clock t" is then a binary search over moves and, inside
one move, over step indices.

Timing facts reproduced from the firmware: a stepper that is busy loads its next move
at the end of the previous move's last pulse (the moment the queue entry is freed back
to the shared move pool), and if that move's first step lies more than 1 ms before the
earliest instant the pulse allows, the MCU shuts down with "Stepper too far in past". A
move given to an idle stepper starts immediately; its first step must not lie in the
past ("Timer too close"). Both-edge stepping (`invert_step` < 0) halves the minimum
gap, as there is no separate unstep edge. A stop (trigger or shutdown) keeps the steps
taken so far, drops the rest and forgets the direction; the stepper then ignores moves
until `reset_step_clock`.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

import numpy as np

from printhost.sim.mcu.fw_clock import Timer, signed32

if TYPE_CHECKING:  # pragma: no cover
    from printhost.sim.mcu.firmware import SimFirmware


class StepMove:
    """One queued move with the actual clock of every step.

    `clocks` is None when every step happens at its ideal time (the closed form is
    exact); otherwise it holds the actual step clocks as an int64 array.
    """

    __slots__ = ("load", "first", "last", "count", "sign", "start_pos",
                 "base", "interval", "add", "clocks")

    def __init__(self, load: int, base: int, interval: int, add: int, count: int,
                 sign: int, start_pos: int, clocks: np.ndarray | None) -> None:
        self.load = load  # clock at which the move leaves the shared move pool
        self.base = base
        self.interval = interval
        self.add = add
        self.count = count
        self.sign = sign
        self.start_pos = start_pos
        self.clocks = clocks
        self.first = self.clock_of(0)
        self.last = self.clock_of(count - 1)

    def clock_of(self, i: int) -> int:
        if self.clocks is not None:
            return int(self.clocks[i])
        return self.base + (i + 1) * self.interval + self.add * i * (i + 1) // 2

    def steps_by(self, clock: int) -> int:
        """How many of this move's steps have happened at or before `clock`."""
        if clock < self.first:
            return 0
        if clock >= self.last:
            return self.count
        if self.clocks is not None:
            return int(np.searchsorted(self.clocks, clock, side="right"))
        base, interval, add = self.base, self.interval, self.add
        lo, hi = 1, self.count - 1  # step 0 is done, the last one is not
        while lo < hi:
            mid = (lo + hi) >> 1
            if base + (mid + 1) * interval + add * mid * (mid + 1) // 2 <= clock:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def truncate(self, steps: int) -> None:
        self.count = steps
        if self.clocks is not None:
            self.clocks = self.clocks[:steps]
        self.last = self.clock_of(steps - 1)

    def all_clocks(self) -> np.ndarray:
        if self.clocks is not None:
            return self.clocks
        i = np.arange(self.count, dtype=np.int64)
        return self.base + (i + 1) * self.interval + self.add * i * (i + 1) // 2


class Stepper:
    """One configured stepper: its flags, its move timeline and its position."""

    def __init__(self, fw: SimFirmware, oid: int, step_pin: str, dir_pin: str,
                 invert_step: int, pulse_ticks: int) -> None:
        self.fw = fw
        self.oid = oid
        self.step_pin = step_pin
        self.dir_pin = dir_pin
        self.both_edge = invert_step < 0
        self.pulse_ticks = pulse_ticks
        # Minimum spacing of two steps, and how long after a step the next move loads.
        self.gap = pulse_ticks if self.both_edge else 2 * pulse_ticks
        self.load_delay = 0 if self.both_edge else pulse_ticks
        self.last_dir = 0
        self.next_dir = 0
        self.need_reset = False
        self.next_step_time = 0  # ideal clock of the last scheduled step
        self.busy_until = 0  # the stepper is active while now < busy_until
        self.moves: list[StepMove] = []
        self.firsts: list[int] = []  # moves[i].first, for bisection
        self.head = 0  # moves before this index are forgotten history
        self.loaded = 0  # moves before this index have left the move pool
        self.base_pos = 0  # position before moves[head]
        self.forgotten_until = -1  # last step clock of the newest forgotten move
        self.end_pos = 0  # position after every queued move
        self.doomed: Timer | None = None  # a "too far in past" shutdown waiting to fire
        self.doomed_pending = 0  # moves queued behind that fault (never loaded)
        self.signal_armed = False  # registered on a trsync (stepper_stop_on_trigger)

    # --- queries ---

    def active(self, now: int) -> bool:
        return now < self.busy_until or self.doomed is not None

    def pending(self, now: int) -> int:
        """Queue entries of this stepper still held in the shared move pool at `now`."""
        moves = self.moves
        i = self.loaded
        while i < len(moves) and moves[i].load <= now:
            i += 1
        self.loaded = i
        return len(moves) - i + self.doomed_pending

    def position(self, clock: int) -> int:
        j = bisect.bisect_right(self.firsts, clock, self.head) - 1
        if j < self.head:
            if clock < self.forgotten_until:
                raise ValueError(f"stepper {self.step_pin}: clock {clock} is older than "
                                 "the retained step history")
            return self.base_pos
        move = self.moves[j]
        return move.start_pos + move.sign * move.steps_by(clock)

    def step_clocks(self, start: int, end: int) -> list[tuple[int, int]]:
        """(clock, direction +1/-1) of every retained step with start <= clock < end."""
        out: list[tuple[int, int]] = []
        for move in self.moves[self.head:]:
            if move.last < start or move.first >= end:
                continue
            clocks = move.all_clocks()
            lo = int(np.searchsorted(clocks, start, side="left"))
            hi = int(np.searchsorted(clocks, end, side="left"))
            out.extend((int(c), move.sign) for c in clocks[lo:hi])
        return out

    def motion_after(self, clock: int) -> tuple[int, int] | None:
        """(direction, last step clock) of the queued move running at `clock`, or of
        the next one when none runs; None when no step is queued after `clock`. Until
        that last step the motor moves one way only (or not at all)."""
        moves = self.moves
        j = max(self.head, bisect.bisect_right(self.firsts, clock, self.head) - 1)
        while j < len(moves):
            move = moves[j]
            if move.last >= clock and move.count:
                return move.sign, move.last
            j += 1
        return None

    # --- commands ---

    def queue_step(self, interval: int, count: int, add: int) -> None:
        fw = self.fw
        now = fw.now
        fw.move_alloc()
        if not count:
            fw.shutdown("Invalid count parameter")
        # The move takes the direction last set with set_next_step_dir; a stepper
        # waiting for reset_step_clock drops the move without noting the direction.
        new_dir = self.next_dir
        if self.active(now):
            self.last_dir = new_dir
            if self.doomed is not None:
                self.doomed_pending += 1
                return
            self._append_busy(interval, count, add)
        elif self.need_reset:
            return  # dropped: a stopped stepper needs reset_step_clock first
        else:
            self.last_dir = new_dir
            self._append_idle(interval, count, add)
        fw.recheck_endstops()

    def _append_idle(self, interval: int, count: int, add: int) -> None:
        fw = self.fw
        now = fw.now
        first = now + signed32(self.next_step_time + interval - now)
        fw.check_timer(first)
        self._append(now, first - interval, interval, add, count, None)

    def _append_busy(self, interval: int, count: int, add: int) -> None:
        fw = self.fw
        last = self.moves[-1].last
        load = last + self.load_delay
        earliest = last + self.gap  # the firmware's min_next_time at load
        late = signed32(self.next_step_time + interval - earliest)
        if late < -fw.ticks_per_us * 1000:
            self.doomed = Timer(self._doomed_event, "stepper fault")
            fw.sched.add(self.doomed, load, fw.now)
            return
        floor = earliest
        if self.both_edge and (self.moves[-1].sign > 0) != bool(self.last_dir):
            floor += self.pulse_ticks  # dir change waits out the last pulse first
        first = earliest + late
        self._append(load, first - interval, interval, add, count, floor)

    def _append(self, load: int, base: int, interval: int, add: int, count: int,
                floor: int | None) -> None:
        clocks = None
        first = base + interval
        regular = floor is None or first >= floor
        if regular and count > 1:
            regular = min(interval + add, interval + (count - 1) * add) >= self.gap
        if not regular:
            i = np.arange(count, dtype=np.int64)
            ideal = base + (i + 1) * interval + add * i * (i + 1) // 2
            shifted = ideal - i * self.gap
            if floor is not None and shifted[0] < floor:
                shifted[0] = floor
            clocks = np.maximum.accumulate(shifted) + i * self.gap
        sign = 1 if self.last_dir else -1
        move = StepMove(load, base, interval, add, count, sign, self.end_pos, clocks)
        self.moves.append(move)
        self.firsts.append(move.first)
        self.end_pos += sign * count
        self.next_step_time = base + count * interval + add * (count - 1) * count // 2
        self.busy_until = move.last + self.load_delay

    def _doomed_event(self, timer: Timer) -> int | None:
        self.fw.shutdown("Stepper too far in past")
        return None

    def reset_step_clock(self, clock: int) -> None:
        if self.active(self.fw.now):
            self.fw.shutdown("Can't reset time when stepper active")
        self.next_step_time = clock
        self.need_reset = False

    def stop(self, clock: int) -> None:
        """Halt at `clock`: steps up to it stand, everything later is discarded."""
        pos = self.position(clock)
        moves = self.moves
        while len(moves) > self.head and moves[-1].first > clock:
            moves.pop()
            self.firsts.pop()
        if len(moves) > self.head:
            move = moves[-1]
            if move.last > clock:
                move.truncate(move.steps_by(clock))
        self.loaded = len(moves)  # what is left has run; the rest went back to the pool
        self.end_pos = pos
        self.busy_until = clock
        self.next_step_time = 0
        self.last_dir = self.next_dir = 0
        self.need_reset = True
        if self.doomed is not None:
            self.fw.sched.delete(self.doomed)
            self.doomed = None
        self.doomed_pending = 0

    def forget_before(self, clock: int) -> None:
        """Drop history of moves that ended before `clock` (memory stays bounded)."""
        moves = self.moves
        head = self.head
        limit = min(self.loaded, len(moves) - 1)
        while head < limit and moves[head].last < clock:
            head += 1
        if head != self.head:
            self.base_pos = moves[head].start_pos
            self.forgotten_until = moves[head - 1].last
            self.head = head
        if head > 256 and head * 2 > len(moves):
            del moves[:head]
            del self.firsts[:head]
            self.loaded -= head
            self.head = 0
