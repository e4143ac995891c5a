"""End-to-end harness: the real service as a subprocess on a loopback port.

Each `Service` gets its own state directory, config file and free port, so tests can
run side by side. Users are created with the real `printhost user add` command.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from printhost.ipc.status import reclaim_stale

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
PASSWORDS = {"admin": "admin-pass-123", "operator": "operator-pass-123", "viewer": "viewer-pass-123"}

BASE_CONFIG = """
[server]
host = "127.0.0.1"
port = {port}
max_body_bytes = 8192
max_upload_bytes = {max_upload}
log_level = "info"
access_log = "all"
{server_extra}
[auth]
login_max_failures = {login_max_failures}
login_window_s = 60.0
login_lockout_s = 30.0

[discovery]
enabled = {discovery}

[control]
buffer_time_s = 0.5
heartbeat_timeout_s = 1.0

[simulation]
time_factor = {time_factor}

[pause]
park_x = 10.0
park_y = 200.0
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def printhost_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "printhost", *args]


@dataclass
class Service:
    root: Path
    time_factor: float = 20.0
    max_upload: int = 3 * 1024 * 1024
    discovery: bool = False
    login_max_failures: int = 20
    extra_config: str = ""
    # Lines added to the [server] table.
    server_extra: str = ""
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def config_path(self) -> Path:
        return self.root / "printhost.toml"

    @property
    def log_path(self) -> Path:
        return self.root / "service.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> None:
        self.config_path.write_text(BASE_CONFIG.format(
            port=self.port, max_upload=self.max_upload, time_factor=self.time_factor,
            login_max_failures=self.login_max_failures, server_extra=self.server_extra,
            discovery="true" if self.discovery else "false") + self.extra_config)

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(printhost_cmd(*args, "--config", str(self.config_path),
                                            "--state-dir", str(self.state_dir)),
                              input=stdin, capture_output=True, text=True, timeout=60, cwd=REPO)

    def add_users(self) -> None:
        for role, password in PASSWORDS.items():
            r = self.cli("user", "add", role, "--role", role, stdin=password + "\n")
            assert r.returncode == 0, r.stderr

    def start(self, wait: bool = True) -> "Service":
        self.write_config()
        if not (self.state_dir / "printhost.json").exists():
            self.add_users()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            printhost_cmd("serve", "--config", str(self.config_path), "--state-dir",
                          str(self.state_dir)),
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited early:\n{self.log()}")
            # Up means the control process publishes, whatever the printer's health
            # (a test may start a printer that cannot print): 200 or 503 with the
            # control component ok.
            try:
                r = httpx.get(self.url + "/api/v1/health", timeout=1.0)
                if (r.status_code in (200, 503)
                        and r.json()["components"]["control"]["status"] == "ok"):
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"service not healthy in {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""

    def control_pid(self) -> int:
        """The control process is the supervisor's child running multiprocessing's spawn
        entry point that is neither its resource tracker nor the simulated MCU.

        Read from /proc rather than `ps`, whose argument column is cut to the terminal
        width and so can hide the word that tells the two children apart."""
        assert self.proc is not None
        sim_pid_file = self.state_dir / "sim-mcu" / "pid"
        sim_pid = int(sim_pid_file.read_text()) if sim_pid_file.exists() else -1
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if (ppid == self.proc.pid and "multiprocessing.spawn" in args
                    and int(entry.name) != sim_pid):
                pids.append(int(entry.name))
        assert len(pids) == 1, pids
        return pids[0]

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> float:
        """Send `sig` and return how long the service took to exit."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            return 0.0
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"service did not stop within {timeout_s} s:\n{self.log()}")
        return time.monotonic() - t0

    def reclaim_status_block(self) -> None:
        """After `kill_all`: remove the status block the killed service left in /dev/shm,
        as the next start on this state directory would."""
        reclaim_stale(self.state_dir / "run")

    def kill_all(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


class Api:
    """A small client that logs in once per role."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.http = httpx.Client(base_url=service.url, timeout=15.0)
        self._tokens: dict[str, str] = {}

    def token(self, role: str) -> str:
        if role not in self._tokens:
            r = self.http.post("/api/v1/auth/login",
                               json={"username": role, "password": PASSWORDS[role]})
            assert r.status_code == 200, r.text
            self._tokens[role] = r.json()["token"]
        return self._tokens[role]

    def auth(self, role: str = "operator") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role)}"}

    def get(self, path: str, role: str = "viewer", **kw) -> httpx.Response:
        return self.http.get(path, headers={**self.auth(role), **kw.pop("headers", {})}, **kw)

    def post(self, path: str, role: str = "operator", **kw) -> httpx.Response:
        return self.http.post(path, headers={**self.auth(role), **kw.pop("headers", {})}, **kw)

    def status(self) -> dict:
        r = self.get("/api/v1/status")
        assert r.status_code == 200, r.text
        return r.json()

    def upload(self, path: Path, name: str | None = None,
               overwrite: bool | None = None) -> httpx.Response:
        params = {} if overwrite is None else {"overwrite": "true" if overwrite else "false"}
        with open(path, "rb") as fh:
            return self.post("/api/v1/files", params=params,
                             files={"file": (name or path.name, fh, "application/octet-stream")})

    def print_text(self, tmp_path: Path, name: str, data: str | bytes) -> str:
        """Upload `data` as `name` (replacing a file of that name) and print it; the job id."""
        path = tmp_path / name
        if isinstance(data, str):
            data = data.encode()
        path.write_bytes(data)
        r = self.upload(path, overwrite=True)
        assert r.status_code == 201, r.text
        r = self.post("/api/v1/print", json={"file": name})
        assert r.status_code == 200, r.text
        return r.json()["job_id"]

    def wait_for(self, predicate, timeout_s: float = 60.0, what: str = "condition") -> dict:
        deadline = time.monotonic() + timeout_s
        last: dict = {}
        while time.monotonic() < deadline:
            last = self.status()
            if predicate(last):
                return last
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; last status {last}\n"
                             f"{self.service.log()}")

    def close(self) -> None:
        self.http.close()


# Compiles every kernel family into `NUMBA_CACHE_DIR` and checks them, as a service's
# first start does (printhost.control.kernels.loader).
_WARM_UP = ("import sys; from pathlib import Path; "
            "from printhost.control.kernels.loader import load_kernels; "
            "result = load_kernels(Path(sys.argv[1])); "
            "sys.exit(0 if result.ok else f'kernels not usable: {result.reason}')")


@pytest.fixture(scope="session", autouse=True)
def shared_kernel_cache(tmp_path_factory):
    """One numba cache for every service of the session, compiled once before the first
    starts: each control process would otherwise compile the step kernels into its own
    state directory, and each pytest-xdist worker into its own cache. The workers share
    the session's temporary root; a lock lets the first compile and the others wait."""
    old = os.environ.get("NUMBA_CACHE_DIR")
    if old:
        yield old
        return
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    cache = shared / "numba-cache"
    with open(shared / "numba-cache.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "numba-cache.ready").exists():
            subprocess.run([sys.executable, "-c", _WARM_UP, str(shared / "warm-up-state")],
                           env=dict(os.environ, NUMBA_CACHE_DIR=str(cache)), check=True,
                           cwd=REPO, timeout=600)
            (shared / "numba-cache.ready").touch()
    os.environ["NUMBA_CACHE_DIR"] = str(cache)
    yield str(cache)
    os.environ.pop("NUMBA_CACHE_DIR", None)


# Rate limits so high they never trigger, for modules that make many requests of one
# kind (429 itself is covered by test_api_hardening.py).
NO_RATE_LIMIT = "rate_limit_per_min = 100000.0\nrate_limit_burst = 100000\n"


@contextmanager
def running(service: Service) -> Iterator[tuple[Service, Api]]:
    """Start `service` with a client that logs in once per role; stop both at the end."""
    service.start()
    client = Api(service)
    try:
        yield service, client
    finally:
        client.close()
        service.kill_all()
        service.reclaim_status_block()


@pytest.fixture(scope="module")
def service(running_service):
    """The service of a module that defines `running_service` (with `running`)."""
    return running_service[0]


@pytest.fixture(scope="module")
def api(running_service):
    """Its client."""
    return running_service[1]


@pytest.fixture
def service_factory(tmp_path):
    started: list[Service] = []

    def make(**kw) -> Service:
        root = tmp_path / f"svc{len(started)}"
        root.mkdir()
        svc = Service(root, **kw)
        started.append(svc)
        return svc

    yield make
    for svc in started:
        svc.kill_all()
        svc.reclaim_status_block()


@pytest.fixture(scope="module")
def shared_service(tmp_path_factory):
    """One service for the read-mostly tests of a module."""
    svc = Service(tmp_path_factory.mktemp("shared"))
    svc.start()
    yield svc
    svc.kill_all()
    svc.reclaim_status_block()


@pytest.fixture
def api_for():
    clients: list[Api] = []

    def make(service: Service) -> Api:
        api = Api(service)
        clients.append(api)
        return api

    yield make
    for c in clients:
        c.close()
