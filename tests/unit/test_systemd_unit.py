"""The shipped systemd unit and sysusers file, checked by systemd's own parsers.

`systemd-analyze verify` is the authority on whether systemd accepts a directive;
the checks on individual settings below pin the behaviour the rest of printhost
relies on (readiness over sd_notify, a private state dir, device access).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "verify-systemd"
UNIT = REPO / "systemd" / "printhost.service"
SYSUSERS = REPO / "systemd" / "printhost.sysusers.conf"

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian package: systemd)")


def _run(env_overrides: dict[str, str] | None = None, *args: str):
    env = dict(os.environ)
    env.update(env_overrides or {})
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def _directives(path: Path) -> dict[tuple[str, str], list[str]]:
    """(section, key) -> values, keeping repeats as systemd does for list settings."""
    out: dict[tuple[str, str], list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault((section, key.strip()), []).append(value.strip())
    return out


@needs_systemd_analyze
def test_verify_script_accepts_shipped_files():
    result = _run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


@needs_systemd_analyze
def test_verify_script_rejects_unknown_directive(tmp_path):
    broken = tmp_path / "printhost.service"
    broken.write_text(UNIT.read_text().replace("RestartSec=2", "RestartSecs=2"))
    result = _run({"PRINTHOST_UNIT": str(broken)})
    assert result.returncode != 0
    assert "RestartSecs" in result.stdout + result.stderr


@needs_systemd_analyze
def test_verify_script_rejects_bad_sysusers_line(tmp_path):
    if shutil.which("systemd-sysusers") is None:
        pytest.skip("systemd-sysusers is not installed (Debian package: systemd)")
    broken = tmp_path / "printhost.conf"
    broken.write_text(SYSUSERS.read_text() + "x printhost -\n")
    result = _run({"PRINTHOST_SYSUSERS": str(broken)})
    assert result.returncode != 0
    assert "printhost.conf" in result.stdout + result.stderr


def test_unit_settings_the_service_depends_on():
    d = _directives(UNIT)
    svc = lambda key: d.get(("Service", key))  # noqa: E731
    assert svc("Type") == ["notify"]
    assert svc("NotifyAccess") == ["main"]
    assert svc("ExecStart") == [
        "/opt/printhost/venv/bin/printhost serve --config /etc/printhost/printhost.toml"
        " --state-dir /var/lib/printhost"]
    assert svc("User") == ["printhost"] and svc("Group") == ["printhost"]
    assert svc("StateDirectory") == ["printhost"]
    assert svc("StateDirectoryMode") == ["0700"]
    assert svc("ReadWritePaths") == ["/var/lib/printhost"]
    assert svc("Restart") == ["on-failure"]
    assert svc("KillMode") == ["mixed"]
    assert svc("TimeoutStopSec") == ["5"]
    assert set(svc("SupplementaryGroups")[0].split()) == {"dialout", "gpio", "i2c"}
    assert svc("ProtectSystem") == ["strict"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert svc(key) == ["yes"], key
    # These would cut the host off from its printer: serial/GPIO device nodes, the
    # sysfs GPIO interface, and numba's JIT-compiled code pages respectively.
    for key in ("PrivateDevices", "ProtectKernelTunables", "MemoryDenyWriteExecute",
                "DevicePolicy"):
        assert svc(key) is None, key
    assert svc("WatchdogSec") is None


def test_unit_grants_real_time_to_the_control_process_only_through_limits():
    """SCHED_FIFO through RLIMIT_RTPRIO and mlockall through RLIMIT_MEMLOCK: no
    capability, and no unit-wide scheduling policy that would cover the API too."""
    d = _directives(UNIT)
    svc = lambda key: d.get(("Service", key))  # noqa: E731
    assert svc("LimitRTPRIO") == ["20"]
    assert svc("LimitMEMLOCK") == ["infinity"]
    assert svc("NoNewPrivileges") == ["yes"]
    for key in ("CPUSchedulingPolicy", "CPUSchedulingPriority", "AmbientCapabilities",
                "CapabilityBoundingSet", "CPUAffinity"):
        assert svc(key) is None, key


@needs_systemd_analyze
@pytest.mark.parametrize("edit, problem", [
    (("LimitRTPRIO=20\n", ""), "LimitRTPRIO= must be a priority from 1 to 99"),
    (("LimitRTPRIO=20", "LimitRTPRIO=0"), "LimitRTPRIO= must be a priority from 1 to 99"),
    (("LimitMEMLOCK=infinity", "LimitMEMLOCK=64M"), "LimitMEMLOCK=infinity is required"),
    (("Restart=on-failure", "CPUSchedulingPolicy=fifo\nRestart=on-failure"),
     "CPUSchedulingPolicy= would make every process of the unit"),
    (("Restart=on-failure", "AmbientCapabilities=CAP_SYS_NICE\nRestart=on-failure"),
     "CAP_SYS_NICE is not granted"),
], ids=["no-rtprio", "rtprio-0", "memlock-limited", "unit-wide-fifo", "cap-sys-nice"])
def test_verify_script_rejects_real_time_done_wrong(tmp_path, edit, problem):
    """Each of these passes systemd-analyze: only the script's own rules catch them."""
    old, new = edit
    assert old in UNIT.read_text()
    broken = tmp_path / "printhost.service"
    broken.write_text(UNIT.read_text().replace(old, new, 1))
    result = _run({"PRINTHOST_UNIT": str(broken)})
    assert result.returncode == 1
    assert problem in result.stderr


def test_sysusers_creates_every_group_the_unit_needs():
    unit_groups = set(_directives(UNIT)[("Service", "SupplementaryGroups")][0].split())
    entries = [line.split() for line in SYSUSERS.read_text().splitlines()
               if line.strip() and not line.lstrip().startswith("#")]
    users = {e[1] for e in entries if e[0] == "u"}
    groups = {e[1] for e in entries if e[0] == "g"}
    members = {e[2] for e in entries if e[0] == "m" and e[1] == "printhost"}
    assert "printhost" in users
    assert unit_groups <= groups
    assert unit_groups <= members


def test_unit_descriptor_limit_leaves_room_above_the_connection_limit():
    """LimitNOFILE well above server.max_connections plus the service's own descriptors."""
    from printhost.config import ServerSettings
    from printhost.service import FD_RESERVE
    d = _directives(UNIT)
    (nofile,) = d[("Service", "LimitNOFILE")]
    assert int(nofile) >= 2 * (ServerSettings().max_connections + FD_RESERVE)
