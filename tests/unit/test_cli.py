"""The `printhost` command, run for real as `python -m printhost` in a subprocess."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from printhost.config import describe
from printhost.store.db import Store
from printhost.store.users import add_user, get_user, list_users, verify_credentials

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "printhost.toml"
PASSWORD = "correct horse battery"
NEW_PASSWORD = "another secret 42"


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

    def initial_version(self, state: str) -> int:
        """bob's token version before the command ran (every copy starts from the template)."""
        return self.bob_version

    def start(self, key: str, *args: str, stdin: str = "",
              env_extra: dict[str, str] | None = None) -> None:
        stdin_file = self.root / f"{key}.stdin"
        stdin_file.write_text(stdin)
        with open(stdin_file) as fh:
            self._procs[key] = subprocess.Popen(
                [sys.executable, "-m", "printhost", *args], cwd=REPO, env=_env(env_extra),
                stdin=fh, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                # Lower priority: the sequential user scenario goes first.
                preexec_fn=lambda: os.nice(5))

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


def assert_clean_failure(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("printhost: ")


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    b = Batch(tmp_path_factory.mktemp("cli"))
    bad = b.path("bad.toml")
    bad.write_text("[heaters.extruder]\nmax_temp = 2000.0\n")
    typo = b.path("typo.toml")
    typo.write_text("[printer.axes.x]\nposition_mx = 200.0\n")
    broken = b.path("broken.toml")
    broken.write_text("[server\n")
    shown = b.path("shown.toml")
    shown.write_text("[server]\nport = 8123\n[simulation.bed]\nsensor_lag_s = 6.5\n")
    env_cfg = b.path("env.toml")
    env_cfg.write_text('[server]\nlog_level = "debug"\n')
    real_sim_devices = b.path("real_sim_devices.toml")
    real_sim_devices.write_text('[control]\nbackend = "mcu"\n[devices.estop]\npin = "GPIO22"\n')
    missing_serial = b.path("missing_serial.toml")
    missing_serial.write_text('[control]\nbackend = "mcu"\n[mcu]\nserial = "'
                              + str(b.path("no-such-board")) + '"\n')
    not_a_device = b.path("not_a_device.toml")
    not_a_device.write_text('[control]\nbackend = "mcu"\n[mcu]\nserial = "'
                            + str(b.path("not_a_device.toml")) + '"\n')
    prose = b.path("printer.cfg")
    prose.write_text("Dear printer,\nplease print the cube again.\n\nThanks!\n")
    serve_bad = b.path("serve_bad.toml")
    serve_bad.write_text('[server]\nport = "http"\n')

    # State directories that already hold user bob (operator, password PASSWORD).
    template = Store(b.path("template-state"))
    b.bob_version = add_user(template, "bob", "operator", PASSWORD)["token_version"]
    for name in ("revoke", "delete", "passwd", "passwd-short", "dup"):
        b.path(f"{name}-state").mkdir()
        shutil.copy(template.path, b.path(f"{name}-state") / template.path.name)
    b.start("revoke", "user", "revoke", "bob", "--state-dir", str(b.path("revoke-state")))
    b.start("delete", "user", "delete", "bob", "--state-dir", str(b.path("delete-state")))
    b.start("passwd", "user", "passwd", "bob", "--state-dir", str(b.path("passwd-state")),
            stdin=NEW_PASSWORD + "\n")
    b.start("passwd_short", "user", "passwd", "bob",
            "--state-dir", str(b.path("passwd-short-state")), stdin="1234567\n")
    b.start("duplicate", "user", "add", "BOB", "--role", "viewer",
            "--state-dir", str(b.path("dup-state")),
            stdin=PASSWORD + "\n")
    b.start("check_ok", "config", "check", str(SHIPPED))
    b.start("check_bad", "config", "check", str(bad))
    b.start("check_typo", "config", "check", str(typo))
    b.start("check_missing", "config", "check", str(b.path("absent.toml")))
    b.start("check_broken", "config", "check", str(broken))
    b.start("check_real_sim_devices", "config", "check", str(real_sim_devices))
    b.start("check_missing_serial", "config", "check", str(missing_serial))
    b.start("check_not_a_device", "config", "check", str(not_a_device))
    b.start("import_own_toml", "config", "import-klipper", str(SHIPPED),
            "-o", str(b.path("imported-own.toml")))
    b.start("import_prose", "config", "import-klipper", str(prose),
            "-o", str(b.path("imported-prose.toml")))
    b.start("import_prose_stdout", "config", "import-klipper", str(prose))
    b.start("show", "config", "show", "--config", str(shown))
    b.start("show_env", "config", "show", "--state-dir", str(b.path("show-state")),
            env_extra={"PRINTHOST_CONFIG": str(env_cfg)})
    b.start("short_pw", "user", "add", "carol", "--role", "viewer",
            "--state-dir", str(b.path("short-state")), stdin="short\n")
    b.start("empty_pw", "user", "add", "carol", "--role", "viewer",
            "--state-dir", str(b.path("empty-state")))
    b.start("bad_name", "user", "add", "bad name", "--role", "viewer",
            "--state-dir", str(b.path("name-state")), stdin=PASSWORD + "\n")
    b.start("bad_role", "user", "add", "dave", "--role", "root",
            "--state-dir", str(b.path("role-state")), stdin=PASSWORD + "\n")
    b.start("ghost", "user", "delete", "ghost", "--state-dir", str(b.path("ghost-state")))
    b.start("help_add", "user", "add", "--help")
    b.start("help_passwd", "user", "passwd", "--help")
    b.start("password_option", "user", "add", "eve", "--role", "viewer",
            "--state-dir", str(b.path("eve-state")), "--password", PASSWORD)
    b.start("serve_bad", "serve", "--config", str(serve_bad),
            "--state-dir", str(b.path("serve-bad-state")))
    b.start("serve_port", "serve", "--config", str(SHIPPED),
            "--state-dir", str(b.path("serve-port-state")), "--port", "70000")
    b.start("serve_port_text", "serve", "--config", str(SHIPPED), "--port", "http")
    b.start("no_command")
    yield b
    b.finish()


# --------------------------------------------------------------------------- users


def test_user_add_then_list(tmp_path, batch):
    # Asking for `batch` first starts the independent commands, which then run in the
    # background while this sequential scenario goes on.
    state = str(tmp_path / "state")
    # add, reading the password from stdin
    proc = run("user", "add", "bob", "--role", "operator", "--state-dir", state,
               stdin=PASSWORD + "\n")
    assert proc.returncode == 0, proc.stderr
    assert "user bob added with role operator" in proc.stdout
    assert PASSWORD not in proc.stdout + proc.stderr
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
    assert rows[0][2] == record["created_at"]
    assert "scrypt" not in proc.stdout and old_hash not in proc.stdout


def test_user_revoke_bumps_the_token_version(batch):
    proc = batch.result("revoke")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "all tokens of bob revoked"
    record = get_user(Store(batch.path("revoke-state")), "bob")
    assert record["token_version"] == batch.initial_version("revoke-state") + 1
    assert record["role"] == "operator"


def test_user_passwd_replaces_the_password_and_revokes_tokens(batch):
    proc = batch.result("passwd")
    assert proc.returncode == 0, proc.stderr
    assert "password of bob changed" in proc.stdout
    assert NEW_PASSWORD not in proc.stdout + proc.stderr
    store = Store(batch.path("passwd-state"))
    assert get_user(store, "bob")["token_version"] == batch.initial_version("passwd-state") + 1
    assert verify_credentials(store, "bob", NEW_PASSWORD) is not None
    assert verify_credentials(store, "bob", PASSWORD) is None


def test_user_passwd_refuses_a_short_password_and_keeps_the_old_one(batch):
    proc = batch.result("passwd_short")
    assert_clean_failure(proc)
    assert "at least 8 characters" in proc.stderr
    store = Store(batch.path("passwd-short-state"))
    assert get_user(store, "bob")["token_version"] == batch.initial_version("passwd-short-state")
    assert verify_credentials(store, "bob", PASSWORD) is not None


def test_user_delete(batch):
    proc = batch.result("delete")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "user bob deleted"
    assert list_users(Store(batch.path("delete-state"))) == []


def test_duplicate_user_is_refused(batch):
    # The name differs only in case, which counts as taken too.
    proc = batch.result("duplicate")
    assert_clean_failure(proc)
    assert "user 'bob' already exists" in proc.stderr
    users = list_users(Store(batch.path("dup-state")))
    assert [(u["username"], u["role"]) for u in users] == [("bob", "operator")]


def test_too_short_password_is_refused_and_nothing_is_stored(batch):
    proc = batch.result("short_pw")
    assert_clean_failure(proc)
    assert "password must be at least 8 characters" in proc.stderr
    assert list_users(Store(batch.path("short-state"))) == []


def test_empty_stdin_is_a_too_short_password(batch):
    proc = batch.result("empty_pw")
    assert_clean_failure(proc)
    assert "at least 8 characters" in proc.stderr


def test_invalid_username_and_role(batch):
    proc = batch.result("bad_name")
    assert_clean_failure(proc)
    assert "username may only contain" in proc.stderr
    proc = batch.result("bad_role")
    assert proc.returncode == 2 and "invalid choice: 'root'" in proc.stderr


def test_unknown_user_fails_cleanly(batch):
    proc = batch.result("ghost")
    assert_clean_failure(proc)
    assert "no such user: 'ghost'" in proc.stderr


def test_password_is_never_a_command_line_option(batch):
    # Other local users can read argv; the only options are these.
    for key, expected in (("help_add", {"--help", "--role", "--config", "--state-dir"}),
                          ("help_passwd", {"--help", "--config", "--state-dir"})):
        proc = batch.result(key)
        assert proc.returncode == 0, proc.stderr
        assert "usage: printhost user" in proc.stdout
        assert set(re.findall(r"--[a-z][a-z-]*", proc.stdout)) == expected
    proc = batch.result("password_option")
    assert proc.returncode == 2
    assert "unrecognized arguments: --password" in proc.stderr
    assert not batch.path("eve-state").exists()


# --------------------------------------------------------------------------- config


def test_config_check_ok(batch):
    proc = batch.result("check_ok")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{SHIPPED}: OK (cartesian, backend simulated)"
    assert proc.stderr == ""


def test_config_check_broken_file_names_file_key_and_problem(batch):
    proc = batch.result("check_bad")
    assert_clean_failure(proc)
    bad = batch.path("bad.toml")
    assert f"{bad}: heaters.extruder.max_temp: 2000.0 is above the maximum 1000.0" in proc.stderr
    assert proc.stdout == ""


def test_config_check_wants_devices_backend_on_a_real_printer(batch):
    proc = batch.result("check_real_sim_devices")
    assert_clean_failure(proc)
    path = batch.path("real_sim_devices.toml")
    assert (f"{path}: devices.backend: must be set with control.backend = \"mcu\" and "
            "devices on the Pi (devices.estop); hint: add backend = \"pi\"") in proc.stderr


def test_config_check_warns_about_a_missing_serial_device(batch):
    """The file is valid, so the status stays 0; the warning names the path and says
    what to do."""
    proc = batch.result("check_missing_serial")
    path = batch.path("missing_serial.toml")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{path}: OK (cartesian, backend mcu)"
    board = batch.path("no-such-board")
    assert proc.stderr == (
        f"printhost: warning: {path}: mcu.serial: {board} does not exist; hint: is the "
        "board connected and powered? `ls /dev/serial/by-id/` lists USB boards; set [mcu] "
        "serial to the board's path\n")
    proc = batch.result("check_not_a_device")
    assert proc.returncode == 0, proc.stderr
    assert f"is not a serial device (not a character device); hint: " in proc.stderr
    # The simulated printer has no serial device to check.
    assert batch.result("check_ok").stderr == ""


def test_import_klipper_refuses_our_own_toml(batch):
    proc = batch.result("import_own_toml")
    assert_clean_failure(proc)
    assert proc.stderr == (
        f"printhost: {SHIPPED} is not a Klipper config: it is a printhost configuration "
        "(TOML) already: check it with `printhost config check` and use it with --config\n")
    assert proc.stdout == ""
    assert not batch.path("imported-own.toml").exists()


def test_import_klipper_refuses_prose(batch):
    cfg = batch.path("printer.cfg")
    for key in ("import_prose", "import_prose_stdout"):
        proc = batch.result(key)
        assert_clean_failure(proc)
        assert proc.stderr == (
            f"printhost: {cfg} is not a Klipper config: line 1 ('Dear printer,') is neither "
            "a [section] header nor a 'key: value' option\n")
        assert proc.stdout == ""
    assert not batch.path("imported-prose.toml").exists()


def test_config_check_unknown_nested_key(batch):
    proc = batch.result("check_typo")
    assert_clean_failure(proc)
    assert f"{batch.path('typo.toml')}: printer.axes.x.position_mx: unknown key" in proc.stderr


def test_config_check_missing_and_invalid_toml(batch):
    proc = batch.result("check_missing")
    assert_clean_failure(proc)
    assert f"{batch.path('absent.toml')}: file not found" in proc.stderr
    proc = batch.result("check_broken")
    assert_clean_failure(proc)
    assert f"{batch.path('broken.toml')}: invalid TOML" in proc.stderr


def test_config_show_prints_every_key_with_effective_values(batch):
    proc = batch.result("show")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"# effective settings from {batch.path('shown.toml')}"
    values = {line.split(" = ", 1)[0]: line.split(" = ", 1)[1].split("    # ")[0]
              for line in lines[1:]}
    assert set(values) == {key for key, _v, _d in describe()}
    assert values["server.port"] == "8123"
    assert values["simulation.bed.sensor_lag_s"] == "6.5"
    assert values["simulation.bed.heater_power_w"] == "220.0"
    assert values["simulation.start_position"] == "[117.5, 117.5, 10.0]"


def test_config_show_uses_printhost_config_and_state_dir_override(batch):
    proc = batch.result("show_env")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == f"# effective settings from {batch.path('env.toml')}"
    assert "server.log_level = 'debug'" in proc.stdout
    assert f"server.state_dir = '{batch.path('show-state')}'" in proc.stdout
    assert not batch.path("show-state").exists()  # showing settings creates nothing


# --------------------------------------------------------------------------- serve


def test_serve_with_broken_config_exits_before_starting_anything(batch):
    proc = batch.result("serve_bad")
    assert_clean_failure(proc)
    assert (f"{batch.path('serve_bad.toml')}: server.port: expected an integer, got 'http'"
            in proc.stderr)
    assert not batch.path("serve-bad-state").exists()


def test_serve_refuses_a_port_outside_the_tcp_range(batch):
    proc = batch.result("serve_port")
    assert_clean_failure(proc)
    assert "--port: 70000 is not a TCP port" in proc.stderr
    assert not batch.path("serve-port-state").exists()


def test_serve_port_must_be_an_integer(batch):
    proc = batch.result("serve_port_text")
    assert proc.returncode == 2 and "invalid int value: 'http'" in proc.stderr


def test_no_command_is_a_usage_error(batch):
    proc = batch.result("no_command")
    assert proc.returncode == 2 and "printhost: missing command: serve, config" in proc.stderr
