"""The control process's job runner, on the simulated printer with a manual clock.

The central property: a paused-and-resumed print deposits exactly the same path and
filament as an uninterrupted one, apart from the park and return moves.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from printhost.config import Settings, parse_settings
from printhost.control.clock import ManualClock
from printhost.control.executor import TimelineExecutor
from printhost.control.interpreter import PartFan
from printhost.control.job import JobConflict, JobState
from printhost.control.printer import Printer
from printhost.sim.heaters import build_simulated_heaters

CUBE = Path(__file__).resolve().parents[1] / "data" / "cube.gcode"
TICK_S = 0.1


def make_printer(settings: Settings | None = None):
    settings = settings or parse_settings({"pause": {"park_x": 5.0, "park_y": 220.0}})
    clock = ManualClock()
    heaters, hardware = build_simulated_heaters(settings, clock)
    moves: list = []
    executor = TimelineExecutor(
        clock, start_position=(117.5, 117.5, 10.0, 0.0),
        on_move_started=lambda t, m: moves.append(m))

    def fan_changed(speed: float) -> None:
        hardware["extruder"].fan = speed

    printer = Printer(settings, clock, heaters, executor, PartFan(fan_changed))
    printer.sim_hardware = hardware  # test access to the thermal models
    return printer, clock, moves


def run_until(printer, clock, predicate, limit_s: float) -> None:
    end = clock.now() + limit_s
    while clock.now() < end:
        if predicate():
            return
        clock.advance(TICK_S)
        printer.tick()
    raise AssertionError(f"condition not reached in {limit_s} s; status {printer.get_status()}")


def geometry(move) -> tuple:
    return tuple(round(v, 9) for v in move.start + move.end)


def print_file(path: Path, pause_at_line: int | None = None):
    printer, clock, moves = make_printer()
    printer.jobs.start("job1", path.name, str(path), clock.now())
    pause_index = None
    if pause_at_line is not None:
        run_until(printer, clock, lambda: printer.jobs.job.line >= pause_at_line, 4000)
        printer.jobs.pause(clock.now())
        assert printer.jobs.job.state == JobState.PAUSING
        run_until(printer, clock, lambda: printer.state() == "paused", 60)
        paused_pos = printer.toolhead.live_position()
        for _ in range(50):  # stays put while paused
            clock.advance(TICK_S)
            printer.tick()
        assert printer.toolhead.live_position() == paused_pos
        pause_index = len(moves)
        printer.jobs.resume(clock.now())
    run_until(printer, clock, lambda: printer.jobs.job.state == JobState.COMPLETED, 5000)
    return printer, moves, pause_index


@pytest.fixture(scope="module")
def uninterrupted():
    return print_file(CUBE)


def test_real_file_prints_to_completion(uninterrupted):
    printer, moves, _ = uninterrupted
    status = printer.get_status()
    assert status["state"] == "idle"
    assert status["job"]["state"] == "completed" and status["job"]["progress"] == 1.0
    assert status["printer"]["homed_axes"] == ""   # the end G-code's M84 releases the motors
    # The end G-code parks at X0 Y220 after a 10 mm lift and turns the heaters off.
    assert status["printer"]["position"][:2] == [0.0, 220.0]
    assert status["printer"]["target_hotend_temp"] == 0.0
    assert len(moves) > 5000
    assert status["job"]["filament_used_mm"] > 500.0


def test_pause_resume_deposits_the_same_path_and_filament(uninterrupted):
    ref_printer, ref_moves, _ = uninterrupted
    printer, moves, _ = print_file(CUBE, pause_at_line=4000)
    ref = [geometry(m) for m in ref_moves]
    got = [geometry(m) for m in moves]
    # Find where the paused run departs from the reference: that is the park sequence.
    i = next(k for k in range(len(ref)) if got[k] != ref[k])
    extra = got[i:i + 6]
    # retract (E only), lift (Z only), park (XY), return (XY), lower (Z), unretract (E only)
    deltas = [tuple(round(b - a, 6) for a, b in zip(m[:4], m[4:])) for m in extra]
    assert deltas[0][:3] == (0, 0, 0) and deltas[0][3] == -1.0
    assert deltas[1][:2] == (0, 0) and deltas[1][2] == 5.0 and deltas[1][3] == 0
    assert deltas[2][2:] == (0, 0) and extra[2][4:6] == (5.0, 220.0)
    assert deltas[3][2:] == (0, 0)
    assert deltas[4][:2] == (0, 0) and deltas[4][2] == -5.0
    assert deltas[5][:3] == (0, 0, 0) and deltas[5][3] == 1.0
    # The return ends exactly where the print stopped, and everything else is identical.
    assert extra[5][4:] == ref[i - 1][4:]
    assert got[:i] + got[i + 6:] == ref
    assert printer.interp.filament_used_mm == pytest.approx(ref_printer.interp.filament_used_mm,
                                                            abs=1e-9)
    assert printer.toolhead.commanded_position == ref_printer.toolhead.commanded_position


def test_conflicts_follow_the_contract(tmp_path):
    printer, clock, _ = make_printer()
    with pytest.raises(JobConflict, match="No job in progress"):
        printer.jobs.pause(clock.now())
    with pytest.raises(JobConflict, match="Job not paused"):
        printer.jobs.resume(clock.now())
    with pytest.raises(JobConflict, match="No job to cancel"):
        printer.jobs.cancel(clock.now())
    f = tmp_path / "a.gcode"
    f.write_text("G28\n" + "G1 X10 Y10 F3000\nG1 X200 Y200\n" * 50)
    printer.jobs.start("j", f.name, str(f), clock.now())
    with pytest.raises(JobConflict, match="already in progress"):
        printer.jobs.start("k", f.name, str(f), clock.now())
    run_until(printer, clock, lambda: printer.jobs.job.line > 3, 30)
    printer.jobs.pause(clock.now())
    with pytest.raises(JobConflict, match="No job in progress"):
        printer.jobs.pause(clock.now())          # a second pause loses
    with pytest.raises(JobConflict, match="Job not paused"):
        printer.jobs.resume(clock.now())         # not at rest yet
    run_until(printer, clock, lambda: printer.state() == "paused", 60)
    printer.jobs.cancel(clock.now())
    with pytest.raises(JobConflict, match="No job to cancel"):
        printer.jobs.cancel(clock.now())
    run_until(printer, clock, lambda: printer.state() == "idle", 60)
    assert printer.jobs.job.state == JobState.CANCELLED


def test_cancel_turns_heaters_and_fan_off_at_once(tmp_path):
    printer, clock, _ = make_printer()
    f = tmp_path / "hot.gcode"
    f.write_text("M104 S200\nM140 S50\nM106 S255\nG28\nM109 S200\nG1 X10 Y10\n")
    printer.jobs.start("j", f.name, str(f), clock.now())
    run_until(printer, clock, lambda: printer.heaters["extruder"].duty > 0, 10)
    printer.jobs.cancel(clock.now())
    assert printer.heaters["extruder"].target_c == 0 and printer.heaters["extruder"].duty == 0
    assert printer.heaters["heater_bed"].target_c == 0 and printer.fan.speed == 0


@pytest.mark.parametrize("text,line,words", [
    ("G28\nG1 X10\nG1 Y1.2.3\n", 3, "bad number"),
    ("G28\nG1 X300\n", 2, "out of range"),
    ("G1 X10\n", 1, "home"),
    ("M104 S900\n", 1, "max_temp"),
    ("G28\nG1 X10 F-5\n", 2, "feed rate"),
    ("M106 S300\n", 1, "fan speed"),
])
def test_bad_lines_stop_the_job_naming_the_line(tmp_path, text, line, words):
    printer, clock, _ = make_printer()
    f = tmp_path / "bad.gcode"
    f.write_text("M104 S150\n" + text)
    printer.jobs.start("j", f.name, str(f), clock.now())
    run_until(printer, clock, lambda: printer.jobs.job.state == JobState.ERROR, 60)
    err = printer.jobs.job.error
    assert f"line {line + 1}" in err and words in err and "bad.gcode" in err
    assert printer.heaters["extruder"].target_c == 0
    assert printer.state() == "idle" and printer.error is None


def test_unknown_commands_are_skipped(tmp_path):
    printer, clock, _ = make_printer()
    f = tmp_path / "u.gcode"
    f.write_text("G28\nM73 P10\nSET_PRESSURE_ADVANCE ADVANCE=0.05\nT0\nG1 X20 Y20 F6000\n")
    printer.jobs.start("j", f.name, str(f), clock.now())
    run_until(printer, clock, lambda: printer.jobs.job.state == JobState.COMPLETED, 60)
    # M73 is understood (the file's progress report), the other two are skipped.
    assert printer.interp.unknown_commands == 2
    assert printer.toolhead.live_position()[:2] == (20.0, 20.0)


def test_the_files_own_remaining_time_is_counted_down_while_printing(tmp_path):
    """M73 R (minutes remaining, as PrusaSlicer and OrcaSlicer write it) is the estimate
    once read, counted down by the time spent moving since; odd M73 lines change nothing
    and never stop the print."""
    printer, clock, _ = make_printer()
    f = tmp_path / "m73.gcode"
    f.write_text("G28\nG1 X0 Y0 F6000\nM73 P0 R10\nG1 X200 F600\nM73 Pabc R\nM73\n"
                 "M73 Q5 S99\nM73 P90 R1 ; nearly done\nG1 X0 F600\n")
    printer.jobs.start("j", f.name, str(f), clock.now())
    status = lambda: printer.get_status()["job"]  # noqa: E731
    run_until(printer, clock, lambda: printer.jobs.job.slicer_remaining_s is not None, 60)
    read_at = status()["print_duration"]
    run_until(printer, clock, lambda: status()["print_duration"] > read_at + 5.0, 60)
    # 10 minutes less the time spent moving since the line was read.
    assert status()["estimated_remaining"] == pytest.approx(
        600.0 - (status()["print_duration"] - read_at), abs=0.3)
    run_until(printer, clock, lambda: printer.jobs.job.slicer_remaining_s == 60.0, 60)
    first = status()["estimated_remaining"]
    assert 30.0 < first <= 60.0
    for _ in range(30):
        clock.advance(TICK_S)
        printer.tick()
    assert status()["estimated_remaining"] == pytest.approx(first - 3.0, abs=0.3)
    run_until(printer, clock, lambda: printer.jobs.job.state == JobState.COMPLETED, 120)
    assert status()["estimated_remaining"] == 0.0
    assert printer.interp.unknown_commands == 0


def test_m112_and_heater_fault_latch_an_error(tmp_path):
    printer, clock, _ = make_printer()
    f = tmp_path / "e.gcode"
    f.write_text("M104 S200\nG28\nM112\nG1 X10\n")
    printer.jobs.start("j", f.name, str(f), clock.now())
    run_until(printer, clock, lambda: printer.state() == "error", 60)
    assert "M112" in printer.error and printer.jobs.job.state == JobState.ERROR
    assert printer.heaters["extruder"].target_c == 0


def test_heater_fault_during_print_shuts_down(tmp_path):
    printer, clock, _ = make_printer()
    f = tmp_path / "h.gcode"
    f.write_text("M104 S200\nG28\nM109 S200\nG1 X10\n")
    printer.jobs.start("j", f.name, str(f), clock.now())
    run_until(printer, clock, lambda: printer.heaters["extruder"].temperature_c > 100, 120)
    # The thermistor wire breaks: the reading jumps far below min_temp.
    printer.sim_hardware["extruder"].model.sensor_override_c = -50.0
    run_until(printer, clock, lambda: printer.state() == "error", 5)
    assert "extruder" in printer.error
    assert printer.jobs.job.state == JobState.ERROR
    assert all(printer.heaters[n].duty == 0 for n in ("extruder", "heater_bed"))


# ---------------------------------------------------------------- power-loss resume

def _checkpoint_at(line: int):
    """Print the cube until `line`, then 'lose power': the resume point the job held
    then, and the moves made up to that moment."""
    printer, clock, moves = make_printer()
    printer.jobs.start("job", CUBE.name, str(CUBE), clock.now())
    run_until(printer, clock, lambda: printer.jobs.job.line >= line, 4000)
    point = printer.get_status()["job"]["resume_point"]
    executed_z = printer.toolhead.live_position()[2]
    return point, executed_z, moves


def test_a_resume_point_is_where_the_executed_motion_has_been(uninterrupted):
    point, executed_z, moves = _checkpoint_at(3000)
    assert point is not None and point["count"] > 10
    assert 0 < point["line"] < 3000 and point["offset"] > 0
    # Everything before the point has run: the point's position is on the executed path.
    ends = [tuple(round(v, 6) for v in m.end) for m in moves]
    assert tuple(round(v, 6) for v in point["position"]) in ends
    # The height it believes is never above where the nozzle really is.
    assert point["z_belief"] <= executed_z + 1e-9
    assert point["z_belief"] <= point["position"][2]
    with open(CUBE, "rb") as fh:
        fh.seek(point["offset"])
        first = fh.readline().decode()
    assert "Z" in first.split(";")[0] and first.startswith("G1")


def test_a_print_resumed_after_a_power_loss_ends_as_an_uninterrupted_one(uninterrupted):
    ref_printer, ref_moves, _ = uninterrupted
    point, _, _ = _checkpoint_at(3000)
    # A new printer: nothing homed, the toolhead where the last one stopped (it had no
    # power to move), heaters cold.
    printer, clock, moves = make_printer()
    printer.jobs.start("job", CUBE.name, str(CUBE), clock.now(), resume=point)
    run_until(printer, clock, lambda: printer.jobs.job.state == JobState.COMPLETED, 5000)
    status = printer.get_status()
    assert status["job"]["state"] == "completed"
    # The prologue: heated before anything moved, Z lifted from the believed height,
    # X and Y homed, back over the point, lowered onto it.
    assert printer.heaters["heater_bed"].target_c == 0.0   # the end G-code turned it off
    lift = moves[0]
    assert lift.start[2] == pytest.approx(point["z_belief"])
    assert lift.end[2] > lift.start[2] and lift.start[:2] == lift.end[:2]
    # From the point on, exactly the reference's moves (E shifted by where the extruder
    # stood), and the same end.
    ref = [geometry(m) for m in ref_moves]
    got = [geometry(m) for m in moves]
    ref_tail = ref[_index_after(ref, point):]
    tail = got[len(got) - len(ref_tail):]
    assert len(tail) == len(ref_tail) > 100
    for a, b in zip(tail, ref_tail):
        assert a[:3] == b[:3] and a[4:7] == b[4:7]
        assert a[7] - a[3] == pytest.approx(b[7] - b[3], abs=1e-9)
    assert printer.toolhead.commanded_position[:3] == ref_printer.toolhead.commanded_position[:3]
    assert status["job"]["filament_used_mm"] == pytest.approx(
        ref_printer.get_status()["job"]["filament_used_mm"], abs=1e-3)
    # What came before the tail is the prologue's: lift, (homing X, Y), travel, lower.
    prologue = got[:len(got) - len(ref_tail)]
    assert 3 <= len(prologue) <= 6
    assert prologue[-1][4:7] == tuple(round(v, 9) for v in point["position"][:3])


def _index_after(ref: list, point: dict) -> int:
    """Index of the reference move made by the point's line: the first that starts at
    the point's position (E included)."""
    pos = tuple(round(v, 9) for v in point["position"])
    return next(i for i, m in enumerate(ref) if m[:4] == pos)
