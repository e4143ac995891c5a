"""What several fault tests start from: a job that heats both heaters and then waits,
and the board-side check that every heater output is off."""

from __future__ import annotations

import time

from printhost.sim.mcu.client import SimMcuClient

HEAT = "M140 S60\nM104 S200\nG4 P600000\n"  # heat, then wait ten minutes


def start_heating(svc, api, tmp_path, name: str = "heat.gcode") -> tuple[SimMcuClient, str]:
    """Print HEAT; returns the board and the job id once the hotend heater is on."""
    job_id = api.print_text(tmp_path, name, HEAT)
    board = SimMcuClient(svc.state_dir)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if board.state()["board"]["heaters"]["extruder"]["duty"] > 0.5:
            return board, job_id
        time.sleep(0.02)
    raise AssertionError(f"heater never came on\n{svc.log()}")


def heaters_off(board: SimMcuClient) -> bool:
    heaters = board.state()["board"]["heaters"]
    return heaters["extruder"]["duty"] == 0.0 and heaters["heater_bed"]["duty"] == 0.0
