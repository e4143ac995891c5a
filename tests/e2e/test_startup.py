"""What start-up says and answers: the log, the API while the kernels compile, READY."""

from __future__ import annotations

import os
import re
import socket as _socket
import stat
import time

import httpx
import pytest

pytestmark = pytest.mark.e2e

# Every line of the service's log, from every process: time, process, level, logger.
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (supervisor|control|sim-mcu) "
                      r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: \S")


def _full_log(svc) -> str:
    return svc.log_path.read_text(errors="replace")


def test_first_start_says_what_it_does_and_answers_503_until_ready(service_factory, tmp_path,
                                                                   monkeypatch):
    # A kernel cache of its own, empty: this start compiles the kernels.
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "fresh-numba-cache"))
    svc = service_factory()
    svc.write_config()
    svc.add_users()
    os.chmod(svc.state_dir, 0o755)    # too open: start-up makes it private
    svc.start(wait=False)
    answers: list[str] = []
    deadline = time.monotonic() + 280
    with httpx.Client(base_url=svc.url, timeout=2.0) as http:
        while True:
            assert time.monotonic() < deadline, _full_log(svc)[-6000:]
            assert svc.proc.poll() is None, _full_log(svc)[-6000:]
            try:
                r = http.get("/api/v1/health")
            except httpx.TransportError:
                time.sleep(0.05)       # not listening yet
                continue
            if r.status_code == 200:
                # Never before the log says so.
                assert " ready on http://" in _full_log(svc)
                break
            assert r.status_code == 503, r.text
            assert list(r.json()) == ["error"] and r.json()["error"].startswith("starting: ")
            assert r.headers["retry-after"] == "1"
            if not answers:
                # Every route, authenticated or not, says the same while starting.
                other = http.get("/api/v1/status")
                assert other.status_code == 503 and other.json()["error"].startswith("starting: ")
            answers.append(r.json()["error"])
            time.sleep(0.1)
    assert "starting: compiling motion kernels (first start)" in answers, answers
    # The phases only ever move forward.
    order = ["starting: starting", "starting: starting the simulated MCU",
             "starting: compiling motion kernels (first start)",
             "starting: connecting to the MCU"]
    seen = [order.index(a) for a in answers]
    assert seen == sorted(seen), answers
    log = _full_log(svc)
    events = ["API listening on http://127.0.0.1:",
              "compiling motion kernels (first start, about ",
              "motion kernels compiled in ",
              "control process ready",
              f" ready on http://127.0.0.1:{svc.port}"]
    positions = [log.find(event) for event in events]
    assert -1 not in positions and positions == sorted(positions), (positions, log[-6000:])
    bad = [line for line in log.splitlines() if not LOG_LINE.match(line)]
    assert bad == [], bad
    assert f"state directory {svc.state_dir} was mode 0755; made it 0700" in log
    assert stat.S_IMODE(svc.state_dir.stat().st_mode) == 0o700
    assert svc.stop() < 2.0


def test_ready_comes_after_everything_mdns_included(service_factory, tmp_path, monkeypatch):
    """Type=notify: systemd hears what start-up is doing, then READY=1 once the API
    answers, the control process runs and the mDNS announcement is made."""
    sock_path = tmp_path / "notify.sock"
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
    svc = service_factory(discovery=True).start(wait=False)
    try:
        messages: list[str] = []
        while not any("READY=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        log = _full_log(svc)
        assert "via mDNS" in log and " ready on http://" in log, log[-6000:]
        assert log.find("via mDNS") < log.find(" ready on http://")
        statuses = [line for m in messages for line in m.splitlines()
                    if line.startswith("STATUS=starting: ")]
        assert "STATUS=starting: announcing the printer on the network (mDNS)" in statuses
        r = httpx.get(svc.url + "/api/v1/health", timeout=2)
        assert r.status_code == 200 and r.json()["control"] == "running"
        svc.stop()
        assert "STOPPING=1" in sock.recv(4096).decode()
    finally:
        sock.close()
