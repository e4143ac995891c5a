"""Start-up, shutdown and restart behaviour of the whole service."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

pytestmark = pytest.mark.e2e


def _start_heating(api, tmp_path) -> None:
    gcode = tmp_path / "heat.gcode"
    gcode.write_text("M140 S60\nM104 S210\nG28\nM109 S210\nG1 X10 Y10 F3000\n")
    assert api.upload(gcode).status_code == 201
    assert api.post("/api/v1/print", json={"file": "heat.gcode"}).status_code == 200
    api.wait_for(lambda s: s["printer"]["hotend_power"] > 0 and s["printer"]["target_hotend_temp"] == 210,
                 timeout_s=20, what="heating")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_everything_within_2s_heaters_first(service_factory, api_for, tmp_path, sig):
    svc = service_factory(time_factor=1.0).start()
    api = api_for(svc)
    _start_heating(api, tmp_path)
    api.close()
    took = svc.stop(sig)
    assert took < 2.0, took
    assert svc.proc.returncode == 0
    log = svc.log()
    off = log.find("heaters off")
    assert off != -1, log
    assert off < log.find("stopped in"), log
    # Nothing is left running: the port is free and no control process remains.
    with pytest.raises(httpx.ConnectError):
        httpx.get(svc.url + "/api/v1/health", timeout=1.0)


def test_job_running_at_stop_is_interrupted_after_restart(service_factory, api_for, tmp_path):
    svc = service_factory(time_factor=1.0).start()
    api = api_for(svc)
    _start_heating(api, tmp_path)
    job_id = api.status()["job"]["id"]
    svc.stop(signal.SIGTERM)
    svc.start()
    api2 = api_for(svc)
    st = api2.status()
    # Heaters stay off after a restart, and the job is never resumed by itself.
    assert st["state"] == "idle"
    assert st["printer"]["target_hotend_temp"] == 0
    jobs = api2.get("/api/v1/jobs").json()["jobs"]
    assert jobs[0]["id"] == job_id and jobs[0]["state"] == "interrupted"


def test_openapi_document_lists_everything(shared_service):
    r = httpx.get(shared_service.url + "/api/v1/openapi.json", timeout=5)
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    for path, method in (("/api/v1/pause", "post"), ("/api/v1/resume", "post"),
                         ("/api/v1/cancel", "post"), ("/api/v1/status", "get"),
                         ("/api/v1/auth/login", "post"), ("/api/v1/auth/check", "get"),
                         ("/api/v1/files", "post"), ("/api/v1/print", "post")):
        assert method in paths[path], path
    pause = paths["/api/v1/pause"]["post"]["responses"]
    assert {"200", "401", "403", "409", "500", "503"} <= set(pause)
    login = paths["/api/v1/auth/login"]["post"]
    assert login["security"] == [] and {"400", "401", "429", "500"} <= set(login["responses"])
    assert "Error" in doc["components"]["schemas"]


def test_health_needs_no_token(shared_service):
    r = httpx.get(shared_service.url + "/api/v1/health", timeout=5)
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["control"] == "running"
