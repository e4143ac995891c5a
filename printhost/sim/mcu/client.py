"""Client of the simulated MCU's control socket (for tests and diagnostics)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any


class SimMcuClient:
    """Talk to the simulated board of a service whose state directory is known."""

    def __init__(self, state_dir: Path | str, timeout_s: float = 5.0) -> None:
        self.dir = Path(state_dir) / "sim-mcu"
        self.timeout_s = timeout_s

    @property
    def pid(self) -> int:
        return int((self.dir / "pid").read_text())

    def request(self, **request: Any) -> dict[str, Any]:
        name = (self.dir / "control").read_text().strip()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout_s)
            sock.connect("\0" + name)
            sock.sendall(json.dumps(request).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
        reply = json.loads(buf)
        if not reply.get("ok"):
            raise RuntimeError(f"simulated MCU refused {request}: {reply.get('error')}")
        return reply

    def state(self) -> dict[str, Any]:
        return self.request(cmd="state")
