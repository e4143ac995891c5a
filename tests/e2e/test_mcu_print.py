"""Printing through the serial stack: the service drives its simulated Klipper MCU on a
pty, and what the MCU executed is compared with what the host planned."""

from __future__ import annotations

import os
import time

import pytest

from printhost.sim.mcu.client import SimMcuClient

pytestmark = pytest.mark.e2e

# A short program: heat, home, a square with extrusion, an arc, a Z hop, fan, cool down.
PROGRAM = """\
M140 S60
M104 S200
G28
M190 S60
M109 S200
G90
M83
G1 Z0.3 F600
G1 X20 Y20 F6000
G1 X80 Y20 E3 F1800
G1 X80 Y80 E3
G1 X20 Y80 E3
G1 X20 Y20 E3
G2 X60 Y20 I20 J0 E4 F1200
M106 S128
G1 Z5 F600
G1 X117.3 Y101.9 F6000
M107
M104 S0
M140 S0
"""


def _wait_idle_after(api, job_id: str) -> dict:
    return api.wait_for(lambda s: s["job"] and s["job"]["id"] == job_id
                        and s["job"]["state"] in ("completed", "error", "interrupted"),
                        timeout_s=120, what="job end")


def test_print_on_simulated_mcu_steppers_follow_the_plan(service_factory, api_for, tmp_path):
    svc = service_factory(time_factor=20.0).start()
    api = api_for(svc)
    board = SimMcuClient(svc.state_dir)
    before = board.state()
    assert before["firmware"]["shutdown"] is False

    path = tmp_path / "square.gcode"
    path.write_text(PROGRAM)
    assert api.upload(path).status_code == 201
    r = api.post("/api/v1/print", json={"file": "square.gcode"})
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]

    hot = api.wait_for(lambda s: (s["printer"]["hotend_temp"] or 0) > 195, timeout_s=90,
                       what="hotend heated through the MCU's ADC")
    # The host's reading comes from the MCU's ADC reports of the board's thermistor.
    sim_hot = board.state()["board"]["heaters"]["extruder"]["sensor"]
    assert hot["printer"]["hotend_temp"] == pytest.approx(sim_hot, abs=3.0)

    done = _wait_idle_after(api, job_id)
    assert done["job"]["state"] == "completed", done
    # Let the last steps run out on the MCU.
    final = api.wait_for(lambda s: s["printer"]["live_position"] == s["printer"]["position"],
                         timeout_s=20, what="motion finished")
    mcu_status = final["printer"]["mcu"]
    assert mcu_status["connected"] and mcu_status["shutdown_reason"] is None
    assert mcu_status["moves_sent"] > 10

    state = board.state()
    assert state["firmware"]["shutdown"] is False, state["firmware"]
    # Every step command arrived once and in order, and the steppers ended where planned.
    assert state["step_stream_crc"] == mcu_status["step_stream_crc"]
    assert state["step_commands"] == mcu_status["moves_sent"]
    x, y, z, _e = state["toolhead"]
    px, py, pz = final["printer"]["position"]
    # Homing finds each switch within one step (it is sampled once per step).
    step_xy = 40.0 / 3200
    assert x == pytest.approx(px, abs=1.5 * step_xy) and y == pytest.approx(py, abs=1.5 * step_xy)
    assert z == pytest.approx(pz, abs=1.5 * 8.0 / 3200)
    # The fan and heaters were switched off by the program through MCU PWM pins (each
    # change is scheduled a quarter second of print time ahead on the MCU clock).
    deadline = time.monotonic() + 5.0
    while True:
        board_state = board.state()["board"]
        heaters = board_state["heaters"]
        if (heaters["extruder"]["duty"] == 0.0 and heaters["heater_bed"]["duty"] == 0.0
                and board_state["fan"] == 0.0):
            break
        assert time.monotonic() < deadline, board_state
        time.sleep(0.05)
    assert board_state["outputs"]["PC8"] == 0.0 and board_state["outputs"]["PC9"] == 0.0

    # The loop kept its books all along, and the board never ran out of pool entries.
    control = final["printer"]["control"]
    assert control["period_ms"] == 4.0 and control["passes"] > 100
    assert control["tick_p50_ms"] is not None and control["tick_max_ms"] >= control["tick_p99_ms"]
    assert control["realtime"]["gc_frozen"] is True
    if os.geteuid() == 0:  # root may take SCHED_FIFO and lock memory (docs/deploy.md)
        assert control["realtime"]["policy"] == "SCHED_FIFO"
        assert control["realtime"]["memory_locked"] is True
        assert state["realtime"]["policy"] == "SCHED_FIFO"      # the simulated board too
        assert 0 < state["realtime"]["priority"] < control["realtime"]["priority"]
    assert mcu_status["reserved_move_slots"] == 3 * 20        # two heaters and the fan
    assert state["firmware"]["max_queued_moves"] <= state["firmware"]["move_count"]
