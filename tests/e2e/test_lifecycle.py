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
    # Recorded from the control process's own last word, not as a crash.
    assert "stopped during the print" in jobs[0]["error"] and jobs[0]["ended_at"]
    assert "ERROR" not in svc.log().split("stop requested")[-1].split("Started server")[0]


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
    # degraded only for the moment before the heaters' first readings
    assert r.json()["status"] in ("ok", "degraded") and r.json()["control"] == "running"
    assert r.json()["components"]["control"] == {"status": "ok", "reason": None}


def test_systemd_ready_notification(service_factory, tmp_path, monkeypatch):
    """Type=notify: READY=1 arrives once the API answers and the control process runs."""
    import socket as _socket
    sock_path = tmp_path / "notify.sock"
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
    svc = service_factory().start(wait=False)
    try:
        message = ""
        while "READY=1" not in message:   # after STATUS= lines saying what start-up does
            message = sock.recv(4096).decode()
        # Once READY is sent, the API is already serving and the printer is up.
        r = httpx.get(svc.url + "/api/v1/health", timeout=2)
        assert r.status_code == 200 and r.json()["control"] == "running"
        svc.stop()
        assert "STOPPING=1" in sock.recv(4096).decode()
    finally:
        sock.close()


def test_mdns_advertisement_and_goodbye(service_factory):
    """The service is found over mDNS with its TXT records, and withdrawn on shutdown."""
    import asyncio

    from printhost.discovery import discover

    svc = service_factory(discovery=True).start()
    uuid = None
    deadline = time.monotonic() + 20
    found: list = []
    while time.monotonic() < deadline and not found:
        found = [f for f in asyncio.run(discover(2.0, interfaces=["127.0.0.1"]))
                 if f["port"] == svc.port]
    assert found, svc.log()
    txt = found[0]["txt"]
    uuid = (svc.state_dir / "instance_id").read_text().strip()
    assert txt["uuid"] == uuid and txt["api"] == "/api/v1" and txt["version"]
    assert svc.stop() < 2.0
    gone = [f for f in asyncio.run(discover(2.0, interfaces=["127.0.0.1"]))
            if f["port"] == svc.port]
    assert gone == []
