"""The control loop: status publishing and read-your-writes for commands."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from printhost.config import parse_settings
from printhost.control.printer import Printer
from printhost.control.process import run_control_loop
from printhost.ipc.channel import Command, CommandServer, Reply, Request
from printhost.ipc.status import StatusBlock


def test_loop_publishes_status_and_replies_after_publishing(tmp_path):
    settings = parse_settings({"simulation": {"time_factor": 20.0}})
    block = StatusBlock.create()
    ours, theirs = multiprocessing.Pipe()
    printer = Printer.simulated(settings)
    stop = threading.Event()
    loop = threading.Thread(target=run_control_loop,
                            args=(printer, CommandServer(theirs), block, 25.0, stop.is_set))
    loop.start()
    try:
        deadline = time.monotonic() + 5
        while block.read()[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        seq0, first = block.read()
        assert first["state"] == "idle" and first["printer"]["homed_axes"] == ""
        time.sleep(2.0)
        seq1, _ = block.read()
        # Nominally 25 Hz (two sequence steps per write); the bound is loose so a busy
        # machine cannot make it flaky, yet a loop that stopped publishing fails it.
        assert (seq1 - seq0) / 2 >= 30

        f = tmp_path / "heat.gcode"
        f.write_text("M104 S200\nM140 S60\nG4 P100000\n")
        ours.send(Request(1, Command.PRINT, {"job_id": "j1", "file": f.name,
                                             "path": str(f)}).to_wire())
        assert ours.poll(5)
        assert Reply.from_wire(ours.recv()).ok
        time.sleep(0.3)
        ours.send(Request(2, Command.CANCEL).to_wire())
        assert ours.poll(5)
        reply = Reply.from_wire(ours.recv())
        assert reply.ok and reply.id == 2
        # Read-your-writes: the snapshot published before the reply shows the cancel.
        _, snap = block.read()
        assert snap["job"]["state"] in ("cancelling", "cancelled")
        assert snap["printer"]["target_hotend_temp"] == 0.0
        assert snap["printer"]["target_bed_temp"] == 0.0

        ours.send(Request(3, Command.SHUTDOWN).to_wire())
        loop.join(5)
        assert not loop.is_alive()
        assert Reply.from_wire(ours.recv()).ok
    finally:
        stop.set()
        loop.join(5)
        block.close()


def test_loop_stops_with_heaters_off_when_the_supervisor_vanishes():
    settings = parse_settings({})
    block = StatusBlock.create()
    ours, theirs = multiprocessing.Pipe()
    printer = Printer.simulated(settings)
    printer.heaters["extruder"].set_target(200.0)
    loop = threading.Thread(target=run_control_loop,
                            args=(printer, CommandServer(theirs), block, 25.0, lambda: False))
    loop.start()
    time.sleep(0.2)
    assert printer.heaters["extruder"].target_c == 200.0
    ours.close()
    loop.join(5)
    assert not loop.is_alive()
    assert printer.heaters["extruder"].target_c == 0.0 and printer.heaters["extruder"].duty == 0.0
    block.close()


def test_a_command_is_answered_between_passes_not_at_the_next_one():
    # A long period makes the point: the reply (and the status published before it)
    # comes while the loop waits for its next pass, which is seconds away.
    from printhost.control.looptiming import LoopTiming
    settings = parse_settings({})
    block = StatusBlock.create()
    ours, theirs = multiprocessing.Pipe()
    printer = Printer.simulated(settings)
    timing = LoopTiming(30.0)
    stop = threading.Event()
    loop = threading.Thread(target=run_control_loop,
                            args=(printer, CommandServer(theirs), block, 25.0, stop.is_set,
                                  timing))
    loop.start()
    try:
        deadline = time.monotonic() + 10
        while timing.passes < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert timing.passes == 1
        seq_before, _ = block.read()
        ours.send(Request(7, Command.SET_TARGET, {"heater": "extruder",
                                                 "target": 180.0}).to_wire())
        assert ours.poll(10)
        reply = Reply.from_wire(ours.recv())
        assert reply.ok and reply.id == 7
        assert timing.passes == 1          # answered without waiting for a pass
        seq_after, snap = block.read()
        assert seq_after > seq_before and snap["printer"]["target_hotend_temp"] == 180.0
        # The supervisor going away is noticed between passes too: heaters off, exit.
        ours.close()
        loop.join(10)
        assert not loop.is_alive()
        assert printer.heaters["extruder"].target_c == 0.0
    finally:
        stop.set()
        loop.join(5)
        block.close()


def test_the_loop_period_is_print_time_with_a_floor_in_host_time():
    from printhost.control.process import LOOP_PERIOD_MIN_S, LOOP_PERIOD_PRINT_S, loop_period_s
    assert LOOP_PERIOD_PRINT_S == 0.02 and LOOP_PERIOD_MIN_S == 0.004
    board = parse_settings({"control": {"backend": "mcu"}, "mcu": {"serial": "/dev/ttyACM0"},
                            "simulation": {"time_factor": 20.0}})
    assert loop_period_s(board) == 0.02          # a real board's clock is never scaled
    for factor, period in ((1.0, 0.02), (2.0, 0.01), (5.0, 0.004), (20.0, 0.004),
                           (0.5, 0.04)):
        sim = parse_settings({"simulation": {"time_factor": factor}})
        assert loop_period_s(sim) == pytest.approx(period)


def test_an_estop_press_runs_a_pass_at_once():
    # The loop sleeps a period between passes (20 ms on a printer, 30 s here to make the
    # point); the button's callback wakes it, and the pass that handles it runs at once.
    from printhost.control.looptiming import LoopTiming
    from printhost.control.wakeup import Wakeup
    from printhost.hw.devices import PiDevices
    from printhost.sim.pi import SimPi
    settings = parse_settings({"devices": {"estop": {"pin": "GPIO22"}}})
    sim = SimPi(settings)
    wakeup = Wakeup()
    devices = PiDevices(settings, pin_factory=sim.factory, bus=sim.bus, on_event=wakeup.set)
    printer = Printer.simulated(settings)
    printer.attach_devices(devices)
    printer.heaters["extruder"].set_target(200.0)
    block = StatusBlock.create()
    ours, theirs = multiprocessing.Pipe()
    timing = LoopTiming(30.0)
    stop = threading.Event()
    loop = threading.Thread(target=run_control_loop,
                            args=(printer, CommandServer(theirs), block, 25.0, stop.is_set,
                                  timing, wakeup))
    loop.start()
    try:
        deadline = time.monotonic() + 10
        while timing.passes < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert timing.passes == 1 and printer.error is None
        sim.press_estop(True)
        deadline = time.monotonic() + 10
        while timing.passes < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert timing.passes == 2          # one pass, at once, not 30 s later
        assert printer.error == "emergency stop button pressed"
        assert printer.heaters["extruder"].target_c == 0.0
    finally:
        stop.set()
        ours.close()
        loop.join(10)
        block.close()
        devices.close()
        sim.close()
        wakeup.close()


def test_wakeup_is_readable_from_set_until_clear():
    from multiprocessing.connection import wait

    from printhost.control.wakeup import Wakeup
    w = Wakeup()
    try:
        assert wait([w], 0) == []
        for _ in range(3):
            w.set()
        assert wait([w], 0) == [w]
        w.clear()
        assert wait([w], 0) == []
        threading.Timer(0.05, w.set).start()
        assert wait([w], 10) == [w]
    finally:
        w.close()
    w.set()                                   # after close: nothing to wake, no error
