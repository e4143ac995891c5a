"""The host's MCU layer against the simulated firmware on a real pty.

The simulated MCU (wire + firmware + board) runs in a thread of the test process, and
the host opens the pty's other end through pyserial, as it opens a board.
"""

from __future__ import annotations

import os
import threading
import time
import tty

import numpy as np
import pytest

from printhost.config import parse_settings
from printhost.control.stepstream import QUEUE_STEP, SET_NEXT_STEP_DIR, StepCommands
from printhost.mcu.endstops import REASON_COMMS_TIMEOUT, REASON_PAST_END_TIME, McuEndstop
from printhost.mcu.mcu import MAX_SCHEDULE_AHEAD_S, MIN_SCHEDULE_AHEAD_S, Mcu, McuError
from printhost.mcu.outputs import McuPwmOutput
from printhost.mcu.pins import PinSpec, parse_pin
from printhost.mcu.steppers import McuStepper, StepSender
from printhost.sim.mcu.process import SimMcu


@pytest.mark.parametrize("text,expected", [
    ("PC8", PinSpec("PC8")),
    ("!PB12", PinSpec("PB12", invert=True)),
    ("^PC0", PinSpec("PC0", pullup=1)),
    ("~!PA1", PinSpec("PA1", invert=True, pullup=-1)),
    (" PA0 ", PinSpec("PA0")),
])
def test_pin_syntax(text, expected):
    pin = parse_pin(text, can_pull=True)
    assert pin == expected
    assert parse_pin(str(pin), can_pull=True) == pin


@pytest.mark.parametrize("text,message", [
    ("", "not a pin name"), ("P C8", "not a pin name"), ("!!PC8", "repeats"),
    ("^~PC0", "both a pull-up and a pull-down"), ("8PC", "not a pin name"),
])
def test_bad_pins_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        parse_pin(text, can_pull=True)


def test_pull_up_only_on_inputs():
    with pytest.raises(ValueError, match="only applies to inputs"):
        parse_pin("^PC8")


class Board:
    """A simulated MCU serviced by a thread, on a fresh pty."""

    def __init__(self, move_count: int | None = None, time_factor: float = 1.0) -> None:
        self.settings = parse_settings({"simulation": {"time_factor": time_factor}})
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.sim = SimMcu(self.settings, self.master, move_count=move_count)
        self.lock = threading.Lock()
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            with self.lock:
                self.sim.run_once()
            time.sleep(0.0005)

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        os.close(self.slave)


@pytest.fixture
def board():
    b = Board()
    yield b
    b.close()


def configured_mcu(path: str, objects=("heater",), restart_method: str = "command") -> Mcu:
    mcu = Mcu(path, restart_method=restart_method)
    if "heater" in objects:
        McuPwmOutput(mcu, parse_pin("PC8"), 0.1, 3.0)
    if "fan" in objects:
        McuPwmOutput(mcu, parse_pin("PC6"), 0.01)
    mcu.connect(5.0)
    mcu.configure(5.0)
    return mcu


def test_connect_identifies_and_configures(board):
    mcu = configured_mcu(board.path)
    try:
        assert mcu.connected and not mcu.reused_config
        assert mcu.clock_freq == 72_000_000
        assert mcu.move_count > 0
        assert mcu.dictionary.version == "printhost-sim-0.1.0"
        with board.lock:
            snap = board.sim.firmware.snapshot(board.sim.clock())
        assert snap["is_config"] and snap["config_crc"] == mcu.config_crc
        # The clock estimate tracks the board's clock (time factor 1: 72 MHz per second).
        # Right after connecting the rate rests on a few samples over a short time, so a
        # millisecond of jitter (the board shares this process) moves it by a percent or
        # two; what must be exact already is the time estimate, checked below.
        assert mcu.clocksync.freq_hz == pytest.approx(72e6, rel=0.05)
        with board.lock:
            true_pt = board.sim.clock() / 72e6
            estimate = mcu.print_time()
        assert estimate == pytest.approx(true_pt, abs=0.005)
    finally:
        mcu.close()


def test_a_second_host_reuses_a_matching_config(board):
    configured_mcu(board.path).close()
    again = configured_mcu(board.path)
    try:
        assert again.reused_config and again.connected
    finally:
        again.close()


def test_a_different_config_needs_a_restart(board):
    configured_mcu(board.path).close()
    other = Mcu(board.path, restart_method="none")
    McuPwmOutput(other, parse_pin("PC8"), 0.1, 3.0)
    McuPwmOutput(other, parse_pin("PC6"), 0.01)
    other.connect(5.0)
    with pytest.raises(McuError, match="holds a different configuration"):
        other.configure(5.0)
    other.close()
    # With restart by command the board is rebooted and takes the new configuration.
    third = Mcu(board.path, restart_method="command")
    McuPwmOutput(third, parse_pin("PC8"), 0.1, 3.0)
    McuPwmOutput(third, parse_pin("PC6"), 0.01)
    third.connect(5.0)
    with pytest.raises(McuError):
        third.configure(5.0)
    third.firmware_restart(10.0)
    third.configure(5.0)
    try:
        assert third.connected and not third.reused_config
    finally:
        third.close()


def test_missing_device_is_a_clear_error(tmp_path):
    port = str(tmp_path / "no-such-tty")
    mcu = Mcu(port)
    with pytest.raises(McuError, match="cannot open") as caught:
        mcu.connect(1.0)
    mcu.close()
    # Said once, with what to check: not pyserial's text wrapped twice more.
    message = str(caught.value)
    assert message.count(port) == 1, message
    assert message.count("No such file or directory") == 1, message
    assert message.count("cannot open") == 1 and "/dev/serial/by-id/" in message, message


def test_silent_device_is_a_clear_error():
    master, slave = os.openpty()
    tty.setraw(slave)
    mcu = Mcu(os.ttyname(slave))
    try:
        with pytest.raises(McuError, match="no answer"):
            mcu.connect(1.0)
    finally:
        mcu.close()
        os.close(master)
        os.close(slave)


def test_emergency_stop_reports_the_reason_from_the_dictionary(board):
    mcu = configured_mcu(board.path)
    faults: list[str] = []
    mcu.on_fault = faults.append
    try:
        mcu.emergency_stop()
        deadline = time.monotonic() + 5
        while mcu.shutdown_reason is None and time.monotonic() < deadline:
            mcu.poll()
            time.sleep(0.005)
        assert mcu.shutdown_reason == "Command request"
        assert faults == ["MCU shutdown: Command request"]
        assert not mcu.connected
    finally:
        mcu.close()


def test_step_sender_never_overflows_the_move_pool():
    """With a pool of 8 moves and 60 moves to run, the sender must hold moves back
    until slots free up; the firmware shuts down on an overflow."""
    b = Board(move_count=8)
    mcu = Mcu(b.path)
    stepper = McuStepper(mcu, "x", parse_pin("PB13"), parse_pin("PB12"))
    try:
        mcu.connect(5.0)
        mcu.configure(5.0)
        sender = StepSender(mcu, [stepper])
        n = 60
        # Half a second of slack: the board shares this process (and its GIL) and may
        # read the first commands late when the machine is busy. For the same reason the
        # moves are 100 ms long: a full pool then holds 0.7 s of motion beyond the
        # oldest, and a new move goes out well ahead of its time even when this process
        # is scheduled late (a loaded machine ran a pool of 10 ms moves dry, and once
        # one of 50 ms moves, 0.35 s).
        start = mcu.clock_of(mcu.earliest_schedule_time() + 0.5)
        interval = 720_000  # 10 ms per step
        # A direction row, one far step (counted from step clock 0, as after
        # reset_step_clock), then n - 1 moves of 10 steps each.
        rows = n + 1
        kind = np.full(rows, QUEUE_STEP, np.int8)
        kind[0] = SET_NEXT_STEP_DIR
        clocks = np.empty(rows, np.int64)
        clocks[0] = clocks[1] = start
        clocks[2:] = start + interval + np.arange(n - 1) * 10 * interval
        intervals = np.full(rows, interval, np.uint32)
        intervals[0] = 0
        intervals[1] = start
        counts = np.full(rows, 10, np.uint16)
        counts[0] = 0
        counts[1] = 1
        direction = np.zeros(rows, np.int8)
        direction[0] = 1
        cmds = StepCommands(clocks, kind, np.full(rows, stepper.oid, np.int64), intervals,
                            counts, np.zeros(rows, np.int16), direction)
        total_steps = 1 + 10 * (n - 1)
        sender.queue(cmds)
        deadline = time.monotonic() + 20
        max_queued = 0
        while sender.backlog and time.monotonic() < deadline:
            mcu.poll()
            sender.flush()
            with b.lock:
                max_queued = max(max_queued, b.sim.firmware.queued_moves())
            time.sleep(0.002)
        assert sender.backlog == 0 and sender.sent_moves == n
        end = time.monotonic() + 8
        while time.monotonic() < end:
            with b.lock:
                snap = b.sim.firmware.snapshot(b.sim.clock())
            if snap["positions"].get("PB13") == total_steps or snap["shutdown"]:
                break
            time.sleep(0.01)
        assert not snap["shutdown"], snap["reason"]
        assert snap["positions"]["PB13"] == total_steps
        assert max_queued <= 8
        assert b.sim.step_stream_crc == sender.stream_crc
    finally:
        mcu.close()
        b.close()


def test_step_sender_puts_the_python_codecs_bytes_on_the_wire():
    """The sender encodes the rows the pool admits together, with the compiled encoder
    `printhost batch` uses; the bytes must be those of the MCU's own codec, row by row,
    with each stepper's direction pin inversion applied, and the board's digest of what
    it executed must equal the host's."""
    b = Board()
    mcu = Mcu(b.path)
    plain = McuStepper(mcu, "x", parse_pin("PB13"), parse_pin("PB12"))
    inverted = McuStepper(mcu, "y", parse_pin("PB10"), parse_pin("!PB2"))
    try:
        mcu.connect(5.0)
        mcu.configure(5.0)
        sender = StepSender(mcu, [plain, inverted])
        sent: list[bytes] = []
        send_encoded = mcu.send_encoded

        def record(messages):
            sent.extend(messages)
            send_encoded(messages)

        mcu.send_encoded = record
        start = mcu.clock_of(mcu.earliest_schedule_time() + 0.2)
        interval = 7_200       # 0.1 ms per step
        # Per stepper: one step at `start` (counted from step clock 0, as after
        # reset_step_clock), then moves of 5 steps forward and back; each row is
        # (clock of its first step, kind, oid, interval, count, add, dir).
        rows = []
        for oid in (plain.oid, inverted.oid):
            rows.append((start, SET_NEXT_STEP_DIR, oid, 0, 0, 0, 1))
            rows.append((start, QUEUE_STEP, oid, start, 1, 0, 0))
            last, current = start, 1
            for direction, add in ((1, 10), (0, -10), (0, 0)):
                if direction != current:
                    rows.append((last + interval, SET_NEXT_STEP_DIR, oid, 0, 0, 0, direction))
                    current = direction
                first = last + interval
                rows.append((first, QUEUE_STEP, oid, interval, 5, add, 0))
                last = first + sum(interval + k * add for k in range(1, 5))
        rows.sort(key=lambda r: r[0])
        cols = list(zip(*rows))
        cmds = StepCommands(np.array(cols[0], np.int64), np.array(cols[1], np.int8),
                            np.array(cols[2], np.int64), np.array(cols[3], np.uint32),
                            np.array(cols[4], np.uint16), np.array(cols[5], np.int16),
                            np.array(cols[6], np.int8))
        # Two batches, the second queued before the first is sent.
        sender.queue(StepCommands(*(a[:5] for a in cols_of(cmds))))
        sender.queue(StepCommands(*(a[5:] for a in cols_of(cmds))))
        assert sender.backlog == len(rows)
        sender.flush()
        assert sender.backlog == 0 and sender.sent_moves == 8
        invert = {plain.oid: 0, inverted.oid: 1}
        expected = []
        for clock, kind, oid, interval_, count, add, direction in rows:
            if kind == QUEUE_STEP:
                expected.append(mcu.codec.encode("queue_step", oid=oid, interval=interval_,
                                                 count=count, add=add))
            else:
                expected.append(mcu.codec.encode("set_next_step_dir", oid=oid,
                                                 dir=direction ^ invert[oid]))
        assert sent == expected
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with b.lock:
                snap = b.sim.firmware.snapshot(b.sim.clock())
                done = b.sim.step_commands == 8 and b.sim.step_stream_crc == sender.stream_crc
            if done or snap["shutdown"]:
                break
            time.sleep(0.01)
        assert not snap["shutdown"], snap["reason"]
        assert b.sim.step_commands == 8
        assert b.sim.step_stream_crc == sender.stream_crc
    finally:
        mcu.close()
        b.close()


def cols_of(cmds: StepCommands) -> tuple[np.ndarray, ...]:
    return (cmds.clock, cmds.kind, cmds.oid, cmds.interval, cmds.count, cmds.add, cmds.dir)


@pytest.mark.parametrize("time_factor", [1.0, 20.0])
def test_schedule_margin_is_print_time_at_any_time_factor(time_factor):
    # Klipper's margins are print time; a fast simulation must not stretch them (that
    # would hide a late host), and a clean line adds nothing for retransmissions.
    b = Board(time_factor=time_factor)
    try:
        mcu = configured_mcu(b.path)
        try:
            assert mcu.wall_to_print_s(1.0) == pytest.approx(time_factor, rel=0.05)
            # The board answers nothing while held, so no round trip moves the timeout
            # between the readings below.
            with b.lock:
                if mcu.link.stats()["retransmits"]:
                    # The board is a thread of this process; on a loaded machine a block
                    # can need a retransmission, and a noisy line is allowed its room
                    # (4 RTOs).
                    link = mcu.wall_to_print_s(min(2.0, 4.0 * mcu.link.rto_s))
                    assert mcu.schedule_margin_s() == pytest.approx(
                        min(MAX_SCHEDULE_AHEAD_S, max(MIN_SCHEDULE_AHEAD_S, link)))
                else:
                    assert mcu.schedule_margin_s() == MIN_SCHEDULE_AHEAD_S
        finally:
            mcu.close()
    finally:
        b.close()


@pytest.mark.parametrize("time_factor", [1.0, 10.0, 20.0])
def test_motion_lead_covers_a_host_stall_at_any_time_factor(time_factor):
    # At time factor 1 motion goes Klipper's second of print time ahead; a fast
    # simulation keeps at least MOTION_LEAD_MIN_WALL_S of host time queued (a stalled
    # host is stalled in wall seconds), up to the firmware's 5 s of print time.
    from printhost.control.mcu_hardware import (
        MOTION_LEAD_MIN_WALL_S, MOTION_LEAD_S, motion_lead_s)
    b = Board(time_factor=time_factor)
    try:
        mcu = configured_mcu(b.path)
        try:
            # Both read while the board answers nothing: no round trip between them
            # moves the timeout the margin rests on.
            with b.lock:
                lead = motion_lead_s(mcu)
                margin = mcu.schedule_margin_s()
            # Twice the margin, within the firmware's reach: on a loaded machine a block
            # to this in-process board can need a retransmission, and at 10x a noisy
            # line's margin (2.87 s was seen) is more than half of it.
            assert lead >= MOTION_LEAD_S and lead >= min(MAX_SCHEDULE_AHEAD_S, 2.0 * margin)
            assert lead <= MAX_SCHEDULE_AHEAD_S
            wall = lead / mcu.wall_to_print_s(1.0)
            if time_factor == 1.0:
                assert lead == pytest.approx(max(MOTION_LEAD_S, 2.0 * margin))
                assert wall >= MOTION_LEAD_S * 0.95
            else:
                floor = min(MOTION_LEAD_MIN_WALL_S, MAX_SCHEDULE_AHEAD_S / time_factor)
                # Two readings of the clock-rate estimate, which moves by tenths of a
                # percent on a loaded machine (0.2492 s against 0.25 s was seen).
                assert wall >= floor * 0.98
                assert lead == pytest.approx(min(MAX_SCHEDULE_AHEAD_S, max(
                    MOTION_LEAD_S, 2.0 * margin, MOTION_LEAD_MIN_WALL_S * time_factor)),
                    rel=0.05)
        finally:
            mcu.close()
    finally:
        b.close()


def test_a_heater_update_after_the_line_turned_noisy_stays_within_max_duration():
    # In a fast simulation a noisy line widens the schedule margin from 0.25 s to up to
    # 5 s of print time (at 5x, 4 timeouts of 0.5 s are 10 s of print time, capped). The firmware refuses an update due more than max_duration (3 s) after an
    # "on" one before it; scheduled at the widened margin at once, the next update was
    # (a loaded suite run shut down with "Scheduled digital out event will exceed
    # max_duration"). The margin grows over several updates instead, and the board
    # keeps the heater on without a fault.
    from printhost.mcu.outputs import MAX_DURATION_GAP_FRACTION
    # 5x rather than 20x: the board is a thread of this process, and 0.25 s of print
    # time must stay long enough in host time for it on a busy machine.
    b = Board(time_factor=5.0)
    try:
        mcu = Mcu(b.path, restart_method="command")
        heater = McuPwmOutput(mcu, parse_pin("PC8"), 0.1, 3.0)
        mcu.connect(5.0)
        mcu.configure(5.0)
        try:
            first = heater.set(mcu.print_time(), 0.5)
            deadline = time.monotonic() + 5.0
            while not mcu.link.idle() and time.monotonic() < deadline:
                time.sleep(0.001)
            assert mcu.link.idle()
            whens = [first]
            # While the board answers nothing, no round trip can shorten the timeout set
            # below (a loaded CI run measured one between two updates, and the margin fell
            # back to the quiet line's).
            with b.lock:
                # The line needed a retransmission just now, and its timeout is long.
                mcu.link.last_retransmit_s = time.monotonic()
                mcu.link.rto_s = 0.5
                assert mcu.schedule_margin_s() == MAX_SCHEDULE_AHEAD_S
                for _ in range(6):
                    now = mcu.print_time()
                    whens.append(heater.set(now, 0.5))
                    assert whens[-1] - whens[-2] <= MAX_DURATION_GAP_FRACTION * 3.0 + 1e-6
                    assert whens[-1] >= now + MIN_SCHEDULE_AHEAD_S - 1e-9
                # Over a few updates the margin reaches the noisy line's.
                assert whens[-1] - now >= MAX_SCHEDULE_AHEAD_S - 0.5
            # Renewed as the control loop renews it (every reading, 0.3 s of print time):
            # 2 s of host time is 10 s on the board, past every update sent above.
            deadline = time.monotonic() + 2.0
            renewed = mcu.print_time()
            while time.monotonic() < deadline:
                mcu.poll()
                if mcu.print_time() - renewed >= 0.3:
                    renewed = mcu.print_time()
                    heater.flush() if heater.pending else heater.set(renewed, 0.5)
                with b.lock:
                    snap = b.sim.firmware.snapshot(b.sim.clock())
                if snap["shutdown"]:
                    break
                time.sleep(0.01)
            assert not snap["shutdown"], snap["reason"]
        finally:
            mcu.close()
    finally:
        b.close()


class _ReportsLost(McuEndstop):
    """An endstop whose `trsync_state` reports all go missing on the line (the MCU does
    not resend them): only the host's own keep-alive can extend the deadline."""

    def _on_trsync_state(self, params, t):
        if params["can_trigger"]:
            return
        super()._on_trsync_state(params, t)


def _watch(mcu: Mcu, endstop: McuEndstop, seconds: float, keep_alive: bool) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not endstop.triggered:
        mcu.poll()
        if keep_alive:
            endstop.keep_alive()
        time.sleep(0.01)


def test_a_homing_deadline_survives_lost_reports_while_the_host_keeps_it_alive(board):
    """The trsync's deadline stops the motors when the host stops extending it. Without
    the reports (lost on a noisy line), the deadline passes (the control run: reason
    "comms timeout") unless the host extends it on its own clock every control pass."""
    mcu = Mcu(board.path, restart_method="command")
    free = _ReportsLost(mcu, parse_pin("PA5"), [])     # a pin nothing drives: never hit
    kept = _ReportsLost(mcu, parse_pin("PA6"), [])
    mcu.connect(5.0)
    mcu.configure(5.0)
    try:
        free.arm(mcu.print_time() + 0.05)
        _watch(mcu, free, 2.0, keep_alive=False)
        assert free.trigger_reason == REASON_COMMS_TIMEOUT
        free.disarm()
        kept.arm(mcu.print_time() + 0.05)
        _watch(mcu, kept, 2.0, keep_alive=True)
        assert not kept.triggered, kept.trigger_reason
        kept.request_end(REASON_PAST_END_TIME)
        _watch(mcu, kept, 2.0, keep_alive=True)
        assert kept.trigger_reason == REASON_PAST_END_TIME   # and it still ends on request
        kept.disarm()
    finally:
        mcu.close()
