"""Faults inside the control process's own work, in the running service: a G-code line
too long to read, pause and cancel while an axis homes, and the status block left
behind by a killed service."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from printhost.control.gcode import MAX_LINE_BYTES
from printhost.sim.mcu.client import SimMcuClient

pytestmark = pytest.mark.e2e


def _print(api, tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    assert api.upload(path).status_code == 201
    r = api.post("/api/v1/print", json={"file": name})
    assert r.status_code == 200, r.text
    return r.json()["job_id"]


def _ended(api, job_id: str, timeout_s: float = 60.0) -> dict:
    return api.wait_for(lambda s: s["job"] and s["job"]["id"] == job_id
                        and s["job"]["state"] not in ("printing", "pausing", "cancelling"),
                        timeout_s=timeout_s, what=f"job {job_id} ended")


def _heaters_off(board) -> bool:
    heaters = board.state()["board"]["heaters"]
    return heaters["extruder"]["duty"] == 0.0 and heaters["heater_bed"]["duty"] == 0.0


def test_a_line_over_the_limit_fails_the_job_and_the_printer_stays_up(
        service_factory, api_for, tmp_path):
    """docs/motion.md: lines over 1 MiB are refused. The job ends `error` naming the line,
    heaters go off as on cancel, the control process keeps running and prints again."""
    svc = service_factory(time_factor=20.0, max_upload=4 * 1024 * 1024).start()
    api = api_for(svc)
    board = SimMcuClient(svc.state_dir)
    pid = svc.control_pid()
    # Heat first (and wait 2 s of wall time at 20x), so the refusal has heaters to switch off.
    text = (b"M140 S60\nM104 S200\nG4 P40000\n; " + b"x" * MAX_LINE_BYTES + b"\n"
            b"G28\nG1 X10 F3000\n")
    job_id = _print(api, tmp_path, "long.gcode", text)
    api.wait_for(lambda s: (s["printer"]["target_hotend_temp"] or 0) > 0, timeout_s=20,
                 what="hotend heating")
    st = _ended(api, job_id)
    job = st["job"]
    assert job["state"] == "error", job
    assert job["error"] == (f"long.gcode: line 4: line longer than {MAX_LINE_BYTES} bytes"), job
    assert job["line"] == 4, job
    assert st["state"] == "idle" and st["error"] is None, st
    assert st["printer"]["target_hotend_temp"] == 0 and st["printer"]["target_bed_temp"] == 0
    deadline = time.monotonic() + 5.0
    while not _heaters_off(board):
        assert time.monotonic() < deadline, board.state()["board"]
        time.sleep(0.02)
    assert svc.control_pid() == pid
    job_id = _print(api, tmp_path, "ok.gcode", b"G28\nG1 X10 F3000\n")
    assert _ended(api, job_id)["job"]["state"] == "completed"
    log = svc.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "control process exited" not in log, log
    assert f"line 4: line longer than {MAX_LINE_BYTES} bytes" in log


def _blocks_of(state_dir: Path) -> set[str]:
    """Names of the status blocks recorded in this state directory (printhost/ipc/status.py)."""
    return {p.name[:-len(".lock")] for p in (state_dir / "run").glob("printhost_*.lock")}


def test_a_killed_services_status_block_is_reclaimed_by_the_next_start(service_factory, api_for):
    """kill -9 of the whole service leaves its shared-memory status block behind (no
    process is left to remove it); the next start on the same state directory removes
    it, and a normal stop leaves none at all."""
    svc = service_factory(time_factor=20.0).start()
    api_for(svc).wait_for(lambda s: s["state"] == "idle", timeout_s=60, what="idle")
    first = _blocks_of(svc.state_dir)
    assert len(first) == 1, first
    assert all(Path("/dev/shm", name).exists() for name in first)
    svc.kill_all()
    # Nothing survives a kill -9 of the process group to clean up: the block stays.
    assert all(Path("/dev/shm", name).exists() for name in first)
    svc.start()
    second = _blocks_of(svc.state_dir)
    assert len(second) == 1 and not (second & first), (first, second)
    assert not any(Path("/dev/shm", name).exists() for name in first), first
    assert "left by an earlier run" in svc.log_path.read_text(errors="replace")
    assert svc.stop() < 5.0
    assert not any(Path("/dev/shm", name).exists() for name in first | second)
    assert _blocks_of(svc.state_dir) == set()
    assert "Traceback" not in svc.log_path.read_text(errors="replace")
