"""Simulated steppers: exact step clocks, positions, queue limits, timing faults.

The simulator computes each move in closed form. `ReferenceStepper` instead runs the
firmware's stepper timer the plain way - one event per step and unstep edge, the
interval updated after every step, late steps pushed back to the pulse limit - and the
two must agree on every step's clock and direction and on any shutdown.
"""

from __future__ import annotations

import random
from collections import deque

import pytest

from tests.unit.test_sim_fw_support import MS, US, Harness

PULSE = 2 * US  # 144 ticks, Klipper's default 2 us step pulse at 72 MHz


class ReferenceStepper:
    """One event per edge, as the firmware's timer runs the stepper."""

    def __init__(self, pulse: int, both_edge: bool) -> None:
        self.pulse = pulse
        self.both_edge = both_edge
        self.count = 0  # edges left in the current move
        self.interval = 0
        self.add = 0
        self.next_step_time = 0
        self.waketime: int | None = None
        self.queue: deque[tuple[int, int, int, bool, int]] = deque()
        self.last_dir = 0
        self.next_dir = 0
        self.need_reset = False
        self.sign = -1
        self.steps: list[tuple[int, int]] = []
        self.fault: tuple[str, int] | None = None

    def run_until(self, clock: int) -> None:
        while self.fault is None and self.waketime is not None and self.waketime <= clock:
            self._event(self.waketime)

    def _event(self, cur: int) -> None:
        if self.both_edge or self.count % 2 == 0:
            self.steps.append((cur, self.sign))
        min_next = cur + self.pulse
        count = self.count - 1
        if not self.both_edge and count % 2 == 1:
            self.count, self.waketime = count, min_next  # unstep edge next
            return
        if count:
            self.next_step_time += self.interval
            self.interval += self.add
            self.count = count
            self.waketime = max(self.next_step_time, min_next)
            return
        self.waketime = min_next
        self._load(cur, was_active=True)

    def _load(self, cur: int, was_active: bool) -> None:
        if not self.queue:
            self.count = 0
            self.waketime = None
            return
        interval, count, add, dir_change, sign = self.queue.popleft()
        self.sign = sign
        self.add = add
        self.interval = interval + add
        min_next = self.waketime if was_active else 0
        self.next_step_time += interval
        self.waketime = self.next_step_time
        self.count = count if self.both_edge else 2 * count
        if was_active and self.next_step_time < min_next:
            if self.next_step_time - min_next < -1000 * US:
                self.fault = ("Stepper too far in past", cur)
                return
            self.waketime = min_next
        if was_active and dir_change:
            now = max(cur, min_next) if self.both_edge else cur
            self.waketime = max(self.waketime, now + self.pulse)

    def queue_step(self, now: int, interval: int, count: int, add: int) -> None:
        self.run_until(now)
        dir_change = self.last_dir != self.next_dir
        new_dir = self.next_dir
        move = (interval, count, add, dir_change, 1 if new_dir else -1)
        if self.count:
            self.last_dir = new_dir
            self.queue.append(move)
        elif not self.need_reset:
            self.last_dir = new_dir
            self.queue.append(move)
            self._load(now, was_active=False)
            if self.waketime is not None and self.waketime < now:
                self.fault = ("Timer too close", now)


def stepper_harness(both_edge: bool = False, move_count: int = 500) -> Harness:
    h = Harness(move_count=move_count)
    invert = -1 if both_edge else 0
    h.configure(f"config_stepper oid=0 step_pin=PA1 dir_pin=PA2 invert_step={invert}"
                f" step_pulse_ticks={PULSE}", "config_trsync oid=1")
    return h


def random_program(rng: random.Random, moves: int) -> list[tuple[int, int, int, int, int]]:
    """(arrival clock, dir, interval, count, add): host-like, with gaps and tight spots."""
    program = []
    clock = 1000 * US
    for _ in range(moves):
        if rng.random() < 0.15:
            clock += rng.randrange(0, 20 * MS)
        kind = rng.random()
        if kind < 0.15:
            interval, add = rng.randrange(40, 400), rng.randrange(-3, 4)  # pushed back
        elif kind < 0.3:
            interval, add = rng.randrange(300, 900), rng.randrange(-40, 41)
        else:
            interval, add = rng.randrange(300, 6000), rng.randrange(-8, 9)
        count = rng.choice([1, 2, 3, rng.randrange(1, 40), rng.randrange(1, 400)])
        program.append((clock, rng.randrange(2), interval, count, add))
        clock += rng.randrange(0, 200 * US)
    return program


@pytest.mark.parametrize("both_edge", [False, True])
@pytest.mark.parametrize("seed", range(12))
def test_step_clocks_match_a_per_step_reference(seed: int, both_edge: bool) -> None:
    rng = random.Random(seed * 2 + both_edge)
    h = stepper_harness(both_edge)
    ref = ReferenceStepper(PULSE, both_edge)
    h.cmd("reset_step_clock oid=0 clock=5000", 0)
    ref.next_step_time = 5000
    for clock, direction, interval, count, add in random_program(rng, 60):
        ref.run_until(clock)
        if ref.count == 0 and ref.fault is None and rng.random() < 0.9:
            # An idle stepper: a host restarts its timing from a fresh clock.
            restart = clock + rng.randrange(0, 2 * MS)
            h.cmd(f"reset_step_clock oid=0 clock={restart}", clock)
            ref.next_step_time = restart
        h.cmd(f"set_next_step_dir oid=0 dir={direction}", clock)
        ref.next_dir = direction
        h.cmd(f"queue_step oid=0 interval={interval} count={count} add={add}", clock)
        ref.queue_step(clock, interval, count, add)
        if ref.fault or h.fw.is_shutdown:
            break
    end = max([c for c, _ in ref.steps] + [h.fw.now]) + 400 * MS
    ref.run_until(end)
    h.fw.advance(end)
    if ref.fault is None:
        assert not h.fw.is_shutdown, h.fw.shutdown_reason
    else:
        assert h.fw.shutdown_reason == ref.fault[0]
        assert h.last("shutdown")["clock"] == ref.fault[1]
    got = h.fw.step_clocks("PA1", 0, end + 1)
    assert got == ref.steps
    # Positions at arbitrary clocks, including exactly on and next to step edges.
    probes = [rng.randrange(0, end) for _ in range(200)]
    probes += [c + d for c, _ in ref.steps[:: max(1, len(ref.steps) // 50)] for d in (-1, 0)]
    for probe in probes:
        expected = sum(s for c, s in ref.steps if c <= probe)
        assert h.fw.stepper_positions(probe)["PA1"] == expected, probe


def test_first_steps_interval_and_add_and_reported_position() -> None:
    h = stepper_harness()
    h.cmd("reset_step_clock oid=0 clock=10000", 0)
    h.cmd("set_next_step_dir oid=0 dir=1", 0)
    h.cmd("queue_step oid=0 interval=1000 count=4 add=100", 0)
    h.cmd("set_next_step_dir oid=0 dir=0", 0)
    h.cmd("queue_step oid=0 interval=2000 count=2 add=0", 0)
    clocks = [c for c, _ in h.fw.step_clocks("PA1", 0, 10**9)]
    assert clocks == [11000, 12100, 13300, 14600, 16600, 18600]
    h.cmd("stepper_get_position oid=0", 13300)
    h.cmd("stepper_get_position oid=0", 20000)
    assert [p["pos"] for _, p, _ in h.take("stepper_position")] == [3, 2]


def test_32_bit_clock_wrap_during_a_long_move() -> None:
    h = stepper_harness()
    start = (1 << 32) - 50 * MS  # 50 ms before the 32-bit clock wraps
    h.cmd("reset_step_clock oid=0 clock=%d" % (start & 0xFFFFFFFF), start - MS)
    h.cmd("set_next_step_dir oid=0 dir=1", start - MS)
    h.cmd("queue_step oid=0 interval=7200 count=20 add=0", start - MS)  # 10 kHz for 2 ms
    h.cmd("reset_step_clock oid=0 clock=%d" % ((start + 1000 * MS) & 0xFFFFFFFF),
          start + 990 * MS)
    clocks = [c for c, _ in h.fw.step_clocks("PA1", 0, 1 << 34)]
    assert clocks == [start + 7200 * (i + 1) for i in range(20)]
    # After the wrap a 32-bit clock names a time past 2**32.
    h.cmd("queue_step oid=0 interval=7200 count=20 add=0", start + 995 * MS)
    assert h.fw.step_clocks("PA1", start + 3 * MS, 1 << 34)[0][0] == start + 1000 * MS + 7200
    assert h.fw.stepper_positions(start + 1010 * MS)["PA1"] == 40
    h.cmd("stepper_get_position oid=0", start + 1010 * MS)
    assert h.last("stepper_position")["pos"] == 40


def test_move_queue_overflow_counts_moves_not_yet_started() -> None:
    h = stepper_harness(move_count=4)
    h.cmd("reset_step_clock oid=0 clock=%d" % (10 * MS), 0)
    for _ in range(5):  # the first loads at once; four wait in the pool
        h.cmd("queue_step oid=0 interval=%d count=10 add=0" % MS, 0)
    assert not h.fw.is_shutdown and h.fw.queued_moves() == 4
    # Once the first move's last pulse has ended, its successor leaves the pool.
    first_move_end = 10 * MS + 10 * MS + PULSE
    h.fw.advance(first_move_end - 1)
    assert h.fw.queued_moves() == 4
    h.fw.advance(first_move_end)
    assert h.fw.queued_moves() == 3
    h.cmd("queue_step oid=0 interval=%d count=10 add=0" % MS, first_move_end)
    h.cmd("queue_step oid=0 interval=%d count=10 add=0" % MS, first_move_end)
    assert h.fw.shutdown_reason == "Move queue overflow"


def test_stepper_too_far_in_past_fires_when_the_late_move_loads() -> None:
    h = stepper_harness()
    h.cmd("reset_step_clock oid=0 clock=%d" % MS, 0)
    # 1000 steps requested every 100 ticks, but pulses allow one per 288: the motor
    # falls 188 ms behind its schedule, and the next move's first step is due long
    # before the last pulse of this one ends.
    h.cmd("queue_step oid=0 interval=100 count=1000 add=0", 0)
    h.cmd("queue_step oid=0 interval=100 count=10 add=0", 0)
    last = h.fw.step_clocks("PA1", 0, 10**9)[-1][0]
    assert last == MS + 100 + 999 * 2 * PULSE
    h.fw.advance(last + PULSE - 1)
    assert not h.fw.is_shutdown
    h.fw.advance(last + 10 * MS)
    assert h.fw.shutdown_reason == "Stepper too far in past"
    assert h.last("shutdown")["clock"] == last + PULSE
    assert h.fw.stepper_positions(last + 10 * MS)["PA1"] == -1000


def test_first_step_in_the_past_is_timer_too_close() -> None:
    h = stepper_harness()
    h.cmd("reset_step_clock oid=0 clock=1000", 0)
    h.cmd("queue_step oid=0 interval=1000 count=5 add=0", 1999)  # first step at 2000
    assert not h.fw.is_shutdown
    h = stepper_harness()
    h.cmd("reset_step_clock oid=0 clock=1000", 0)
    h.cmd("queue_step oid=0 interval=1000 count=5 add=0", 2001)
    assert h.fw.shutdown_reason == "Timer too close"
    assert h.fw.stepper_positions(10**6)["PA1"] == 0


def test_reset_step_clock_rules_and_invalid_count() -> None:
    h = stepper_harness()
    h.cmd("reset_step_clock oid=0 clock=1000", 0)
    h.cmd("queue_step oid=0 interval=1000 count=5 add=0", 0)
    h.cmd("reset_step_clock oid=0 clock=1000", 5000 + PULSE)  # last step 6000: busy
    assert h.fw.shutdown_reason == "Can't reset time when stepper active"
    h = stepper_harness()
    h.cmd("reset_step_clock oid=0 clock=1000", 0)
    h.cmd("queue_step oid=0 interval=1000 count=5 add=0", 0)
    h.cmd("reset_step_clock oid=0 clock=1000", 6000 + PULSE)  # idle after the unstep
    assert not h.fw.is_shutdown
    h.cmd("queue_step oid=0 interval=1000 count=0 add=0", 7000)
    assert h.fw.shutdown_reason == "Invalid count parameter"


def test_trigger_stops_the_stepper_and_it_waits_for_a_clock_reset() -> None:
    h = stepper_harness()
    h.cmd("trsync_start oid=1 report_clock=0 report_ticks=0 expire_reason=4", 0)
    h.cmd("stepper_stop_on_trigger oid=0 trsync_oid=1", 0)
    h.cmd("reset_step_clock oid=0 clock=0", 0)
    h.cmd("set_next_step_dir oid=0 dir=1", 0)
    for _ in range(3):
        h.cmd("queue_step oid=0 interval=1000 count=100 add=0", 0)
    h.cmd("trsync_trigger oid=1 reason=2", 150_500)
    assert h.last("trsync_state") == {"oid": 1, "can_trigger": 0, "trigger_reason": 2,
                                      "clock": 0}
    assert h.fw.stepper_positions(10**7)["PA1"] == 150
    assert h.fw.queued_moves() == 0
    # Moves are dropped until reset_step_clock; the direction must be set again.
    h.cmd("queue_step oid=0 interval=1000 count=10 add=0", 200_000)
    assert h.fw.stepper_positions(10**7)["PA1"] == 150
    h.cmd("reset_step_clock oid=0 clock=300000", 200_000)
    h.cmd("queue_step oid=0 interval=1000 count=10 add=0", 200_000)
    assert h.fw.stepper_positions(10**7)["PA1"] == 140
    h.cmd("stepper_get_position oid=0", 10**7)
    assert h.last("stepper_position")["pos"] == 140


def test_signal_can_only_be_armed_once_per_trsync_start() -> None:
    h = stepper_harness()
    h.cmd("stepper_stop_on_trigger oid=0 trsync_oid=1", 0)
    # trsync_start disarms whatever was registered, so the host arms after starting.
    h.cmd("trsync_start oid=1 report_clock=0 report_ticks=0 expire_reason=4", 0)
    h.cmd("stepper_stop_on_trigger oid=0 trsync_oid=1", 0)
    assert not h.fw.is_shutdown
    h.cmd("stepper_stop_on_trigger oid=0 trsync_oid=1", 0)
    assert h.fw.shutdown_reason == "Can't add signal that is already active"


def test_shutdown_freezes_positions_mid_move() -> None:
    h = stepper_harness()
    h.cmd("reset_step_clock oid=0 clock=0", 0)
    h.cmd("queue_step oid=0 interval=1000 count=1000 add=0", 0)
    h.cmd("emergency_stop", 500_999)
    assert h.fw.stepper_positions(10**8)["PA1"] == -500
    assert h.fw.snapshot(10**8)["positions"] == {"PA1": -500}


def test_a_million_steps_are_cheap() -> None:
    h = stepper_harness()
    h.cmd("reset_step_clock oid=0 clock=0", 0)
    clock = 0
    for i in range(400):
        h.cmd("queue_step oid=0 interval=300 count=2500 add=0", clock)
        clock += 2500 * 300
        h.fw.advance(clock - 100 * MS)
    assert h.fw.stepper_positions(clock)["PA1"] == -1_000_000
    assert h.fw.stepper_positions(clock - 300 * 1250)["PA1"] == -1_000_000 + 1250


@pytest.mark.parametrize("both_edge, expected", [
    (False, [1000, 2000, 3000, 3288, 3576]),  # pulse gap 288; a dir change costs nothing more
    (True, [1000, 2000, 3000, 3288, 3432]),  # gap 144, but a dir change waits one pulse
])
def test_direction_change_right_after_a_move(both_edge: bool, expected: list[int]) -> None:
    h = stepper_harness(both_edge)
    ref = ReferenceStepper(PULSE, both_edge)
    h.cmd("reset_step_clock oid=0 clock=0", 0)
    for direction, interval, count in ((1, 1000, 3), (0, 200, 2)):
        h.cmd(f"set_next_step_dir oid=0 dir={direction}", 0)
        h.cmd(f"queue_step oid=0 interval={interval} count={count} add=0", 0)
        ref.next_dir = direction
        ref.queue_step(0, interval, count, 0)
    ref.run_until(10**6)
    got = h.fw.step_clocks("PA1", 0, 10**6)
    assert got == ref.steps == list(zip(expected, [1, 1, 1, -1, -1]))
    assert h.fw.stepper_positions(10**6)["PA1"] == 1


def test_step_history_is_kept_for_one_second() -> None:
    h = stepper_harness()
    h.cmd("reset_step_clock oid=0 clock=0", 0)
    clock = 0
    for _ in range(600):  # 600 moves of 10 ms each
        h.cmd(f"queue_step oid=0 interval={MS} count=10 add=0", clock)
        clock += 10 * MS
        h.fw.advance(clock - 20 * MS)
    h.fw.advance(clock)
    assert h.fw.stepper_positions(clock - 990 * MS)["PA1"] == -6000 + 990
    with pytest.raises(ValueError):
        h.fw.stepper_positions(clock - 2000 * MS)
    stepper = h.fw._steppers[0]
    assert len(stepper.moves) < 400  # old moves are dropped, not kept for ever
