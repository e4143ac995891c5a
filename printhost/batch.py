"""`printhost batch`: the whole motion pipeline without hardware, to a Klipper wire stream.

G-code → interpreter → toolhead (limits, homing) → lookahead planner → move segments
→ step times (compiled kernels) → step compression → `queue_step`/`set_next_step_dir`
messages encoded against a data dictionary and framed into message blocks, exactly as
they would be written to the serial port. The result can be decoded by Klipper's own
tools when the dictionary comes from a real firmware build (`--dictionary`), and a
JSON summary gives the print time and per-stepper command and step counts.

The file is read, parsed and planned in pieces (`gcode_bulk.iter_chunks`,
`plan.PlanStream`), steps are generated in chunks of print time and the output is
written as it is framed, so memory follows the pieces, not the file's length.

The few configuration messages go through the general Python codec; the step
commands, nearly all of the output, are encoded and framed as arrays by the compiled
`printhost.mcu.fastencode`, which writes the same bytes much faster.

This is both a test harness (the full pipeline, deterministic, no clocks) and a way
for users to check a configuration against their slicer's files before printing.
Heater waits (M109, M190) do not wait here: there is nothing to heat.
"""

from __future__ import annotations

import json
import resource
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from printhost.config import Settings
from printhost.control.clock import ManualClock
from printhost.control.gcode import GCodeError
from printhost.control.gcode_bulk import iter_chunks
from printhost.control.interpreter import CommandError, GCodeInterpreter, PartFan
from printhost.control.kernels.plan import (ACCEL_T, CRUISE_T, DECEL_T, END_E, END_X,
                                           PlanStream)
from printhost.control.kernels.steppers import models_from_settings
from printhost.control.motion import PlannedMove, QueueClockExecutor, Vec4
from printhost.control.stepstream import StepCommands, StepStream
from printhost.control.toolhead import Toolhead
from printhost.mcu.codec import MessageCodec
from printhost.mcu.dictionary import DataDictionary
from printhost.mcu.fastencode import (EncodedMessages, frame_complete_blocks, frame_messages,
                                      pack_encoded)
from printhost.mcu.sim_dictionary import sim_dictionary
from printhost.mcu.stepencode import encode_step_commands
from printhost.sim.heaters import build_simulated_heaters

# Print time of the first move: the MCU needs the first command some time ahead.
START_TIME_S = 0.25
# How much motion is turned into steps at once.
CHUNK_S = 5.0
STEPPER_ORDER = ("x", "y", "z", "extruder")


class BatchError(Exception):
    """The file cannot be run through the pipeline; the message names the line."""


class StreamExecutor(QueueClockExecutor):
    """Hands queued moves to the step stream in chunks of `CHUNK_S` of print time.

    `sink` receives each chunk's commands in clock order.
    """

    def __init__(self, stream: StepStream, start_time: float, start_position: Vec4,
                 sink) -> None:
        super().__init__(start_time, start_position)
        self.stream = stream
        self.sink = sink
        self._chunk_start = start_time
        self._pending: list[PlannedMove] = []
        self._pending_rows: np.ndarray | None = None

    def schedule(self, move: PlannedMove) -> None:
        super().schedule(move)
        self._pending.append(move)
        if self._end - self._chunk_start >= CHUNK_S:
            self._hand_over(final=False)

    def _hand_over(self, final: bool) -> None:
        self.stream.add_moves(self._pending, self._chunk_start)
        self._pending = []
        self._chunk_start = self._end
        self.sink(self.stream.generate(self._end, final=final))

    def run_rows(self, rows: np.ndarray) -> None:
        """Feed the compiled planner's move rows, chunked exactly as `schedule` chunks.

        May be called again with the rows that follow (the planner's output for the
        next piece of the file): the rows not handed over yet wait for them. The chunk
        boundaries are found by the same running sum of move durations, so the stream
        (and the bytes written) equal the Python path's, however the rows arrive.
        """
        durations = (rows[:, ACCEL_T] + rows[:, CRUISE_T] + rows[:, DECEL_T]).tolist()
        waiting = self._pending_rows
        first = 0
        for i, duration in enumerate(durations):
            self._end += duration
            if self._end - self._chunk_start >= CHUNK_S:
                self._hand_over_rows(_joined(waiting, rows[first:i + 1]), final=False)
                waiting = None
                first = i + 1
        self.count += len(durations)
        if len(rows):
            self._pos = tuple(float(v) for v in rows[-1, END_X:END_E + 1])  # type: ignore[assignment]
        self._pending_rows = _joined(waiting, rows[first:])

    def _hand_over_rows(self, rows: np.ndarray, final: bool) -> None:
        self.stream.add_move_rows(rows, self._chunk_start)
        self._chunk_start = self._end
        self.sink(self.stream.generate(self._end, final=final))

    def finish(self) -> None:
        if self._pending_rows is not None:
            rows, self._pending_rows = self._pending_rows, None
            self._hand_over_rows(rows, final=True)
            return
        self._hand_over(final=True)


def _joined(first: np.ndarray | None, second: np.ndarray) -> np.ndarray:
    return second if first is None or not len(first) else np.concatenate([first, second])


class _NotCompiled(Exception):
    """A piece of the file uses a command the compiled planner does not cover."""


def default_pins(dictionary: DataDictionary, count: int) -> list[str]:
    """The first `count` pin names of the dictionary, in pin-number order.

    Pin assignment belongs to the MCU configuration; until a config names pins, batch
    output uses distinct valid pins so the stream decodes against any dictionary.
    """
    pins = dictionary.enumerations.get("pin", {})
    names = sorted(pins, key=lambda n: pins[n])
    if len(names) < count:
        raise BatchError(f"the data dictionary lists only {len(names)} pins; {count} are needed")
    return names[:count]


class BlockWriter:
    """Frames messages into blocks and writes them as they come, so the output never
    has to be held in memory: every block is written as soon as it is full, and the
    messages of the last, unfilled one wait for the next chunk (blocks are filled
    across chunk boundaries, the bytes those of framing everything at once).

    Writes to a temporary file beside `path`, renamed over it by `close()`: a run that
    fails leaves no half-written output (`discard()`). An existing path that is not a
    regular file (`/dev/null`, a pipe) is written directly."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        direct = self.path.exists() and not self.path.is_file()
        self._tmp = None if direct else self.path.with_name(f".{self.path.name}.partial")
        self._fh = open(self.path if self._tmp is None else self._tmp, "wb")
        self._data = np.zeros(0, np.uint8)
        self._lengths = np.zeros(0, np.int64)
        self._seq = 0
        self.messages = 0
        self.bytes = 0

    def add(self, encoded: EncodedMessages) -> None:
        self.messages += encoded.count
        data = np.concatenate([self._data, encoded.data])
        lengths = np.concatenate([self._lengths, encoded.lengths])
        blocks, self._seq, framed = frame_complete_blocks(data, lengths, self._seq)
        self._write(blocks)
        self._data = data[int(lengths[:framed].sum()):]
        self._lengths = lengths[framed:]

    def _write(self, blocks: bytes) -> None:
        self._fh.write(blocks)
        self.bytes += len(blocks)

    def close(self) -> None:
        """Write the last block and put the file in place."""
        blocks, self._seq = frame_messages(self._data, self._lengths, self._seq)
        self._write(blocks)
        self._fh.close()
        if self._tmp is not None:
            self._tmp.replace(self.path)

    def discard(self) -> None:
        self._fh.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


@dataclass
class BatchResult:
    print_time_s: float
    lines: int
    moves: int
    messages: int
    bytes: int
    steppers: dict[str, dict[str, int]]
    clock_freq: float
    dictionary: str
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"print_time_s": round(self.print_time_s, 6), "lines": self.lines,
                "moves": self.moves, "messages": self.messages, "bytes": self.bytes,
                "clock_freq": self.clock_freq, "dictionary": self.dictionary,
                "steppers": self.steppers, "timings": self.timings}


def run_batch(settings: Settings, gcode_path: str | Path, out_path: str | Path,
              dictionary_path: str | Path | None = None, compiled: bool = True) -> BatchResult:
    """Run a file through the pipeline; `compiled=False` forces the Python interpreter path.

    Both paths produce the same bytes: the compiled planner is bit-identical to the
    Python one, and moves reach the step stream in the same chunks.
    """
    t_start = time.perf_counter()
    if dictionary_path:
        try:
            raw = Path(dictionary_path).read_bytes()
        except OSError as exc:
            raise BatchError(f"{dictionary_path}: cannot read ({exc.strerror})") from None
        dictionary = DataDictionary(raw)
        dict_name = str(dictionary_path)
    else:
        dictionary = DataDictionary(sim_dictionary())
        dict_name = "printhost simulated MCU"
    codec = MessageCodec(dictionary)
    clock_freq = float(dictionary.constant_float("CLOCK_FREQ"))

    names = list(STEPPER_ORDER)
    oids = {name: i for i, name in enumerate(names)}
    pins = default_pins(dictionary, 2 * len(names))
    config_lines = [f"allocate_oids count={len(names)}"]
    for name in names:
        i = oids[name]
        config_lines.append(f"config_stepper oid={i} step_pin={pins[2 * i]} "
                            f"dir_pin={pins[2 * i + 1]} invert_step=0 step_pulse_ticks=0")
    crc = zlib.crc32("\n".join(config_lines).encode()) & 0xFFFFFFFF
    config = [codec.encode_text(text) for text in config_lines]
    config.append(codec.encode("finalize_config", crc=crc))
    try:
        writer = BlockWriter(out_path)
    except OSError as exc:
        raise BatchError(f"cannot write {out_path}: {exc.strerror or exc}") from None
    try:
        try:
            result = _run(settings, gcode_path, dictionary, dict_name, clock_freq, oids,
                          pack_encoded(config), writer, compiled, t_start)
        except _NotCompiled:
            # Found part-way through the file: start again on the Python path, from a
            # fresh output (what was written so far is thrown away).
            writer.discard()
            writer = BlockWriter(out_path)
            result = _run(settings, gcode_path, dictionary, dict_name, clock_freq, oids,
                          pack_encoded(config), writer, False, t_start)
    except BaseException:
        writer.discard()
        raise
    return result


def _run(settings: Settings, gcode_path: str | Path, dictionary: DataDictionary,
         dict_name: str, clock_freq: float, oids: dict[str, int], config: EncodedMessages,
         writer: BlockWriter, compiled: bool, t_start: float) -> BatchResult:
    writer.add(config)

    def sink(commands: StepCommands) -> None:
        if len(commands):
            writer.add(encode_step_commands(dictionary, commands))

    # Where a printer believes the toolhead is before homing; G28 moves from here.
    sx, sy, sz = (float(v) for v in settings.printer.power_on_position)
    start: Vec4 = (sx, sy, sz, 0.0)
    stream = StepStream(models_from_settings(settings), oids, clock_freq,
                        settings.mcu.max_stepper_error, start, START_TIME_S)
    executor = StreamExecutor(stream, START_TIME_S, start, sink)
    toolhead = Toolhead(settings.printer, executor, settings.extruder)
    heaters, _ = build_simulated_heaters(settings, ManualClock())
    interp = GCodeInterpreter(toolhead, heaters, PartFan(), executor.now, settings.gcode,
                              settings.firmware_retraction)

    t_run = time.perf_counter()
    name = Path(gcode_path).name
    pieces = _TimedPieces(gcode_path)
    if compiled:
        planner = PlanStream(settings, start)
        for piece in pieces:
            plan = planner.feed(piece)
            if plan is None:
                raise _NotCompiled
            if plan.error is not None:
                if plan.error.parse_error is not None:
                    raise BatchError(f"{name}: {plan.error.parse_error}")
                raise BatchError(f"{name}: line {plan.error.lineno}: {plan.error.message}")
            executor.run_rows(plan.moves)
        executor.run_rows(planner.finish().moves)
    else:
        for piece in pieces:
            _interpret(piece, interp, name)
        toolhead.flush()
    executor.finish()
    t_encode = time.perf_counter()
    writer.close()
    t_end = time.perf_counter()
    return BatchResult(
        print_time_s=executor.queue_end_time(), lines=pieces.lines,
        moves=executor.count, messages=writer.messages, bytes=writer.bytes,
        steppers=stream.summary(), clock_freq=clock_freq, dictionary=dict_name,
        timings={"setup_s": round(t_run - t_start, 4), "parse_s": round(pieces.parse_s, 4),
                 "pipeline_s": round(t_encode - t_run - pieces.parse_s, 4),
                 "write_s": round(t_end - t_encode, 4),
                 "cpu_s": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 4)})


class _TimedPieces:
    """The file's pieces (`gcode_bulk.iter_chunks`), counting lines and parse time."""

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self.lines = 0
        self.parse_s = 0.0

    def __iter__(self):
        try:
            pieces = iter_chunks(self.path)
            while True:
                t0 = time.perf_counter()
                piece = next(pieces, None)
                self.parse_s += time.perf_counter() - t0
                if piece is None:
                    return
                self.lines += len(piece)
                yield piece
        except OSError as exc:
            raise BatchError(f"{self.path}: cannot read ({exc.strerror})") from None


def _interpret(parsed, interp: GCodeInterpreter, name: str) -> None:
    """The Python path, for files using commands the compiled planner does not cover."""
    try:
        for cmd in parsed.commands():
            if cmd.name == "M112":
                raise BatchError(f"{name}: line {cmd.lineno}: emergency stop (M112)")
            try:
                interp.execute(cmd)   # waits (M109, M400) have nothing to wait for here
            except CommandError as exc:
                raise BatchError(f"{name}: line {cmd.lineno}: {exc}") from None
    except GCodeError as exc:
        raise BatchError(f"{name}: {exc}") from None


def main_batch(config: str, gcode: str, out: str, dictionary: str | None,
               summary: str | None) -> int:
    import sys

    from printhost.config import ConfigError, load_settings
    try:
        # Before the work: an output that cannot be written is found at once.
        for path, option in ((out, "-o"), (summary, "--summary")):
            if path and not Path(path).resolve().parent.is_dir():
                raise BatchError(f"cannot write {path}: the directory "
                                 f"{Path(path).resolve().parent} does not exist; create it or "
                                 f"choose another with {option}")
        settings = load_settings(config)
        result = run_batch(settings, gcode, out, dictionary)
        text = json.dumps(result.to_json(), indent=2)
        if summary:
            Path(summary).write_text(text + "\n")
        else:
            print(text)
    except (ConfigError, BatchError, GCodeError, ValueError) as exc:
        print(f"printhost batch: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"printhost batch: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0
