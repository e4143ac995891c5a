"""Faults inside the control process's own work, in the running service: a G-code line
too long to read, pause and cancel while an axis homes, and the status block left
behind by a killed service."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

import pytest

from printhost.control.gcode import MAX_LINE_BYTES
from printhost.sim.mcu.client import SimMcuClient
from tests.fault.heating import heaters_off

pytestmark = pytest.mark.e2e


def _ended(api, job_id: str, timeout_s: float = 60.0) -> dict:
    return api.wait_for(lambda s: s["job"] and s["job"]["id"] == job_id
                        and s["job"]["state"] not in ("printing", "pausing", "cancelling"),
                        timeout_s=timeout_s, what=f"job {job_id} ended")


# How long the client may wait to *see* an effect. On a loaded machine the client, the
# API process and the status polling are ordinary processes and can lag by seconds; the
# product's own reaction time is checked from the service log (`_reaction_s`).
CLIENT_SLACK_S = 15.0
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _reaction_s(svc, route: str, event: str) -> float:
    """Seconds from the API's answer to the first POST on `route` (its access-log line) to
    the first log line containing `event`: how fast the control process acted, in the
    service's own timestamps (negative when it acted before the API answered)."""
    def when(line: str) -> float:
        return datetime.strptime(_LOG_TIME.match(line).group(1),
                                 "%Y-%m-%d %H:%M:%S,%f").timestamp()
    lines = [ln for ln in svc.log_path.read_text(errors="replace").splitlines()
             if _LOG_TIME.match(ln)]
    asked = next(when(ln) for ln in lines
                 if '"method":"POST"' in ln and f'"route":"{route}"' in ln)
    done = next(when(ln) for ln in lines if event in ln)
    return done - asked


def _log_tail(svc, n: int = 6000) -> str:
    """The end of the service log, without the access lines: what a slow reaction needs
    to be diagnosed from."""
    lines = svc.log_path.read_text(errors="replace").splitlines()
    return "\n".join(ln for ln in lines if "printhost.api.access" not in ln)[-n:]


def test_a_line_over_the_limit_fails_the_job_and_the_printer_stays_up(
        service_factory, api_for, tmp_path):
    """docs/motion.md: lines over 1 MiB are refused. The job ends `error` naming the line,
    heaters go off as on cancel, the control process keeps running and prints again."""
    svc = service_factory(time_factor=20.0, max_upload=4 * 1024 * 1024).start()
    api = api_for(svc)
    board = SimMcuClient(svc.state_dir)
    pid = svc.control_pid()
    # Heat first (and wait 2 s of wall time at 20x), so the refusal has heaters to switch off.
    text = (b"M140 S60\nM104 S200\nG4 P40000\n; " + b"x" * MAX_LINE_BYTES + b"\n"
            b"G28\nG1 X10 F3000\n")
    job_id = api.print_text(tmp_path, "long.gcode", text)
    api.wait_for(lambda s: (s["printer"]["target_hotend_temp"] or 0) > 0, timeout_s=20,
                 what="hotend heating")
    st = _ended(api, job_id)
    job = st["job"]
    assert job["state"] == "error", job
    assert job["error"] == (f"long.gcode: line 4: line longer than {MAX_LINE_BYTES} bytes"), job
    assert job["line"] == 4, job
    assert st["state"] == "idle" and st["error"] is None, st
    assert st["printer"]["target_hotend_temp"] == 0 and st["printer"]["target_bed_temp"] == 0
    deadline = time.monotonic() + 5.0
    while not heaters_off(board):
        assert time.monotonic() < deadline, board.state()["board"]
        time.sleep(0.02)
    assert svc.control_pid() == pid
    job_id = api.print_text(tmp_path, "ok.gcode", b"G28\nG1 X10 F3000\n")
    assert _ended(api, job_id)["job"]["state"] == "completed"
    log = svc.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "control process exited" not in log, log
    assert f"line 4: line longer than {MAX_LINE_BYTES} bytes" in log


def _blocks_of(state_dir: Path) -> set[str]:
    """Names of the status blocks recorded in this state directory (printhost/ipc/status.py)."""
    return {p.name[:-len(".lock")] for p in (state_dir / "run").glob("printhost_*.lock")}


def test_a_killed_services_status_block_is_reclaimed_by_the_next_start(service_factory, api_for):
    """kill -9 of the whole service leaves its shared-memory status block behind (no
    process is left to remove it); the next start on the same state directory removes
    it, and a normal stop leaves none at all."""
    svc = service_factory(time_factor=20.0).start()
    api_for(svc).wait_for(lambda s: s["state"] == "idle", timeout_s=60, what="idle")
    first = _blocks_of(svc.state_dir)
    assert len(first) == 1, first
    assert all(Path("/dev/shm", name).exists() for name in first)
    svc.kill_all()
    # Nothing survives a kill -9 of the process group to clean up: the block stays.
    assert all(Path("/dev/shm", name).exists() for name in first)
    svc.start()
    second = _blocks_of(svc.state_dir)
    assert len(second) == 1 and not (second & first), (first, second)
    assert not any(Path("/dev/shm", name).exists() for name in first), first
    assert "left by an earlier run" in svc.log_path.read_text(errors="replace")
    assert svc.stop() < 5.0
    assert not any(Path("/dev/shm", name).exists() for name in first | second)
    assert _blocks_of(svc.state_dir) == set()
    assert "Traceback" not in svc.log_path.read_text(errors="replace")


# Z homes at 2 mm/s from z = 10 (simulation.start_position): about 5 s of travel before
# the switch, and the whole homing move (1.5 x 250 mm) would take over three minutes.
# The host is told where the toolhead really stands at power-on, so the position it
# reads back from the motors after an abort can be compared with the board's.
SLOW_Z = """
[printer]
power_on_position = [117.5, 117.5, 10.0]

[printer.axes.z]
homing_speed = 2.0
"""
HEAT_AND_HOME = "M140 S60\nM104 S200\nG28\nG1 X10 Y10 Z5 F3000\n"


def _start_homing_z(svc, api, tmp_path: Path) -> tuple[str, list[dict]]:
    """Start a job that heats and homes; return once Z is visibly moving towards its
    endstop, with every status seen so far."""
    job_id = api.print_text(tmp_path, "home.gcode", HEAT_AND_HOME.encode())
    seen: list[dict] = []

    def z_moving(s: dict) -> bool:
        seen.append(s)
        return s["printer"]["homed_axes"] == "xy" and s["printer"]["live_position"][2] < 9.0
    api.wait_for(z_moving, timeout_s=60, what="Z homing under way")
    return job_id, seen


def _board_z(board) -> float:
    return board.state()["toolhead"][2]


def _motor_stopped_after(board, t0: float, timeout_s: float = CLIENT_SLACK_S) -> float:
    """Seconds from `t0` until the Z motor on the board stands still (two readings 20 ms
    apart agree; homing Z at 2 mm/s moves 16 steps in that time)."""
    z = _board_z(board)
    while time.monotonic() - t0 < timeout_s:
        time.sleep(0.02)
        z_now = _board_z(board)
        if z_now == z:
            return time.monotonic() - t0
        z = z_now
    raise AssertionError(f"Z still moving {timeout_s} s after the request")


def _assert_stopped_and_truthful(api, board, seen: list[dict]) -> dict:
    """The Z motor no longer moves, status shows where it is, and no status ever showed
    an axis outside its range."""
    z1 = _board_z(board)
    st = api.wait_for(lambda s: seen.append(s) or abs(s["printer"]["live_position"][2] - z1) < 0.01,
                      timeout_s=CLIENT_SLACK_S, what="live Z at the motor's position")
    t0 = time.monotonic()
    # The motor stays put (over 0.5 s, Z homing would move 1 mm).
    api.wait_for(lambda s: time.monotonic() - t0 > 0.5, timeout_s=CLIENT_SLACK_S,
                 what="half a second")
    assert _board_z(board) == z1
    assert 0.0 < z1 < 9.0, z1
    for s in seen:
        live = s["printer"]["live_position"]
        assert 0.0 <= live[0] <= 235.0 and 0.0 <= live[1] <= 235.0 and 0.0 <= live[2] <= 250.0, live
    return st


def test_cancel_during_homing_stops_the_axis_at_once(service_factory, api_for, tmp_path):
    """Cancel during G28 takes effect at once: the homing move is aborted on the MCU
    (trsync triggered by the host), Z is not homed, the position is read back from the
    MCU; the job is cancelled within 1 s with heaters off; exactly one of two
    cancels wins; the next print homes and runs."""
    svc = service_factory(time_factor=1.0, extra_config=SLOW_Z).start()
    api = api_for(svc)
    board = SimMcuClient(svc.state_dir)
    job_id, seen = _start_homing_z(svc, api, tmp_path)
    t0 = time.monotonic()
    first = api.post("/api/v1/cancel")
    second = api.post("/api/v1/cancel")
    assert first.status_code == 200, first.text
    assert second.status_code == 409 and "No job to cancel" in second.text, second.text
    stopped_after = _motor_stopped_after(board, t0)
    st = api.wait_for(lambda s: seen.append(s) or s["job"]["state"] == "cancelled",
                      timeout_s=CLIENT_SLACK_S, what="job cancelled")
    cancelled_after = time.monotonic() - t0
    while not heaters_off(board):
        assert time.monotonic() - t0 < CLIENT_SLACK_S, board.state()["board"]
        time.sleep(0.01)
    heaters_off_after = time.monotonic() - t0
    aborted = _reaction_s(svc, "/api/v1/cancel", "homing Z aborted: motors stopped at Z=")
    cancelled = _reaction_s(svc, "/api/v1/cancel", f"job {job_id}: cancelled")
    print(f"cancel during homing: as seen by the client, motor stopped within "
          f"{stopped_after:.3f} s, cancelled after {cancelled_after:.3f} s, heaters off after "
          f"{heaters_off_after:.3f} s; in the service log, homing aborted {aborted:.3f} s and "
          f"the job cancelled {cancelled:.3f} s after the request was answered")
    assert aborted < 1.0 and cancelled < 1.0, (aborted, cancelled, _log_tail(svc))
    assert st["printer"]["homed_axes"] == "xy", st["printer"]
    assert st["state"] == "idle" and st["error"] is None
    assert st["printer"]["target_hotend_temp"] == 0 and st["printer"]["target_bed_temp"] == 0
    _assert_stopped_and_truthful(api, board, seen)
    # Homing works again, from where the motor stopped.
    job_id = api.print_text(tmp_path, "again.gcode", b"G28\nG1 X10 Y10 Z5 F3000\n")
    st = _ended(api, job_id, timeout_s=60)
    assert st["job"]["state"] == "completed", st["job"]
    assert st["printer"]["homed_axes"] == "xyz"
    assert abs(_board_z(board) - 5.0) < 0.01
    log = svc.log_path.read_text(errors="replace")
    assert "homing Z aborted: motors stopped at Z=" in log
    assert "Traceback" not in log and "ERROR" not in log, log


def test_pause_during_homing_stops_at_once_and_resume_homes_again(service_factory, api_for,
                                                                 tmp_path):
    """Pause during G28: the job pauses at once with the homing move aborted and Z not
    homed; heaters keep their targets; a second pause is refused; resume runs the G28
    again and the print goes on from there."""
    svc = service_factory(time_factor=1.0, extra_config=SLOW_Z).start()
    api = api_for(svc)
    board = SimMcuClient(svc.state_dir)
    job_id, seen = _start_homing_z(svc, api, tmp_path)
    t0 = time.monotonic()
    r = api.post("/api/v1/pause")
    assert r.status_code == 200, r.text
    stopped_after = _motor_stopped_after(board, t0)
    st = api.wait_for(lambda s: seen.append(s) or s["job"]["state"] == "paused",
                      timeout_s=CLIENT_SLACK_S, what="job paused")
    paused_after = time.monotonic() - t0
    aborted = _reaction_s(svc, "/api/v1/pause", "homing Z aborted: motors stopped at Z=")
    paused = _reaction_s(svc, "/api/v1/pause", f"job {job_id}: paused")
    print(f"pause during homing: as seen by the client, motor stopped within "
          f"{stopped_after:.3f} s, paused after {paused_after:.3f} s; in the service log, "
          f"homing aborted {aborted:.3f} s and the job paused {paused:.3f} s after the "
          f"request was answered")
    assert aborted < 1.0 and paused < 1.0, (aborted, paused, _log_tail(svc))
    assert st["printer"]["homed_axes"] == "xy", st["printer"]
    assert st["printer"]["target_hotend_temp"] == 200 and st["printer"]["target_bed_temp"] == 60
    assert api.post("/api/v1/pause").status_code == 409
    _assert_stopped_and_truthful(api, board, seen)
    r = api.post("/api/v1/resume")
    assert r.status_code == 200, r.text
    st = api.wait_for(lambda s: seen.append(s) or s["printer"]["homed_axes"] == "xyz",
                      timeout_s=30, what="Z homed again")
    assert st["job"]["id"] == job_id and st["job"]["line"] >= 3, st["job"]
    st = _ended(api, job_id, timeout_s=30)
    assert st["job"]["state"] == "completed", st["job"]
    assert abs(_board_z(board) - 5.0) < 0.01
    log = svc.log_path.read_text(errors="replace")
    assert "resumed at line 3: homing again" in log
    assert "Traceback" not in log and "ERROR" not in log, log


def test_pause_then_cancel_during_homing(service_factory, api_for, tmp_path):
    """A pause while Z homes, then a cancel once the job is `paused`: the job ends
    `cancelled` within 1 s with heaters off, Z unhomed where its motor stopped, and
    nothing moves afterwards: no park, exactly as when the cancel comes while the pause
    is still settling (on a quiet machine a cancel sent right behind the pause usually
    does; under load the pause had settled and the toolhead was parked, 3 s)."""
    svc = service_factory(time_factor=1.0, extra_config=SLOW_Z).start()
    api = api_for(svc)
    board = SimMcuClient(svc.state_dir)
    job_id, seen = _start_homing_z(svc, api, tmp_path)
    t0 = time.monotonic()
    assert api.post("/api/v1/pause").status_code == 200
    paused = api.wait_for(lambda s: seen.append(s) or s["job"]["state"] == "paused",
                          timeout_s=CLIENT_SLACK_S, what="job paused")
    assert api.post("/api/v1/cancel").status_code == 200
    st = api.wait_for(lambda s: seen.append(s) or s["job"]["state"] == "cancelled",
                      timeout_s=CLIENT_SLACK_S, what="job cancelled")
    cancelled_after = time.monotonic() - t0
    cancelled = _reaction_s(svc, "/api/v1/cancel", f"job {job_id}: cancelled")
    print(f"pause + cancel during homing: cancelled after {cancelled_after:.3f} s as seen by "
          f"the client, {cancelled:.3f} s after the cancel was answered in the service log")
    assert cancelled < 1.0, (cancelled, _log_tail(svc))
    assert st["printer"]["homed_axes"] == "xy", st["printer"]
    assert st["printer"]["target_hotend_temp"] == 0 and st["printer"]["target_bed_temp"] == 0
    while not heaters_off(board):
        assert time.monotonic() - t0 < CLIENT_SLACK_S, board.state()["board"]
        time.sleep(0.01)
    st = _assert_stopped_and_truthful(api, board, seen)
    # Not parked: X and Y are where homing left them.
    assert st["printer"]["live_position"][:2] == paused["printer"]["live_position"][:2], \
        (paused["printer"], st["printer"])
    assert api.post("/api/v1/resume").status_code == 409
    log = svc.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "ERROR" not in log, log
