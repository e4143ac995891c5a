"""Start-up self-tests: every compiled kernel family against its plain reference.

numba loads compiled machine code from its on-disk cache without checking what that
code computes. A cache entry can be damaged in a way that still loads (a flipped
bit in the code, an entry compiled from other sources that the staleness checks
missed), and then the printer would step, heat or encode with a kernel that is not
the one in the sources: a job can finish "completed" millimetres off with nothing
logged. So before the control process builds the printer, each family runs once on
a small fixed input through the same Python wrappers (and so the same argument
types, the same compiled versions) the printer uses, and its result is compared
with the family's reference, which is written in plain Python:

| family | kernels | reference |
|---|---|---|
| `trapq` | `trapq.segments_from_move_rows` | `trapq.toolhead_segments` / `extruder_segments` |
| `stepgen` | `position`, `stepgen` via `steppers` | `reference.stepper_position` / `generate_steps` |
| `stepcompress` | `stepcompress.compress_steps` | `reference.compress_steps` |
| `heater` | `heater.pid_*`, `watermark_*` | `heater.*_reference` (`heater.warm_up`) |
| `gcode_bulk` | `gcode_bulk.parse_bytes` | `gcode.parse_line` |
| `plan` | `plan_kernel`, `plan_lookahead` via `plan.plan_file` | interpreter, toolhead and planner |
| `fastencode` | `fastencode.encode_messages` / `frame_messages` | `MessageCodec` / `MessageStream` |

Running a family also compiles it, or loads it from the cache, so after `run_all`
no kernel compiles while the printer runs. The inputs are a few moves and lines: a
disagreement anywhere in a kernel shows up on almost any input, and the checks are
there to catch a kernel that is not the one in the sources, not to repeat the unit
tests. Run as `python -m printhost.control.kernels.selftest`, this module is the
probe `kernels.loader` runs in a child process: it exits 0 when every family
passes, and 1 with one line naming the first failure otherwise.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable


class SelfTestFailure(RuntimeError):
    """A kernel family computed something other than its reference."""

    def __init__(self, family: str, detail: str) -> None:
        super().__init__(f"{family} kernels disagree with their reference: {detail}")
        self.family = family


def _moves():
    from printhost.control.kernels import reference
    return reference.random_moves(11, 6)


def check_trapq() -> None:
    """The compiled segment builder against the Python one, exactly."""
    import numpy as np

    from printhost.control.kernels import trapq
    moves = _moves()
    rows = np.array([(*m.start, *m.end, m.distance, m.start_v, m.cruise_v, m.end_v, m.accel,
                      m.accel_t, m.cruise_t, m.decel_t) for m in moves], dtype=np.float64)
    tool, ext, end = trapq.segments_from_move_rows(rows, 1.0)
    want_tool = trapq.toolhead_segments(moves, 1.0)
    want_ext = trapq.extruder_segments(moves, 1.0)
    want_end = 1.0 + sum(m.duration for m in moves)
    if tool.shape != want_tool.shape or ext.shape != want_ext.shape:
        raise SelfTestFailure("trapq", f"{len(tool)} segments, expected {len(want_tool)}")
    if not (np.allclose(tool, want_tool, rtol=0.0, atol=1e-9)
            and np.allclose(ext, want_ext, rtol=0.0, atol=1e-9)):
        raise SelfTestFailure("trapq", "segment rows differ")
    if abs(end - want_end) > 1e-9:
        raise SelfTestFailure("trapq", f"end time {end!r}, expected {want_end!r}")


def check_stepgen() -> None:
    """Step times, directions and positions of three steppers against the reference.

    A shaped CoreXY motor, a plain Cartesian axis and a pressure-advance extruder
    between them reach every path through `position` and `stepgen`.
    """
    import numpy as np

    from printhost.control import shaper
    from printhost.control.kernels import reference, stepgen, trapq
    from printhost.control.kernels import steppers as st
    stepgen.warm_up()
    moves = _moves()
    tool = trapq.toolhead_segments(moves, 1.0)
    ext = trapq.extruder_segments(moves, 1.0)
    pulses = shaper.make_shaper("mzv", 45.0, 0.1)
    cases = (("corexy a, shaped", tool, st.StepperModel(st.COREXY_A, 0.05, pulses, pulses)),
             ("cartesian x", tool, st.StepperModel(st.CARTESIAN_X, 0.05)),
             ("extruder, pressure advance", ext,
              st.StepperModel(st.EXTRUDER, 0.02, pressure_advance=0.05, smooth_time=0.04)))
    for name, segs, model in cases:
        start = st.commanded_position(segs, model, -1e9)
        got = st.generate_steps(segs, model, -math.inf, math.inf, start)
        times, dirs, final = reference.generate_steps(segs, model, -math.inf, math.inf, start)
        if len(got.times) != len(times) or got.position != final:
            raise SelfTestFailure("stepgen", f"{name}: {len(got.times)} steps to position "
                                  f"{got.position}, expected {len(times)} to {final}")
        if not len(times):
            raise SelfTestFailure("stepgen", f"{name}: the test job makes no steps")
        if not np.array_equal(got.dirs, dirs):
            raise SelfTestFailure("stepgen", f"{name}: step directions differ")
        error = float(np.abs(got.times - np.array(times)).max())
        if error > 1e-9:
            raise SelfTestFailure("stepgen", f"{name}: step times off by up to {error:.3g} s")
        t = 1.0 + 0.37 * trapq.end_time(segs)
        got_p, want_p = st.stepper_position(segs, model, t), reference.stepper_position(segs,
                                                                                      model, t)
        if abs(got_p - want_p) > 1e-9:
            raise SelfTestFailure("stepgen", f"{name}: position {got_p!r} mm at {t:.3f} s, "
                                  f"expected {want_p!r}")


def check_stepcompress() -> None:
    """Commands for a step stream with reversals against the transcribed search."""
    from printhost.control.kernels import reference, stepcompress, trapq
    from printhost.control.kernels import steppers as st
    moves = _moves()
    model = st.StepperModel(st.CARTESIAN_X, 0.0125)
    steps = st.generate_steps(trapq.toolhead_segments(moves, 0.5), model, -math.inf,
                              math.inf, 0)
    clocks = steps.times * 16e6
    max_error = 25e-6 * 16e6
    got = stepcompress.compress_steps(clocks, steps.dirs, 1000, max_error, last_dir=1)
    want, consumed, last, last_dir = reference.compress_steps(clocks, steps.dirs, 1000,
                                                              max_error, 1)
    rows = list(zip(got.interval.tolist(), got.count.tolist(), got.add.tolist(),
                    got.set_dir.tolist(), got.first_clock.tolist()))
    if rows != want or (got.consumed, got.last_clock, got.last_dir) != (consumed, last,
                                                                         last_dir):
        first = next((i for i, (a, b) in enumerate(zip(rows, want)) if a != b),
                     min(len(rows), len(want)))
        raise SelfTestFailure("stepcompress", f"{len(rows)} commands, expected {len(want)}; "
                              f"first difference at command {first}")


def check_heater() -> None:
    """The heater module's own comparison (`heater.warm_up`), which gates every heater."""
    from printhost.control.kernels import heater
    try:
        heater.warm_up()
    except RuntimeError as exc:
        raise SelfTestFailure("heater", str(exc)) from None


_PROGRAM = (b"; self-test\nG28\nG90\nM82\nG92 E0\nG1 Z0.3 F600\n"
            b"G1 X20 Y10 E1.25 F3000 ; first\nG1 X30.5 Y-0 E2.5*62\nG4 P20\nM204 S1500\n"
            b"G91\nG1 X-5 Y5 E0.4\nG1 E-1 F1800\nM83\nG90\nG1 X10 Y10 E0.8 F4800\n"
            b"M106 S128\nM220 S90\nM221 S105\nG1 X12 Y30 E1\nM400\nM84\n")


def check_gcode_bulk() -> None:
    """Every line of a short program parsed by the kernel and by `parse_line`."""
    import io

    from printhost.control.gcode import GCodeError, iter_lines, parse_line
    from printhost.control.gcode_bulk import parse_bytes
    bulk = parse_bytes(_PROGRAM)
    rows = list(iter_lines(io.BytesIO(_PROGRAM)))
    if len(bulk) != len(rows):
        raise SelfTestFailure("gcode_bulk", f"{len(bulk)} lines, expected {len(rows)}")
    for row, (lineno, _, text) in enumerate(rows):
        try:
            want = parse_line(text, lineno)
            got = bulk.command(row)
        except GCodeError as exc:
            raise SelfTestFailure("gcode_bulk", f"line {lineno}: {exc}") from None
        if got != want:
            raise SelfTestFailure("gcode_bulk", f"line {lineno} {text!r} parsed as {got}, "
                                  f"expected {want}")


def check_plan() -> None:
    """`printhost batch`'s compiled planner against the interpreter, toolhead and planner."""
    import numpy as np

    from printhost.config import Settings
    from printhost.control.gcode_bulk import parse_bytes
    from printhost.control.heaters import HeaterBank
    from printhost.control.interpreter import GCodeInterpreter, PartFan
    from printhost.control.kernels.plan import N_MOVE_COLUMNS, plan_file
    from printhost.control.motion import QueueClockExecutor
    from printhost.control.toolhead import Toolhead
    settings = Settings()
    start = (117.5, 117.5, 10.0, 0.0)
    parsed = parse_bytes(_PROGRAM)
    got = plan_file(parsed, settings, start)
    if got is None:
        raise SelfTestFailure("plan", "the planner kernel refused the test program")
    executor = QueueClockExecutor(0.0, start, record=True)
    toolhead = Toolhead.reference(settings.printer, executor, settings.extruder)
    heaters = HeaterBank()          # the program heats nothing
    interp = GCodeInterpreter(toolhead, heaters, PartFan(), executor.now, settings.gcode,
                              settings.firmware_retraction)
    for cmd in parsed.commands():
        interp.execute(cmd)
    toolhead.flush()
    want = np.array([(*m.start, *m.end, m.distance, m.start_v, m.cruise_v, m.end_v, m.accel,
                      m.accel_t, m.cruise_t, m.decel_t) for m in executor.moves],
                    dtype=np.float64).reshape(-1, N_MOVE_COLUMNS)
    if got.error is not None:
        raise SelfTestFailure("plan", f"the kernel reports line {got.error.lineno}: "
                              f"{got.error.message}")
    if got.moves.shape != want.shape:
        raise SelfTestFailure("plan", f"{len(got.moves)} moves, expected {len(want)}")
    differ = np.flatnonzero((got.moves.view(np.int64) != want.view(np.int64)).any(axis=1))
    if differ.size:
        raise SelfTestFailure("plan", f"{differ.size} moves differ, the first at index "
                              f"{int(differ[0])}")
    if got.position != toolhead.commanded_position:
        raise SelfTestFailure("plan", f"ends at {got.position}, expected "
                              f"{toolhead.commanded_position}")


def check_fastencode() -> None:
    """Encoded and framed step commands byte for byte against the Python codec."""
    import numpy as np

    from printhost.mcu.fastencode import encode_messages, frame_messages
    from printhost.mcu.protocol import DataDictionary, MessageCodec, MessageStream
    from printhost.mcu.sim_dictionary import sim_dictionary
    codec = MessageCodec(DataDictionary(sim_dictionary()))
    queue_step = codec.dictionary.lookup("queue_step").msgid
    set_dir = codec.dictionary.lookup("set_next_step_dir").msgid
    rows = [(queue_step, (3, 0xFFFFFFFF, 1, -1)), (set_dir, (3, 1)),
            (queue_step, (200, 96, 40000, -0x8000)), (queue_step, (0, 12287, 0xFFFF, 0x7FFF)),
            (set_dir, (255, 0)), (queue_step, (95, 4096, 12288, -4097))] * 9
    msgids = np.array([m for m, _ in rows], dtype=np.int64)
    counts = np.array([len(p) for _, p in rows], dtype=np.int64)
    params = np.zeros((len(rows), 4), dtype=np.int64)
    for i, (_, values) in enumerate(rows):
        params[i, :len(values)] = values
    expected = [codec.encode("queue_step", oid=p[0], interval=p[1], count=p[2], add=p[3])
                if m == queue_step else codec.encode("set_next_step_dir", oid=p[0], dir=p[1])
                for m, p in rows]
    encoded = encode_messages(msgids, counts, params)
    if encoded.data.tobytes() != b"".join(expected):
        raise SelfTestFailure("fastencode", "encoded messages differ from MessageCodec's")
    stream = MessageStream(codec, seq=7)
    if frame_messages(encoded.data, encoded.lengths, 7) != (stream.pack(expected),
                                                            stream.next_seq):
        raise SelfTestFailure("fastencode", "framed blocks differ from MessageStream's")


# In the order the control process needs them: motion and heat first.
FAMILIES: dict[str, Callable[[], None]] = {
    "trapq": check_trapq,
    "stepgen": check_stepgen,
    "stepcompress": check_stepcompress,
    "heater": check_heater,
    "gcode_bulk": check_gcode_bulk,
    "plan": check_plan,
    "fastencode": check_fastencode,
}


def run_all() -> dict[str, float]:
    """Compile or load every kernel family and check it; seconds taken per family.

    Raises SelfTestFailure for a kernel that disagrees with its reference, and lets
    whatever numba raises for a cache it cannot load propagate.
    """
    timings: dict[str, float] = {}
    for name, check in FAMILIES.items():
        started = time.perf_counter()
        check()
        timings[name] = time.perf_counter() - started
    return timings


def main() -> int:
    """The child-process probe: 0 if every family passes, else 1 and one line on stderr."""
    try:
        timings = run_all()
    except Exception as exc:            # numba's errors for a damaged cache are of any type
        detail = " ".join(str(exc).split()) or "no message"
        print(f"{type(exc).__name__}: {detail}"[:400], file=sys.stderr)
        return 1
    print(" ".join(f"{name}={seconds:.3f}s" for name, seconds in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
