"""A user's session end to end: log in, upload a real sliced file, print, pause, resume, cancel."""

from __future__ import annotations

import time

import pytest

from conftest import DATA

pytestmark = pytest.mark.e2e

CUBE = DATA / "cube.gcode"


# Short prints run this much faster than real time. At 20x the MCU's scheduling cap
# (5 s of print time) is still 0.25 s of host time ahead; at 50x it was 0.1 s, which a
# busy test machine (two test workers, each with a service) could delay the simulated
# board past ("Timer too close").
FAST = 20.0

def _moving(api, seconds: float = 0.3) -> bool:
    a = api.status()["printer"]["position"]
    time.sleep(seconds)
    b = api.status()["printer"]["position"]
    return a != b


def test_print_pause_resume_cancel(service_factory, api_for):
    svc = service_factory(time_factor=20.0).start()
    api = api_for(svc)

    r = api.upload(CUBE)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "cube.gcode"
    assert r.json()["size"] == CUBE.stat().st_size

    r = api.post("/api/v1/print", json={"file": "cube.gcode"})
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    assert r.json()["result"] == "ok"

    # Heating (M190/M109 in the start G-code) takes simulated minutes; then it prints.
    st = api.wait_for(lambda s: s["state"] == "printing" and (s["printer"]["hotend_temp"] or 0) > 200
                      and s["job"]["filament_used_mm"] > 20.0, timeout_s=120, what="extrusion")
    assert st["job"]["id"] == job_id and st["job"]["file"] == "cube.gcode"
    assert st["printer"]["homed_axes"] == "xyz"
    assert 0.0 < st["job"]["progress"] < 1.0
    assert st["printer"]["target_hotend_temp"] > 0 and st["printer"]["target_bed_temp"] > 0

    r = api.post("/api/v1/pause", json={})
    assert (r.status_code, r.json()) == (200, {"result": "ok"})
    paused = api.wait_for(lambda s: s["state"] == "paused", timeout_s=30, what="paused")
    assert paused["job"]["state"] == "paused"
    # Parked (config park_x/park_y) and at rest: the position no longer changes.
    pos = paused["printer"]["position"]
    assert pos[0] == pytest.approx(10.0) and pos[1] == pytest.approx(200.0)
    time.sleep(1.0)
    again = api.status()
    assert again["printer"]["position"] == pos
    assert again["job"]["line"] == paused["job"]["line"]
    # Heaters keep their targets while paused.
    assert again["printer"]["target_hotend_temp"] == st["printer"]["target_hotend_temp"]
    assert again["printer"]["target_bed_temp"] == st["printer"]["target_bed_temp"]
    line_at_pause = paused["job"]["line"]
    filament_at_pause = paused["job"]["filament_used_mm"]
    lifted_z = pos[2]

    r = api.post("/api/v1/resume")  # an empty body is accepted too
    assert (r.status_code, r.json()) == (200, {"result": "ok"})
    # Back down from the lift to the layer it left, continuing the same file.
    resumed = api.wait_for(lambda s: s["state"] == "printing"
                           and s["printer"]["position"][2] < lifted_z - 1.0
                           and s["job"]["line"] > line_at_pause, timeout_s=30, what="resume")
    assert resumed["job"]["id"] == job_id
    assert _moving(api)
    # Extrusion carries on from the pause (the file's own retracts may dip it briefly).
    api.wait_for(lambda s: s["job"]["filament_used_mm"] > filament_at_pause + 1.0, timeout_s=30,
                 what="extrusion after resume")

    r = api.post("/api/v1/cancel", json={})
    assert (r.status_code, r.json()) == (200, {"result": "ok"})
    st = api.status()
    assert st["printer"]["target_hotend_temp"] == 0 and st["printer"]["target_bed_temp"] == 0
    assert st["printer"]["fan_speed"] == 0
    done = api.wait_for(lambda s: s["state"] == "idle", timeout_s=30, what="idle after cancel")
    assert done["job"]["state"] == "cancelled"
    # Recorded as cancelled in the job history (the supervisor copies it into the store).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        jobs = api.get("/api/v1/jobs").json()["jobs"]
        if jobs and jobs[0]["state"] == "cancelled":
            break
        time.sleep(0.1)
    assert jobs[0]["id"] == job_id and jobs[0]["state"] == "cancelled"


def test_small_file_prints_to_completion(service_factory, api_for, tmp_path):
    svc = service_factory(time_factor=FAST).start()
    api = api_for(svc)
    gcode = tmp_path / "square.gcode"
    gcode.write_text("\n".join([
        "; a 20 mm square, printed cold-free: no heating needed for travel-only moves",
        "G28", "G90", "M83", "G1 Z0.3 F600", "G1 X50 Y50 F6000",
        "G1 X70 Y50 F1200", "G1 X70 Y70", "G1 X50 Y70", "G1 X50 Y50",
        "M106 S128", "G4 P200", "M107", "M400", "G1 Z10 F600",
    ]) + "\n")
    assert api.upload(gcode).status_code == 201
    r = api.post("/api/v1/print", json={"file": "square.gcode"})
    assert r.status_code == 200, r.text
    st = api.wait_for(lambda s: s["job"] and s["job"]["state"] == "completed", timeout_s=60,
                      what="completion")
    assert st["state"] == "idle"
    assert st["job"]["progress"] == 1.0
    assert st["printer"]["position"] == pytest.approx([50.0, 50.0, 10.0])
    assert st["job"]["estimated_remaining"] == 0.0


def test_malformed_line_stops_job_naming_the_line(service_factory, api_for, tmp_path):
    svc = service_factory(time_factor=FAST).start()
    api = api_for(svc)
    gcode = tmp_path / "broken.gcode"
    gcode.write_text("G28\nM104 S200\nG1 X10 Y10 F3000\nFOO_UNKNOWN_MACRO A=1\nG1 X1.2.3 Y5\nG1 X20\n")
    assert api.upload(gcode).status_code == 201
    assert api.post("/api/v1/print", json={"file": "broken.gcode"}).status_code == 200
    st = api.wait_for(lambda s: s["job"] and s["job"]["state"] == "error", timeout_s=30,
                      what="job error")
    assert "line 5" in st["job"]["error"] and "broken.gcode" in st["job"]["error"]
    assert st["state"] == "idle"
    # Heaters are handled as for cancel.
    assert st["printer"]["target_hotend_temp"] == 0


def test_move_outside_limits_stops_job(service_factory, api_for, tmp_path):
    svc = service_factory(time_factor=FAST).start()
    api = api_for(svc)
    gcode = tmp_path / "far.gcode"
    gcode.write_text("G28\nG1 X10 Y10 F3000\nG1 X500\n")
    assert api.upload(gcode).status_code == 201
    assert api.post("/api/v1/print", json={"file": "far.gcode"}).status_code == 200
    st = api.wait_for(lambda s: s["job"] and s["job"]["state"] == "error", timeout_s=30,
                      what="job error")
    assert "line 3" in st["job"]["error"]
    assert "out of range" in st["job"]["error"]
