"""Faults of the MCU link and of the control process (docs/safety.md rows 5, 6 and 7),
injected into the running service and its simulated MCU."""

from __future__ import annotations

import os
import signal
import time

import pytest

from printhost.sim.mcu.client import SimMcuClient
from tests.fault.heating import heaters_off, start_heating

pytestmark = pytest.mark.e2e


def _heater_off_within(board, seconds: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if heaters_off(board):
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"heaters still on after {seconds} s: {board.state()['board']}")


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_control_process_death_mcu_turns_heaters_off(service_factory, api_for, tmp_path, how):
    """Row 5: the MCU itself turns the heater off within its max_duration (3 s) when the
    host stops refreshing it; the API reports error within 5 s; no reheat after SIGCONT."""
    svc = service_factory(time_factor=1.0).start()
    api = api_for(svc)
    board, _job = start_heating(svc, api, tmp_path)
    pid = svc.control_pid()
    os.kill(pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
    t0 = time.monotonic()
    off_after = _heater_off_within(board, 5.0)
    assert off_after <= 3.5, off_after
    st = board.state()["firmware"]
    assert st["shutdown"] and "digital out" in st["reason"]
    api.wait_for(lambda s: s["state"] == "error", timeout_s=max(0.1, 5.0 - (time.monotonic() - t0)),
                 what="error state")
    if how == "stop":
        os.kill(pid, signal.SIGCONT)
        time.sleep(2.0)
        heaters = board.state()["board"]["heaters"]
        assert heaters["extruder"]["duty"] == 0.0 and heaters["heater_bed"]["duty"] == 0.0


@pytest.mark.parametrize("fault", ["unplug", "reset", "hang"])
def test_lost_mcu_shuts_down_and_ends_the_job_error(service_factory, api_for, tmp_path, fault):
    """Row 6: a cut link, a reset MCU or a silent one: "lost communication" shutdown within
    6 s, the job ended `error` with that reason and not resumed."""
    svc = service_factory(time_factor=1.0).start()
    api = api_for(svc)
    board, job_id = start_heating(svc, api, tmp_path)
    if fault == "unplug":
        board.request(cmd="unplug")
    elif fault == "reset":
        board.request(cmd="reset")
    else:
        board.request(cmd="link", hung=True)
    t0 = time.monotonic()
    st = api.wait_for(lambda s: s["state"] == "error", timeout_s=6.0, what="shutdown")
    assert time.monotonic() - t0 <= 6.0
    assert st["job"]["id"] == job_id and st["job"]["state"] == "error"
    assert "MCU" in st["error"] or "communication" in st["error"]
    assert st["job"]["error"] == st["error"]
    time.sleep(1.0)
    again = api.status()
    assert again["state"] == "error" and again["job"]["state"] == "error"
    # Nothing reports from the board any more: no reading is shown as live.
    assert again["printer"]["hotend_temp"] is None, again["printer"]
    assert again["printer"]["unavailable"]["hotend_temp"] == st["error"]
    # The board's own safety net: nobody refreshes the heater, so it goes off.
    _heater_off_within(board, 4.0)


PRINT = """\
G28
G90
M83
G1 Z0.3 F600
""" + "".join(f"G1 X{20 + (i % 2) * 60} Y{20 + i * 0.5:.1f} E1.5 F6000\n" for i in range(20)) + """\
G1 Z10 F600
"""


def _print_and_compare(svc, api, tmp_path, name: str) -> dict:
    path = tmp_path / name
    path.write_text(PRINT)
    assert api.upload(path).status_code == 201
    r = api.post("/api/v1/print", json={"file": name})
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    done = api.wait_for(lambda s: s["job"] and s["job"]["id"] == job_id
                        and s["job"]["state"] != "printing", timeout_s=120, what="job end")
    assert done["job"]["state"] == "completed", done
    final = api.wait_for(lambda s: s["printer"]["live_position"] == s["printer"]["position"],
                         timeout_s=20, what="motion finished")
    state = SimMcuClient(svc.state_dir).state()
    mcu = final["printer"]["mcu"]
    assert not state["firmware"]["shutdown"], state["firmware"]
    # Exactly once, in order: the MCU's digest of executed step commands is the host's.
    assert state["step_stream_crc"] == mcu["step_stream_crc"]
    assert state["step_commands"] == mcu["moves_sent"]
    x, y, z, _ = state["toolhead"]
    px, py, pz = final["printer"]["position"]
    # Within one step: homing finds each switch within a step of where it closes.
    assert (x, y, z) == pytest.approx((px, py, pz), abs=0.019)
    return {"mcu": mcu, "board": state}


def test_corrupted_and_lossy_link_delivers_every_command_once(service_factory, api_for,
                                                              tmp_path):
    """Row 7: at 1-5 % corruption and drops the print completes, the step stream the MCU
    executed is the one the host sent, and the retransmits show in the link stats.

    At time factor 1, as on a printer: a lost block costs retransmission timeouts of host
    time (25 ms and more, doubling while the window keeps losing blocks), while the
    margin of a command scheduled before the first loss is 0.25 s of print time, which a
    fast simulation shrinks (62 ms of host time at 4x: twice a loaded run saw a heater
    update sent just before the first loss arrive 0.4 s of print time late, "Timer too
    close", after 160 ms on the line). After a loss the margin covers four timeouts."""
    svc = service_factory(time_factor=1.0).start()
    api = api_for(svc)
    board = SimMcuClient(svc.state_dir)
    before = board.state()
    board.request(cmd="link", corrupt_rate=0.03, drop_rate=0.02)
    noisy = _print_and_compare(svc, api, tmp_path, "noisy.gcode")
    board.request(cmd="link", corrupt_rate=0.0, drop_rate=0.0)
    link = noisy["mcu"]["link"]
    assert link["retransmits"] > 0 and link["bad_bytes"] + link["timeouts"] > 0, link
    # Every step command of the program was sent and executed once.
    assert noisy["board"]["step_commands"] - before["step_commands"] > 100


def test_total_loss_shuts_down_like_a_cut_link(service_factory, api_for, tmp_path):
    """Row 7, 100 % loss: the same shutdown as row 6."""
    svc = service_factory(time_factor=1.0).start()
    api = api_for(svc)
    board, job_id = start_heating(svc, api, tmp_path)
    board.request(cmd="link", drop_rate=1.0)
    t0 = time.monotonic()
    st = api.wait_for(lambda s: s["state"] == "error", timeout_s=6.0, what="shutdown")
    assert time.monotonic() - t0 <= 6.0
    assert st["job"]["state"] == "error" and "communication" in st["error"]
