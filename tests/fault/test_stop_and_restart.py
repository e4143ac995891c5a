"""An MCU shutdown and an emergency stop seen from the API (health, stale readings, the
job's end), and the firmware restart that clears them, on the running service and its
simulated MCU."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.fault.heating import heaters_off, start_heating

pytestmark = pytest.mark.e2e


def _live(api) -> dict:
    """Status once both temperatures are live readings (the MCU reports)."""
    return api.wait_for(lambda s: s["printer"] and s["printer"]["hotend_temp"] is not None
                        and s["printer"]["bed_temp"] is not None, timeout_s=20,
                        what="live temperatures")


def _health(svc) -> httpx.Response:
    return httpx.get(svc.url + "/api/v1/health", timeout=5)


def test_mcu_shutdown_health_down_stale_readings_null_job_error(service_factory, api_for,
                                                               tmp_path):
    svc = service_factory(time_factor=1.0).start()
    api = api_for(svc)
    board, job_id = start_heating(svc, api, tmp_path)
    before = _live(api)
    assert before["printer"]["unavailable"] == {}, before["printer"]
    assert _health(svc).status_code == 200
    board.request(cmd="shutdown", reason="Timer too close")
    st = api.wait_for(lambda s: s["state"] == "error", timeout_s=5, what="error state")
    reason = "MCU shutdown: Timer too close"
    assert st["error"] == reason, st
    # A fault ends the job `error` with its reason (not `interrupted`).
    assert st["job"]["id"] == job_id and st["job"]["state"] == "error", st["job"]
    assert st["job"]["error"] == reason
    printer = st["printer"]
    # Nothing measures any more: the last readings are not shown as live.
    assert printer["hotend_temp"] is None and printer["bed_temp"] is None, printer
    assert printer["live_position"] is None, printer
    for member in ("hotend_temp", "bed_temp", "live_position"):
        assert printer["unavailable"][member] == reason, printer["unavailable"]
    assert printer["heaters"]["extruder"]["temperature"] is None
    assert printer["heaters"]["extruder"]["unavailable"] == reason
    assert printer["target_hotend_temp"] == 0.0 and printer["target_bed_temp"] == 0.0
    r = _health(svc)
    body = r.json()
    assert r.status_code == 503 and body["status"] == "down", body
    assert body["components"]["mcu"] == {"status": "down", "reason": reason}, body
    assert body["components"]["heaters"]["status"] == "down"
    assert body["components"]["control"]["status"] == "ok"
    assert body["error"] == f"Printer not ready: {reason}"
    # ...and they stay unknown: no reading of before the shutdown comes back.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        p = api.status()["printer"]
        assert p["hotend_temp"] is None and p["bed_temp"] is None, p
    assert heaters_off(board)
    jobs = api.get("/api/v1/jobs").json()["jobs"]
    assert jobs[0]["id"] == job_id and jobs[0]["state"] == "error"


def test_firmware_restart_clears_an_mcu_shutdown(service_factory, api_for, tmp_path):
    svc = service_factory(time_factor=5.0).start()
    api = api_for(svc)
    board, job_id = start_heating(svc, api, tmp_path)
    # Refused while printing, and for a viewer.
    r = api.post("/api/v1/printer/firmware_restart", json={})
    assert r.status_code == 409, r.text
    assert r.json() == {"error": "A job is in progress; cancel it before restarting the "
                                 "firmware"}
    assert api.post("/api/v1/printer/firmware_restart", role="viewer").status_code == 403
    assert api.status()["job"]["state"] == "printing"
    board.request(cmd="shutdown", reason="Timer too close")
    api.wait_for(lambda s: s["state"] == "error", timeout_s=5, what="error state")
    assert api.post("/api/v1/printer/firmware_restart", role="viewer").status_code == 403
    assert api.post("/api/v1/print", json={"file": "heat.gcode"}).status_code == 503
    r = api.post("/api/v1/printer/firmware_restart")
    assert r.status_code == 200, r.text
    assert r.json() == {"result": "ok", "state": "idle"}
    fw = board.state()["firmware"]
    assert not fw["shutdown"] and fw["is_config"], fw
    st = api.status()
    assert st["state"] == "idle" and st["error"] is None, st
    # The ended job is still shown, with its reason.
    assert st["job"]["id"] == job_id and st["job"]["state"] == "error"
    assert st["printer"]["mcu"]["connected"] and st["printer"]["homed_axes"] == ""
    st = _live(api)
    assert st["printer"]["unavailable"] == {}, st["printer"]
    deadline = time.monotonic() + 20
    while _health(svc).status_code != 200:
        assert time.monotonic() < deadline, _health(svc).text
        time.sleep(0.05)
    # Ready for real: it heats and prints again.
    board2, job2 = start_heating(svc, api, tmp_path, "again.gcode")
    assert api.status()["job"]["id"] == job2
    assert api.post("/api/v1/cancel").status_code == 200


def test_emergency_stop_latches_error_and_restart_clears_it(service_factory, api_for,
                                                            tmp_path):
    svc = service_factory(time_factor=1.0).start()
    api = api_for(svc)
    assert api.post("/api/v1/printer/emergency_stop", role="viewer").status_code == 403
    board, job_id = start_heating(svc, api, tmp_path)
    t0 = time.monotonic()
    r = api.post("/api/v1/printer/emergency_stop", json={})
    assert r.status_code == 200 and r.json() == {"result": "ok"}, r.text
    # Immediate: the status published before the answer already shows it.
    st = api.status()
    assert st["state"] == "error", st
    assert st["error"] == "emergency stop requested by operator", st
    assert st["job"]["id"] == job_id and st["job"]["state"] == "error"
    assert st["job"]["error"] == "emergency stop requested by operator"
    assert st["printer"]["target_hotend_temp"] == 0.0 and st["printer"]["target_bed_temp"] == 0.0
    assert st["printer"]["hotend_power"] == 0.0 and st["printer"]["bed_power"] == 0.0
    while not heaters_off(board):
        assert time.monotonic() - t0 < 0.5, board.state()["board"]
        time.sleep(0.01)
    # The MCU itself stopped, as for M112.
    deadline = time.monotonic() + 2
    while not board.state()["firmware"]["shutdown"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    r = _health(svc)
    assert r.status_code == 503 and r.json()["status"] == "down", r.text
    # Latched: nothing heats or prints until a restart; a second stop is harmless.
    assert api.post("/api/v1/print", json={"file": "heat.gcode"}).status_code == 503
    r = api.post("/api/v1/heaters/extruder/target", json={"target": 100})
    assert r.status_code == 503, r.text
    assert api.post("/api/v1/printer/emergency_stop").status_code == 200
    assert api.status()["error"] == "emergency stop requested by operator"
    r = api.post("/api/v1/printer/firmware_restart")
    assert r.status_code == 200 and r.json()["state"] == "idle", r.text
    r = api.post("/api/v1/heaters/extruder/target", json={"target": 50})
    assert r.status_code == 200, r.text
    assert api.post("/api/v1/heaters/extruder/target", json={"target": 0}).status_code == 200
