"""Deadlines between the host and the MCU when either side runs late.

The host's real MCU layer (`Mcu`, `StepSender`, `McuPwmOutput`) talks over a real pty to
the simulated firmware, serviced by a thread of this process (tests/unit/test_mcu_host's
`Board`). Two kinds of lateness are injected on purpose:

* the host is starved: its loop stalls for a while between passes, as a descheduled
  control process does. The move pool must never overflow, with steps and queued
  heater updates sharing it;
* the board is starved: its thread is kept from running (its lock held) while the host
  sends. A real MCU would have handled those commands as they arrived, so no deadline the
  host met may turn into a shutdown, while a command that was late when it was sent
  still fails as on hardware.
"""

from __future__ import annotations

import fcntl
import struct
import termios
import time

import numpy as np
import pytest

from printhost.control.stepstream import QUEUE_STEP, SET_NEXT_STEP_DIR, StepCommands
from printhost.mcu.mcu import Mcu
from printhost.mcu.outputs import McuPwmOutput
from printhost.mcu.pins import parse_pin
from printhost.mcu.steppers import McuStepper, StepSender
from tests.unit.test_mcu_host import Board

STEP_PIN = "PB13"


def _moves(stepper: McuStepper, start: int, n: int, steps: int, interval: int) -> StepCommands:
    """A direction row, one first step at `start` (counted from step clock 0), then
    n - 1 moves of `steps` steps `interval` apart."""
    rows = n + 1
    kind = np.full(rows, QUEUE_STEP, np.int8)
    kind[0] = SET_NEXT_STEP_DIR
    clocks = np.empty(rows, np.int64)
    clocks[0] = clocks[1] = start
    clocks[2:] = start + interval + np.arange(n - 1) * steps * interval
    intervals = np.full(rows, interval, np.uint32)
    intervals[0] = 0
    intervals[1] = start
    counts = np.full(rows, steps, np.uint16)
    counts[0] = 0
    counts[1] = 1
    direction = np.zeros(rows, np.int8)
    direction[0] = 1
    return StepCommands(clocks, kind, np.full(rows, stepper.oid, np.int64), intervals, counts,
                        np.zeros(rows, np.int16), direction)


def _wait(board: Board, predicate, timeout_s: float) -> dict:
    end = time.monotonic() + timeout_s
    while True:
        with board.lock:
            snap = board.sim.firmware.snapshot(board.sim.clock())
        if predicate(snap) or time.monotonic() > end:
            return snap
        time.sleep(0.01)


def _run_starved_host(reserve: bool) -> tuple[dict, int, int]:
    """Steps saturating a pool of 8 while two heaters renew their values as often as
    they may, with the host stalling 150 ms every 40 passes. Returns the board's final
    snapshot, the steps expected and the passes the host stalled in."""
    b = Board(move_count=8)
    mcu = Mcu(b.path)
    heaters = [McuPwmOutput(mcu, parse_pin(pin), 0.1, 3.0) for pin in ("PC8", "PC9")]
    if not reserve:
        mcu.reserve_for_outputs = False  # the accounting this test guards, switched off
    stepper = McuStepper(mcu, "x", parse_pin(STEP_PIN), parse_pin("PB12"))
    try:
        mcu.connect(5.0)
        mcu.configure(5.0)
        sender = StepSender(mcu, [stepper])
        # 100 ms moves, 4 s of motion: the four entries left for steps hold 0.4 s, which
        # covers the host's 150 ms stall with room for this process being scheduled late
        # (with 50 ms moves a loaded machine ran the pool dry behind a stall).
        n, steps, interval = 40, 10, 720_000
        sender.queue(_moves(stepper, mcu.clock_of(mcu.earliest_schedule_time() + 0.3), n,
                            steps, interval))
        stalls = passes = 0
        deadline = time.monotonic() + 15
        while (sender.backlog or any(h.pending for h in heaters)) \
                and time.monotonic() < deadline and not mcu.shutdown_reason:
            passes += 1
            mcu.poll()
            for i, h in enumerate(heaters):
                h.set(mcu.print_time(), 0.25 + 0.5 * ((passes + i) % 2))
            sender.flush()
            if passes % 40 == 0:
                stalls += 1
                time.sleep(0.15)                    # the starved host
            else:
                time.sleep(0.002)
        total = 1 + steps * (n - 1)
        snap = _wait(b, lambda s: s["positions"].get(STEP_PIN) == total or s["shutdown"], 6)
        return snap, total, stalls
    finally:
        mcu.close()
        b.close()


def test_steps_and_heater_updates_never_overflow_the_pool_of_a_starved_host():
    snap, total, stalls = _run_starved_host(reserve=True)
    assert stalls >= 3
    assert not snap["shutdown"], snap["reason"]
    assert snap["positions"][STEP_PIN] == total
    assert snap["max_queued_moves"] <= 8


def test_without_reserved_entries_the_same_run_overflows():
    """The control: the sender filling the whole pool, heater updates overflow it."""
    snap, _, _ = _run_starved_host(reserve=False)
    assert snap["shutdown"] and snap["reason"] == "Move queue overflow"


def _wait_until_delivered(mcu: Mcu, board: Board, timeout_s: float = 5.0) -> None:
    """Until every byte the host has written is waiting in the board's input. On a loaded
    machine the kernel may take tens of milliseconds to move bytes through a pty; what a
    test of a late-reading board needs is input that arrived in time and was read late.
    (Messages the link still holds behind a full receive window go out once the board
    acknowledges, as they would to a real board.)"""
    deadline = time.monotonic() + timeout_s
    while True:
        link = mcu.link.stats()
        waiting = struct.unpack("i", fcntl.ioctl(board.master, termios.FIONREAD, b"\0" * 4))[0]
        read = board.sim.wire.stats()["bytes_received"]
        if waiting == link["bytes_sent"] - read:
            return
        assert time.monotonic() < deadline, (link, waiting, read)
        time.sleep(0.002)


@pytest.fixture
def board():
    b = Board(move_count=4)
    yield b
    b.close()


def test_a_renewal_sent_in_time_survives_a_late_board(board):
    """A heater on with a 0.5 s max_duration; the board is kept from running past that
    deadline while the renewal, scheduled inside it, waits in its input."""
    mcu = Mcu(board.path)
    heater = McuPwmOutput(mcu, parse_pin("PC8"), 0.1, 0.5)
    try:
        mcu.connect(5.0)
        mcu.configure(5.0)
        on_at = heater.set(mcu.print_time(), 1.0)
        assert on_at is not None
        snap = _wait(board, lambda s: s["outputs"].get("PC8") == 1.0 or s["shutdown"], 3)
        assert snap["outputs"].get("PC8") == 1.0 and not snap["shutdown"]
        with board.lock:                          # the board is not scheduled ...
            time.sleep(0.1)
            mcu.poll()
            renewal = heater.set(mcu.print_time(), 0.5)   # ... while the host renews
            assert renewal is not None and renewal < on_at + 0.5
            time.sleep(0.7)                       # past the first value's max_duration
            _wait_until_delivered(mcu, board)     # the renewal waits in the board's input
        snap = _wait(board, lambda s: s["outputs"].get("PC8") == 0.5 or s["shutdown"], 3)
        assert not snap["shutdown"], snap["reason"]
        assert snap["outputs"]["PC8"] == 0.5
        with board.lock:
            assert board.sim.late_ticks_max > 0.7 * 72_000_000
    finally:
        mcu.close()


def test_a_command_late_when_sent_still_fails(board):
    mcu = Mcu(board.path)
    heater = McuPwmOutput(mcu, parse_pin("PC8"), 0.1, 3.0)
    try:
        mcu.connect(5.0)
        mcu.configure(5.0)
        time.sleep(0.05)
        with board.lock:
            # Scheduled 20 ms before the board's own present: late however early the
            # board reads it.
            past = board.sim.clock() - 20 * 72_000
            mcu.send("queue_digital_out", oid=heater.oid, clock=past & 0xFFFFFFFF,
                     on_ticks=100)
        snap = _wait(board, lambda s: s["shutdown"], 3)
        assert snap["shutdown"] and snap["reason"] == "Timer too close"
    finally:
        mcu.close()


def test_the_pool_is_judged_when_the_board_reads_late_input(board):
    """Four 20 ms moves fill a pool of four (behind a first step that an idle stepper
    loads at once); the board is kept from running while they load and the host, seeing
    them started, sends four more."""
    mcu = Mcu(board.path)
    stepper = McuStepper(mcu, "x", parse_pin(STEP_PIN), parse_pin("PB12"))
    try:
        mcu.connect(5.0)
        mcu.configure(5.0)
        sender = StepSender(mcu, [stepper])
        n, steps, interval = 9, 2, 720_000        # a first step, then 8 moves of 20 ms
        sender.queue(_moves(stepper, mcu.clock_of(mcu.earliest_schedule_time() + 0.3), n,
                            steps, interval))
        sender.flush()
        assert sender.sent_moves == 5
        # The board has read and acknowledged those first: a receive window still full
        # of them would hold the next four in the host until the board runs again, which
        # tests the window, not the pool (a loaded machine did that, "Timer too close").
        deadline = time.monotonic() + 5
        while (link := mcu.link.stats())["inflight_blocks"] or link["queued_messages"]:
            assert time.monotonic() < deadline, link
            time.sleep(0.002)
        with board.lock:
            time.sleep(0.02)
            while sender.backlog:
                mcu.poll()
                sender.flush()
                time.sleep(0.002)
            _wait_until_delivered(mcu, board)
        total = 1 + steps * (n - 1)
        snap = _wait(board, lambda s: s["positions"].get(STEP_PIN) == total or s["shutdown"], 5)
        assert not snap["shutdown"], snap["reason"]
        assert snap["positions"][STEP_PIN] == total
    finally:
        mcu.close()
