"""Heater and thermistor faults (safety.md rows 1 to 4), injected into the simulated board
under the running service.

Each test starts the real service on its simulated Klipper MCU, heats through a print
job, breaks the hardware through the board's control socket and watches the outcome from
both ends: the board (heater PWM duties, the firmware's shutdown) and the API (state,
reason, job). Reaction times are measured on the board's own clock, which is the print
time the host schedules against; at time factor 1 that is also wall time.

The faults that the heaters' check catches only after its check time (rows 2 and 3) run
at a high time factor, so a 60 s check of the bed costs 3 s; the bounds of one or two
seconds (rows 1 and 4) run in real time, where the host's loop, the serial link and the
status path all take their real share of the reaction.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from printhost.control.heaters import BED_CHECK_GAIN_TIME_S, EXTRUDER_CHECK_GAIN_TIME_S
from printhost.mcu.sim_dictionary import SIM_CLOCK_FREQ
from printhost.sim.mcu.client import SimMcuClient
from tests.e2e.conftest import Service

pytestmark = pytest.mark.e2e

CHECK_GAIN_TIME_S = {"extruder": EXTRUDER_CHECK_GAIN_TIME_S,
                     "heater_bed": BED_CHECK_GAIN_TIME_S}
HEATERS = ("extruder", "heater_bed")
# Heat both, then wait ten minutes of print time: the job stays in progress throughout.
HEAT = "M140 S60\nM104 S200\nG4 P600000\n"
# The firmware's shutdown reason for the host's emergency_stop: seeing it proves the
# host's own check acted, not the board's last-resort range check ("ADC out of range").
HOST_STOP = "Command request"
# Rows 2 and 3 run this much faster than real time.
FAST = 20.0
# Board polls this far apart (wall): at FAST that is a resolution of about 0.1 s.
POLL_S = 0.003

# --------------------------------------------------------------------------- harness


@pytest.fixture(scope="module")
def user_store(tmp_path_factory) -> Path:
    """A state directory with the test users, made once: creating them through the CLI
    for every service would cost more than a second each."""
    svc = Service(tmp_path_factory.mktemp("users"))
    svc.write_config()
    svc.add_users()
    return svc.state_dir


def _service(service_factory, user_store: Path, **kw) -> Service:
    svc = service_factory(**kw)
    svc.state_dir.mkdir(mode=0o700)
    shutil.copy2(user_store / "printhost.json", svc.state_dir / "printhost.json")
    return svc


def _sim_s(state: dict) -> float:
    """The board's clock in seconds (print time)."""
    return state["clock"] / SIM_CLOCK_FREQ


def _duties(state: dict) -> dict[str, float]:
    return {name: h["duty"] for name, h in state["board"]["heaters"].items()}


def _watch(board: SimMcuClient, until: Callable[[dict], bool], timeout_s: float,
           what: str, on_sample: Callable[[dict], None] | None = None) -> tuple[dict, float]:
    """Poll the board until `until(state)`; returns that state and the wall time."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = board.state()
        wall = time.monotonic()
        if on_sample is not None:
            on_sample(state)
        if until(state):
            return state, wall
        if wall > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s; board {state['board']}, "
                                 f"firmware {state['firmware']}")
        time.sleep(POLL_S)


def _shut_down(state: dict) -> bool:
    """The board is shut down with every heater output at 0."""
    return state["firmware"]["shutdown"] and not any(_duties(state).values())


def _upload(api, tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert api.upload(path).status_code == 201


def _print(api, name: str) -> str:
    r = api.post("/api/v1/print", json={"file": name})
    assert r.status_code == 200, r.text
    return r.json()["job_id"]


def _heat(svc, api, tmp_path: Path, heater: str) -> tuple[SimMcuClient, str]:
    """Start a job that heats both heaters; return once `heater` runs at full power."""
    _upload(api, tmp_path, "heat.gcode", HEAT)
    job_id = _print(api, "heat.gcode")
    board = SimMcuClient(svc.state_dir)
    _watch(board, lambda s: _duties(s)[heater] >= 0.99, 20.0, f"{heater} at full power")
    return board, job_id


def _assert_heater_shutdown(api, board: SimMcuClient, heater: str, reason: str,
                            job_id: str | None) -> dict:
    """The latched outcome of a heater fault, seen from the API and from the board."""
    st = api.wait_for(lambda s: s["state"] == "error", timeout_s=5.0, what="error state")
    assert st["error"].startswith(f"heater {heater} shut down: "), st["error"]
    assert re.search(reason, st["error"]), st["error"]
    printer = st["printer"]
    assert printer["hotend_power"] == 0.0 and printer["bed_power"] == 0.0, printer
    assert printer["target_hotend_temp"] == 0.0 and printer["target_bed_temp"] == 0.0, printer
    if job_id is None:
        assert st["job"] is None, st["job"]
    else:
        assert st["job"]["id"] == job_id and st["job"]["state"] == "error", st["job"]
    state = board.state()
    assert _shut_down(state), state["board"]
    assert state["firmware"]["reason"] == HOST_STOP, state["firmware"]
    return st


def _assert_stays_down(api, board: SimMcuClient, tmp_path: Path, wait_s: float) -> None:
    """Nothing short of a restart heats again: not time, not a repaired sensor, not a
    new job."""
    time.sleep(wait_s)
    _upload(api, tmp_path, "again.gcode", HEAT)
    r = api.post("/api/v1/print", json={"file": "again.gcode"})
    assert r.status_code == 503 and "not ready" in r.text.lower(), (r.status_code, r.text)
    st = api.status()
    assert st["state"] == "error", st
    state = board.state()
    assert _shut_down(state), state["board"]


def _report(what: str, **times: float) -> None:
    print(what, " ".join(f"{k}={v:.3f}" for k, v in times.items()))


# --------------------------------------------------------------------------- row 1


@pytest.mark.parametrize("heater", HEATERS)
@pytest.mark.parametrize("fault", ["thermistor_open", "thermistor_short"])
def test_thermistor_at_its_rail_shuts_down_within_2s(service_factory, api_for, user_store,
                                                     tmp_path, fault, heater):
    """Row 1: an open or shorted thermistor (ADC at its rail) while heating at full power:
    heater PWM 0 at the board and a latched shutdown within 2 s; repairing the sensor
    does not bring heat back."""
    svc = _service(service_factory, user_store, time_factor=1.0).start()
    api = api_for(svc)
    board, job_id = _heat(svc, api, tmp_path, heater)
    before = board.state()
    board.request(cmd="board", fault=fault, heater=heater, on=True)
    wall0 = time.monotonic()
    off, off_wall = _watch(board, _shut_down, 5.0, "heaters off")
    api.wait_for(lambda s: s["state"] == "error", timeout_s=5.0, what="error state")
    api_wall = time.monotonic()
    sim_s, wall_s = _sim_s(off) - _sim_s(before), off_wall - wall0
    _report(f"row1 {fault} {heater}", board_s=sim_s, wall_s=wall_s, api_s=api_wall - wall0)
    assert sim_s <= 2.0 and wall_s <= 2.0, (sim_s, wall_s)
    assert api_wall - wall0 <= 2.0, api_wall - wall0
    # An NTC reads infinitely cold when open and infinitely hot when shorted.
    _assert_heater_shutdown(api, board, heater, r"temperature sensor returned -?inf", job_id)
    board.request(cmd="board", fault=fault, heater=heater, on=False)
    _assert_stays_down(api, board, tmp_path, wait_s=1.0)


def test_only_a_restart_heats_again(service_factory, api_for, user_store, tmp_path):
    """Row 1, the way back: after a thermistor fault the service must be restarted
    (which restarts the board's firmware) before anything heats again."""
    svc = _service(service_factory, user_store, time_factor=1.0).start()
    api = api_for(svc)
    board, job_id = _heat(svc, api, tmp_path, "extruder")
    board.request(cmd="board", fault="thermistor_open", heater="extruder", on=True)
    _watch(board, _shut_down, 5.0, "heaters off")
    _assert_heater_shutdown(api, board, "extruder", r"temperature sensor returned -inf", job_id)
    board.request(cmd="board", fault="thermistor_open", heater="extruder", on=False)
    _assert_stays_down(api, board, tmp_path, wait_s=0.5)

    assert svc.stop() <= 10.0
    svc.start()
    api.wait_for(lambda s: s["state"] == "idle" and s["printer"]["hotend_temp"] is not None,
                 timeout_s=20.0, what="idle after restart")
    new_job = _print(api, "again.gcode")
    assert new_job != job_id
    board = SimMcuClient(svc.state_dir)
    state, _ = _watch(board, lambda s: _duties(s)["extruder"] > 0.5, 10.0, "heating again")
    assert not state["firmware"]["shutdown"], state["firmware"]
    st = api.status()
    assert st["state"] == "printing" and st["error"] is None, st


# --------------------------------------------------------------------------- rows 2, 3

NOT_HEATING = r"not heating at expected rate"


@pytest.mark.parametrize("heater", HEATERS)
def test_loose_thermistor_shuts_down_within_check_time(service_factory, api_for, user_store,
                                                       tmp_path, heater):
    """Row 2: the thermistor falls out of the block while the heater runs at full power
    and reads room temperature from then on: "not heating at expected rate" within the
    heater's check time + 2 s of print time."""
    check_s = CHECK_GAIN_TIME_S[heater]
    svc = _service(service_factory, user_store, time_factor=FAST).start()
    api = api_for(svc)
    board, job_id = _heat(svc, api, tmp_path, heater)
    before = board.state()
    board.request(cmd="board", fault="thermistor_loose", heater=heater, on=True)
    off, _ = _watch(board, _shut_down, (check_s + 10.0) / FAST + 5.0, "heaters off")
    sim_s = _sim_s(off) - _sim_s(before)
    _report(f"row2 thermistor_loose {heater}", board_s=sim_s)
    assert sim_s <= check_s + 2.0, sim_s
    _assert_heater_shutdown(api, board, heater, NOT_HEATING, job_id)


@pytest.mark.parametrize("heater", HEATERS)
def test_dead_heater_shuts_down_within_check_time(service_factory, api_for, user_store,
                                                  tmp_path, heater):
    """Row 3: the heater cartridge is dead when a heat-up starts, so the temperature stays
    flat although the heater is driven: "not heating at expected rate" within the check
    time + 2 s of print time after the heater was switched on."""
    check_s = CHECK_GAIN_TIME_S[heater]
    svc = _service(service_factory, user_store, time_factor=FAST).start()
    api = api_for(svc)
    board = SimMcuClient(svc.state_dir)
    board.request(cmd="board", fault="heater_dead", heater=heater, on=True)
    _upload(api, tmp_path, "heat.gcode", HEAT)
    # The heater came on between the last poll that saw it off and the first that saw
    # it on; counting from the earlier one can only lengthen the measured reaction.
    last_off = [board.state()]

    def note(state: dict) -> None:
        if not _duties(state)[heater]:
            last_off[0] = state

    job_id = _print(api, "heat.gcode")
    on, _ = _watch(board, lambda s: _duties(s)[heater] >= 0.99, 10.0, "heater driven",
                   on_sample=note)
    flat = on["board"]["heaters"][heater]["sensor"]
    off, _ = _watch(board, _shut_down, (check_s + 10.0) / FAST + 5.0, "heaters off")
    sim_s = _sim_s(off) - _sim_s(last_off[0])
    _report(f"row3 heater_dead {heater}", board_s=sim_s)
    assert sim_s <= check_s + 2.0, sim_s
    # The fault really was a dead heater: driven, yet the temperature did not move.
    assert abs(off["board"]["heaters"][heater]["sensor"] - flat) < 0.5, off["board"]
    _assert_heater_shutdown(api, board, heater, NOT_HEATING, job_id)


@pytest.mark.parametrize("heater", HEATERS)
def test_heater_dying_mid_heat_up_shuts_down_within_check_time(service_factory, api_for,
                                                               user_store, tmp_path, heater):
    """Row 3, the cartridge dies in the middle of a heat-up. Its block is hotter than the
    thermistor, which keeps rising for a few seconds (longer on the slow bed) as that heat
    reaches it; from the moment the reading stops rising the temperature is flat, and the
    shutdown must follow within the check time + 2 s."""
    check_s = CHECK_GAIN_TIME_S[heater]
    svc = _service(service_factory, user_store, time_factor=FAST).start()
    api = api_for(svc)
    board, job_id = _heat(svc, api, tmp_path, heater)
    # Well into the heat-up, far from the target (the holding band is another check).
    time.sleep(8.0 / FAST)
    before = board.state()
    board.request(cmd="board", fault="heater_dead", heater=heater, on=True)
    peak = [before]

    def note(state: dict) -> None:
        if (state["board"]["heaters"][heater]["sensor"]
                > peak[0]["board"]["heaters"][heater]["sensor"]):
            peak[0] = state

    off, _ = _watch(board, _shut_down, (check_s + 20.0) / FAST + 5.0, "heaters off",
                    on_sample=note)
    from_fault_s = _sim_s(off) - _sim_s(before)
    from_flat_s = _sim_s(off) - _sim_s(peak[0])
    _report(f"row3 heater_dead mid-heat {heater}", from_fault_s=from_fault_s,
            from_flat_s=from_flat_s)
    assert from_flat_s <= check_s + 2.0, (from_flat_s, from_fault_s)
    _assert_heater_shutdown(api, board, heater, NOT_HEATING, job_id)


# --------------------------------------------------------------------------- row 4


def test_above_max_temp_shuts_down_within_1s(service_factory, api_for, user_store, tmp_path):
    """Row 4, too hot: a badly tuned controller (pure P, high gain) heats the hotend to
    its max_temp as target and overshoots, because the thermistor lags the block. The
    host checks the exact limit (the board's own check only 5 C beyond): a latched
    shutdown within 1 s of the thermistor passing max_temp, heaters off."""
    max_temp = 30.0
    svc = _service(service_factory, user_store, time_factor=1.0, extra_config=f"""
[heaters.extruder]
max_temp = {max_temp}
pid_kp = 2550.0
pid_ki = 0.0
pid_kd = 0.0
""").start()
    api = api_for(svc)
    _upload(api, tmp_path, "hot.gcode", f"M104 S{max_temp:.0f}\nG4 P600000\n")
    job_id = _print(api, "hot.gcode")
    board = SimMcuClient(svc.state_dir)
    crossed: list[dict] = []

    def note(state: dict) -> None:
        if not crossed and state["board"]["heaters"]["extruder"]["sensor"] > max_temp:
            crossed.append(state)

    off, off_wall = _watch(board, lambda s: s["firmware"]["shutdown"], 30.0, "shutdown",
                           on_sample=note)
    assert crossed, "shut down before the thermistor reached max_temp"
    assert not any(_duties(off).values()), off["board"]
    sim_s = _sim_s(off) - _sim_s(crossed[0])
    _report("row4 above max_temp", board_s=sim_s)
    assert sim_s <= 1.0, sim_s
    st = _assert_heater_shutdown(api, board, "extruder", r"above max_temp 30\.0 C", job_id)
    assert st["printer"]["hotend_temp"] > max_temp, st["printer"]


def test_below_min_temp_shuts_down_within_1s(service_factory, api_for, user_store, tmp_path):
    """Row 4, too cold: min_temp above the room's temperature, within the 5 C of margin the
    board's own check leaves, so only the host's exact check can see it. The first reading
    shuts the printer down: within 1 s of the board being configured (its sampling starts
    0.2 s after that), before anything could heat."""
    svc = _service(service_factory, user_store, time_factor=1.0, extra_config="""
[heaters.extruder]
min_temp = 25.0
""").start(wait=False)
    board = SimMcuClient(svc.state_dir)
    deadline = time.monotonic() + 30.0
    while not (board.dir / "control").exists():
        assert time.monotonic() < deadline and svc.proc.poll() is None, svc.log()
        time.sleep(0.01)
    assert not board.state()["firmware"]["is_config"], "configured before it was watched"
    configured: list[dict] = []

    def note(state: dict) -> None:
        if not configured and state["firmware"]["is_config"]:
            configured.append(state)

    off, _ = _watch(board, lambda s: s["firmware"]["shutdown"], 30.0, "shutdown",
                    on_sample=note)
    assert configured, "shut down before it was configured"
    sim_s = _sim_s(off) - _sim_s(configured[0])
    _report("row4 below min_temp", board_s=sim_s)
    assert sim_s <= 1.0, sim_s
    svc.wait_healthy()
    api = api_for(svc)
    st = _assert_heater_shutdown(api, board, "extruder", r"below min_temp 25\.0 C", None)
    assert st["printer"]["hotend_temp"] < 25.0, st["printer"]
    _assert_stays_down(api, board, tmp_path, wait_s=0.0)
