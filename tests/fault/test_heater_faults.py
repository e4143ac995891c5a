"""Heater and thermistor faults (docs/safety.md rows 1 to 4), injected into the simulated board
under the running service.

Each test starts the real service on its simulated Klipper MCU, heats through a print
job, breaks the hardware through the board's control socket and watches the outcome from
both ends: the board (heater PWM duties, the firmware's shutdown) and the API (state,
reason, job). Reaction times are measured on the board's own clock, which is the print
time the host schedules against; at time factor 1 that is also wall time.

The faults that the heaters' check catches only after its check time (rows 2 and 3) run
at a high time factor, so a 60 s check of the bed costs 3 s. The bounds of one or two
seconds (rows 1 and 4) run in real time, or at twice real time where a heat-up comes
first, so that the host's loop, the serial link and the status path take at least their
real share of the reaction.
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
# Rows 2 and 3 run this much faster than real time (the hotend's row 2 at half that).
FAST = 20.0
# A little more than the board's thermistor sampling period (0.3 s): waiting this long
# lets at least one reading of a repaired sensor reach the host.
SAMPLE_PERIOD_S = 0.35
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


def _board_reaction_s(off: dict, applied_clock: int) -> float:
    """Print time from a fault taking effect on the board to the board latching its
    shutdown, both on the board's own clock: the test process polling late on a busy
    machine (at 20x, 0.1 s of lag is 2 s of print time) does not enter the figure."""
    return (off["firmware"]["shutdown_clock"] - applied_clock) / SIM_CLOCK_FREQ


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
    assert api.upload(path, overwrite=True).status_code == 201


def _heat(svc, api, tmp_path: Path, heater: str) -> tuple[SimMcuClient, str]:
    """Start a job that heats both heaters; return once `heater` runs at full power."""
    job_id = api.print_text(tmp_path, "heat.gcode", HEAT)
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


def _faulty_reading(st: dict) -> float:
    """The reading that tripped the heater, as its reason names it."""
    found = re.search(r"temperature (-?[0-9.]+) C", st["error"])
    assert found, st["error"]
    return float(found.group(1))


def _assert_reading_not_live(api) -> None:
    """Once the MCU is shut down its last reading is no longer shown as the temperature."""
    st = api.wait_for(lambda s: s["printer"]["hotend_temp"] is None, timeout_s=2.0,
                      what="the hotend reading to be no longer live")
    assert st["printer"]["unavailable"]["hotend_temp"].startswith("MCU shutdown: "), st
    assert st["printer"]["heaters"]["extruder"]["fault"] == st["error"].split(": ", 1)[1], st


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


def _break_thermistor(svc, api, tmp_path: Path, fault: str, heater: str) -> None:
    """Heat, break the thermistor at full power, and check the latched shutdown and its
    reaction time (board and API, each within 2 s)."""
    board, job_id = _heat(svc, api, tmp_path, heater)
    # Heater updates follow the readings, so right after one the next sample is due at
    # once; a little later the fault waits for almost a whole sampling period, the slow
    # case.
    time.sleep(0.1)
    applied = board.request(cmd="board", fault=fault, heater=heater, on=True)["clock"]
    wall0 = time.monotonic()
    off, off_wall = _watch(board, _shut_down, 5.0, "heaters off")
    api.wait_for(lambda s: s["state"] == "error", timeout_s=5.0, what="error state")
    api_s = time.monotonic() - wall0
    sim_s, wall_s = _board_reaction_s(off, applied), off_wall - wall0
    _report(f"row1 {fault} {heater}", board_s=sim_s, wall_s=wall_s, api_s=api_s)
    assert sim_s <= 2.0, sim_s
    assert api_s <= 2.0, api_s
    # An NTC reads infinitely cold when open and infinitely hot when shorted.
    reading = "-inf" if fault == "thermistor_open" else "inf"
    _assert_heater_shutdown(api, board, heater, rf"temperature sensor returned {reading}$",
                            job_id)
    board.request(cmd="board", fault=fault, heater=heater, on=False)
    _assert_stays_down(api, board, tmp_path, wait_s=SAMPLE_PERIOD_S)


@pytest.mark.parametrize("heater", HEATERS)
def test_open_or_shorted_thermistor_shuts_down_within_2s(service_factory, api_for, user_store,
                                                         tmp_path, heater):
    """Row 1: an open, then (after a restart) a shorted thermistor, ADC at its rail, while
    heating at full power: heater PWM 0 at the board and a latched shutdown within 2 s.
    Time and a repaired sensor do not bring heat back; only restarting the service (which
    brings the board up afresh) does."""
    svc = _service(service_factory, user_store, time_factor=1.0).start()
    api = api_for(svc)
    _break_thermistor(svc, api, tmp_path, "thermistor_open", heater)

    assert svc.stop() <= 10.0
    svc.start()
    api.wait_for(lambda s: s["state"] == "idle" and s["error"] is None, timeout_s=20.0,
                 what="idle after the restart")
    _break_thermistor(svc, api, tmp_path, "thermistor_short", heater)


# --------------------------------------------------------------------------- rows 2, 3

NOT_HEATING = r"not heating at expected rate"
# Injected once the thermistor shows the heat-up: the heating check has seen it gain its
# 2 C at least once, so its window is running from a recent gain, not from the target.
RISEN_C = 3.0


def _heat_until_risen(svc, api, tmp_path: Path, heater: str) -> tuple[SimMcuClient, str]:
    board, job_id = _heat(svc, api, tmp_path, heater)
    start_c = board.state()["board"]["heaters"][heater]["sensor"]
    _watch(board, lambda s: s["board"]["heaters"][heater]["sensor"] >= start_c + RISEN_C,
           100.0 / FAST + 5.0, "heat-up under way")
    return board, job_id


# The hotend's reaction comes closest to its bound (within about 2.5 s of print time):
# at half of FAST that slack is a quarter of a second of wall time, which a busy machine
# does not eat up by stalling one of the processes.
@pytest.mark.parametrize("heater,factor", [("extruder", FAST / 2), ("heater_bed", FAST)])
def test_loose_thermistor_shuts_down_within_check_time(service_factory, api_for, user_store,
                                                       tmp_path, heater, factor):
    """Row 2: the thermistor falls out of the block during a heat-up, the heater at full
    power, and reads room temperature from then on: "not heating at expected rate" within
    the heater's check time + 2 s of print time."""
    check_s = CHECK_GAIN_TIME_S[heater]
    svc = _service(service_factory, user_store, time_factor=factor).start()
    api = api_for(svc)
    board, job_id = _heat_until_risen(svc, api, tmp_path, heater)
    before = board.state()
    assert _duties(before)[heater] >= 0.99, before["board"]
    applied = board.request(cmd="board", fault="thermistor_loose", heater=heater, on=True)["clock"]
    off, _ = _watch(board, _shut_down, (check_s + 10.0) / factor + 5.0, "heaters off")
    sim_s = _board_reaction_s(off, applied)
    _report(f"row2 thermistor_loose {heater}", board_s=sim_s)
    assert sim_s <= check_s + 2.0, sim_s
    _assert_heater_shutdown(api, board, heater, NOT_HEATING, job_id)


# Heat both, then raise both targets a little every 8 s of print time for two minutes.
RETARGET = ("M140 S60\nM104 S200\n"
            + "".join(f"G4 P8000\nM140 S{61 + i}\nM104 S{201 + i}\n" for i in range(15))
            + "G4 P600000\n")


@pytest.mark.parametrize("heater", HEATERS)
def test_dead_heater_shuts_down_within_check_time(service_factory, api_for, user_store,
                                                  tmp_path, heater):
    """Row 3: the heater cartridge is dead when a heat-up starts, so the temperature stays
    flat although the heater is driven: "not heating at expected rate" within the check
    time + 2 s of print time after the heater pin was switched on.

    The job raises the targets every few seconds meanwhile: a new target during a heat-up
    must not restart the check's clock, or a stream of them would hide a dead heater."""
    check_s = CHECK_GAIN_TIME_S[heater]
    svc = _service(service_factory, user_store, time_factor=FAST).start()
    api = api_for(svc)
    board = SimMcuClient(svc.state_dir)
    board.request(cmd="board", fault="heater_dead", heater=heater, on=True)
    assert not _duties(board.state())[heater]
    job_id = api.print_text(tmp_path, "heat.gcode", RETARGET)
    on, _ = _watch(board, lambda s: _duties(s)[heater] >= 0.99, 10.0, "heater driven")
    flat_c = on["board"]["heaters"][heater]["sensor"]
    off, _ = _watch(board, _shut_down, (check_s + 10.0) / FAST + 5.0, "heaters off")
    # Both ends on the board's own clock: when the pin went on, and when the board
    # latched its shutdown. The test's polling, late on a busy machine (at 20x, 0.1 s
    # of lag is 2 s of print time), is not in the figure.
    on_clock = on["board"]["heaters"][heater]["on_since_clock"]
    assert on_clock is not None, on["board"]
    sim_s = (off["firmware"]["shutdown_clock"] - on_clock) / SIM_CLOCK_FREQ
    st = _assert_heater_shutdown(api, board, heater, NOT_HEATING, job_id)
    # The job's duration (host clock, from its start) is reported too, not held against
    # the bound: the host's check counts from its command, which reaches the pin one
    # scheduling margin later (up to 5 s of print time at this factor), but the job's own
    # start-up, stretched by the time factor, makes that figure noisy.
    _report(f"row3 heater_dead {heater}", board_s=sim_s, job_s=st["job"]["total_duration"])
    assert sim_s <= check_s + 2.0, sim_s
    # The fault really was a dead heater: driven, yet the temperature did not move.
    assert abs(off["board"]["heaters"][heater]["sensor"] - flat_c) < 0.5, off["board"]


# --------------------------------------------------------------------------- row 4


def test_above_max_temp_shuts_down_within_1s(service_factory, api_for, user_store, tmp_path):
    """Row 4, too hot: a badly tuned controller (pure P, high gain) heats the hotend to
    its max_temp as target and overshoots, because the thermistor lags the block. The
    host checks the exact limit (the board's own check only 5 C beyond): a latched
    shutdown within 1 s of the thermistor passing max_temp, heaters off.

    At time factor 2 the heat-up takes half the wall time, while the reaction, measured
    in print time, only gets harder to meet: the host's and the link's delays count
    double, the board's sampling period stays what it is."""
    max_temp = 26.0  # a few degrees above the room: a short heat-up
    svc = _service(service_factory, user_store, time_factor=2.0, extra_config=f"""
[heaters.extruder]
max_temp = {max_temp}
pid_kp = 2550.0
pid_ki = 0.0
pid_kd = 0.0
""").start()
    api = api_for(svc)
    job_id = api.print_text(tmp_path, "hot.gcode", f"M104 S{max_temp:.0f}\nG4 P600000\n")
    board = SimMcuClient(svc.state_dir)
    # The last poll that saw the thermistor at or below max_temp: counting from it can
    # only lengthen the measured reaction.
    below = [board.state()]
    crossed: list[dict] = []

    def note(state: dict) -> None:
        if crossed:
            return
        if state["board"]["heaters"]["extruder"]["sensor"] > max_temp:
            crossed.append(below[0])
        else:
            below[0] = state

    off, _ = _watch(board, lambda s: s["firmware"]["shutdown"], 30.0, "shutdown",
                    on_sample=note)
    assert crossed, "shut down before the thermistor reached max_temp"
    assert not any(_duties(off).values()), off["board"]
    sim_s = _sim_s(off) - _sim_s(crossed[0])
    _report("row4 above max_temp", board_s=sim_s)
    assert sim_s <= 1.0, sim_s
    st = _assert_heater_shutdown(api, board, "extruder", r"above max_temp 26\.0 C", job_id)
    assert _faulty_reading(st) > max_temp, st["error"]
    _assert_reading_not_live(api)


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
    while True:  # the board's control socket opens a moment after its name is written
        assert time.monotonic() < deadline and svc.proc.poll() is None, svc.log()
        try:
            first = board.state()
            break
        except (FileNotFoundError, ConnectionRefusedError):
            time.sleep(0.01)
    assert not first["firmware"]["is_config"], "configured before it was watched"
    # Counted from the last poll before the configuration: a little early, never late.
    unconfigured = [first]
    configured: list[dict] = []

    def note(state: dict) -> None:
        if configured:
            return
        if state["firmware"]["is_config"]:
            configured.append(unconfigured[0])
        else:
            unconfigured[0] = state

    off, _ = _watch(board, lambda s: s["firmware"]["shutdown"], 30.0, "shutdown",
                    on_sample=note)
    assert configured, "shut down before it was configured"
    sim_s = _sim_s(off) - _sim_s(configured[0])
    _report("row4 below min_temp", board_s=sim_s)
    assert sim_s <= 1.0, sim_s
    svc.wait_healthy()
    api = api_for(svc)
    st = _assert_heater_shutdown(api, board, "extruder", r"below min_temp 25\.0 C", None)
    assert _faulty_reading(st) < 25.0, st["error"]
    _assert_reading_not_live(api)
    _assert_stays_down(api, board, tmp_path, wait_s=0.0)
