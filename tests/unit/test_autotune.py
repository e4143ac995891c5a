"""PID autotune: the relay algorithm on printhost's thermal model, the control-process
command and its refusals, and the config writer."""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
from pathlib import Path

import pytest

from printhost import cli
from printhost.config import Settings, load_settings, parse_settings
from printhost.control.autotune import (CANCELLED, DONE, FAILED, AutotuneSession,
                                        ConfigWriteError, RelayAutotune, _first_harmonic,
                                        edit_pid_lines, write_pid_to_config, zn_gains)
from printhost.control.clock import ManualClock
from printhost.control.heaters import (BED_CHECK_GAIN_TIME_S, EXTRUDER_CHECK_GAIN_TIME_S,
                                       Heater, HeaterFault)
from printhost.control.printer import Printer
from printhost.ipc.channel import Command, ErrorKind, Request
from printhost.sim.heaters import SimulatedHeaterHardware
from printhost.sim.thermal import ThermalModel

REPO = Path(__file__).resolve().parents[2]
TICK_S = 0.1
SETTINGS = Settings()
BODIES = {"extruder": (SETTINGS.simulation.hotend, EXTRUDER_CHECK_GAIN_TIME_S, 210.0),
          "heater_bed": (SETTINGS.simulation.bed, BED_CHECK_GAIN_TIME_S, 60.0)}


class NoisyThermistor(SimulatedHeaterHardware):
    """The simulated heater with Gaussian noise on every reading, as an ADC has."""

    def __init__(self, model: ThermalModel, clock, sigma_c: float, seed: int) -> None:
        super().__init__(model, clock)
        self._rng = random.Random(seed)
        self.sigma_c = sigma_c

    def read_temp_c(self) -> float:
        return super().read_temp_c() + self._rng.gauss(0.0, self.sigma_c)


def _heater(name: str, start_c: float = 22.0, sigma_c: float = 0.0, seed: int = 0,
            settings=None):
    body, gain_time_s, _ = BODIES[name]
    clock = ManualClock()
    model = ThermalModel(body, SETTINGS.simulation.ambient_c)
    # Soak the block at the starting temperature (steady state of a constant duty).
    duty = (start_c - model.ambient_c) * body.loss_w_k / body.heater_power_w
    model.step(20.0 * body.heat_capacity_j_k / body.loss_w_k, duty)
    hw = NoisyThermistor(model, clock, sigma_c, seed)
    heater = Heater(name, settings or getattr(SETTINGS.heaters, name), hw,
                    check_gain_time_s=gain_time_s)
    return heater, clock, model


def _tune(name: str, start_c: float = 22.0, sigma_c: float = 0.0, seed: int = 0):
    heater, clock, _ = _heater(name, start_c, sigma_c, seed)
    session = AutotuneSession(heater, BODIES[name][2])
    while session.running:
        now = clock.advance(TICK_S)
        heater.update(now)  # a HeaterFault here fails the test
        session.tick(now)
    assert heater.duty == 0.0 and heater.target_c == 0.0 and heater.override is None
    return session


# --------------------------------------------------------------------------- algorithm

def test_zn_gains_are_in_klipper_units():
    kp, ki, kd = zn_gains(0.2, 10.0)
    assert kp == pytest.approx(0.6 * 0.2 * 255)
    assert ki == pytest.approx(kp / 5.0)
    assert kd == pytest.approx(kp * 1.25)


def test_first_harmonic_of_an_unevenly_sampled_sine():
    rng = random.Random(1)
    times = sorted([0.0, 7.0] + [rng.uniform(0.0, 7.0) for _ in range(3000)])
    samples = [(t, 200.0 + 3.0 * math.sin(2 * math.pi * t / 7.0 + 0.4)) for t in times]
    assert _first_harmonic(samples) == pytest.approx(3.0, rel=1e-3)


def test_relay_switches_around_the_target_and_discards_the_first_cycle():
    tuner = RelayAutotune(100.0, max_power=0.8, hysteresis_c=1.0, cycles=2)
    assert tuner.update(0.0, 50.0) == 0.8          # heats up at full power
    assert tuner.update(1.0, 100.5) == 0.8         # inside the band: keeps heating
    assert tuner.update(2.0, 101.0) == 0.0         # off at target + h
    t = 2.0
    for cycle in range(3):
        t += 1.0
        assert tuner.update(t, 99.0) == 0.8        # on at target - h: a cycle starts
        assert tuner.cycles_done == max(0, cycle - 1)
        t += 1.0
        tuner.update(t, 101.0)
    t += 1.0
    tuner.update(t, 99.0)
    assert tuner.state == DONE and tuner.progress == 1.0
    assert tuner.result.cycles == 2 and tuner.result.tu_s == pytest.approx(2.0)
    assert tuner.update(t + 1.0, 50.0) == 0.0      # finished: off for good


def test_relay_fails_on_timeout_and_bad_readings():
    tuner = RelayAutotune(200.0, timeout_s=100.0)
    tuner.update(0.0, 30.0)
    assert tuner.update(101.0, 40.0) == 0.0
    assert tuner.state == FAILED and "200" in tuner.error
    tuner = RelayAutotune(200.0)
    assert tuner.update(0.0, math.nan) == 0.0 and tuner.state == FAILED
    with pytest.raises(ValueError):
        RelayAutotune(math.inf)


@pytest.mark.parametrize("name", ["extruder", "heater_bed"])
def test_tune_is_stable_across_start_temperatures_and_noise(name):
    """Different starting temperatures and sensor noise seeds: every gain within 10 %."""
    starts = (22.0, 45.0, 150.0) if name == "extruder" else (22.0, 35.0, 45.0)
    runs = [(start, 0.15, seed) for seed, start in enumerate(starts)] + [(22.0, 0.0, 0)]
    results = [_tune(name, start, sigma, seed).tuner.result for start, sigma, seed in runs]
    for key in ("kp", "ki", "kd", "ku", "tu_s"):
        values = [getattr(r, key) for r in results]
        mean = statistics.mean(values)
        assert all(abs(v - mean) / mean <= 0.10 for v in values), (key, values)
    assert all(r.cycles == 5 for r in results)


@pytest.mark.parametrize("name", ["extruder", "heater_bed"])
def test_tuned_gains_heat_without_a_fault(name):
    result = _tune(name, sigma_c=0.1, seed=7).tuner.result
    target = BODIES[name][2]
    tuned = dataclasses.replace(getattr(SETTINGS.heaters, name), pid_kp=result.kp,
                                pid_ki=result.ki, pid_kd=result.kd)
    heater, clock, model = _heater(name, settings=tuned)
    heater.set_target(target)
    peak = 0.0
    temps = []
    for _ in range(int(1200 / TICK_S)):
        now = clock.advance(TICK_S)
        heater.update(now)  # raises HeaterFault if the heating check trips
        peak = max(peak, model.sensor_c)
        temps.append(model.sensor_c)
    assert peak < target + 10.0
    hold = temps[-int(120 / TICK_S):]
    assert max(abs(t - target) for t in hold) < 0.5


# --------------------------------------------------------------------------- live heater

def test_session_validates_the_target_and_needs_the_override():
    heater, _, _ = _heater("extruder")
    for bad in (math.nan, math.inf, -5.0, 0.0, 281.0, "210", True):
        with pytest.raises(ValueError):
            AutotuneSession(heater, bad)
    assert heater.target_c == 0.0


def test_session_fails_and_releases_the_heater_on_a_fault():
    heater, clock, model = _heater("extruder")
    session = AutotuneSession(heater, 210.0)
    for _ in range(50):
        now = clock.advance(TICK_S)
        heater.update(now)
        session.tick(now)
    assert heater.duty > 0.0
    model.sensor_override_c = 400.0  # far above max_temp
    with pytest.raises(HeaterFault):
        heater.update(clock.advance(TICK_S))
    session.tick(clock.now())
    assert session.tuner.state == FAILED and "max_temp" in session.tuner.error
    assert heater.duty == 0.0 and heater.override is None


@pytest.fixture
def printer():
    clock = ManualClock()
    return Printer.simulated(SETTINGS, clock), clock


def _run(p: Printer, clock: ManualClock, seconds: float) -> None:
    for _ in range(int(seconds / TICK_S)):
        clock.advance(TICK_S)
        p.tick()


def test_printer_runs_a_tune_and_reports_it_in_status(printer):
    p, clock = printer
    reply = p.handle(Request(1, Command.PID_TUNE, {"heater": "extruder", "target": 210}))
    assert reply.ok and reply.result["state"] == "running"
    _run(p, clock, 20.0)
    tune = p.get_status()["printer"]["autotune"]
    assert tune["state"] == "running" and tune["target"] == 210.0
    assert p.get_status()["printer"]["hotend_power"] == 1.0
    _run(p, clock, 400.0)
    tune = p.get_status()["printer"]["autotune"]
    assert tune["state"] == "done" and tune["progress"] == 1.0 and tune["cycles"] == 5
    assert 10.0 < tune["result"]["pid_kp"] < 100.0
    assert p.heaters["extruder"].target_c == 0.0 and p.heaters["extruder"].duty == 0.0


def test_printer_refusals(printer, tmp_path):
    p, clock = printer

    def tune(heater="extruder", target=200.0):
        return p.handle(Request(1, Command.PID_TUNE, {"heater": heater, "target": target}))

    assert tune("chamber").error == ErrorKind.NOT_FOUND
    for bad in (math.nan, 300.0, -1.0, "hot", None):
        reply = tune(target=bad)
        assert reply.error == ErrorKind.INVALID, bad
    gcode = tmp_path / "wait.gcode"
    gcode.write_text("G4 P600000\n")
    assert p.handle(Request(2, Command.PRINT, {"job_id": "j", "file": "wait.gcode",
                                               "path": str(gcode)})).ok
    reply = tune()
    assert reply.error == ErrorKind.CONFLICT and "job" in reply.message
    assert p.handle(Request(3, Command.CANCEL)).ok
    _run(p, clock, 30.0)
    assert not p.jobs.active
    assert tune().ok
    reply = tune("heater_bed", 60.0)
    assert reply.error == ErrorKind.CONFLICT and "already running" in reply.message
    reply = p.handle(Request(4, Command.PRINT, {"job_id": "k", "file": "wait.gcode",
                                                "path": str(gcode)}))
    assert reply.error == ErrorKind.CONFLICT
    _run(p, clock, 5.0)
    assert p.handle(Request(5, Command.CANCEL)).ok  # cancel stops the tune
    assert p.get_status()["printer"]["autotune"]["state"] == CANCELLED
    assert p.heaters["extruder"].target_c == 0.0 and p.heaters["extruder"].duty == 0.0
    p.shutdown("test fault")
    reply = tune()
    assert reply.error == ErrorKind.NOT_READY and "test fault" in reply.message


def test_a_fault_during_a_tune_fails_it(printer):
    p, clock = printer
    assert p.handle(Request(1, Command.PID_TUNE, {"heater": "heater_bed", "target": 60})).ok
    _run(p, clock, 5.0)
    p.shutdown("emergency stop")
    tune = p.get_status()["printer"]["autotune"]
    assert tune["state"] == FAILED and tune["error"] == "emergency stop"
    assert all(h.duty == 0.0 and h.target_c == 0.0 for h in p.heaters)


# --------------------------------------------------------------------------- config

GAINS = {"pid_kp": 27.5234, "pid_ki": 3.8391, "pid_kd": 49.3351}


def _changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    assert len(a) == len(b)
    return [(x, y) for x, y in zip(a, b) if x != y]


def test_writer_changes_only_the_three_pid_lines(tmp_path):
    path = tmp_path / "printhost.toml"
    original = (REPO / "config" / "printhost.toml").read_text()
    path.write_text(original)
    write_pid_to_config(path, "heater_bed", GAINS)
    after = path.read_text()
    assert _changed_lines(original, after) == [
        ("pid_kp = 70.0\n", "pid_kp = 27.523\n"), ("pid_ki = 1.2\n", "pid_ki = 3.839\n"),
        ("pid_kd = 900.0\n", "pid_kd = 49.335\n")]
    bed = load_settings(path).heaters.heater_bed
    assert (bed.pid_kp, bed.pid_ki, bed.pid_kd) == (27.523, 3.839, 49.335)
    assert load_settings(path).heaters.extruder == SETTINGS.heaters.extruder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["printhost.toml"]


def test_writer_keeps_comments_indentation_and_crlf():
    text = ("# top\r\n[heaters.extruder]\r\n  pid_kp=1.0   # from the old tune\r\n"
            "pid_ki = 2.0\r\nmax_temp = 250.0\r\n\r\n[fan]\r\npin = \"PC6\"\r\n")
    out = edit_pid_lines(text, "extruder", {"pid_kp": 5.0, "pid_ki": 6.0, "pid_kd": 7.0})
    assert out == ("# top\r\n[heaters.extruder]\r\n  pid_kp=5.000   # from the old tune\r\n"
                   "pid_ki = 6.000\r\nmax_temp = 250.0\r\npid_kd = 7.000\r\n\r\n[fan]\r\n"
                   "pin = \"PC6\"\r\n")


def test_writer_appends_a_missing_table(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[server]\nport = 7131")  # no final newline
    write_pid_to_config(path, "extruder", GAINS)
    assert path.read_text() == ("[server]\nport = 7131\n\n[heaters.extruder]\n"
                                "pid_kp = 27.523\npid_ki = 3.839\npid_kd = 49.335\n")


@pytest.mark.parametrize("text", [
    "[heaters]\nextruder.pid_kp = 1.0\n",               # dotted keys: cannot append a table
    "heaters.extruder.pid_kp = 1.0\n",
    "[server]\nport = 99999\n",                          # already invalid
])
def test_writer_refuses_what_it_cannot_edit_and_leaves_the_file(tmp_path, text):
    path = tmp_path / "p.toml"
    path.write_bytes(text.encode())
    with pytest.raises(ConfigWriteError):
        write_pid_to_config(path, "extruder", GAINS)
    assert path.read_bytes() == text.encode()
    assert [p.name for p in tmp_path.iterdir()] == ["p.toml"]


def test_cli_pid_tune_prints_and_writes(tmp_path, capsys):
    path = tmp_path / "printhost.toml"
    original = (REPO / "config" / "printhost.toml").read_text()
    path.write_text(original)
    assert cli.main(["pid-tune", "extruder", "210", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[heaters.extruder]" in out and "pid_kp = " in out
    assert path.read_text() == original
    assert cli.main(["pid-tune", "extruder", "210", "--config", str(path), "--write"]) == 0
    assert len(_changed_lines(original, path.read_text())) == 3
    assert load_settings(path).heaters.extruder.pid_kp != SETTINGS.heaters.extruder.pid_kp
    assert cli.main(["pid-tune", "extruder", "400", "--config", str(path)]) == 2
    mcu = tmp_path / "mcu.toml"
    mcu.write_text('[control]\nbackend = "mcu"\n[mcu]\nserial = "/dev/null"\n')
    assert parse_settings({"control": {"backend": "mcu"}}).control.backend == "mcu"
    assert cli.main(["pid-tune", "extruder", "210", "--config", str(mcu)]) == 2
    assert "/api/v1/heaters/extruder/pid_tune" in capsys.readouterr().err
