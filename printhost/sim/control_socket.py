"""The control sockets of the simulated hardware: JSON lines over a Linux
abstract-namespace socket (no path-length limits, nothing left on disk).

The simulated MCU and the simulated Pi each serve one (`ControlServer`), and write its
name to a file in the service's state directory; tests and people find it there and
send requests with `request`. One request is one JSON object on a line, answered by
one JSON object on a line with `"ok": true` or `"ok": false` and an `error`.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlServer:
    """A non-blocking listening socket; `service` answers what `select` found readable."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind("\0" + name)
        self.sock.listen(4)
        self.sock.setblocking(False)
        self.clients: dict[socket.socket, bytearray] = {}

    def fds(self) -> list[socket.socket]:
        return [self.sock, *self.clients]

    def service(self, readable: list, handler: Handler) -> None:
        for s in readable:
            if s is self.sock:
                try:
                    conn, _ = self.sock.accept()
                    conn.setblocking(True)
                    conn.settimeout(1.0)
                    self.clients[conn] = bytearray()
                except OSError:
                    pass
                continue
            if s not in self.clients:
                continue
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                self.clients.pop(s, None)
                s.close()
                continue
            buf = self.clients[s]
            buf += data
            while b"\n" in buf:
                line, _, rest = bytes(buf).partition(b"\n")
                buf[:] = rest
                try:
                    reply = handler(json.loads(line))
                except Exception as exc:  # a bad request must not stop the simulation
                    reply = {"ok": False, "error": str(exc)}
                try:
                    s.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    pass

    def close(self) -> None:
        for s in self.clients:
            s.close()
        self.clients.clear()
        self.sock.close()


def request(name_file: Path, payload: dict[str, Any], timeout_s: float = 5.0,
            what: str = "simulated hardware") -> dict[str, Any]:
    """Send one request to the server whose name is in `name_file`; RuntimeError if it
    answers with ok false."""
    name = Path(name_file).read_text().strip()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect("\0" + name)
        sock.sendall(json.dumps(payload).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    reply = json.loads(buf)
    if not reply.get("ok"):
        raise RuntimeError(f"{what} refused {payload}: {reply.get('error')}")
    return reply
