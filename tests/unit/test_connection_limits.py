"""Connection limits (printhost/api/connections.py) on a real uvicorn server on loopback:
idle connections beyond the limit, a slow request head, a stalled body."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from printhost.api.connections import ConnectionGuard, guarded_protocol


async def _health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _echo_size(request: Request) -> JSONResponse:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return JSONResponse({"size": size})


class Server:
    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard
        app = Starlette(routes=[Route("/health", _health),
                                Route("/echo", _echo_size, methods=["POST"])])
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, lifespan="off", access_log=False,
                                http=guarded_protocol(guard), timeout_keep_alive=5)
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])), daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        wait_for(lambda: self.server.started, "server started")
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)


def wait_for(predicate, what: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def closed_by_server(sock: socket.socket, timeout_s: float = 60.0) -> bytes:
    """Read until the server closes the connection; returns what it sent."""
    sock.settimeout(timeout_s)
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return data
            data += chunk
    except ConnectionResetError:
        return data


def test_idle_connections_beyond_the_limit_do_not_lock_out_a_new_client(caplog):
    caplog.set_level(logging.INFO)
    guard = ConnectionGuard(max_connections=16, header_timeout_s=600.0,
                            body_idle_timeout_s=600.0)
    with Server(guard) as server:
        idle = [server.connect() for _ in range(200)]
        try:
            # Every new client still gets its answer: the longest-idle connection
            # makes room for it.
            for _ in range(5):
                r = httpx.get(server.url + "/health", timeout=30)
                assert r.status_code == 200
            assert guard.counters()["open"] <= 16
            assert guard.evicted >= 200 - 16
            # The idle ones that were replaced are closed by the server.
            assert closed_by_server(idle[0]) == b""
        finally:
            for s in idle:
                s.close()
    lines = [r for r in caplog.records if r.name == "printhost.api.connections"]
    # At most a line or two for ~190 evictions, not one each (none at all if an
    # earlier test in this process said the same less than 10 s ago).
    assert len(lines) <= 3, [r.getMessage() for r in lines]


def test_at_the_limit_with_every_connection_busy_a_new_one_gets_503():
    guard = ConnectionGuard(max_connections=4, header_timeout_s=600.0,
                            body_idle_timeout_s=600.0)
    with Server(guard) as server:
        busy = []
        for _ in range(4):
            s = server.connect()
            # A request whose body has not all arrived keeps its connection busy.
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
            busy.append(s)
        wait_for(lambda: all(not c.waiting_for_request() for c in guard.open)
                 and len(guard.open) == 4, "four busy connections")
        extra = server.connect()
        extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = closed_by_server(extra)
        assert answer.startswith(b"HTTP/1.1 503 ") or answer == b""
        assert guard.refused == 1
        for s in busy:
            s.close()
        wait_for(lambda: not guard.open, "busy connections gone")
        assert httpx.get(server.url + "/health", timeout=30).status_code == 200


def test_a_slow_request_head_is_closed_after_the_header_timeout():
    guard = ConnectionGuard(max_connections=16, header_timeout_s=1.0,
                            body_idle_timeout_s=600.0)
    with Server(guard) as server:
        slow = server.connect()
        started = time.monotonic()
        slow.sendall(b"GET /health HTTP/1.1\r\n")
        # A header line every 0.3 s: slower than a head must arrive in total.
        slow.settimeout(0.3)
        answer = b""
        for i in range(200):
            try:
                slow.sendall(b"X-Slow-%d: x\r\n" % i)
            except OSError:
                break
            try:
                chunk = slow.recv(4096)
            except socket.timeout:
                continue
            except ConnectionResetError:
                break
            answer += chunk
            if not chunk:
                break
        elapsed = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 ") or answer == b"", answer
        assert guard.head_timeouts == 1
        # Closed after the timeout, not while the client kept trickling (200 lines
        # would take a minute).
        assert 1.0 <= elapsed < 30, elapsed
        slow.close()
        # A connection that never sends anything is closed too, without an answer.
        silent = server.connect()
        assert closed_by_server(silent) == b""
        assert guard.head_timeouts == 2
        # Meanwhile, ordinary clients are served.
        assert httpx.get(server.url + "/health", timeout=30).status_code == 200


def test_a_stalled_body_is_closed_after_the_body_idle_timeout():
    guard = ConnectionGuard(max_connections=16, header_timeout_s=600.0,
                            body_idle_timeout_s=1.0)
    with Server(guard) as server:
        s = server.connect()
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        # Pieces closer together than the timeout keep the request alive ...
        for _ in range(4):
            s.sendall(b"x" * 10)
            time.sleep(0.3)
        assert guard.body_timeouts == 0
        # ... then it stops sending, and the server closes the connection.
        closed_by_server(s)
        assert guard.body_timeouts == 1
        s.close()
