"""The `printhost` command, run for real as `python -m printhost` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from printhost.store.db import Store
from printhost.store.users import get_user, verify_credentials

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "printhost.toml"
PASSWORD = "correct horse battery"


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PRINTHOST_CONFIG", "PRINTHOST_JWT_SECRET")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def run(*args: str, stdin: str = "", env_extra: dict[str, str] | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "printhost", *args], cwd=REPO,
                          env=_env(env_extra), input=stdin, capture_output=True, text=True,
                          timeout=timeout)


class Batch:
    """Independent commands started together up front, so the file stays fast.

    Each command is a separate process with its own state directory; a test asks for
    the result of its command by key and only then waits for it.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._procs: dict[str, subprocess.Popen[str]] = {}
        self._results: dict[str, subprocess.CompletedProcess[str]] = {}

    def path(self, name: str) -> Path:
        return self.root / name

    def start(self, key: str, *args: str, stdin: str = "",
              env_extra: dict[str, str] | None = None) -> None:
        stdin_file = self.root / f"{key}.stdin"
        stdin_file.write_text(stdin)
        with open(stdin_file) as fh:
            self._procs[key] = subprocess.Popen(
                [sys.executable, "-m", "printhost", *args], cwd=REPO, env=_env(env_extra),
                stdin=fh, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self, key: str) -> subprocess.CompletedProcess[str]:
        if key not in self._results:
            proc = self._procs[key]
            out, err = proc.communicate(timeout=30)
            self._results[key] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        return self._results[key]

    def finish(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


# --------------------------------------------------------------------------- config


def test_config_check_ok():
    proc = run("config", "check", str(SHIPPED))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{SHIPPED}: OK (cartesian, backend simulated)"
    assert proc.stderr == ""


def test_config_check_broken_file_names_file_key_and_problem(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[heaters.extruder]\nmax_temp = 2000.0\n")
    proc = run("config", "check", str(bad))
    assert_clean_failure(proc)
    assert f"{bad}: heaters.extruder.max_temp: 2000.0 is above the maximum 1000.0" in proc.stderr
    assert proc.stdout == ""


def test_config_check_unknown_nested_key(tmp_path):
    bad = tmp_path / "typo.toml"
    bad.write_text("[printer.axes.x]\nposition_mx = 200.0\n")
    proc = run("config", "check", str(bad))
    assert_clean_failure(proc)
    assert f"{bad}: printer.axes.x.position_mx: unknown key" in proc.stderr


def test_config_check_missing_and_invalid_toml(tmp_path):
    proc = run("config", "check", str(tmp_path / "absent.toml"))
    assert_clean_failure(proc)
    assert f"{tmp_path / 'absent.toml'}: file not found" in proc.stderr

    broken = tmp_path / "broken.toml"
    broken.write_text("[server\n")
    proc = run("config", "check", str(broken))
    assert_clean_failure(proc)
    assert f"{broken}: invalid TOML" in proc.stderr


def test_config_show_prints_every_key_with_effective_values(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[server]\nport = 8123\n[simulation.bed]\nsensor_lag_s = 6.5\n")
    proc = run("config", "show", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"# effective settings from {cfg}"
    values = {line.split(" = ", 1)[0]: line.split(" = ", 1)[1].split("    # ")[0]
              for line in lines[1:]}
    assert values["server.port"] == "8123"
    assert values["simulation.bed.sensor_lag_s"] == "6.5"
    assert values["simulation.bed.heater_power_w"] == "220.0"
    assert values["simulation.start_position"] == "[117.5, 117.5, 10.0]"
    assert "printer.axes.z.homing_speed" in values
    assert "heaters.heater_bed.pid_kd" in values


def test_config_show_uses_printhost_config_and_state_dir_override(tmp_path):
    cfg = tmp_path / "env.toml"
    cfg.write_text('[server]\nlog_level = "debug"\n')
    proc = run("config", "show", "--state-dir", str(tmp_path / "st"),
               env_extra={"PRINTHOST_CONFIG": str(cfg)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == f"# effective settings from {cfg}"
    assert "server.log_level = 'debug'" in proc.stdout
    assert f"server.state_dir = '{tmp_path / 'st'}'" in proc.stdout
    assert not (tmp_path / "st").exists()  # showing settings creates nothing


# --------------------------------------------------------------------------- users


def test_user_lifecycle(tmp_path):
    state = str(tmp_path / "state")
    # add, reading the password from stdin
    proc = run("user", "add", "bob", "--role", "operator", "--state-dir", state,
               stdin=PASSWORD + "\n")
    assert proc.returncode == 0, proc.stderr
    assert "user bob added with role operator" in proc.stdout
    store = Store(state)
    record = get_user(store, "bob")
    assert record is not None and record["role"] == "operator"
    assert verify_credentials(store, "bob", PASSWORD) is not None
    old_hash = record["password_hash"]

    # list shows the user and never the hash
    proc = run("user", "list", "--state-dir", state)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [r[:2] for r in rows] == [["bob", "operator"]]
    assert "scrypt" not in proc.stdout and old_hash not in proc.stdout
    assert PASSWORD not in proc.stdout

    # a duplicate, also one differing only in case, is refused
    for name in ("bob", "BOB"):
        proc = run("user", "add", name, "--role", "viewer", "--state-dir", state,
                   stdin=PASSWORD + "\n")
        assert_clean_failure(proc)
        assert "'bob' already exists" in proc.stderr
    assert [u["username"] for u in _users(state)] == ["bob"]

    # revoke bumps the token version
    proc = run("user", "revoke", "bob", "--state-dir", state)
    assert proc.returncode == 0, proc.stderr
    assert "all tokens of bob revoked" in proc.stdout
    assert get_user(store, "bob")["token_version"] == 1

    # passwd replaces the password and revokes tokens too
    proc = run("user", "passwd", "bob", "--state-dir", state, stdin="another secret 42\n")
    assert proc.returncode == 0, proc.stderr
    after = get_user(store, "bob")
    assert after["token_version"] == 2
    assert after["password_hash"] != old_hash
    assert verify_credentials(store, "bob", "another secret 42") is not None
    assert verify_credentials(store, "bob", PASSWORD) is None

    # delete
    proc = run("user", "delete", "bob", "--state-dir", state)
    assert proc.returncode == 0, proc.stderr
    assert "user bob deleted" in proc.stdout
    assert _users(state) == []
    proc = run("user", "list", "--state-dir", state)
    assert proc.returncode == 0 and proc.stdout == ""


def _users(state: str) -> list[dict]:
    from printhost.store.users import list_users
    return list_users(Store(state))


def test_too_short_password_is_refused_and_nothing_is_stored(tmp_path):
    state = tmp_path / "state"
    proc = run("user", "add", "carol", "--role", "viewer", "--state-dir", str(state),
               stdin="short\n")
    assert_clean_failure(proc)
    assert "password must be at least 8 characters" in proc.stderr
    assert _users(str(state)) == []


def test_empty_stdin_is_a_too_short_password(tmp_path):
    proc = run("user", "add", "carol", "--role", "viewer", "--state-dir", str(tmp_path / "s"),
               stdin="")
    assert_clean_failure(proc)
    assert "at least 8 characters" in proc.stderr


def test_invalid_username_and_role(tmp_path):
    state = str(tmp_path / "state")
    proc = run("user", "add", "bad name", "--role", "viewer", "--state-dir", state,
               stdin=PASSWORD + "\n")
    assert_clean_failure(proc)
    assert "username may only contain" in proc.stderr
    proc = run("user", "add", "dave", "--role", "root", "--state-dir", state,
               stdin=PASSWORD + "\n")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_commands_on_an_unknown_user_fail_cleanly(tmp_path):
    state = str(tmp_path / "state")
    for args, stdin in ((("revoke", "ghost"), ""), (("delete", "ghost"), ""),
                        (("passwd", "ghost"), PASSWORD + "\n")):
        proc = run("user", *args, "--state-dir", state, stdin=stdin)
        assert_clean_failure(proc)
        assert "no such user: 'ghost'" in proc.stderr


def test_password_is_never_a_command_line_option():
    for sub in ("add", "passwd"):
        proc = run("user", sub, "--help")
        assert proc.returncode == 0
        assert "--password" not in proc.stdout
        assert "--pass" not in proc.stdout
    proc = run("user", "add", "eve", "--role", "viewer", "--password", PASSWORD)
    assert proc.returncode == 2
    assert "unrecognized arguments" in proc.stderr


# --------------------------------------------------------------------------- serve


def test_serve_with_broken_config_exits_before_starting_anything(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nport = "http"\n')
    state = tmp_path / "state"
    proc = run("serve", "--config", str(bad), "--state-dir", str(state), timeout=20)
    assert_clean_failure(proc)
    assert f"{bad}: server.port: expected an integer, got 'http'" in proc.stderr
    assert not state.exists()


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_serve_refuses_a_port_outside_the_tcp_range(tmp_path, port):
    state = tmp_path / "state"
    proc = run("serve", "--config", str(SHIPPED), "--state-dir", str(state), f"--port={port}",
               timeout=20)
    assert_clean_failure(proc)
    assert f"--port: {port} is not a TCP port" in proc.stderr
    assert not state.exists()


def test_serve_port_must_be_an_integer(tmp_path):
    proc = run("serve", "--config", str(SHIPPED), "--port", "http")
    assert proc.returncode == 2 and "invalid int value" in proc.stderr


def test_no_command_is_a_usage_error():
    proc = run()
    assert proc.returncode == 2 and "usage:" in proc.stderr
