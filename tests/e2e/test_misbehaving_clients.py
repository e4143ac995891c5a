"""The service against a misbehaving LAN client, black-box: idle connections beyond the
limit, a slow request head, a chunked upload far over the limit, a client that goes away
mid-body. The service runs with the descriptor limit a Pi unit gets by default (1024)."""

from __future__ import annotations

import os
import resource
import select
import socket
import time

import httpx
import pytest

from conftest import PASSWORDS, Api, Service

pytestmark = pytest.mark.e2e

MAX_UPLOAD = 2 * 1024 * 1024


def wait_for(predicate, what: str, timeout_s: float = 60.0, log: str = ""):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n{log}")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("misbehaving")
    # The service's own temp directory, to show that uploads never go there.
    tmpdir = root / "tmp"
    tmpdir.mkdir()
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmpdir)
    svc = Service(root, max_upload=MAX_UPLOAD,
                  server_extra="header_timeout_s = 2.0\nbody_idle_timeout_s = 2.0\n"
                               "rate_limit_per_min = 100000.0\nrate_limit_burst = 100000\n")
    try:
        svc.start()
    finally:
        if old is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old
    # The descriptor limit of a unit without LimitNOFILE= on a Pi.
    assert svc.proc is not None
    resource.prlimit(svc.proc.pid, resource.RLIMIT_NOFILE, (1024, 1024))
    svc.tmpdir = tmpdir  # type: ignore[attr-defined]
    yield svc
    svc.kill_all()
    svc.reclaim_status_block()


@pytest.fixture(scope="module")
def api(service):
    client = Api(service)
    yield client
    client.close()


def _connect(service: Service) -> socket.socket:
    return socket.create_connection(("127.0.0.1", service.port), timeout=30)


def _closed_by_server(sock: socket.socket, timeout_s: float = 60.0) -> bytes:
    sock.settimeout(timeout_s)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    except ConnectionResetError:
        return data


def _log_lines(service: Service) -> list[str]:
    return service.log_path.read_text(errors="replace").splitlines()


def _partials(service: Service) -> list[str]:
    return [p.name for p in (service.state_dir / "gcodes").iterdir() if p.name.startswith(".")]


def test_1100_idle_connections_do_not_lock_out_health_login_or_status(service, api):
    token = api.token("viewer")
    before = len(_log_lines(service))
    idle = []
    try:
        started = time.monotonic()
        for _ in range(1100):
            idle.append(_connect(service))
        print(f"1100 connections opened in {time.monotonic() - started:.1f} s")
        started = time.monotonic()
        with httpx.Client(base_url=service.url, timeout=30) as client:
            assert client.get("/api/v1/health").status_code in (200, 503)
            assert client.post("/api/v1/auth/login", json={
                "username": "viewer", "password": PASSWORDS["viewer"]}).status_code == 200
            r = client.get("/api/v1/status", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200
        answered_in = time.monotonic() - started
        descriptors = len(os.listdir(f"/proc/{service.proc.pid}/fd"))
        print(f"service holds {descriptors} descriptors (limit 1024)")
        assert descriptors < 700, descriptors
        print(f"health, login and status answered in {answered_in:.2f} s")
        # Well inside the header timeout: they did not wait for idle ones to time out.
        assert answered_in < 30, answered_in
        # Those replaced by newer connections were closed by the service.
        assert _closed_by_server(idle[0]) == b""
    finally:
        for s in idle:
            s.close()
    lines = _log_lines(service)[before:]
    assert not any("out of system resource" in line for line in lines), lines[-20:]
    connection_lines = [line for line in lines if "printhost.api.connections" in line]
    # ~850 connections were replaced: one line says so, not one each.
    assert len(connection_lines) < 10, connection_lines


def test_a_slowloris_header_is_closed_after_the_header_timeout(service):
    slow = _connect(service)
    slow.settimeout(0.5)
    started = time.monotonic()
    slow.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
    answer, closed_after = b"", None
    # A header line every 0.5 s, forever, unless the service closes the connection.
    for i in range(240):
        try:
            slow.sendall(b"X-Slow-%d: x\r\n" % i)
            chunk = slow.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            closed_after = time.monotonic() - started
            break
        answer += chunk
        if not chunk:
            closed_after = time.monotonic() - started
            break
    slow.close()
    assert closed_after is not None, "the slow client was never closed"
    assert answer.startswith(b"HTTP/1.1 408 ") or answer == b"", answer
    # The header timeout is 2 s: closed after it, long before the client would stop.
    assert 2.0 <= closed_after < 60, closed_after
    print(f"slowloris closed after {closed_after:.2f} s")
    # A client that connects and sends nothing is closed as well.
    silent = _connect(service)
    started = time.monotonic()
    assert _closed_by_server(silent) == b""
    print(f"silent connection closed after {time.monotonic() - started:.2f} s")
    silent.close()


def test_a_chunked_upload_far_over_the_limit_is_refused_while_it_streams(service, api):
    headers = api.auth("operator")
    s = _connect(service)
    boundary = b"limit-test"
    head = (b"POST /api/v1/files HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Authorization: " + headers["Authorization"].encode() + b"\r\n"
            b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n\r\n")
    s.sendall(head)
    part = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"file\"; "
            b"filename=\"huge.gcode\"\r\n\r\n")
    line = b"G1 X10 Y10 E0.5\n" * 4096   # 64 KiB
    sent, largest_partial, answer = 0, 0, b""
    s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
    limit = 1024 * 1024 * 1024  # what the client would send: 1 GiB
    s.settimeout(30)
    while sent < limit:
        try:
            s.sendall(b"%x\r\n%s\r\n" % (len(line), line))
        except OSError:
            break
        sent += len(line)
        for p in (service.state_dir / "gcodes").glob(".upload-*"):
            try:
                largest_partial = max(largest_partial, p.stat().st_size)
            except FileNotFoundError:
                pass
        if select.select([s], [], [], 0)[0]:
            break
    try:
        answer = _closed_by_server(s)
    finally:
        s.close()
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"Request body too large" in answer
    # The client got its answer long before it could send a gigabyte, and the file
    # never grew past the limit.
    assert sent < 256 * 1024 * 1024, sent
    assert largest_partial <= MAX_UPLOAD, largest_partial
    print(f"413 after {sent / 1e6:.1f} MB sent; largest partial file {largest_partial} bytes")
    wait_for(lambda: _partials(service) == [], "the partial file removed", log=service.log())
    assert list(service.tmpdir.iterdir()) == []  # nothing spooled to the temp directory


def test_a_client_gone_mid_body_is_one_line_not_an_error(service, api):
    headers = api.auth("operator")
    before = len(_log_lines(service))
    s = _connect(service)
    boundary = b"gone-test"
    part = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"file\"; "
            b"filename=\"gone.gcode\"\r\n\r\n" + b"G1 X10 Y10 E0.5\n" * 20000)
    s.sendall(b"POST /api/v1/files HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
              b"Authorization: " + headers["Authorization"].encode() + b"\r\n"
              b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n\r\n" + part)
    s.close()
    lines = wait_for(lambda: [ln for ln in _log_lines(service)[before:]
                              if "disconnected during POST /api/v1/files" in ln],
                     "the disconnect logged", log=service.log())
    assert len(lines) == 1 and " INFO " in lines[0], lines
    record = wait_for(lambda: [ln for ln in _log_lines(service)[before:] if '"status":499' in ln],
                      "the access record", log=service.log())
    print("client gone mid-body:", record[0].split("printhost.api.access: ", 1)[-1])
    new = _log_lines(service)[before:]
    assert not any(" ERROR " in ln or "Traceback" in ln for ln in new), new
    assert _partials(service) == []
    assert list(service.tmpdir.iterdir()) == []


def test_a_stalled_body_is_closed_after_the_body_idle_timeout(service, api):
    headers = api.auth("operator")
    before = len(_log_lines(service))
    s = _connect(service)
    boundary = b"stall-test"
    s.sendall(b"POST /api/v1/files HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
              b"Authorization: " + headers["Authorization"].encode() + b"\r\n"
              b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n\r\n"
              + b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"file\"; "
              b"filename=\"stall.gcode\"\r\n\r\nG28\n")
    started = time.monotonic()
    _closed_by_server(s)
    closed_after = time.monotonic() - started
    s.close()
    assert closed_after >= 2.0, closed_after
    print(f"stalled body closed after {closed_after:.2f} s")
    wait_for(lambda: _partials(service) == [], "the partial file removed", log=service.log())
    wait_for(lambda: any("disconnected during POST /api/v1/files" in ln
                         for ln in _log_lines(service)[before:]),
             "the disconnect logged", log=service.log())
    new = _log_lines(service)[before:]
    assert not any(" ERROR " in ln or "Traceback" in ln for ln in new), new
