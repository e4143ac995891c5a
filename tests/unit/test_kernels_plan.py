"""The compiled batch planner must emit exactly what interpreter + toolhead + planner emit.

The reference is the Python path of `printhost batch`: every command through
`GCodeInterpreter.execute` with a recording executor, then a final flush. Moves are
compared bit for bit (as int64 views, so even -0.0 against 0.0 counts), and bad
programs must fail on the same line with the same message, after the same moves.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from printhost.config import (AxesSettings, AxisSettings, HeaterSettings, HeatersSettings,
                              Settings)
from printhost.control import planner as planner_module
from printhost.control.clock import ManualClock
from printhost.control.gcode import GCodeCommand, GCodeError
from printhost.control.gcode_bulk import FALLBACK, BulkGCode, parse_bytes, parse_file
from printhost.control.interpreter import CommandError, GCodeInterpreter, PartFan
from printhost.control.kernels import plan, plan_lookahead
from printhost.control.kernels.plan import plan_file
from printhost.control.motion import PlannedMove, QueueClockExecutor, Vec4
from printhost.control.toolhead import Toolhead
from printhost.sim.heaters import build_simulated_heaters

DATA = Path(__file__).resolve().parents[1] / "data"


# ---------------------------------------------------------------- the reference



def as_array(moves: list[PlannedMove]) -> np.ndarray:
    rows = [(*m.start, *m.end, m.distance, m.start_v, m.cruise_v, m.end_v, m.accel,
             m.accel_t, m.cruise_t, m.decel_t) for m in moves]
    return np.array(rows, dtype=np.float64).reshape(-1, plan.N_MOVE_COLUMNS)


def python_path(parsed: BulkGCode, settings: Settings, start: Vec4):
    """(moves, (lineno, message) or None, final commanded position) as batch runs it."""
    executor = QueueClockExecutor(0.0, start, record=True)
    toolhead = Toolhead.reference(settings.printer, executor, settings.extruder)
    heaters, _ = build_simulated_heaters(settings, ManualClock())
    interp = GCodeInterpreter(toolhead, heaters, PartFan(), executor.now, settings.gcode,
                              settings.firmware_retraction)
    error = None
    try:
        for cmd in parsed.commands():
            try:
                interp.execute(cmd)
            except CommandError as exc:
                error = (cmd.lineno, str(exc))
                break
        else:
            toolhead.flush()
    except GCodeError as exc:
        error = (exc.lineno, exc.message)
    return as_array(executor.moves), error, toolhead.commanded_position


def assert_same(parsed: BulkGCode, settings: Settings, start: Vec4):
    """Run both paths; the kernel's moves, error and end position must equal the reference's."""
    want_moves, want_error, want_position = python_path(parsed, settings, start)
    got = plan_file(parsed, settings, start)
    assert got is not None, "the kernel refused a file inside its subset"
    assert got.moves.shape == want_moves.shape
    differ = np.flatnonzero((got.moves.view(np.int64) != want_moves.view(np.int64)).any(axis=1))
    if differ.size:
        k = differ[0]
        pytest.fail(f"{differ.size} moves differ, first at index {k}: "
                    f"{got.moves[k].tolist()} != {want_moves[k].tolist()}")
    got_error = None if got.error is None else (got.error.lineno, got.error.message)
    assert got_error == want_error
    if got.error is None:
        assert got.position == want_position
    return got, want_error


# ---------------------------------------------------------------- configurations

START = (117.5, 117.5, 10.0, 0.0)


def corexy_settings() -> Settings:
    """A CoreXY machine whose limits differ from the defaults in every planner input."""
    base = Settings()
    axes = AxesSettings(
        x=AxisSettings(position_min=-5.0, position_max=300.0, position_endstop=300.0,
                       homing_speed=80.0),
        y=AxisSettings(position_min=0.0, position_max=225.0, position_endstop=0.0,
                       homing_speed=60.0),
        z=AxisSettings(position_min=-2.0, position_max=180.0, position_endstop=0.5,
                       homing_speed=8.0))
    printer = replace(base.printer, kinematics="corexy", max_velocity=150.0,
                      max_accel=10000.0, max_z_velocity=5.0, max_z_accel=50.0,
                      square_corner_velocity=8.0, minimum_cruise_ratio=0.0,
                      max_extrude_only_velocity=80.0, max_extrude_only_accel=3000.0, axes=axes)
    extruder = replace(base.extruder, nozzle_diameter=0.6, filament_diameter=2.85,
                       max_extrude_cross_section=1.0, max_extrude_only_distance=20.0,
                       instantaneous_corner_velocity=0.5)
    heaters = HeatersSettings(extruder=HeaterSettings(max_temp=250.0),
                              heater_bed=HeaterSettings(max_temp=90.0))
    return replace(base, printer=printer, extruder=extruder, heaters=heaters)


def sharp_settings() -> Settings:
    """Edge values: every corner and every extrusion change forces a stop, long cruise ratio."""
    base = Settings()
    printer = replace(base.printer, max_velocity=500.0, max_accel=20000.0,
                      max_z_velocity=100.0, max_z_accel=5000.0, square_corner_velocity=0.0,
                      minimum_cruise_ratio=0.9)
    extruder = replace(base.extruder, instantaneous_corner_velocity=0.0)
    return replace(base, printer=printer, extruder=extruder)


CONFIGS = {
    "default": (Settings, START),
    "corexy": (corexy_settings, (150.0, 100.0, 20.0, 0.0)),
    "sharp": (sharp_settings, START),
}


# ---------------------------------------------------------------- random programs

class ProgramWriter:
    """Random G-code that mostly stays valid, tracking roughly where the machine is.

    The writer mirrors the interpreter's modes (G90/G91, M82/M83, G92 offsets) well
    enough to aim every move inside the travel range with a margin, so programs run
    for their whole length and exercise the planner rather than the range check.
    """

    def __init__(self, rng: random.Random, settings: Settings, start: Vec4) -> None:
        self.rng = rng
        self.s = settings
        self.lines: list[str] = []
        self.pos = list(start[:3])            # machine position
        self.offset = [0.0, 0.0, 0.0]         # machine - G-code
        self.e = 0.0                          # G-code E
        self.absolute = True
        self.e_absolute = True
        self.homed: set[int] = set()
        axes = settings.printer.axes
        self.low = [a.position_min + 2.0 for a in (axes.x, axes.y, axes.z)]
        self.high = [a.position_max - 2.0 for a in (axes.x, axes.y, axes.z)]
        self.high[2] = min(self.high[2], self.low[2] + 40.0)
        ex = settings.extruder
        area = math.pi * (ex.filament_diameter / 2) ** 2
        # Filament per mm of travel for a 0.4 x 0.2 mm line, scaled to this filament.
        self.ratio = 0.08 / area

    def emit(self, line: str) -> None:
        self.lines.append(line)

    def num(self, v: float, digits: int = 3) -> str:
        return f"{v:.{digits}f}"

    def move(self, target: list[float | None], de: float | None = None, f: float | None = None,
             cmd: str = "G1", digits: int = 3, e_digits: int = 5) -> None:
        parts = [cmd]
        for i, letter in enumerate("XYZ"):
            t = target[i]
            if t is None:
                continue
            if self.absolute:
                text = self.num(t - self.offset[i], digits)
                self.pos[i] = float(text) + self.offset[i]
            else:
                text = self.num(t - self.pos[i], digits)
                self.pos[i] += float(text)
            parts.append(letter + text)
        if de is not None:
            if self.absolute and self.e_absolute:
                text = self.num(self.e + de, e_digits)
                self.e = float(text)
            else:
                text = self.num(de, e_digits)
                self.e += float(text)
            parts.append("E" + text)
        if f is not None:
            parts.append(f"F{f:.0f}" if self.rng.random() < 0.8 else f"F{f:.2f}")
        self.emit(" ".join(parts))

    def point(self, axis: int) -> float:
        return self.rng.uniform(self.low[axis], self.high[axis])

    def clamp(self, v: float, axis: int) -> float:
        return min(max(v, self.low[axis]), self.high[axis])

    # -------------------------------------------------------- blocks
    def home(self) -> None:
        r = self.rng.random()
        if r < 0.5:
            self.emit(self.rng.choice(["G28", "G28 X Y Z", "G28 E"]))
            axes: tuple[int, ...] = (0, 1, 2)
        elif r < 0.8 or len(self.homed) < 3:
            self.emit("G28 X Y")
            self.emit(self.rng.choice(["G28 Z", "G28 Z0"]))
            axes = (0, 1, 2)
        else:   # re-homing some axes of a homed machine
            axes = tuple(sorted(self.rng.sample((0, 1, 2), self.rng.randint(1, 3))))
            self.emit("G28 " + " ".join("XYZ"[i] for i in axes))
        self.homed.update(axes)
        end = self.s.printer.axes
        for i in axes:
            self.pos[i] = (end.x, end.y, end.z)[i].position_endstop
            self.offset[i] = 0.0
        # Homing leaves the machine at an endstop: step inside the margin.
        self.move([self.clamp(self.pos[0], 0), self.clamp(self.pos[1], 1),
                   self.clamp(self.pos[2], 2)], f=3000.0, cmd="G0")

    def travel(self) -> None:
        z = self.point(2) if self.rng.random() < 0.2 else None
        self.move([self.point(0), self.point(1), z], f=self.rng.choice([None, 6000.0, 12000.0]),
                  cmd=self.rng.choice(["G0", "G1"]))

    def extrude_path(self) -> None:
        f = self.rng.choice([None, 900.0, 1800.0, 2700.0, 4800.0])
        x, y = self.pos[0], self.pos[1]
        heading = self.rng.uniform(0, 2 * math.pi)
        turn = self.rng.choice([0.0, 0.05, 0.3, math.pi / 2, 2.5])
        for _ in range(self.rng.randint(3, 40)):
            step = self.rng.choice([0.05, 0.3, 1.0, 5.0, 20.0]) * self.rng.uniform(0.5, 1.5)
            heading += turn * self.rng.choice([-1, 1]) if self.rng.random() < 0.7 else 0.0
            x = self.clamp(x + step * math.cos(heading), 0)
            y = self.clamp(y + step * math.sin(heading), 1)
            d = math.hypot(x - self.pos[0], y - self.pos[1])
            self.move([x, y, None], de=d * self.ratio * self.rng.uniform(0.8, 1.2), f=f)
            f = None

    def tiny(self) -> None:
        x, y = self.pos[0], self.pos[1]
        for _ in range(self.rng.randint(2, 12)):
            step = self.rng.choice([1e-4, 3e-3, 1e-2, 2e-10])
            x = self.clamp(x + self.rng.choice([-1, 1]) * step, 0)
            y = self.clamp(y + self.rng.uniform(-1, 1) * step, 1)
            de = math.hypot(x - self.pos[0], y - self.pos[1]) * self.ratio
            self.move([x, y, None], de=de if self.rng.random() < 0.7 else None, digits=10,
                      e_digits=10)

    def collinear(self) -> None:
        """A long straight line in tiny pieces: the queue outgrows max_queue_moves."""
        x0, y0 = self.pos[0], self.pos[1]
        x1, y1 = self.point(0), self.point(1)
        n = self.rng.randint(300, 600)
        f = self.rng.choice([12000.0, 18000.0])
        extrude = self.rng.random() < 0.5
        for k in range(1, n + 1):
            x = x0 + (x1 - x0) * k / n
            y = y0 + (y1 - y0) * k / n
            d = math.hypot(x - self.pos[0], y - self.pos[1])
            self.move([x, y, None], de=d * self.ratio if extrude else None, f=f, digits=5)
            f = None

    def reversal(self) -> None:
        a = (self.pos[0], self.pos[1])
        b = (self.clamp(a[0] + self.rng.uniform(-3, 3), 0),
             self.clamp(a[1] + self.rng.uniform(-3, 3), 1))
        extrude = self.rng.random() < 0.6
        for k in range(self.rng.randint(2, 8)):
            t = b if k % 2 == 0 else a
            d = math.hypot(t[0] - self.pos[0], t[1] - self.pos[1])
            self.move([t[0], t[1], None], de=d * self.ratio if extrude else None)

    def retract(self) -> None:
        length = self.rng.choice([0.5, 0.8, 2.0, 4.5])
        self.move([None, None, None], de=-length, f=self.rng.choice([1800.0, 2400.0, 3600.0]))
        if self.rng.random() < 0.5:
            self.travel()
        if self.rng.random() < 0.3:   # a wipe: retracting while moving
            self.move([self.clamp(self.pos[0] + 1.5, 0), None, None], de=-0.2)
        self.move([None, None, None], de=length, f=self.rng.choice([None, 1800.0]))

    def z_hop(self) -> None:
        hop = self.rng.choice([0.2, 0.4, 1.0])
        z = self.pos[2]
        if self.rng.random() < 0.5:
            self.move([None, None, self.clamp(z + hop, 2)], f=self.rng.choice([None, 600.0]))
            self.travel()
            self.move([None, None, z])
        else:   # combined XY+Z moves
            self.move([self.clamp(self.pos[0] + 2, 0), None, self.clamp(z + hop, 2)], f=1200.0)
            self.move([self.clamp(self.pos[0] - 2, 0), None, z], de=0.05)

    def set_position(self) -> None:
        r = self.rng.random()
        if r < 0.5:
            self.emit("G92 E0")
            self.e = 0.0
        elif r < 0.8:
            parts = ["G92"]
            for i in self.rng.sample((0, 1, 2), self.rng.randint(1, 3)):
                g = self.pos[i] - self.rng.uniform(-20, 20)
                text = self.num(g)
                self.offset[i] = self.pos[i] - float(text)
                parts.append("XYZ"[i] + text)
            if self.rng.random() < 0.3:
                self.emit(" ".join(parts + ["E5"]))
                self.e = 5.0
            else:
                self.emit(" ".join(parts))
        else:
            self.emit("G92")       # every axis: the current position is now zero
            self.offset = list(self.pos)
            self.e = 0.0

    def modes(self) -> None:
        r = self.rng.random()
        if r < 0.3:
            self.emit("G91")
            self.absolute = False
        elif r < 0.6:
            self.emit("G90")
            self.absolute = True
        elif r < 0.8:
            self.emit("M83")
            self.e_absolute = False
        else:
            self.emit("M82")
            self.e_absolute = True

    def settings_change(self) -> None:
        r = self.rng.random()
        if r < 0.3:
            self.emit(f"M204 S{self.rng.choice([500, 1500, 2500, 5000, 40000])}")
        elif r < 0.45:
            self.emit(f"M204 P{self.rng.choice([800, 3000])} T{self.rng.choice([600, 4000])}")
        elif r < 0.5:
            self.emit("M204 P1000")            # ignored: needs T too
        elif r < 0.75:
            self.emit(f"M220 S{self.rng.choice([50, 80, 100, 150, 200])}")
        else:
            self.emit(f"M221 S{self.rng.choice([90, 95, 100, 105])}")

    def misc(self) -> None:
        self.emit(self.rng.choice([
            "G4 P150", "G4 S0.25", "G4", "G4 S0", "G4 P0", "M400", "M104 S200", "M109 S205",
            "M140 S60", "M190 S60", "M104 R150", "M106 S128", "M106", "M107", "M114",
            "M73 P10 R5", "T0", "; a comment", "", "G17", "G21", "M117 hello *world*",
            "EXCLUDE_OBJECT_START NAME=part_1", "M201 X1000", "N7 G1 F3000*74",
            "G1 F1200.0000000000000000000000001",   # left to parse_line, then patched in
        ]))

    def lent(self) -> None:
        """Commands the kernel lends to the interpreter: arcs, firmware retraction,
        a stretch in inches, the power supply."""
        r = self.rng.random()
        if not self.absolute:
            self.emit("G90")
            self.absolute = True
        if r < 0.4:
            radius = self.rng.choice([0.5, 1.5])
            sign = 1.0 if self.pos[0] + 2 * radius <= self.high[0] else -1.0
            x = self.pos[0] + sign * 2 * radius
            parts = [self.rng.choice(["G2", "G3"]), "X" + self.num(x - self.offset[0]),
                     "I" + self.num(sign * radius), "J0"]
            if not self.e_absolute and self.rng.random() < 0.6:
                parts.append("E" + self.num(math.pi * radius * self.ratio, 5))
            if self.rng.random() < 0.5:
                parts.append(f"F{self.rng.choice([1200, 3000])}")
            self.emit(" ".join(parts))
            self.pos[0] = float(self.num(x - self.offset[0])) + self.offset[0]
        elif r < 0.7:
            self.emit("G10")
            if self.rng.random() < 0.5:
                self.emit(self.rng.choice(["G10", "G11"]))   # a second one does nothing
            self.travel()
            self.emit("G11")
        elif r < 0.9:
            self.emit("G20")
            for _ in range(self.rng.randint(1, 4)):
                parts = ["G1"]
                for i in (0, 1):
                    text = f"{(self.point(i) - self.offset[i]) / 25.4:.4f}"
                    self.pos[i] = float(text) * 25.4 + self.offset[i]
                    parts.append("XY"[i] + text)
                if self.rng.random() < 0.3:
                    parts.append("F" + self.rng.choice(["60", "236.22"]))
                self.emit(" ".join(parts))
            self.emit("G21")
        else:
            self.emit(self.rng.choice(["M80", "M81", "G17", "G21"]))

    def motors_off(self) -> None:
        self.emit(self.rng.choice(["M84", "M18", "M84 X Y E"]))
        self.homed.clear()
        self.home()

    def program(self, blocks: int) -> str:
        if self.rng.random() < 0.3:   # extruding needs no homing
            self.emit("M83")
            self.emit("G1 E2 F300")
            self.emit("M82")
        self.emit("G90")
        self.emit("M82")
        self.home()
        choices = [(self.travel, 10), (self.extrude_path, 25), (self.tiny, 5),
                   (self.collinear, 1), (self.reversal, 5), (self.retract, 8), (self.z_hop, 5),
                   (self.set_position, 6), (self.modes, 6), (self.settings_change, 5),
                   (self.misc, 10), (self.motors_off, 1), (self.home, 1), (self.lent, 3)]
        funcs = [f for f, _ in choices]
        weights = [w for _, w in choices]
        for _ in range(blocks):
            self.rng.choices(funcs, weights)[0]()
        return "\n".join(self.lines) + "\n"


def random_program(seed: int, settings: Settings, start: Vec4, blocks: int = 120) -> str:
    return ProgramWriter(random.Random(seed), settings, start).program(blocks)


# Lines that make any program fail (given the state before them), and whether the
# failure is the parser's (GCodeError) rather than the command's.
BAD_SNIPPETS = [
    (["G90", "G1 X{over}"], False),              # out of range (or X not homed)
    (["G90", "G1 Z{under}"], False),
    (["M84", "G1 X{inside} Y{inside}"], False),  # must home first
    (["G1 X20 F0"], False),
    (["G1 Y20 F-100"], False),
    (["M204 S0"], False),
    (["M204 P-5 T100"], False),
    (["M204 P1000 T0"], False),
    (["M220 S0"], False),
    (["M221 S5000"], False),
    (["G4 P-10"], False),
    (["G4 S-0.5"], False),
    (["M106 S300"], False),
    (["M104 S1500"], False),
    (["M140 S-5"], False),
    (["M190 S999"], False),
    (["M83", "G1 E1000 F300"], False),           # extrude-only move too long
    (["M83", "G91", "G1 X0.5 E40"], False),      # over-extrusion (or out of range)
    (["G1 X1.2.3"], True),                       # not a number
    (["G1 X1 X2"], True),                        # duplicate parameter
]


def bad_program(seed: int, settings: Settings, start: Vec4) -> str:
    rng = random.Random(10_000 + seed)
    lines = random_program(seed, settings, start, blocks=60).splitlines()
    snippet, _ = BAD_SNIPPETS[seed % len(BAD_SNIPPETS)]
    axes = settings.printer.axes
    values = {"over": axes.x.position_max + 50.0, "under": axes.z.position_min - 50.0,
              "inside": (axes.x.position_min + axes.x.position_max) / 2 + 0.123}
    at = rng.randint(len(lines) // 3, len(lines))
    lines[at:at] = [line.format(**values) for line in snippet]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the tests

@pytest.mark.parametrize("name", ["cube.gcode", "bench.gcode"])
def test_sliced_files_match_the_python_path(name):
    parsed = parse_file(DATA / name)
    got, error = assert_same(parsed, Settings(), START)
    assert error is None
    assert len(got) > 5000
    assert np.all(got.moves[:, plan.DISTANCE] > 0.0)     # neither file dwells


def test_sliced_file_on_a_corexy_printer_with_other_limits():
    settings, start = corexy_settings(), (150.0, 100.0, 20.0, 0.0)
    got, error = assert_same(parse_file(DATA / "cube.gcode"), settings, start)
    assert error is None and len(got) > 5000


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("seed", range(10))
def test_random_programs_match(config, seed):
    make, start = CONFIGS[config]
    settings = make()
    text = random_program(seed, settings, start)
    got, error = assert_same(parse_bytes(text.encode()), settings, start)
    assert error is None, f"the generator wrote a failing program: {error}"
    assert len(got) > 100


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("seed", range(len(BAD_SNIPPETS)))
def test_bad_programs_fail_on_the_same_line_with_the_same_message(config, seed):
    make, start = CONFIGS[config]
    settings = make()
    parsed = parse_bytes(bad_program(seed, settings, start).encode())
    got, error = assert_same(parsed, settings, start)
    assert error is not None, "the injected line did not fail"
    if BAD_SNIPPETS[seed][1]:
        assert isinstance(got.error.parse_error, GCodeError)
        assert got.error.parse_error.lineno == got.error.lineno
    else:
        assert got.error.parse_error is None


def test_unhomed_move_at_the_start():
    settings = Settings()
    parsed = parse_bytes(b"G1 E1 F300\nG1 X10\n")
    got, error = assert_same(parsed, settings, START)
    assert error == (2, "must home axis first: X")
    # The extrude-only move was accepted but is still queued when the error stops the
    # file: the Python path raises before any flush, so neither path emits it.
    assert len(got) == 0
    assert got.position == (117.5, 117.5, 10.0, 1.0)


def test_queue_overflow_forces_early_emission(monkeypatch):
    """A long line of tiny collinear pieces has no certain junction for hundreds of
    moves, so the reference emits early and pins the queue head; the kernel must too."""
    calls = []
    original = planner_module.LookaheadPlanner._pin_head

    def counting(self, start_v2):
        calls.append(start_v2)
        return original(self, start_v2)

    monkeypatch.setattr(planner_module.LookaheadPlanner, "_pin_head", counting)
    lines = ["G28", "G1 X10 Y10 F18000"]
    lines += [f"G1 X{10 + 0.02 * k:.2f} Y10" for k in range(1, 2000)]
    lines += ["G1 X100 Y100"]
    got, error = assert_same(parse_bytes("\n".join(lines).encode()), Settings(), START)
    assert error is None
    assert len(calls) >= 5


def test_lazy_emission_points_matter():
    """Flushing (M400) in the middle of a corner sequence changes velocities; the
    kernel must flush exactly where the reference does."""
    body = ["G28", "G1 X10 Y10 F6000", "G1 X20 Y10", "G1 X20 Y20", "G1 X30 Y20"]
    plain, _ = assert_same(parse_bytes("\n".join(body).encode()), Settings(), START)
    flushed_text = "\n".join(body[:3] + ["M400"] + body[3:])
    flushed, _ = assert_same(parse_bytes(flushed_text.encode()), Settings(), START)
    assert plain.moves.shape == flushed.moves.shape
    assert not np.array_equal(plain.moves, flushed.moves)


def test_fallback_line_with_a_known_command_is_used():
    text = "G28\nG1 X20.0000000000000000000000001 Y30 F3000\nG1 X40\n"
    parsed = parse_bytes(text.encode())
    assert parsed.code[1] == FALLBACK
    got, error = assert_same(parsed, Settings(), START)
    assert error is None
    assert np.isnan(parsed.params[1]).all()      # patched into a copy, not into `parsed`
    assert got.moves[3, plan.END_X] == 20.0 and got.moves[3, plan.END_Y] == 30.0


@pytest.mark.parametrize("line", [
    "G2 X10 Y10 I5 J0", "G3 X10 Y10 R5", "G2 X15 Y5 I2.5 J0 E2 F1200", "G10", "G11",
    "G10\nG1 X7\nG11", "G10\nG10\nG11\nG11", "G20\nG1 X1 Y1\nG92 X0\nG1 X0.5 F100\nG21\nG1 X3",
    "G20\nG2 X1 Y0.2 I0.1 J0", "G91\nG2 X1 I1 J0", "G18", "M141 S40\nM191 S40", "M80\nM81",
    "G2 X500 Y5 R300"])
def test_commands_the_kernel_does_not_port_run_at_their_place(line):
    """The interpreter runs them at their line, its toolhead's moves queued in the
    kernel's lookahead: the moves (an arc blended into the moves around it), errors
    and end state are the Python path's, and the file stays on the compiled path."""
    parsed = parse_bytes(f"G28\nG1 X5 Y5 F3000\nG1 X20 E1\n{line}\nG1 X20 Y30 E2\nG1 X40\n"
                         .encode())
    assert_same(parsed, Settings(), START)


def test_an_arc_blends_with_the_moves_around_it():
    parsed = parse_bytes(b"G28\nG1 X5 Y5 F3000\nG1 X20 Y5\nG2 X30 Y5 I5 J0\nG1 X40 Y5\n")
    got, error = assert_same(parsed, Settings(), START)
    assert error is None
    arc = np.flatnonzero(got.lineno == 4)
    assert len(arc) > 3
    # No stop on the way in or out of the arc: its first and last segments keep speed.
    assert got.moves[arc[0], plan.START_V] > 0.0 and got.moves[arc[-1], plan.END_V] > 0.0


def test_m112_stops_the_file_at_its_line():
    parsed = parse_bytes(b"G28\nG1 X5 F3000\nM112\nG1 X20\n")
    got = plan_file(parsed, Settings(), START)
    assert got is not None and got.error is not None
    assert (got.error.lineno, got.error.message) == (3, "emergency stop (M112)")


@pytest.mark.parametrize("line", ["G1 X10 A5", "G1 X1O0", "G1 X10 B1.00000000000000000000001",
                                  "M106 S100 A1", "G4 P100 Q1", "M204 S1000 K2", "G28 W",
                                  "G28 X W", "G92 E0 W1", "M109 S0 W"])
def test_parameter_letters_without_a_column(line):
    """parse_line decides these lines. Where it refuses one, the kernel reports the
    same error; where it accepts a known command with such a letter, the kernel runs
    it as the interpreter does, which ignores letters a command does not read."""
    parsed = parse_bytes(f"G28\nG1 X5 F3000\n{line}\nG1 X20\n".encode())
    assert parsed.code[2] == FALLBACK
    got, error = assert_same(parsed, Settings(), START)
    if isinstance(parsed.fallback[2], GCodeCommand):
        assert error is None and len(got.moves)
    else:
        assert error is not None and error[0] == 3


def test_prusaslicer_start_gcode_is_planned_by_the_kernel():
    """PrusaSlicer's start G-code for its printers (`G28 W`, `G29`, the M201-M205
    limits, `M900` linear advance): the commands the interpreter does not know are
    skipped and `G28 W` homes, so such a file no longer falls back to the Python path."""
    text = ("M201 X1000 Y1000 Z200 E5000\nM203 X200 Y200 Z12 E120\nM204 P1250 R1250 T1250\n"
            "M205 X8.00 Y8.00 Z0.40 E4.50\nM205 S0 T0\nM107\nM862.3 P \"MK3S\"\n"
            "G90\nM83\nM104 S215\nM140 S60\nM190 S60\nM109 S215\nG28 W\nG80\nG29\n"
            "M900 K0.05\nG1 Z0.2 F720\nG1 Y3 F1000\nG1 X60 E9 F1000\nG1 X100 E6\n"
            "G92 E0\nM221 S95\nG21\nG1 X120 Y20 E1.2 F1500\n")
    parsed = parse_bytes(text.encode())
    got, error = assert_same(parsed, Settings(), START)
    assert error is None
    assert got.homed_axes == "xyz" and len(got.moves) >= 6


def test_lines_after_a_parse_error_do_not_matter():
    """The Python path stops at the unparsable line, so an arc after it is never run."""
    parsed = parse_bytes(b"G28\nG1 X5 F3000\nG1 X1.2.3\nG2 X10 Y10 I5 J0\n")
    got, error = assert_same(parsed, Settings(), START)
    assert error is not None and error[0] == 3
    assert isinstance(got.error.parse_error, GCodeError)


def test_dwell_rows_and_line_numbers():
    text = "G28\nG1 X10 Y10 F6000\nG4 P250\nG1 X20\nM400\nG4 S0\nG1 Y20\n"
    got, _ = assert_same(parse_bytes(text.encode()), Settings(), START)
    dwell = got.moves[:, plan.DISTANCE] == 0.0
    assert got.lineno[dwell].tolist() == [3]
    assert got.moves[dwell, plan.CRUISE_T].tolist() == [0.25]
    # Homing moves come from line 1, each move from the line that queued it.
    assert got.lineno.tolist() == [1, 1, 1, 2, 3, 4, 7]


def test_planned_moves_equal_the_reference_objects():
    parsed = parse_file(DATA / "cube.gcode")
    executor = QueueClockExecutor(0.0, START, record=True)
    toolhead = Toolhead.reference(Settings().printer, executor, Settings().extruder)
    heaters, _ = build_simulated_heaters(Settings(), ManualClock())
    interp = GCodeInterpreter(toolhead, heaters, PartFan(), executor.now)
    for cmd in parsed.commands():
        interp.execute(cmd)
    toolhead.flush()
    got = plan_file(parsed, Settings(), START)
    assert got.planned_moves() == executor.moves


def test_start_position_without_e():
    parsed = parse_file(DATA / "cube.gcode")
    a = plan_file(parsed, Settings(), START[:3])
    b = plan_file(parsed, Settings(), START)
    assert np.array_equal(a.moves.view(np.int64), b.moves.view(np.int64))
    with pytest.raises(ValueError):
        plan_file(parsed, Settings(), (1.0, 2.0))


def test_square_is_libm_pow_like_python():
    """`x ** 2` in Python is libm pow, which for some x differs from x * x; the
    extruder corner limit uses it, so the kernel must not square by multiplying."""
    rng = np.random.default_rng(7)
    xs = (1.0 / rng.uniform(1e-6, 1.0, 200_000)).tolist()
    differ = [x for x in xs if x ** 2 != x * x]
    assert differ, "no value where pow and multiplication differ; widen the search"
    for x in differ[:200]:
        assert plan_lookahead.square(x, 2.0) == x ** 2


def test_a_refusal_the_reference_does_not_confirm_is_left_to_the_python_path(monkeypatch):
    """If replaying the failing line does not fail, the two implementations disagree;
    the caller must then get None (run the reference), never a made-up error."""
    parsed = parse_bytes(b"G1 X10\n")
    assert plan_file(parsed, Settings(), START).error.message == "must home axis first: X"
    monkeypatch.setattr(plan, "_replay_error", lambda *args: None)
    assert plan_file(parsed, Settings(), START) is None


# ---------------------------------------------------------------- a file in pieces

def plan_in_pieces(path: Path, settings: Settings, start: Vec4, chunk_bytes: int):
    """PlanStream over iter_chunks: all moves, their lines, the last result, pieces."""
    from printhost.control.gcode_bulk import iter_chunks
    stream = plan.PlanStream(settings, start)
    moves, lines, last, pieces = [], [], None, 0
    for piece in iter_chunks(path, chunk_bytes):
        pieces += 1
        last = stream.feed(piece)
        assert last is not None
        moves.append(last.moves)
        lines.append(last.lineno)
        if last.error is not None:
            return np.concatenate(moves), np.concatenate(lines), last, pieces
    last = stream.finish()
    moves.append(last.moves)
    lines.append(last.lineno)
    return np.concatenate(moves), np.concatenate(lines), last, pieces


@pytest.mark.parametrize("chunk_bytes", [997, 65536])
def test_a_file_planned_in_pieces_gives_the_moves_of_the_whole(chunk_bytes):
    # The interpreter, toolhead and lookahead state carry over between pieces, so
    # cutting a file anywhere between lines changes no bit of any move.
    whole = plan_file(parse_file(DATA / "cube.gcode"), Settings(), START)
    moves, lines, last, pieces = plan_in_pieces(DATA / "cube.gcode", Settings(), START,
                                                chunk_bytes)
    assert pieces > 3
    assert moves.tobytes() == whole.moves.tobytes()
    assert np.array_equal(lines, whole.lineno)
    assert last.position == whole.position and last.homed_axes == whole.homed_axes


@pytest.mark.parametrize("seed", range(len(BAD_SNIPPETS)))
def test_an_error_in_a_later_piece_names_the_files_line(tmp_path, seed):
    settings, start = Settings(), START
    path = tmp_path / "bad.gcode"
    path.write_bytes(bad_program(seed, settings, start).encode())
    whole = plan_file(parse_file(path), settings, start)
    moves, lines, last, pieces = plan_in_pieces(path, settings, start, 211)
    assert pieces > 3 and whole.error is not None
    assert last.error.lineno == whole.error.lineno
    assert last.error.message == whole.error.message
    assert moves.tobytes() == whole.moves.tobytes()
    with pytest.raises(RuntimeError, match="stopped at an error"):
        plan.PlanStream.finish(_stopped_stream(path, settings, start))


def _stopped_stream(path: Path, settings: Settings, start: Vec4) -> plan.PlanStream:
    stream = plan.PlanStream(settings, start)
    stream.feed(parse_file(path))
    assert stream.failed
    return stream
