"""Every failure of the `printhost` command is one line naming the problem with a hint,
exit status 2, no traceback, and nothing started: run for real as subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "printhost.toml"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PRINTHOST_CONFIG", "PRINTHOST_JWT_SECRET", "NOTIFY_SOCKET")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "printhost", *args], cwd=REPO, env=_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    """The single line of a failed command, after checking the rest of the contract."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert r.stdout == ""
    return lines[0]


@pytest.mark.parametrize("command", [("serve", "--config", str(SHIPPED)), ("user", "list")])
def test_state_dir_that_cannot_be_created(command):
    line = one_line_error(run(*command, "--state-dir", "/proc/nope"))
    assert line.startswith("printhost: cannot create the state directory /proc/nope:"), line
    assert "--state-dir" in line


def test_state_dir_that_is_a_file(tmp_path):
    path = tmp_path / "state"
    path.write_text("not a directory\n")
    line = one_line_error(run("serve", "--config", str(SHIPPED), "--state-dir", str(path)))
    assert line == (f"printhost: state directory {path} is a file, not a directory; "
                    "choose another with --state-dir (or server.state_dir)")
    assert path.read_text() == "not a directory\n"


def test_open_state_dir_is_made_private(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    r = run("user", "list", "--config", str(SHIPPED), "--state-dir", str(state))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert r.stderr == ""


def test_batch_output_into_a_missing_directory(tmp_path):
    out = tmp_path / "nonexistent" / "dir" / "x.bin"
    line = one_line_error(run("batch", str(SHIPPED), str(REPO / "tests/data/cube.gcode"),
                              "-o", str(out)))
    assert line == (f"printhost batch: cannot write {out}: the directory {out.parent} does "
                    "not exist; create it or choose another with -o")


def _processes_in_group(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_port_in_use_starts_nothing(tmp_path):
    state = tmp_path / "state"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "printhost", "serve", "--config", str(SHIPPED),
             "--host", "127.0.0.1", "--port", str(port), "--state-dir", str(state)],
            cwd=REPO, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    line = one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    assert line == (f"printhost: port {port} on 127.0.0.1 is already in use (another "
                    "printhost running?); choose another with --port")
    # Nothing was started: no process of its session is left, and the state directory
    # (simulated MCU, status block, setup code) was not even created.
    assert not _processes_in_group(proc.pid)
    assert not state.exists()


@pytest.mark.parametrize("group, commands", [
    ("user", "add, passwd, delete, revoke, list, role, deactivate, activate or hash"),
    ("config", "check, import-klipper or show"),
    ("auth", "rotate-key"),
])
def test_command_group_alone_names_its_commands(group, commands):
    line = one_line_error(run(group))
    assert line == f"printhost {group}: missing command: {commands} (see printhost {group} --help)"


def test_no_command_names_the_commands():
    line = one_line_error(run())
    assert line.startswith("printhost: missing command: serve, config, user,"), line
    assert line.endswith("(see printhost --help)")


def test_usage_error_is_one_line():
    line = one_line_error(run("user", "add"))
    assert line == ("printhost user add: the following arguments are required: name, --role "
                    "(see printhost user add --help)")
