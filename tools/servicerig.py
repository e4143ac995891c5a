"""The real printhost service on loopback, for the tools that drive it from outside.

`tools/load-acceptance` and `tools/bench live` start the service exactly as a user does
(`python -m printhost serve` on the repository's default config, with the admin user
created by the CLI), talk to it over HTTP only, and read the CPU time of its
processes from /proc. Nothing here imports printhost: what is measured is the
service as shipped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CUBE = REPO / "tests" / "data" / "cube.gcode"
PASSWORD = "acceptance-pass-123"


def repo_python() -> str:
    """The repository's .venv interpreter if there is one, else this one."""
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


class Busy:
    """N CPU-bound processes, killed by pid when the block ends."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "Busy":
        for _ in range(self.n):
            self.procs.append(subprocess.Popen([sys.executable, "-c", "while 1: pass"]))
        if self.procs:
            print(f"busy processes: {', '.join(str(p.pid) for p in self.procs)}", flush=True)
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """The real service from the repository's default config, on loopback only."""

    def __init__(self, root: Path, time_factor: float) -> None:
        self.root = root
        self.port = free_port()
        self.state = root / "state"
        self.config = root / "printhost.toml"
        text = (REPO / "config" / "printhost.toml").read_text()
        text = text.replace('host = "0.0.0.0"', 'host = "127.0.0.1"', 1)
        text = text.replace("port = 7130", f"port = {self.port}", 1)
        text = text.replace("time_factor = 1.0", f"time_factor = {time_factor}", 1)
        text = text.replace("[discovery]\nenabled = true", "[discovery]\nenabled = false", 1)
        self.config.write_text(text)
        self.log_path = root / "service.log"
        self.proc: subprocess.Popen | None = None
        self.token = ""

    def _cli(self, *args: str, stdin: str = "") -> None:
        subprocess.run([repo_python(), "-m", "printhost", *args, "--config", str(self.config),
                        "--state-dir", str(self.state)], input=stdin, text=True, check=True,
                       capture_output=True, cwd=REPO, timeout=120)

    def start(self, timeout_s: float = 180.0) -> None:
        self._cli("user", "add", "admin", "--role", "admin", stdin=PASSWORD + "\n")
        self.proc = subprocess.Popen(
            [repo_python(), "-m", "printhost", "serve", "--config", str(self.config),
             "--state-dir", str(self.state)],
            stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, cwd=REPO,
            start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("service exited at start:\n" + self.log_tail())
            try:
                if self.request("GET", "/api/v1/health", auth=False)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("service not healthy in time:\n" + self.log_tail())
        code, body = self.request("POST", "/api/v1/auth/login", auth=False,
                                  body={"username": "admin", "password": PASSWORD})
        if code != 200:
            raise RuntimeError(f"login failed: {code} {body}")
        self.token = body["token"]

    def request(self, method: str, path: str, body: dict | None = None, auth: bool = True,
                data: bytes | None = None, content_type: str = "application/json"):
        headers = {}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def upload(self, path: Path) -> None:
        boundary = "printhost-acceptance-boundary"
        payload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                   f"filename=\"{path.name}\"\r\nContent-Type: text/x-gcode\r\n\r\n").encode()
        payload += path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        code, body = self.request("POST", "/api/v1/files", data=payload,
                                  content_type=f"multipart/form-data; boundary={boundary}")
        if code not in (200, 201):
            raise RuntimeError(f"upload failed: {code} {body}")

    def status(self) -> dict:
        code, body = self.request("GET", "/api/v1/status")
        if code != 200:
            raise RuntimeError(f"status: {code} {body}")
        return body

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""

    def control_pid(self) -> int | None:
        """The control process's pid, from its "control process ready" log line."""
        found = re.findall(r"control process ready \(pid (\d+)", self.log_tail(1 << 20))
        return int(found[-1]) if found else None

    def children(self) -> list[int]:
        """Pids of the service's child processes (control, simulated board, ...)."""
        if self.proc is None:
            return []
        return [pid for pid in _pids() if _ppid(pid) == self.proc.pid]


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()


def _ppid(pid: int) -> int | None:
    try:
        return int(_stat_fields(pid)[1])
    except (OSError, IndexError, ValueError):
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (all its threads)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""
