"""StepStream's array output: order, contents and agreement with its own summary."""

from __future__ import annotations

import numpy as np
import pytest

from printhost.control.kernels import reference as ref
from printhost.control.kernels import steppers as st
from printhost.control.kernels.stepcompress import Commands
from printhost.control.motion import PlannedMove
from printhost.control.stepstream import (KIND_NAMES, QUEUE_STEP, SET_NEXT_STEP_DIR,
                                          StepCommands, StepStream, channel_commands,
                                          merge_commands)

CLOCK_FREQ = 72e6


def _commands(first_clock, set_dir, seed) -> Commands:
    rng = np.random.default_rng(seed)
    n = len(first_clock)
    return Commands(rng.integers(0, 1 << 32, n).astype(np.uint32),
                    rng.integers(1, 1 << 16, n).astype(np.uint16),
                    rng.integers(-(1 << 15), 1 << 15, n).astype(np.int16),
                    np.array(set_dir, np.int8), np.array(first_clock, np.int64),
                    0, 0, 0)


def _old_order(parts: list[tuple[int, Commands]]) -> list[tuple[int, str, dict]]:
    """What StepStream produced before arrays: per stepper, a direction command ahead
    of its queue_step, then one stable sort of everything by clock."""
    out = []
    for oid, cmds in parts:
        for i in range(len(cmds.count)):
            first = int(cmds.first_clock[i])
            if cmds.set_dir[i]:
                out.append((first, "set_next_step_dir",
                            {"oid": oid, "dir": 1 if cmds.set_dir[i] > 0 else 0}))
            out.append((first, "queue_step",
                        {"oid": oid, "interval": int(cmds.interval[i]),
                         "count": int(cmds.count[i]), "add": int(cmds.add[i])}))
    out.sort(key=lambda c: c[0])
    return out


def _rows(cmds: StepCommands) -> list[tuple[int, str, dict]]:
    return [(int(c), name, params) for c, (name, params) in zip(cmds.clock, cmds.messages())]


def test_ties_keep_stepper_order_and_direction_first():
    # Equal clocks across steppers and within one (a zero interval), direction changes
    # on tied clocks, a stepper without commands and one listed out of oid order.
    parts = [
        (3, _commands([100, 100, 250, 250, 400], [1, -1, 0, 1, 0], 1)),
        (0, _commands([], [], 2)),
        (1, _commands([50, 100, 250, 400, 400], [-1, 1, 0, -1, 1], 3)),
        (2, _commands([100, 260], [0, 0], 4)),
    ]
    merged = merge_commands([channel_commands(oid, c) for oid, c in parts])
    assert _rows(merged) == _old_order(parts)
    assert [int(c) for c in merged.clock[:6]] == [50, 50, 100, 100, 100, 100]
    assert merged.oid[:6].tolist() == [1, 1, 3, 3, 3, 3]


@pytest.mark.parametrize("seed", [5, 6])
def test_random_merges_match_the_old_ordering(seed):
    rng = np.random.default_rng(seed)
    parts = []
    for oid in range(4):
        n = int(rng.integers(0, 300))
        clocks = np.sort(rng.integers(0, 400, n))       # few distinct clocks: many ties
        parts.append((oid, _commands(clocks, rng.choice([-1, 0, 0, 1], n), seed + oid)))
    merged = merge_commands([channel_commands(oid, c) for oid, c in parts])
    assert _rows(merged) == _old_order(parts)
    assert len(merged) == sum(len(c.count) + np.count_nonzero(c.set_dir) for _, c in parts)


def test_rows_carry_only_their_kinds_fields():
    cmds = channel_commands(7, _commands([10, 20, 30], [-1, 0, 1], 9))
    assert cmds.kind.tolist() == [SET_NEXT_STEP_DIR, QUEUE_STEP, QUEUE_STEP,
                                  SET_NEXT_STEP_DIR, QUEUE_STEP]
    assert cmds.dir.tolist() == [0, 0, 0, 1, 0]
    d = cmds.kind == SET_NEXT_STEP_DIR
    assert not cmds.interval[d].any() and not cmds.count[d].any() and not cmds.add[d].any()
    assert cmds.oid.tolist() == [7] * 5
    assert [name for name, _ in cmds.messages()] == [KIND_NAMES[k] for k in cmds.kind]
    assert len(merge_commands([])) == 0 and len(StepCommands.empty()) == 0


# --------------------------------------------------------------------------- StepStream

MODELS = {
    "x": st.StepperModel(st.CARTESIAN_X, 0.0125),
    "y": st.StepperModel(st.CARTESIAN_Y, 0.0125),
    "z": st.StepperModel(st.CARTESIAN_Z, 0.0025),
    "extruder": st.StepperModel(st.EXTRUDER, 0.002, pressure_advance=0.05, smooth_time=0.04),
}
OIDS = {"x": 0, "y": 1, "z": 2, "extruder": 3}


def _run(seed: int, chunk: int) -> tuple[StepStream, list[StepCommands]]:
    moves = ref.random_moves(seed, 60)
    stream = StepStream(MODELS, OIDS, CLOCK_FREQ, 25e-6, moves[0].start, 1.0)
    out = []
    t = 1.0
    for i in range(0, len(moves), chunk):
        part = moves[i:i + chunk]
        t = stream.add_moves(part, t)
        out.append(stream.generate(t))
    out.append(stream.generate(t, final=True))
    return stream, out


def _replay(cmds: StepCommands, oid: int) -> tuple[list[int], list[int]]:
    """Every step (tick, direction) an MCU would make from one stepper's rows."""
    mine = cmds.oid == oid
    kind, clock = cmds.kind[mine], cmds.clock[mine]
    q = np.flatnonzero(kind == QUEUE_STEP)
    # A direction row sits right before the queue_step it belongs to, on the same clock.
    before = q - 1
    has_dir = (before >= 0) & (kind[np.maximum(before, 0)] == SET_NEXT_STEP_DIR)
    assert (clock[before[has_dir]] == clock[q[has_dir]]).all()
    assert np.count_nonzero(has_dir) == np.count_nonzero(kind == SET_NEXT_STEP_DIR)
    set_dir = np.zeros(len(q), np.int64)
    set_dir[has_dir] = np.where(cmds.dir[mine][before[has_dir]] > 0, 1, -1)
    return ref.expand_commands(0, 0, cmds.interval[mine][q], cmds.count[mine][q],
                               cmds.add[mine][q], set_dir, clock[q])


@pytest.mark.parametrize("seed,chunk", [(21, 4), (22, 60)])
def test_stream_output_replays_to_the_summary(seed, chunk):
    stream, chunks = _run(seed, chunk)
    for cmds in chunks:
        assert (np.diff(cmds.clock) >= 0).all()
    rows = [c for c in chunks if len(c)]
    every = StepCommands(*(np.concatenate([getattr(c, f) for c in rows])
                           for f in ("clock", "kind", "oid", "interval", "count", "add",
                                     "dir")))
    summary = stream.summary()
    initial = _first_positions(seed)
    moved = 0
    for name, oid in OIDS.items():
        clocks, dirs = _replay(every, oid)
        info = summary[name]
        mine = every.oid == oid
        assert info["queue_step"] == np.count_nonzero(every.kind[mine] == QUEUE_STEP)
        assert info["set_next_step_dir"] == np.count_nonzero(every.kind[mine]
                                                             == SET_NEXT_STEP_DIR)
        assert info["steps"] == len(clocks)
        assert (np.diff(clocks) > 0).all()
        moved += len(clocks)
        assert info["position"] == initial[name] + sum(dirs)
    assert moved > 1000


def _first_positions(seed: int) -> dict[str, int]:
    """Commanded step positions before the job: a stream given no moves at all."""
    moves = ref.random_moves(seed, 60)
    return {name: v["position"] for name, v in
            StepStream(MODELS, OIDS, CLOCK_FREQ, 25e-6, moves[0].start, 1.0).summary().items()}


def test_chunking_does_not_change_the_steps_made():
    # Chunk boundaries may change how steps are grouped into commands, never which
    # steps are made.
    def steps(chunks):
        every = [row for c in chunks for row in _rows(c)]
        return {oid: sum(p["count"] for _, name, p in every
                         if name == "queue_step" and p["oid"] == oid)
                for oid in OIDS.values()}
    small, whole = steps(_run(23, 3)[1]), steps(_run(23, 60)[1])
    assert small == whole and min(whole.values()) > 0


def test_capacity_hint_saves_kernel_reruns_and_changes_nothing(monkeypatch):
    # Each channel sizes its next output buffer from the steps it has seen, so later
    # chunks need no second kernel run; the commands must be those made without it.
    from printhost.control import stepstream
    from printhost.control.kernels import steppers

    kernel = steppers.generate_steps_kernel
    calls = []

    def counting(*args):
        calls.append(len(args[-2]))
        return kernel(*args)

    monkeypatch.setattr(steppers, "generate_steps_kernel", counting)
    hinted = _run(24, 10)[1]
    hinted_calls = len(calls)
    calls.clear()
    monkeypatch.setattr(stepstream, "generate_steps",
                        lambda *args: steppers.generate_steps(*args[:5]))
    plain = _run(24, 10)[1]
    assert [_rows(c) for c in hinted] == [_rows(c) for c in plain]
    assert hinted_calls < len(calls)


def _sliced(seed: int, slice_s: float, hold_s: float | None) -> tuple[StepStream, StepCommands]:
    """The moves generated as a live print does: all queued, then `slice_s` of print time
    per call (`hold_s` None: the whole file at once)."""
    moves = ref.random_moves(seed, 60)
    stream = StepStream(MODELS, OIDS, CLOCK_FREQ, 25e-6, moves[0].start, 1.0)
    end = stream.add_moves(moves, 1.0)
    out = []
    if hold_s is not None:
        until = 1.0
        while until < end:
            until += slice_s
            out.append(stream.generate(until, hold_s=hold_s))
    out.append(stream.generate(end, final=True))
    rows = [c for c in out if len(c)]
    every = StepCommands(*(np.concatenate([getattr(c, f) for c in rows])
                           for f in ("clock", "kind", "oid", "interval", "count", "add",
                                     "dir")))
    return stream, every


def test_held_steps_join_the_next_slice_and_nothing_is_lost():
    # A slice boundary cuts the command that reaches it short unless the newest steps
    # wait for the next slice: with them held, slicing costs few extra commands, and the
    # steps made are those of the file planned at once (each tick within max error).
    whole_stream, whole = _sliced(25, 0.0, None)
    cut_stream, cut = _sliced(25, 0.1, 0.0)
    held_stream, held = _sliced(25, 0.1, 0.04)
    counts = {name: [s.summary()[name]["queue_step"] for s in
                     (whole_stream, cut_stream, held_stream)] for name in OIDS}
    total = [sum(c[i] for c in counts.values()) for i in range(3)]
    # Measured: 1834 at once, 1912 cut into 0.1 s slices, 1869 with 0.04 s held.
    assert total[1] > 1.03 * total[0], counts
    assert total[2] < total[1] and total[2] <= 1.025 * total[0], counts
    err = 25e-6 * CLOCK_FREQ
    for oid in OIDS.values():
        ref_clocks, ref_dirs = _replay(whole, oid)
        clocks, dirs = _replay(held, oid)
        assert dirs == ref_dirs and len(clocks) > 50
        assert np.abs(np.array(clocks) - np.array(ref_clocks)).max() <= err
    assert held_stream.summary() == {
        name: dict(v, queue_step=held_stream.summary()[name]["queue_step"],
                   set_next_step_dir=held_stream.summary()[name]["set_next_step_dir"])
        for name, v in whole_stream.summary().items()}


# --------------------------------------------------------------- half-step points at joins

STEP_100 = 0.01      # 100 steps/mm: a slicer's X122.375 is a half-step point


def _stop_at(x0: float, x1: float, v: float = 50.0, a: float = 1000.0) -> PlannedMove:
    """A move along X from rest to rest (accelerate, cruise, decelerate)."""
    d = abs(x1 - x0)
    ta = v / a
    tc = (d - v * v / a) / v
    return PlannedMove((x0, 50.0, 5.0, 0.0), (x1, 50.0, 5.0, 0.0), d, 0.0, v, 0.0, a, ta, tc, ta)


def _straddling_move(tie: float) -> PlannedMove:
    """A move ending exactly on the half-step point `tie` whose last segment, by its own
    polynomial, ends just short of it: the two readings of the end put the position on
    different sides of the point."""
    from printhost.control.kernels import trapq
    from printhost.control.kernels.position import held_value
    for k in range(1, 2000):
        move = _stop_at(tie - 10.0 - k * 0.0371, tie, v=31.7 + k % 37, a=987.6 + 3.1 * k)
        segs = np.ascontiguousarray(trapq.toolhead_segments([move], 1.0))
        if held_value(segs, len(segs) - 1, 0) < tie:
            return move
    raise AssertionError("no move found whose polynomial end falls short of the point")


def _x_stream() -> StepStream:
    models = {"x": st.StepperModel(st.CARTESIAN_X, STEP_100)}
    return StepStream(models, {"x": 0}, CLOCK_FREQ, 25e-6, (100.0, 50.0, 5.0, 0.0), 1.0)


def _net_steps(chunks: list[StepCommands]) -> int:
    rows = [c for c in chunks if len(c)]
    every = StepCommands(*(np.concatenate([getattr(c, f) for c in rows])
                           for f in ("clock", "kind", "oid", "interval", "count", "add", "dir")))
    return sum(_replay(every, 0)[1])


@pytest.mark.parametrize("pause", [0.0, 2.0])
def test_motion_stopping_on_a_half_step_point_loses_no_step(pause):
    """Steps are made up to the end of the motion known so far (a batch chunk ends at a
    move's end; an idle printer's steps run past it) and the next motion arrives later,
    right at that end or after a pause. The position at the end must be read the same
    way before and after: a step lost or doubled there would stay for good."""
    tie = 122.375
    there = _straddling_move(tie)
    back = _stop_at(tie, 100.0)
    stream = _x_stream()
    start = stream.channels[0].position
    chunks = []
    end = stream.add_moves([_stop_at(100.0, there.start[0]), there], 1.0)
    # Up to the end exactly (a batch chunk), or on past it (a printer at rest).
    chunks.append(stream.generate(end + pause + (0.5 if pause else 0.0)))
    t = stream.add_moves([back], end + pause + (1.0 if pause else 0.0))
    chunks.append(stream.generate(t, final=True))
    assert stream.channels[0].position == round(100.0 / STEP_100)
    assert start + _net_steps(chunks) == round(100.0 / STEP_100)


def test_a_dwell_on_a_half_step_point_loses_no_step():
    """A G4 after a move that stops on a half-step point: steps are made into the dwell
    before the next move is known, and that move then starts right where the dwell ends."""
    tie = 122.375
    there = _straddling_move(tie)
    stream = _x_stream()
    start = stream.channels[0].position
    chunks = []
    end = stream.add_moves([_stop_at(100.0, there.start[0]), there], 1.0)
    after_dwell = stream.add_moves([PlannedMove.dwell(there.end, 2.0)], end)
    chunks.append(stream.generate(end + 1.0))
    t = stream.add_moves([_stop_at(tie, 100.0)], after_dwell)
    chunks.append(stream.generate(t, final=True))
    assert stream.channels[0].position == round(100.0 / STEP_100)
    assert start + _net_steps(chunks) == round(100.0 / STEP_100)


def test_row_end_is_the_kernels_held_value_to_the_bit():
    from printhost.control.kernels.position import held_value
    from printhost.control.stepstream import row_end
    rng = np.random.default_rng(7)
    rows = np.zeros((2000, 10))
    rows[:, 1] = rng.uniform(1e-4, 2.0, 2000)          # MOVE_T
    rows[:, 2] = rng.uniform(0.0, 300.0, 2000)         # START_V
    rows[:, 3] = rng.uniform(-5000.0, 5000.0, 2000)    # HALF_ACCEL
    rows[:, 4:7] = rng.uniform(-300.0, 300.0, (2000, 3))
    rows[:, 7:10] = rng.uniform(-1.0, 1.0, (2000, 3))
    for i in range(len(rows)):
        one = np.ascontiguousarray(rows[i:i + 1])
        for col in range(3):
            assert row_end(rows[i], col) == held_value(one, 0, col)
