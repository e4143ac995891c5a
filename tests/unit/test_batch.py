"""`printhost batch` end to end: the stream it writes, decoded and held to motion computed apart.

The output is decoded with the protocol's decoder and every `queue_step` is replayed
the way the MCU replays it (`reference.expand_commands`). What the stream should
contain is worked out separately from the streaming path: the G-code goes through the
line parser, the interpreter and the toolhead with an executor that only records the
planned moves; those moves become one segment array for the whole job, and the step
times come from a single whole-range step generation, from the plain-Python
reference, or (for a file with known geometry) from closed-form trapezoid formulas.
Every replayed step must lie in [true - max_error, true] ticks of its true time:
never late, at most max_error early.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from printhost import batch, cli
from printhost.config import Settings, load_settings, with_overrides
from printhost.control import shaper
from printhost.control.clock import ManualClock
from printhost.control.gcode import iter_lines, parse_line
from printhost.control.interpreter import GCodeInterpreter, PartFan
from printhost.control.kernels import reference as ref
from printhost.control.kernels import steppers as st
from printhost.control.kernels import trapq
from printhost.control.motion import PlannedMove, QueueClockExecutor, Vec4
from printhost.control.toolhead import Toolhead
from printhost.mcu.protocol import DataDictionary, MessageCodec, MessageStream
from printhost.mcu.sim_dictionary import sim_dictionary, sim_dictionary_bytes
from printhost.sim.heaters import build_simulated_heaters

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "printhost.toml"
DATA = REPO / "tests" / "data"
CUBE = DATA / "cube.gcode"
SHIPPED = load_settings(CONFIG)
NAMES = ("x", "y", "z", "extruder")
U32 = 1 << 32
# Slack (in ticks) when the true times come from a different computation than the
# pipeline's kernel: the reference bisects to 1e-12 s, i.e. 7e-5 ticks at 72 MHz.
OTHER_ROUTE_EPS = 0.01


def settings_with(**sections) -> Settings:
    return with_overrides(SHIPPED, **sections)


# A start close to the endstops keeps homing short where the reference generator runs.
NEAR_HOME = {"power_on_position": [4.0, 6.0, 1.5]}

DIALECT = """\
; every motion feature of the dialect, and a dwell longer than the 32-bit MCU clock wraps
G28
M204 S2000
G90
M83
G1 Z0.3 F600
G1 X20 Y20 F9000
G1 X60 Y20 E2.0 F3000
G2 X80 Y40 I0 J20 E1.5
G3 X60 Y60 R20 E1.5
G10
G4 P500
G11
G20
G1 X3 Y3 F100
G21
G4 S70
G1 X10 Y10 E1 F6000
M84
"""

ZIGZAG = """\
G28
M83
G1 X30 Y10 F12000
G1 X45 Y10 E0.8
G1 X45 Y25 E0.8
G1 X20 Y5 E1.2
G1 X26 Y5 E0.3 F3000
G1 X22 Y9 E0.2
G1 X40 Y30 F9000
G1 E-0.8 F2400
G1 E0.8
"""


def write(tmp_path: Path, text: str, name: str = "job.gcode") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- planning apart



@dataclass
class Plan:
    moves: list[PlannedMove]
    start: Vec4
    end: Vec4
    end_time: float


def plan(settings: Settings, path: Path) -> Plan:
    """The planned moves of a file, parsed line by line with the reference parser."""
    sx, sy, sz = (float(v) for v in settings.printer.power_on_position)
    start = (sx, sy, sz, 0.0)
    executor = QueueClockExecutor(batch.START_TIME_S, start, record=True)
    toolhead = Toolhead.reference(settings.printer, executor, settings.extruder)
    heaters, _ = build_simulated_heaters(settings, ManualClock())
    interp = GCodeInterpreter(toolhead, heaters, PartFan(), executor.now, settings.gcode,
                              settings.firmware_retraction)
    with open(path, "rb") as fh:
        for lineno, _offset, text in iter_lines(fh):
            cmd = parse_line(text, lineno)
            if cmd is not None:
                interp.execute(cmd)
    toolhead.flush()
    return Plan(executor.moves, start, toolhead.commanded_position, executor.queue_end_time())


def corexy(settings: Settings) -> bool:
    return settings.printer.kinematics == "corexy"


def coordinate(settings: Settings, name: str, pos: Vec4) -> float:
    """The stepper's position in mm for a toolhead position (x, y, z, e)."""
    x, y, z, e = pos
    if name == "x":
        return x + y if corexy(settings) else x
    if name == "y":
        return x - y if corexy(settings) else y
    return z if name == "z" else e


def step_distance(settings: Settings, name: str) -> float:
    return getattr(settings.steppers, name).step_distance_mm


def nearest_step(position_mm: float, step_mm: float) -> int:
    return math.floor(position_mm / step_mm + 0.5)


def models(settings: Settings) -> dict[str, st.StepperModel]:
    """Stepper models built here from the settings, not by the pipeline's own helper."""
    shaping = settings.input_shaper
    pulses = {}
    for axis in "xy":
        freq = getattr(shaping, f"shaper_freq_{axis}")
        pulses[axis] = (shaper.make_shaper(getattr(shaping, f"shaper_type_{axis}"), freq,
                                           getattr(shaping, f"damping_ratio_{axis}"))
                        if freq else None)
    sd = {name: step_distance(settings, name) for name in NAMES}
    if corexy(settings):
        a = st.StepperModel(st.COREXY_A, sd["x"], pulses["x"], pulses["y"])
        b = st.StepperModel(st.COREXY_B, sd["y"], pulses["x"], pulses["y"])
    else:
        a = st.StepperModel(st.CARTESIAN_X, sd["x"], pulses["x"], None)
        b = st.StepperModel(st.CARTESIAN_Y, sd["y"], None, pulses["y"])
    ext = settings.extruder
    return {"x": a, "y": b, "z": st.StepperModel(st.CARTESIAN_Z, sd["z"]),
            "extruder": st.StepperModel(st.EXTRUDER, sd["extruder"],
                                        pressure_advance=ext.pressure_advance,
                                        smooth_time=ext.pressure_advance_smooth_time)}


def true_steps(settings: Settings, job: Plan, clock_freq: float,
               generator: str = "kernel") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(tick, direction) of every step of the whole job, generated in one piece."""
    tool = trapq.toolhead_segments(job.moves, batch.START_TIME_S)
    ext = trapq.extruder_segments(job.moves, batch.START_TIME_S)
    out = {}
    for name, model in models(settings).items():
        segs = ext if model.kind == st.EXTRUDER else tool
        if not len(segs):
            times, dirs = np.zeros(0), np.zeros(0, dtype=np.int8)
        elif generator == "kernel":
            got = st.generate_steps(segs, model, -math.inf, math.inf, 0)
            times, dirs = got.times, got.dirs
        else:
            t, d, _ = ref.generate_steps(segs, model, -math.inf, math.inf, 0)
            times, dirs = np.array(t, dtype=np.float64), np.array(d, dtype=np.int8)
        out[name] = (times * clock_freq, dirs.astype(np.int64))
    return out


# --------------------------------------------------------------------------- the stream

@dataclass
class Stream:
    messages: list[tuple[str, dict]]
    commands: dict[int, list[tuple[int, int, int, int]]]   # oid -> (interval, count, add, set_dir)
    dir_commands: dict[int, int]


def decode(data: bytes, codec: MessageCodec | None = None) -> Stream:
    """Decode, check the config phase as Klipper writes it, and split the steps by oid."""
    codec = codec or MessageCodec(DataDictionary(sim_dictionary()))
    messages = MessageStream(codec).decode_stream(data)
    assert messages[0] == ("allocate_oids", {"count": len(NAMES)})
    config = messages[1:1 + len(NAMES)]
    assert [name for name, _ in config] == ["config_stepper"] * len(NAMES)
    assert [p["oid"] for _, p in config] == list(range(len(NAMES)))
    pins = [p[key] for _, p in config for key in ("step_pin", "dir_pin")]
    assert len(set(pins)) == len(pins), "two stepper signals share a pin"
    assert all(p["invert_step"] == 0 for _, p in config)
    name, params = messages[1 + len(NAMES)]
    assert name == "finalize_config"
    text = "\n".join(codec.format_text(n, p) for n, p in messages[:1 + len(NAMES)])
    assert params["crc"] == zlib.crc32(text.encode()) & 0xFFFFFFFF

    commands: dict[int, list[tuple[int, int, int, int]]] = defaultdict(list)
    dir_commands: dict[int, int] = defaultdict(int)
    current: dict[int, int] = {}
    pending: dict[int, int] = {}
    for name, p in messages[2 + len(NAMES):]:
        oid = p["oid"]
        assert 0 <= oid < len(NAMES)
        if name == "set_next_step_dir":
            assert p["dir"] in (0, 1)
            direction = 1 if p["dir"] else -1
            assert oid not in pending, "two direction commands without a step between"
            assert current.get(oid) != direction, "a direction command that changes nothing"
            current[oid] = pending[oid] = direction
            dir_commands[oid] += 1
            continue
        assert name == "queue_step", f"unexpected {name} after finalize_config"
        assert oid in current, "steps before the first direction command"
        assert 0 <= p["interval"] < U32
        assert 1 <= p["count"] <= 0xFFFF
        assert -0x8000 <= p["add"] <= 0x7FFF
        commands[oid].append((p["interval"], p["count"], p["add"], pending.pop(oid, 0)))
    assert not pending, "a direction command with no step after it"
    return Stream(messages, commands, dir_commands)


def replay(commands: list[tuple[int, int, int, int]],
           true_clocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The MCU's (tick, direction) of every step, counting from tick 0.

    The MCU adds intervals to a 32-bit clock; an interval sent for a step more than
    2**32 ticks after the previous one is the wrapped value, so each command's first
    tick is taken as the one of its 2**32-apart candidates nearest that step's true
    time, as an MCU receiving it in time would.
    """
    firsts = []
    last = 0
    index = 0
    for interval, count, add, _ in commands:
        first = last + interval
        if index < len(true_clocks):
            first += round((float(true_clocks[index]) - first) / U32) * U32
        firsts.append(first)
        last = first + (count - 1) * interval + add * (count - 1) * count // 2
        index += count
    if not commands:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    intervals, counts, adds, set_dirs = zip(*commands)
    ticks, dirs = ref.expand_commands(0, 0, intervals, counts, adds, set_dirs, firsts)
    return np.array(ticks, dtype=np.int64), np.array(dirs, dtype=np.int64)


def check_windows(name: str, ticks: np.ndarray, dirs: np.ndarray, clocks: np.ndarray,
                  true_dirs: np.ndarray, max_error: float, eps: float) -> None:
    assert len(ticks) == len(clocks), f"{name}: {len(ticks)} steps sent, {len(clocks)} true"
    np.testing.assert_array_equal(dirs, true_dirs, err_msg=f"{name}: directions differ")
    if len(ticks):
        early = clocks - ticks.astype(np.float64)
        assert early.min() >= -eps, f"{name}: a step is {-early.min():.3f} ticks late"
        assert early.max() <= max_error + eps, f"{name}: a step is {early.max():.1f} ticks early"


def verify(settings: Settings, gcode: Path, data: bytes, summary: dict, *,
           generator: str = "kernel", codec: MessageCodec | None = None,
           eps: float = 1e-6) -> tuple[Stream, Plan, dict[str, np.ndarray]]:
    """Hold a batch output to independently planned and generated steps; returns the ticks."""
    stream = decode(data, codec)
    clock_freq = summary["clock_freq"]
    job = plan(settings, gcode)
    truth = true_steps(settings, job, clock_freq, generator)
    max_error = settings.mcu.max_stepper_error * clock_freq
    ticks_by_name = {}
    for oid, name in enumerate(NAMES):
        clocks, true_dirs = truth[name]
        ticks, dirs = replay(stream.commands.get(oid, []), clocks)
        check_windows(name, ticks, dirs, clocks, true_dirs, max_error, eps)
        ticks_by_name[name] = ticks
        row = summary["steppers"][name]
        assert row["oid"] == oid
        assert row["steps"] == len(ticks)
        assert row["queue_step"] == len(stream.commands.get(oid, []))
        assert row["set_next_step_dir"] == stream.dir_commands.get(oid, 0)
        sd = step_distance(settings, name)
        first = nearest_step(coordinate(settings, name, job.start), sd)
        final = nearest_step(coordinate(settings, name, job.end), sd)
        assert first + int(dirs.sum()) == final, f"{name} does not end where the toolhead does"
        assert row["position"] == final
    assert summary["moves"] == len(job.moves)
    assert summary["print_time_s"] == pytest.approx(job.end_time, abs=1e-6)
    assert summary["messages"] == len(stream.messages)
    assert summary["bytes"] == len(data)
    return stream, job, ticks_by_name


def run(settings: Settings, gcode: Path, tmp_path: Path, dictionary: Path | None = None,
        tag: str = "out") -> tuple[bytes, dict]:
    out = tmp_path / f"{tag}.bin"
    result = batch.run_batch(settings, gcode, out, dictionary)
    return out.read_bytes(), result.to_json()


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PRINTHOST_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "printhost", "batch", *map(str, args)],
                          cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------- tests

def test_cube_through_the_cli_matches_independent_steps(tmp_path):
    out, summary_file = tmp_path / "cube.bin", tmp_path / "cube.json"
    proc = run_cli(CONFIG, CUBE, "-o", out, "--summary", summary_file)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    summary = json.loads(summary_file.read_text())
    assert summary["lines"] == 10412
    assert summary["dictionary"] == "printhost simulated MCU"
    assert summary["clock_freq"] == 72_000_000
    data = out.read_bytes()
    _, job, ticks = verify(SHIPPED, CUBE, data, summary)
    # The print ends parked at X0 Y220 after a 10 mm lift above the 10 mm part.
    assert job.end[:3] == pytest.approx((0.0, 220.0, 20.0))
    assert summary["steppers"]["x"]["position"] == 0
    assert summary["steppers"]["y"]["position"] == 17600
    assert summary["steppers"]["z"]["position"] == 8000
    # PrusaSlicer estimates 16 min 31 s for this file (without heating).
    assert 900.0 < summary["print_time_s"] < 1200.0
    assert all(len(t) for t in ticks.values())


def test_known_geometry_gives_exact_steps_and_print_time(tmp_path):
    """G28 from a power-on position mid-bed, then 100 mm along X at F6000, against
    closed forms."""
    settings = settings_with(printer={"power_on_position": [117.5, 117.5, 10.0]})
    gcode = write(tmp_path, "G28\nG1 X100 F6000\n")
    data, summary = run(settings, gcode, tmp_path)
    printer = settings.printer
    ratio = 1.0 - printer.minimum_cruise_ratio
    x_home, y_home, z_home = (getattr(printer.axes, a) for a in "xyz")
    sx, sy, sz = printer.power_on_position

    def profile(distance, speed, accel, pseudo_accel):
        """(peak speed, duration) of a move from rest to rest, as Klipper plans it."""
        peak = math.sqrt(min(speed * speed, distance * accel, distance * pseudo_accel))
        return peak, 2.0 * peak / accel + (distance - peak * peak / accel) / peak

    a_xy = printer.max_accel
    z_accel = min(printer.max_accel, printer.max_z_accel)
    moves = [  # (stepper, from, to, speed, accel, pseudo accel)
        ("x", sx, x_home.position_endstop, x_home.homing_speed, a_xy, a_xy * ratio),
        ("y", sy, y_home.position_endstop, y_home.homing_speed, a_xy, a_xy * ratio),
        ("z", sz, z_home.position_endstop, min(z_home.homing_speed, printer.max_z_velocity),
         z_accel, min(a_xy * ratio, z_accel)),
        ("x", x_home.position_endstop, 100.0, 100.0, a_xy, a_xy * ratio),
    ]
    expected: dict[str, list[tuple[float, int]]] = defaultdict(list)
    t = batch.START_TIME_S
    for name, p0, p1, speed, accel, pseudo in moves:
        distance = abs(p1 - p0)
        peak, duration = profile(distance, speed, accel, pseudo)
        ramp = 0.5 * peak * peak / accel
        cruise = distance - 2.0 * ramp
        sd = step_distance(SHIPPED, name)
        sign = 1 if p1 > p0 else -1
        k0, k1 = nearest_step(p0, sd), nearest_step(p1, sd)
        for j in range(abs(k1 - k0)):
            # distance along the move at which the position crosses the next half step
            d = abs(k0 * sd + sign * (j + 0.5) * sd - p0)
            if d < ramp:
                dt = math.sqrt(2.0 * d / accel)
            elif d <= ramp + cruise:
                dt = peak / accel + (d - ramp) / peak
            else:
                rest = d - ramp - cruise
                dt = (peak / accel + cruise / peak
                      + (peak - math.sqrt(max(0.0, peak * peak - 2.0 * accel * rest))) / accel)
            expected[name].append((t + dt, sign))
        t += duration

    assert summary["print_time_s"] == pytest.approx(t, abs=2e-6)
    stream = decode(data)
    max_error = SHIPPED.mcu.max_stepper_error * summary["clock_freq"]
    for oid, name in enumerate(NAMES):
        times = np.array([s[0] for s in expected[name]])
        dirs = np.array([s[1] for s in expected[name]], dtype=np.int64)
        clocks = times * summary["clock_freq"]
        ticks, got_dirs = replay(stream.commands.get(oid, []), clocks)
        check_windows(name, ticks, got_dirs, clocks, dirs, max_error, OTHER_ROUTE_EPS)
    x_move = [d for _, d in expected["x"] if d > 0]
    assert len(x_move) == round(100.0 / step_distance(SHIPPED, "x")) == 8000
    assert summary["steppers"]["x"]["position"] == 8000
    assert summary["steppers"]["extruder"]["steps"] == 0


def test_dialect_with_clock_wrap_is_exact_and_deterministic(tmp_path):
    """Arcs, G20, M204, firmware retraction, a 70 s dwell (past the 32-bit wrap at 72 MHz), M84."""
    settings = settings_with(firmware_retraction={"retract_length": 0.8,
                                                  "unretract_extra_length": 0.1})
    gcode = write(tmp_path, DIALECT)
    first, summary = run(settings, gcode, tmp_path, tag="first")
    second, _ = run(settings, gcode, tmp_path, tag="second")
    assert first == second
    _, job, ticks = verify(settings, gcode, first, summary)
    # The dwell puts more than 2**32 ticks between two steps of every motor that moves
    # on both sides of it, so those intervals went out wrapped.
    gaps = {name: np.diff(t).max() for name, t in ticks.items() if len(t) > 1}
    assert gaps["x"] > U32 and gaps["extruder"] > U32
    # The retraction is undone in full: 0.8 + 0.1 extra on top of the extruded 6 mm.
    assert job.end[3] == pytest.approx(2.0 + 1.5 + 1.5 + 0.1 + 1.0)
    assert summary["print_time_s"] > 70.5


def test_cli_and_run_batch_write_the_same_bytes(tmp_path):
    gcode = write(tmp_path, ZIGZAG)
    data, _ = run(SHIPPED, gcode, tmp_path)
    out = tmp_path / "cli.bin"
    proc = run_cli(CONFIG, gcode, "-o", out)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert out.read_bytes() == data
    verify(SHIPPED, gcode, data, summary)


def test_corexy_motors_follow_x_plus_y_and_x_minus_y(tmp_path):
    settings = settings_with(printer={"kinematics": "corexy", **NEAR_HOME})
    gcode = write(tmp_path, ZIGZAG)
    data, summary = run(settings, gcode, tmp_path)
    _, job, _ = verify(settings, gcode, data, summary, generator="reference",
                       eps=OTHER_ROUTE_EPS)
    x, y = job.end[0], job.end[1]
    assert (x, y) == pytest.approx((40.0, 30.0))
    assert summary["steppers"]["x"]["position"] == nearest_step(x + y, step_distance(settings, "x"))
    assert summary["steppers"]["y"]["position"] == nearest_step(x - y, step_distance(settings, "y"))


def test_input_shaping_keeps_steps_exact_and_positions(tmp_path):
    plain = settings_with(printer=NEAR_HOME)
    shaped = settings_with(printer=NEAR_HOME,
                           input_shaper={"shaper_type_x": "mzv", "shaper_freq_x": 45.0,
                                         "shaper_type_y": "ei", "shaper_freq_y": 38.0})
    gcode = write(tmp_path, ZIGZAG)
    plain_data, plain_summary = run(plain, gcode, tmp_path, tag="plain")
    data, summary = run(shaped, gcode, tmp_path, tag="shaped")
    _, _, plain_ticks = verify(plain, gcode, plain_data, plain_summary)
    _, _, ticks = verify(shaped, gcode, data, summary, generator="reference",
                         eps=OTHER_ROUTE_EPS)
    for name in ("x", "y"):
        assert summary["steppers"][name]["position"] == plain_summary["steppers"][name]["position"]
        assert not np.array_equal(ticks[name], plain_ticks[name]), f"{name} was not shaped"
    for name in ("z", "extruder"):
        assert summary["steppers"][name] == plain_summary["steppers"][name]
    # Shaping changes when the motors step, not how long the planned motion takes.
    assert summary["print_time_s"] == plain_summary["print_time_s"]


def test_pressure_advance_moves_extruder_steps_not_its_end(tmp_path):
    plain = settings_with(printer=NEAR_HOME)
    advanced = settings_with(printer=NEAR_HOME,
                             extruder={"pressure_advance": 0.06,
                                       "pressure_advance_smooth_time": 0.03})
    gcode = write(tmp_path, ZIGZAG)
    _, plain_summary = run(plain, gcode, tmp_path, tag="plain")
    data, summary = run(advanced, gcode, tmp_path, tag="pa")
    _, job, _ = verify(advanced, gcode, data, summary, generator="reference",
                       eps=OTHER_ROUTE_EPS)
    ext, plain_ext = summary["steppers"]["extruder"], plain_summary["steppers"]["extruder"]
    assert ext["position"] == plain_ext["position"] == nearest_step(
        job.end[3], step_distance(advanced, "extruder"))
    # The advance pushes ahead while accelerating and gives back while braking.
    assert ext["steps"] > plain_ext["steps"]
    for name in ("x", "y", "z"):
        assert summary["steppers"][name] == plain_summary["steppers"][name]


@pytest.mark.parametrize("sections, gcode_text", [
    ({"input_shaper": {"shaper_freq_x": 45.0}}, "G28 X\n"),
    ({"extruder": {"pressure_advance": 0.05, "pressure_advance_smooth_time": 0.04}},
     "M83\nG1 E2 F300\n"),
], ids=["shaped-homing", "smoothed-extrusion"])
def test_motion_at_the_first_instant_keeps_its_leading_steps(tmp_path, sections, gcode_text):
    """The first move starts at the stream's start time; its shaped or smoothed position
    starts changing up to a shaper delay or half a smoothing window before that."""
    settings = settings_with(printer=NEAR_HOME, **sections)
    gcode = write(tmp_path, gcode_text)
    data, summary = run(settings, gcode, tmp_path)
    verify(settings, gcode, data, summary, generator="reference", eps=OTHER_ROUTE_EPS)


def test_dictionary_file_gives_the_same_stream(tmp_path):
    gcode = write(tmp_path, ZIGZAG)
    data, _ = run(SHIPPED, gcode, tmp_path)
    dictionary = tmp_path / "klipper.dict"
    dictionary.write_bytes(sim_dictionary_bytes())
    out, summary_file = tmp_path / "dict.bin", tmp_path / "dict.json"
    proc = run_cli(CONFIG, gcode, "-o", out, "--dictionary", dictionary,
                   "--summary", summary_file)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == data
    assert json.loads(summary_file.read_text())["dictionary"] == str(dictionary)


def test_another_firmware_build_numbers_and_clock_are_followed(tmp_path):
    """Different message ids and a 16 MHz clock: the stream follows the dictionary."""
    raw = sim_dictionary()
    ids = sorted(raw["commands"].values())
    raw["commands"] = {fmt: msgid for fmt, msgid in zip(raw["commands"], reversed(ids))}
    raw["config"]["CLOCK_FREQ"] = 16_000_000
    dictionary = tmp_path / "other.dict"
    dictionary.write_text(json.dumps(raw))
    gcode = write(tmp_path, ZIGZAG)
    default, _ = run(SHIPPED, gcode, tmp_path, tag="default")
    data, summary = run(SHIPPED, gcode, tmp_path, dictionary, tag="other")
    assert data != default
    assert summary["clock_freq"] == 16_000_000
    verify(SHIPPED, gcode, data, summary, codec=MessageCodec(DataDictionary(raw)))


def test_bad_line_fails_with_its_number(tmp_path):
    gcode = write(tmp_path, "G28\nG1 X10 F6000\nG1 X1,5\nG1 X20\n")
    out = tmp_path / "out.bin"
    proc = run_cli(CONFIG, gcode, "-o", out)
    assert proc.returncode == 2
    assert "line 3" in proc.stderr and "1,5" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    # Output is written as it is made, to a file renamed into place only at the end.
    assert not list(tmp_path.glob(".*partial"))


def test_refused_move_fails_with_its_line_number(tmp_path, capsys):
    gcode = write(tmp_path, "G28\nG1 X10 F6000\n\nG1 X500\n")
    out = tmp_path / "out.bin"
    assert cli.main(["batch", str(CONFIG), str(gcode), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "job.gcode: line 4" in err and "out of range" in err
    assert not out.exists()
    unhomed = write(tmp_path, "G1 X10 F6000\n", "unhomed.gcode")
    assert cli.main(["batch", str(CONFIG), str(unhomed), "-o", str(out)]) == 2
    assert "line 1: must home axis first" in capsys.readouterr().err


def test_missing_files_are_reported(tmp_path, capsys):
    gcode = write(tmp_path, "G28\n")
    out = tmp_path / "out.bin"
    missing = tmp_path / "nowhere.gcode"
    proc = run_cli(CONFIG, missing, "-o", out)
    assert proc.returncode == 2
    assert str(missing) in proc.stderr and "Traceback" not in proc.stderr
    assert cli.main(["batch", str(tmp_path / "none.toml"), str(gcode), "-o", str(out)]) == 2
    assert "none.toml" in capsys.readouterr().err
    assert cli.main(["batch", str(CONFIG), str(gcode), "-o", str(out),
                     "--dictionary", str(tmp_path / "none.dict")]) == 2
    assert "none.dict" in capsys.readouterr().err
    assert not out.exists()


def test_bad_dictionary_is_refused(tmp_path, capsys):
    gcode = write(tmp_path, "G28\n")
    out = tmp_path / "out.bin"
    garbage = tmp_path / "garbage.dict"
    garbage.write_bytes(b"\x00\x01not a dictionary")
    proc = run_cli(CONFIG, gcode, "-o", out, "--dictionary", garbage)
    assert proc.returncode == 2
    assert "data dictionary" in proc.stderr and "Traceback" not in proc.stderr
    # A well-formed dictionary of a build without steppers cannot take the stream.
    raw = sim_dictionary()
    raw["commands"] = {fmt: i for fmt, i in raw["commands"].items()
                       if not fmt.startswith(("queue_step", "config_stepper"))}
    stepless = tmp_path / "stepless.dict"
    stepless.write_text(json.dumps(raw))
    assert cli.main(["batch", str(CONFIG), str(gcode), "-o", str(out),
                     "--dictionary", str(stepless)]) == 2
    assert "config_stepper" in capsys.readouterr().err
    assert not out.exists()


def test_m112_stops_the_batch_with_the_line(tmp_path):
    from printhost.batch import BatchError, run_batch
    from printhost.config import parse_settings
    src = tmp_path / "estop.gcode"
    src.write_text("G28\nG1 X10 F3000\nM112\nG1 X50\n")
    with pytest.raises(BatchError, match="estop.gcode: line 3: emergency stop"):
        run_batch(parse_settings({}), src, tmp_path / "out.bin")


def long_program(moves: int = 1500) -> list[str]:
    """Short extruding moves over the bed, as a slicer writes them, many pieces long."""
    lines = ["G28", "G1 Z0.3 F600", "M83"]
    for i in range(moves):
        lines.append(f"G1 X{20 + (i * 7) % 150:.2f} Y{20 + (i * 11) % 130:.2f} E0.05 "
                     f"F{3000 + 600 * (i % 5)}")
    return lines


def test_a_file_read_in_small_pieces_writes_the_same_bytes(tmp_path, monkeypatch):
    # The file is parsed and planned piece by piece; where the pieces are cut must not
    # change a byte of the output.
    from printhost.control import gcode_bulk
    gcode = write(tmp_path, "\n".join(long_program()) + "\n")
    data, summary = run(SHIPPED, gcode, tmp_path)
    monkeypatch.setattr(gcode_bulk, "CHUNK_BYTES", 1024)
    assert sum(1 for _ in gcode_bulk.iter_chunks(gcode)) > 30
    small_data, small_summary = run(SHIPPED, gcode, tmp_path)
    assert small_data == data
    assert {k: v for k, v in small_summary.items() if k != "timings"} == \
        {k: v for k, v in summary.items() if k != "timings"}


@pytest.mark.parametrize("name", ["cube.gcode", "bench.gcode"])
def test_a_print_at_100_steps_per_mm_ends_where_the_file_ends(name, tmp_path):
    """At 100 steps/mm every slicer coordinate ending in 5 (X122.375) is a half-step
    point, and the 5 s chunks of a batch run end at move ends. The position at the end
    of a chunk was read off the last segment's polynomial and, once the next chunk
    arrived, off the next segment's exact start: on opposite sides of such a point,
    a step was lost or doubled for good (the cube ended 6 steps off in X)."""
    import dataclasses
    steppers = SHIPPED.steppers
    settings = dataclasses.replace(SHIPPED, steppers=dataclasses.replace(
        steppers, x=dataclasses.replace(steppers.x, rotation_distance=32.0),
        y=dataclasses.replace(steppers.y, rotation_distance=32.0)))
    _, summary = run(settings, DATA / name, tmp_path)
    # Both files end parked at X 0, Y 220 (the end G-code).
    assert summary["steppers"]["x"]["position"] == 0
    assert summary["steppers"]["y"]["position"] == 22000


def test_commands_the_kernel_does_not_port_stay_on_the_compiled_path(tmp_path, monkeypatch):
    # Firmware retraction, an arc and a stretch in inches late in the file: the
    # interpreter runs them at their place, and the output is the Python path's.
    from printhost.control import gcode_bulk
    monkeypatch.setattr(gcode_bulk, "CHUNK_BYTES", 1024)
    text = long_program(600)
    text[-20:-20] = ["G10 ; firmware retraction", "G11", "G90", "G2 X60 Y60 I2 J0",
                     "G20", "G1 X2.5 Y2.5", "G21"]
    gcode = write(tmp_path, "\n".join(text) + "\n")
    paths, data, summary = run_noting_paths(gcode, tmp_path, monkeypatch)
    assert paths == [True]
    assert python_path_bytes(gcode, tmp_path) == data
    assert summary["lines"] == len(text)


def run_noting_paths(gcode: Path, tmp_path: Path, monkeypatch) -> tuple[list[bool], bytes, dict]:
    """A batch run, and which paths it took (True: compiled) in order."""
    paths = []
    real_run = batch._run

    def spy(*args):
        paths.append(args[8])              # `compiled`
        return real_run(*args)
    monkeypatch.setattr(batch, "_run", spy)
    data, summary = run(SHIPPED, gcode, tmp_path)
    return paths, data, summary


def python_path_bytes(gcode: Path, tmp_path: Path) -> bytes:
    out = tmp_path / "python.bin"
    batch.run_batch(SHIPPED, gcode, out, compiled=False)
    return out.read_bytes()


def test_a_piece_left_to_the_python_path_late_in_the_file_restarts_the_run(tmp_path,
                                                                           monkeypatch):
    # Where the compiled planner and the reference would disagree (PlanStream.feed
    # returns None), found only in a later piece after output was already written for
    # the earlier ones: the batch starts again on the Python path, from a fresh output.
    from printhost.control import gcode_bulk
    from printhost.control.kernels import plan
    monkeypatch.setattr(gcode_bulk, "CHUNK_BYTES", 1024)
    text = long_program(600)
    gcode = write(tmp_path, "\n".join(text) + "\n")
    fed = []
    real_feed = plan.PlanStream.feed

    def feed(self, parsed, final=False):
        fed.append(parsed.first_line)
        return None if len(fed) == 12 else real_feed(self, parsed, final)
    monkeypatch.setattr(plan.PlanStream, "feed", feed)
    paths, data, summary = run_noting_paths(gcode, tmp_path, monkeypatch)
    assert len(fed) == 12 and paths == [True, False]
    assert python_path_bytes(gcode, tmp_path) == data
    assert summary["lines"] == len(text)
    assert not list(tmp_path.glob(".*partial"))


def test_a_bad_line_in_a_later_piece_is_named_by_its_line(tmp_path, monkeypatch):
    from printhost.control import gcode_bulk
    monkeypatch.setattr(gcode_bulk, "CHUNK_BYTES", 512)
    lines = long_program(400)
    lines.insert(301, "G1 X1,5")
    gcode = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(batch.BatchError, match=r"line 302: .*1,5"):
        batch.run_batch(SHIPPED, gcode, tmp_path / "out.bin")
    lines[301] = "G1 X900"
    gcode = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(batch.BatchError, match=r"line 302: "):
        batch.run_batch(SHIPPED, gcode, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()
