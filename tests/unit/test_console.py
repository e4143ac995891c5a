"""The console (control/console.py) on the simulated printer with a manual clock: the
rules of when a command may run, what it leaves behind, and a job paused, changed from
the console (filament pushed, Z jogged below the print, speed factor changed) and
resumed onto exactly the path it would have printed."""

from __future__ import annotations


import pytest

from printhost.control.console import MAX_QUEUED, ConsoleConflict, ConsoleInvalid
from printhost.control.job import JobState
from printhost.ipc.channel import Command, ErrorKind, Request
from test_job import CUBE, geometry, make_printer, run_until

_ids = iter(range(1, 1_000_000))


def send(printer, kind: str, **args):
    """A console command as the API sends it; the reply."""
    n = next(_ids)
    return printer.handle(Request(n, Command.CONSOLE,
                                  {"id": f"c{n}", "kind": kind, "args": args, "by": "op"}))


def result(printer, command_id: str) -> dict | None:
    for r in printer.get_status()["printer"]["console"]["results"]:
        if r["id"] == command_id:
            return r
    return None


def finish(printer, clock, reply, limit_s: float = 120.0) -> dict:
    assert reply.ok, reply.message
    command_id = reply.result["id"]
    run_until(printer, clock, lambda: result(printer, command_id) is not None, limit_s)
    return result(printer, command_id)


def heat_hotend(printer, clock, target: float = 200.0) -> None:
    printer.heaters["extruder"].set_target(target)
    run_until(printer, clock, lambda: printer.heaters["extruder"].temperature_c >= 175.0, 600)


def test_moves_need_homing_and_stay_inside_the_limits():
    printer, clock, _ = make_printer()
    r = send(printer, "move", x=10.0)
    assert not r.ok and r.error == ErrorKind.CONFLICT and r.message == "must home axis first: X"
    assert finish(printer, clock, send(printer, "home", axes="xy"))["state"] == "completed"
    assert "x" in printer.toolhead.homed_axes and "z" not in printer.toolhead.homed_axes
    r = send(printer, "move", x=-5.0)          # homed at X0: a jog to -5 leaves the bed
    assert not r.ok and r.error == ErrorKind.INVALID
    assert r.message == "move out of range: X=-5.000 is outside 0.000..235.000"
    r = send(printer, "move", z=1.0)
    assert not r.ok and r.error == ErrorKind.CONFLICT and r.message == "must home axis first: Z"
    done = finish(printer, clock, send(printer, "move", x=20.0, y=30.0))
    assert done["state"] == "completed" and done["message"] == "done"
    assert printer.toolhead.commanded_position[:2] == (20.0, 30.0)
    done = finish(printer, clock, send(printer, "move", x=100.0, relative=False, speed=80.0))
    assert printer.toolhead.commanded_position[0] == 100.0
    # "completed" means the toolhead is there: nothing left to run.
    assert printer.toolhead.is_idle()


def test_typed_commands_leave_the_g_code_modes_as_they_found_them():
    printer, clock, _ = make_printer()
    finish(printer, clock, send(printer, "home"))
    finish(printer, clock, send(printer, "gcode", script="G90\nM82\nG1 X50 F1200"))
    before = printer.interp.state
    finish(printer, clock, send(printer, "move", x=5.0, speed=20.0))
    after = printer.interp.state
    assert (after.absolute_coords, after.absolute_extrude, after.speed_mm_s) == \
        (before.absolute_coords, before.absolute_extrude, before.speed_mm_s) == (True, True, 20.0)
    assert printer.toolhead.commanded_position[0] == 55.0


def test_extruding_needs_a_hot_hotend_checked_at_submission_and_again_as_it_runs():
    printer, clock, _ = make_printer()
    for kind, args in (("extrude", {"length": 5.0}), ("filament_load", {}),
                       ("filament_unload", {}), ("move", {"e": 2.0})):
        r = send(printer, kind, **args)
        assert not r.ok and r.error == ErrorKind.CONFLICT, (kind, r)
        assert "min_extrude_temp 170 C" in r.message
    r = send(printer, "gcode", script="M83\nG1 E5 F300")
    assert not r.ok and "heat it first" in r.message
    heat_hotend(printer, clock)
    e0 = printer.toolhead.commanded_position[3]
    assert finish(printer, clock, send(printer, "extrude", length=5.0))["state"] == "completed"
    assert printer.toolhead.commanded_position[3] == e0 + 5.0
    r = send(printer, "extrude", length=60.0)   # max_extrude_only_distance is 50
    assert not r.ok and r.error == ErrorKind.INVALID
    load = finish(printer, clock, send(printer, "filament_load"))
    assert load["state"] == "completed"
    assert printer.toolhead.commanded_position[3] == e0 + 5.0 + 45.0 + 25.0
    # Cooled after it was accepted: the line that extrudes fails when it comes to run.
    finish(printer, clock, send(printer, "home"))
    r = send(printer, "gcode", script="G4 P30000\nM400\nM83\nG1 E5 F300")
    assert r.ok, r.message
    printer.heaters["extruder"].set_target(0.0)
    printer.sim_hardware["extruder"].model.sensor_override_c = 60.0
    ended = finish(printer, clock, r, 200)
    assert ended["state"] == "failed" and "heat it first" in ended["message"]


def test_raw_g_code_is_checked_whole_before_any_line_runs():
    printer, clock, _ = make_printer()
    r = send(printer, "gcode", script="G28\nG29\nM114")
    assert not r.ok and r.error == ErrorKind.INVALID and "line 2: unknown command G29" in r.message
    r = send(printer, "gcode", script="G1 X1O0")
    assert not r.ok and "unknown parameter O" in r.message
    assert printer.toolhead.homed_axes == ""        # nothing of the refused script ran
    done = finish(printer, clock, send(printer, "gcode", script="G28\nG1 X12 Y7 F3000\nM114"))
    assert done["responses"] == ["X:12.000 Y:7.000 Z:0.000 E:0.000"]
    failed = finish(printer, clock, send(printer, "gcode", script="G1 X999\nG1 X1"))
    assert failed["state"] == "failed" and "out of range" in failed["message"]
    assert printer.toolhead.commanded_position[0] == 12.0   # the line after did not run


def test_m112_from_the_console_stops_the_printer_at_once():
    printer, clock, _ = make_printer()
    printer.heaters["heater_bed"].set_target(60.0)
    r = send(printer, "gcode", script="M140 S70\nM112")
    assert r.ok and r.result["message"] == "emergency stop"
    assert printer.state() == "error" and "M112" in printer.error
    assert printer.heaters["heater_bed"].target_c == 0.0
    r = send(printer, "heat", targets={"extruder": 200.0})
    assert not r.ok and r.error == ErrorKind.CONFLICT and "shut down" in r.message
    assert send(printer, "cool").ok                   # turning off is always allowed


def test_what_a_printing_job_allows():
    printer, clock, _ = make_printer()
    printer.jobs.start("j", CUBE.name, str(CUBE), clock.now())
    run_until(printer, clock, lambda: printer.jobs.job.line > 200, 600)
    assert printer.state() == "printing"
    for kind, args in (("home", {}), ("move", {"x": 1.0}), ("extrude", {"length": 1.0}),
                       ("filament_unload", {}), ("gcode", {"script": "G1 X10"})):
        r = send(printer, kind, **args)
        assert not r.ok and r.error == ErrorKind.CONFLICT, kind
    r = send(printer, "gcode", script="M106 S128\nM114")
    assert r.ok and r.result["state"] == "completed"      # ran at once: nothing moves
    assert printer.fan.speed == pytest.approx(128 / 255)
    r = send(printer, "factors", speed=150.0, flow=95.0)
    assert r.ok and r.result["state"] == "completed"
    assert printer.interp.state.speed_factor == 1.5 and printer.interp.state.extrude_factor == 0.95
    r = send(printer, "heat", targets={"extruder": 215.0})
    assert r.ok and printer.heaters["extruder"].target_c == 215.0
    # The job keeps printing: a console command never flushed or waited on its moves.
    line = printer.jobs.job.line
    run_until(printer, clock, lambda: printer.jobs.job.line > line + 100, 60)
    printer.jobs.cancel(clock.now())


def test_a_console_move_blocks_a_print_start_and_cancel_stops_it(tmp_path):
    printer, clock, _ = make_printer()
    finish(printer, clock, send(printer, "home"))
    r = send(printer, "gcode", script="G4 P60000")
    assert r.ok and r.result["state"] == "running"
    f = tmp_path / "a.gcode"
    f.write_text("G4 P10\n")
    start = printer.handle(Request(900, Command.PRINT, {"job_id": "j", "file": f.name,
                                                         "path": str(f)}))
    assert not start.ok and "Console commands are running" in start.message
    assert printer.restart_refusal() is not None
    assert printer.handle(Request(901, Command.CANCEL)).ok
    assert result(printer, r.result["id"])["state"] == "failed"
    assert result(printer, r.result["id"])["message"] == "cancelled"
    assert not printer.console.busy


def test_the_queue_is_bounded():
    printer, clock, _ = make_printer()
    finish(printer, clock, send(printer, "home"))
    for _ in range(MAX_QUEUED):
        assert send(printer, "gcode", script="G4 P1000").ok
    r = send(printer, "gcode", script="G4 P1000")
    assert not r.ok and r.error == ErrorKind.CONFLICT and "already waiting" in r.message


def test_bad_arguments_are_invalid_not_internal():
    printer, _, _ = make_printer()
    for kind, args, words in (("heat", {"targets": {"extruder": 999.0}}, "between 0 and"),
                              ("heat", {"targets": {"nozzle2": 10.0}}, "unknown heater"),
                              ("fan", {"speed": 2.0}, "between 0 and 1"),
                              ("factors", {}, "speed, flow"),
                              ("home", {"axes": "xa"}, "x, y and z"),
                              ("output", {"name": "light", "value": 0.5}, "no light"),
                              ("output", {"name": "laser", "value": 1}, "unknown output"),
                              ("jump", {}, "unknown command kind")):
        r = send(printer, kind, **args)
        assert not r.ok and r.error == ErrorKind.INVALID and words in r.message, (kind, r)


def test_the_console_module_raises_its_own_errors():
    printer, _, _ = make_printer()
    with pytest.raises(ConsoleConflict):
        printer.console.submit("x", "move", {"x": 1.0}, printer_state="idle", tuning=False)
    with pytest.raises(ConsoleInvalid):
        printer.console.submit("y", "fan", {"speed": "fast"}, printer_state="idle",
                               tuning=False)
    with pytest.raises(ConsoleConflict, match="PID tune"):
        printer.console.submit("z", "heat", {"targets": {"extruder": 100}},
                               printer_state="idle", tuning=True)


def test_a_paused_job_changed_from_the_console_resumes_onto_its_own_path():
    """Paused mid-print: 20 mm of filament pushed, Z jogged far below the print, the
    speed factor raised. The resume climbs back to the print's height before any XY
    travel, pulls nothing back, and every move after it is the uninterrupted print's
    move, with the E coordinates shifted by the filament pushed."""
    ref_printer, clock_ref, ref_moves = make_printer()
    ref_printer.jobs.start("ref", CUBE.name, str(CUBE), clock_ref.now())
    run_until(ref_printer, clock_ref,
              lambda: ref_printer.jobs.job.state == JobState.COMPLETED, 5000)

    printer, clock, moves = make_printer()
    printer.jobs.start("job", CUBE.name, str(CUBE), clock.now())
    run_until(printer, clock, lambda: printer.jobs.job.line >= 4000, 4000)
    printer.jobs.pause(clock.now())
    run_until(printer, clock, lambda: printer.state() == "paused", 60)
    paused_at = len(moves)
    pause_z = printer.jobs._resume.position[2]
    r = send(printer, "home", axes="x")
    assert not r.ok and "homing would lose its position" in r.message
    r = send(printer, "gcode", script="G92 E0")
    assert not r.ok and "G92 is refused while a job is paused" in r.message
    assert finish(printer, clock, send(printer, "extrude", length=20.0))["state"] == "completed"
    r = send(printer, "move", z=-(printer.toolhead.commanded_position[2] - pause_z + 1.0))
    assert finish(printer, clock, r)["state"] == "completed"
    assert printer.toolhead.commanded_position[2] < pause_z
    assert send(printer, "factors", speed=150.0).ok
    printer.jobs.resume(clock.now())
    run_until(printer, clock, lambda: printer.jobs.job.state == JobState.COMPLETED, 5000)

    got = [geometry(m) for m in moves]
    ref = [geometry(m) for m in ref_moves]
    # Pause: retract, lift, park; console: extrude, jog down; resume: climb back to
    # the print's height, travel there (nothing left to lower), unretract. Then the print.
    resumed = got[paused_at + 2:]
    climb, travel, unretract = resumed[:3]
    assert climb[2] < pause_z and climb[6] == pytest.approx(pause_z)   # Z first...
    assert climb[:2] == climb[4:6]                                    # ...without XY
    assert travel[2] == travel[6] == pytest.approx(pause_z)
    assert unretract[:3] == unretract[4:7]
    assert unretract[7] - unretract[3] == pytest.approx(1.0)          # the pause's retract
    i = next(k for k in range(len(ref)) if got[k] != ref[k])
    tail = resumed[3:]
    ref_tail = ref[i:]
    assert len(tail) == len(ref_tail)
    for a, b in zip(tail, ref_tail):
        assert a[:3] == b[:3] and a[4:7] == b[4:7]
        assert a[7] - a[3] == pytest.approx(b[7] - b[3], abs=1e-9)
        assert a[3] == pytest.approx(b[3] + 20.0, abs=1e-6)
    assert printer.interp.state.speed_factor == 1.5
    assert printer.interp.filament_used_mm == pytest.approx(
        ref_printer.interp.filament_used_mm + 20.0, abs=1e-6)
