"""One planner for everything: the toolhead's calls and a print job's file both run on
the compiled planner, which must plan exactly as the Python reference does."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest

from printhost.config import Settings
from printhost.control.clock import ManualClock
from printhost.control.gcode_bulk import parse_file
from printhost.control.job import JobState
from printhost.control.interpreter import GCodeInterpreter, PartFan
from printhost.control.jobfeed import JobFeed
from printhost.control.kernels.lookahead import CompiledPlanner, planned_moves
from printhost.control.kernels.plan import plan_file
from printhost.control.motion import QueueClockExecutor
from printhost.control.planner import LookaheadPlanner, MoveLimitError
from printhost.control.toolhead import Toolhead
from printhost.sim.heaters import build_simulated_heaters
from tests.unit.test_batch import DIALECT as BATCH_DIALECT
from tests.unit.test_job import TICK_S, geometry, make_printer, run_until

DATA = Path(__file__).resolve().parents[1] / "data"
START = (117.5, 117.5, 10.0, 0.0)


def bits(moves) -> list[tuple]:
    return [tuple(np.array([*m.start, *m.end, m.distance, m.start_v, m.cruise_v, m.end_v,
                            m.accel, m.accel_t, m.cruise_t, m.decel_t]).view(np.int64))
            for m in moves]


# ---------------------------------------------------------------- the toolhead's calls

def _random_calls(seed: int, count: int):
    """A random session of console moves, M204s, dwells, flushes, aborts and moves that
    break an extruder limit."""
    rng = random.Random(seed)
    pos = [100.0, 100.0, 5.0, 0.0]
    for _ in range(count):
        r = rng.random()
        if r < 0.75:
            end = [pos[0] + rng.uniform(-20, 20), pos[1] + rng.uniform(-20, 20),
                   pos[2] + (rng.uniform(-1, 1) if rng.random() < 0.1 else 0.0),
                   pos[3] + (rng.uniform(-2, 3) if rng.random() < 0.7 else 0.0)]
            if rng.random() < 0.05:
                end = [pos[0], pos[1], pos[2], pos[3] + rng.choice([120.0, 0.5])]
            if rng.random() < 0.03:
                end = [pos[0] + 0.5, pos[1], pos[2], pos[3] + 30.0]   # over-extrusion
            accel = rng.choice([None, 500.0, 1500.0, 3000.0, 20000.0])
            yield ("add_move", tuple(pos), tuple(end), rng.choice([5.0, 40.0, 150.0, 600.0]),
                   accel)
            pos = end
        elif r < 0.85:
            yield ("flush",)
        elif r < 0.93:
            yield ("dwell", tuple(pos), rng.choice([0.0, 0.01, 0.5]))
        else:
            yield ("clear",)


@pytest.mark.parametrize("seed", range(6))
def test_the_compiled_planner_answers_every_call_as_the_reference(seed):
    settings = Settings()
    got: list = []
    want: list = []
    compiled = CompiledPlanner(settings, lambda rows: got.extend(planned_moves(rows)))
    reference = LookaheadPlanner(settings.printer, want.append, extruder=settings.extruder)
    refused = 0
    for call in _random_calls(seed, 600):
        name, *args = call
        outcomes = []
        for planner in (compiled, reference):
            try:
                getattr(planner, name)(*args)
                outcomes.append(None)
            except MoveLimitError as exc:
                outcomes.append(str(exc))
        assert outcomes[0] == outcomes[1], call
        refused += outcomes[0] is not None
        assert compiled.queued_moves == reference.queued_moves
        assert compiled.queued_time_estimate() == pytest.approx(
            reference.queued_time_estimate(), rel=1e-9, abs=1e-12)
        assert bits(got) == bits(want), call
    compiled.flush()
    reference.flush()
    assert bits(got) == bits(want)
    assert len(got) > 300 and refused > 0


def test_the_toolhead_plans_on_the_compiled_planner_by_default():
    executor = QueueClockExecutor(0.0, START, record=True)
    toolhead = Toolhead(Settings().printer, executor, Settings().extruder)
    assert isinstance(toolhead.planner, CompiledPlanner)
    reference = Toolhead.reference(Settings().printer, executor, Settings().extruder)
    assert isinstance(reference.planner, LookaheadPlanner)


# ---------------------------------------------------------------- a print job's file

@pytest.fixture(scope="module")
def printed_cube():
    printer, clock, moves = make_printer()
    printer.jobs.start("job1", "cube.gcode", str(DATA / "cube.gcode"), clock.now())
    run_until(printer, clock, lambda: printer.jobs.job.state == JobState.COMPLETED, 5000)
    return printer, moves


def test_a_live_print_follows_exactly_the_path_batch_plans(printed_cube):
    """Velocities may differ where the toolhead ran short of motion and flushed (the
    real-time rule), the path and the filament may not."""
    printer, moves = printed_cube
    want = plan_file(parse_file(DATA / "cube.gcode"), printer.settings, START)
    assert want is not None and want.error is None
    assert [geometry(m) for m in moves] == [geometry(m) for m in want.planned_moves()]
    assert printer.toolhead.commanded_position == want.position
    # The filament count follows the kernel's runs as it followed every G1.
    moved = sum(m.end[3] - m.start[3] for m in moves)
    assert printer.interp.filament_used_mm == pytest.approx(moved, abs=1e-6)


# Batch's dialect test program (arcs, firmware retraction, inches, a long dwell), with
# heaters, fans, factors, waits and an unknown command around it.
DIALECT = ("; every command family\nM140 S60\nM104 S200\nG28 W\nM190 S60\nM109 S200\n"
           "M73 P0 R10\nM106 S128\n" + BATCH_DIALECT.replace("M84\n", "")
           + "G92 X1\nM220 S150\nG1 X10 Y10 E1 F6000\nM221 S90\nG1 X30 Y10 E1\nM400\n"
           "M107\nG1 X40 Y40 E1\nM84\n")


@pytest.mark.parametrize("name", ["cube.gcode", "dialect"])
def test_the_feed_plans_exactly_the_moves_of_batch(tmp_path, name):
    """With the clock standing still (so the toolhead never runs short and flushes),
    feeding a file gives batch's moves bit for bit: the kernel's runs and the
    interpreter's commands interleave exactly as in the batch planner."""
    path = DATA / name
    if name == "dialect":
        path = tmp_path / "dialect.gcode"
        path.write_text(DIALECT)
    settings = Settings()
    clock = ManualClock()
    heaters, _ = build_simulated_heaters(settings, clock)
    executor = QueueClockExecutor(0.0, START, record=True)
    toolhead = Toolhead(settings.printer, executor, settings.extruder)
    interp = GCodeInterpreter(toolhead, heaters, PartFan(), clock.now, settings.gcode,
                              settings.firmware_retraction)
    with open(path, "rb") as fh:
        feed = JobFeed(fh, interp, toolhead, buffer_time_s=1e9)
        while not feed.eof:
            feed.feed()             # a wait only delays: go on at once
    want = plan_file(parse_file(path), settings, START)
    assert want is not None and want.error is None
    assert len(executor.moves) > 10
    assert bits(executor.moves) == bits(want.planned_moves())
    assert toolhead.commanded_position == want.position
    assert toolhead.homed_axes == want.homed_axes


def test_progress_reaches_every_line_and_byte(printed_cube):
    printer, _ = printed_cube
    job = printer.jobs.job
    data = (DATA / "cube.gcode").read_bytes()
    assert job.line == data.count(b"\n") + (not data.endswith(b"\n"))
    assert job.bytes_read == len(data) == job.size_bytes


def _buffered_after_each_tick(path: Path, ticks: int) -> list[float]:
    printer, clock, _ = make_printer()
    printer.jobs.start("j", path.name, str(path), clock.now())
    ahead = []
    for _ in range(ticks):
        clock.advance(TICK_S)
        printer.tick()
        if printer.jobs.job.state != JobState.PRINTING:
            break
        ahead.append(printer.toolhead.buffered_time())
    return ahead


def test_long_moves_do_not_overshoot_the_buffer(tmp_path):
    """Runs are sized by the time recent rows added: after a run of short moves, a run
    of 10 s moves still stops at the buffer (at most one move over it)."""
    short = "".join(f"G1 X{100 + (i % 2)} Y100 F6000\n" for i in range(3000))
    long = "".join(f"G1 X{20 if i % 2 else 200} Y100 F1200\n" for i in range(400))
    path = tmp_path / "mixed.gcode"
    path.write_text("G28\nG1 Z5 F600\n" + short + long)
    ahead = _buffered_after_each_tick(path, 3000)
    buffer_s = Settings().control.buffer_time_s
    assert len(ahead) > 100
    assert max(ahead) < buffer_s + 2 * 9.1 + 0.5   # 180 mm at 20 mm/s is 9 s per move


def test_a_file_of_short_moves_fills_the_buffer_in_few_ticks(tmp_path):
    path = tmp_path / "short.gcode"
    path.write_text("G28\nG1 Z5 F600\n" + "".join(
        f"G1 X{100 + 0.2 * (i % 2)} Y{100 + 0.2 * ((i // 2) % 2)} F6000\n" for i in range(20000)))
    ahead = _buffered_after_each_tick(path, 200)
    buffer_s = Settings().control.buffer_time_s
    assert max(ahead[-50:]) >= 0.8 * buffer_s


def test_unknown_commands_reach_the_interpreter_and_are_logged_once(tmp_path, caplog):
    path = tmp_path / "m117.gcode"
    path.write_text("G28\n" + "M117 Layer 1\nG1 X10 F3000\nM117 Layer 2\nG1 X20\n" * 5)
    printer, clock, _ = make_printer()
    with caplog.at_level(logging.INFO, logger="printhost.control.interpreter"):
        printer.jobs.start("j", path.name, str(path), clock.now())
        run_until(printer, clock, lambda: printer.jobs.job.state == JobState.COMPLETED, 120)
    assert printer.interp.unknown_commands == 10
    said = [r.getMessage() for r in caplog.records if "M117" in r.getMessage()]
    assert len(said) == 1 and "line 2" in said[0]


def test_a_line_the_kernel_refuses_fails_with_the_interpreters_message(tmp_path):
    path = tmp_path / "bad.gcode"
    path.write_text("G28\nG1 X10 Y10 F3000\nM104 S0\nG1 X10 Y10 E200\nG1 X20\n")
    printer, clock, _ = make_printer()
    printer.jobs.start("j", path.name, str(path), clock.now())
    run_until(printer, clock, lambda: printer.jobs.job.state == JobState.ERROR, 60)
    job = printer.jobs.job
    assert job.line == 4
    assert job.error.startswith("bad.gcode: line 4: Extrude only move too long (200.000mm vs")
