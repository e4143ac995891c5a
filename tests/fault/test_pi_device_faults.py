"""The Pi's own devices in the running service: I2C sensor faults (docs/safety.md row 8), the
emergency-stop button and the filament runout switch.

The service runs on its simulated MCU and simulated Pi: gpiozero drives mock pins, the
chamber sensor's driver talks to simulated chips on a simulated I2C bus in real time,
and the tests steer both through the simulated Pi's control socket (`SimPiClient`):
they break the bus, press the button, pull the filament, and read the output pins
(the chamber heater relay, the PSU relay) to see what the host did. Times are wall
time at a time factor of 1, the real thing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from printhost.sim.mcu.client import SimMcuClient
from printhost.sim.pi import SimPiClient
from tests.e2e.conftest import Service

pytestmark = pytest.mark.e2e

DEVICES = """
[devices.psu]
pin = "GPIO17"

[devices.status_led]
pin = "GPIO27"

[devices.estop]
pin = "GPIO22"

[devices.runout]
pin = "GPIO23"

[devices.hotend_fan]
pin = "GPIO18"

[devices.controller_fan]
pin = "GPIO13"
"""


def _chamber(sensor: str) -> str:
    return f"""
[chamber]
sensor = "{sensor}"
heater_pin = "GPIO5"
max_temp = 70.0
"""


# The bound of docs/safety.md row 8: heaters that depend on a failing sensor are off after
# at most this much failure.
ROW8_BOUND_S = 1.0
POLL_S = 0.005


def _watch(pi: SimPiClient, until: Callable[[dict], bool], timeout_s: float,
           what: str) -> tuple[dict, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        state = pi.state()
        wall = time.monotonic()
        if until(state):
            return state, wall
        if wall > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s; simulated Pi {state}")
        time.sleep(POLL_S)


def _start(service_factory, extra: str, time_factor: float = 1.0) -> Service:
    svc = service_factory(time_factor=time_factor, extra_config=extra)
    svc.start()
    return svc


def _chamber_heating(api, pi: SimPiClient) -> None:
    r = api.post("/api/v1/heaters/chamber/target", json={"target": 45})
    assert r.status_code == 200, r.text
    assert r.json() == {"heater": "chamber", "target": 45.0}
    _watch(pi, lambda s: s["outputs"]["chamber_heater"] == 1.0, 5.0, "chamber heater on")


def _assert_chamber_fault(api, svc: Service, pattern: str) -> dict:
    st = api.wait_for(lambda s: s["state"] == "error", timeout_s=2.0, what="error state")
    assert st["error"].startswith("heater chamber shut down: cannot read the temperature "
                                  "sensor"), st["error"]
    assert pattern in st["error"], st["error"]
    printer = st["printer"]
    assert printer["target_chamber_temp"] == 0.0 and printer["chamber_power"] == 0.0, printer
    assert printer["target_hotend_temp"] == 0.0 and printer["target_bed_temp"] == 0.0, printer
    # The MCU was told to stop as for any heater fault.
    board = SimMcuClient(svc.state_dir).state()
    assert board["firmware"]["shutdown"], board["firmware"]
    return st


@pytest.mark.parametrize("sensor, kind, message", [
    ("aht10", "stuck", "bus timeout"),
    ("ads1115", "nack", "no acknowledge"),
    ("aht20", "oserror", "I/O error"),
])
def test_i2c_failure_shuts_the_dependent_heater_down_within_1s(
        service_factory, api_for, sensor, kind, message):
    svc = _start(service_factory, _chamber(sensor))
    api = api_for(svc)
    pi = SimPiClient(svc.state_dir)
    # The first reading comes a measurement after start-up (an AHT10 needs ~0.1 s).
    st = api.wait_for(lambda s: s["printer"]["chamber_temp"] is not None, timeout_s=3.0,
                      what="first chamber reading")["printer"]
    assert 15.0 < st["chamber_temp"] < 30.0, st
    if sensor.startswith("aht"):
        assert st["chamber_humidity"] == pytest.approx(40.0, abs=0.1), st
    _chamber_heating(api, pi)

    # A glitch the retries absorb (two failed attempts, then a good one) changes nothing.
    pi.request(cmd="i2c_fault", kind="oserror", count=2)
    time.sleep(1.5)
    st = api.status()
    assert st["state"] == "idle" and st["error"] is None, st
    assert pi.state()["outputs"]["chamber_heater"] == 1.0

    failed_before = pi.state()["i2c"]["failed"]
    pi.request(cmd="i2c_fault", kind=kind)
    injected = time.monotonic()
    state, off_at = _watch(pi, lambda s: s["outputs"]["chamber_heater"] == 0.0, 3.0,
                           "chamber heater off")
    reaction_s = off_at - injected
    print(f"row 8: {sensor} {kind}: chamber heater off {reaction_s:.3f} s after the fault")
    assert reaction_s <= ROW8_BOUND_S, reaction_s
    # Bounded retries: three attempts per poll (0.25 s apart), not a retry storm.
    polls = reaction_s / 0.25 + 2
    assert 0 < state["i2c"]["failed"] - failed_before <= 3 * polls, state["i2c"]
    _assert_chamber_fault(api, svc, message)

    # Latched: a healed bus does not bring the heater back, and targets are refused.
    pi.request(cmd="i2c_clear")
    time.sleep(0.6)
    st = api.status()
    assert st["state"] == "error", st
    assert st["printer"]["chamber_temp"] is not None    # readings are back...
    r = api.post("/api/v1/heaters/chamber/target", json={"target": 40})
    assert r.status_code == 503, r.text                  # ...but nothing heats
    assert pi.state()["outputs"]["chamber_heater"] == 0.0


def test_runout_pauses_and_estop_shuts_down(service_factory, api_for, tmp_path: Path):
    # Five times real time: homing and the moves go faster; the reactions measured here
    # (PSU cut, LED) are in wall time and do not depend on it.
    svc = _start(service_factory, DEVICES + _chamber("aht10"), time_factor=5.0)
    api = api_for(svc)
    pi = SimPiClient(svc.state_dir)
    st = api.status()
    devices = st["printer"]["devices"]
    assert devices["psu_on"] is True and devices["estop_pressed"] is False, devices
    assert devices["filament_present"] is True, devices
    outputs = pi.state()["outputs"]
    assert outputs["psu"] == 1.0 and outputs["status_led"] == 1.0, outputs   # steady: ready

    # A long job: heat the hotend, then zig-zag for minutes.
    moves = "".join(f"G1 X{10 + (i % 2) * 200} Y{10 + (i % 7) * 20} F3000\n" for i in range(200))
    path = tmp_path / "long.gcode"
    path.write_text("M104 S60\nG28\n" + moves)
    assert api.upload(path).status_code == 201
    r = api.post("/api/v1/print", json={"file": "long.gcode"})
    assert r.status_code == 200, r.text
    api.wait_for(lambda s: s["state"] == "printing", timeout_s=10.0, what="printing")
    _watch(pi, lambda s: s["outputs"]["controller_fan"] == 1.0, 5.0, "controller fan on")
    _watch(pi, lambda s: s["outputs"]["hotend_fan"] == 1.0, 5.0, "hotend fan on (target set)")

    # Homing first (a pause waits for it to finish), then the runout.
    api.wait_for(lambda s: s["printer"]["homed_axes"] == "xyz", timeout_s=30.0, what="homed")
    pi.request(cmd="filament", present=False)
    st = api.wait_for(lambda s: s["state"] == "paused", timeout_s=20.0, what="paused by runout")
    assert st["printer"]["paused_by_runout"] is True, st["printer"]
    assert st["printer"]["devices"]["filament_present"] is False
    r = api.post("/api/v1/resume")
    assert r.status_code == 409 and "no filament" in r.json()["error"], r.text
    pi.request(cmd="filament", present=True)
    api.wait_for(lambda s: s["printer"]["devices"]["filament_present"], timeout_s=3.0,
                 what="filament back")
    r = api.post("/api/v1/resume")
    assert r.status_code == 200, r.text
    st = api.wait_for(lambda s: s["state"] == "printing", timeout_s=10.0, what="resumed")
    assert st["printer"]["paused_by_runout"] is False

    pi.request(cmd="estop", pressed=True)
    pressed = time.monotonic()
    state, cut_at = _watch(pi, lambda s: s["outputs"]["psu"] == 0.0, 2.0, "PSU cut")
    print(f"e-stop: PSU relay off {cut_at - pressed:.3f} s after the press")
    assert cut_at - pressed < 0.5, cut_at - pressed
    st = api.wait_for(lambda s: s["state"] == "error", timeout_s=2.0, what="e-stop error")
    assert st["error"] == "emergency stop button pressed", st["error"]
    assert st["job"]["state"] == "error", st["job"]
    assert st["printer"]["target_hotend_temp"] == 0.0 and st["printer"]["hotend_power"] == 0.0
    assert st["printer"]["devices"]["estop_pressed"] is True
    board = SimMcuClient(svc.state_dir).state()
    assert board["firmware"]["shutdown"], board["firmware"]
    assert not any(h["duty"] for h in board["board"]["heaters"].values()), board["board"]
    # The status LED blinks fast after a fault: it changes within a quarter second.
    levels = {pi.state()["outputs"]["status_led"] for _ in range(40) if time.sleep(0.01) is None}
    assert levels == {0.0, 1.0}, levels
    # Releasing the button does not undo the shutdown.
    pi.request(cmd="estop", pressed=False)
    time.sleep(0.3)
    assert api.status()["state"] == "error"
    r = api.post("/api/v1/heaters/extruder/target", json={"target": 50})
    assert r.status_code == 503, r.text


def test_no_print_without_filament_and_m81_cuts_the_power(
        service_factory, api_for, tmp_path: Path):
    svc = _start(service_factory, DEVICES)
    api = api_for(svc)
    pi = SimPiClient(svc.state_dir)
    path = tmp_path / "short.gcode"
    path.write_text("G28\nG1 X20 Y20 F3000\n")
    assert api.upload(path).status_code == 201
    pi.request(cmd="filament", present=False)
    api.wait_for(lambda s: s["printer"]["devices"]["filament_present"] is False,
                 timeout_s=3.0, what="runout seen")
    r = api.post("/api/v1/print", json={"file": "short.gcode"})
    assert r.status_code == 409 and "no filament" in r.json()["error"], r.text
    assert api.status()["job"] is None
    # M80/M81 from a job switch the PSU relay; M81 turns the heaters off first.
    pi.request(cmd="filament", present=True)
    api.wait_for(lambda s: s["printer"]["devices"]["filament_present"] is True,
                 timeout_s=3.0, what="filament back")
    path.write_text("M104 S50\nM81\n")
    assert api.upload(path, "power.gcode").status_code == 201
    r = api.post("/api/v1/print", json={"file": "power.gcode"})
    assert r.status_code == 200, r.text
    st = api.wait_for(lambda s: s["job"] and s["job"]["state"] == "completed", timeout_s=10.0,
                      what="power job done")
    assert st["printer"]["devices"]["psu_on"] is False
    assert st["printer"]["target_hotend_temp"] == 0.0
    assert pi.state()["outputs"]["psu"] == 0.0
