"""PID autotune through the API on the running service (simulated MCU, 20x time)."""

from __future__ import annotations

import time

import pytest

from printhost.config import load_settings

pytestmark = pytest.mark.e2e

TUNE = "/api/v1/heaters/extruder/pid_tune"


def _wait_tune(api, state: str, timeout_s: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    last: dict = {}
    while time.monotonic() < deadline:
        r = api.get(TUNE)
        assert r.status_code == 200, r.text
        last = r.json()
        if last["state"] == state:
            return last
        assert last["state"] == "running", last
        time.sleep(0.1)
    raise AssertionError(f"tune not {state} in {timeout_s} s; last {last}\n{api.service.log()}")


def test_pid_tune_on_the_live_hotend_then_save(service_factory, api_for):
    svc = service_factory(time_factor=20.0).start()
    api = api_for(svc)
    original = svc.config_path.read_bytes()

    assert api.get(TUNE).json()["state"] == "idle"
    for role in ("viewer", "operator"):
        r = api.post(TUNE, role=role, json={"target": 210})
        assert r.status_code == 403 and r.json() == {"error": "Insufficient permissions"}
    r = api.post("/api/v1/heaters/chamber/pid_tune", role="admin", json={"target": 40})
    assert r.status_code == 404 and r.json()["error"] == "Unknown heater: chamber"
    for body, field in (({"target": 300}, "target"), ({"target": 0}, "target"),
                        ({"target": "210"}, "target"), ({}, "target"),
                        ({"target": 210, "x": 1}, "x")):
        r = api.post(TUNE, role="admin", json=body)
        assert r.status_code == 400 and field in r.json()["fields"], (body, r.text)
    r = api.post(TUNE, role="admin", content=b'{"target": NaN}',
                 headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and set(r.json()) == {"error"}
    r = api.post(TUNE + "/save", role="admin")
    assert r.status_code == 409 and "No finished PID tune" in r.json()["error"]

    r = api.post(TUNE, role="admin", json={"target": 210})
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "running" and r.json()["target"] == 210.0
    r = api.post(TUNE, role="admin", json={"target": 200})
    assert r.status_code == 409 and r.json() == {"error": "A PID tune is already running"}
    status = api.status()
    assert status["printer"]["autotune"]["heater"] == "extruder"
    assert status["printer"]["target_hotend_temp"] == 210.0

    tune = _wait_tune(api, "done")
    result = tune["result"]
    assert tune["progress"] == 1.0 and result["cycles"] == 5
    # On the thermal model alone the hotend tunes to Kp ~28, Ki ~4, Kd ~50. Through the
    # MCU the loop has more dead time (a reading every 0.3 s, outputs scheduled ahead, and
    # at 20x the scheduling margin grows in simulated time), so the oscillation is larger
    # and slower and the gains lower (Kp ~9, Ki ~0.5, Kd ~39 measured): check for
    # plausible gains of a hotend, not for the model's numbers.
    assert 3.0 < result["pid_kp"] < 60.0, result
    assert 0.1 < result["pid_ki"] < 10.0, result
    assert 10.0 < result["pid_kd"] < 150.0, result
    assert 5.0 < result["tu"] < 80.0 and result["ku"] > 0.0 and result["spread"] < 0.2
    printer = api.status()["printer"]
    assert printer["target_hotend_temp"] == 0.0 and printer["hotend_power"] == 0.0

    for role in ("viewer", "operator"):
        assert api.post(TUNE + "/save", role=role).status_code == 403
    r = api.post(TUNE + "/save", role="admin")
    assert r.status_code == 200, r.text
    saved = r.json()
    assert saved["result"] == "ok" and saved["restart_required"] is True
    assert saved["pid_kp"] == result["pid_kp"]
    after = svc.config_path.read_bytes()
    # The test config has no [heaters.extruder] table: it is appended, the rest unchanged.
    assert after.startswith(original)
    assert after[len(original):].decode() == (
        f"\n[heaters.extruder]\npid_kp = {result['pid_kp']:.3f}\n"
        f"pid_ki = {result['pid_ki']:.3f}\npid_kd = {result['pid_kd']:.3f}\n")
    extruder = load_settings(svc.config_path).heaters.extruder
    assert (extruder.pid_kp, extruder.pid_ki, extruder.pid_kd) == (
        result["pid_kp"], result["pid_ki"], result["pid_kd"])
    # Saving again edits the now existing lines in place.
    assert api.post(TUNE + "/save", role="admin").status_code == 200
    assert svc.config_path.read_bytes() == after


def test_cancel_stops_a_tune(service_factory, api_for):
    svc = service_factory(time_factor=20.0).start()
    api = api_for(svc)
    r = api.post("/api/v1/heaters/heater_bed/pid_tune", role="admin", json={"target": 60})
    assert r.status_code == 202, r.text
    api.wait_for(lambda s: (s["printer"]["bed_power"] or 0.0) > 0.0, 30.0, "bed heating")
    assert api.post("/api/v1/cancel", role="operator", json={}).status_code == 200
    status = api.wait_for(lambda s: s["printer"]["autotune"]["state"] == "cancelled", 10.0,
                          "tune cancelled")
    assert status["printer"]["target_bed_temp"] == 0.0
    api.wait_for(lambda s: s["printer"]["bed_power"] == 0.0, 10.0, "bed off")
