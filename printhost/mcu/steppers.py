"""Steppers on the MCU, and the sender that feeds them compressed steps in time.

The motion pipeline produces `StepCommands` (rows of `queue_step` and
`set_next_step_dir`, in clock order). The firmware keeps queued moves in one shared pool
of `move_count` entries; a `queue_step` that arrives when the pool is full shuts the MCU
down ("Move queue overflow"). A move's entry is freed when the stepper loads it, which
happens when its previous move ends - at the clock the host knows as that move's start.
So `StepSender` remembers the start clocks of the moves it has in the pool and holds a
new move back until the oldest of them has started on the MCU (by the clock estimate,
less a guard: `Mcu.reached_clock`), exactly the bookkeeping the firmware's pool needs.
The pool is shared with queued pin updates; the sender only ever fills the entries the
outputs have not reserved (`Mcu.step_move_slots`), so the two together can never
overflow it, however late the host's loop runs.

The rows the pool admits are encoded together by the compiled encoder
(`encode_step_commands`), the one `printhost batch` writes its output with: a live
print and a batch run put the same bytes on the wire for the same rows.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import replace
from typing import Any

import numpy as np

from printhost.control.stepstream import QUEUE_STEP, StepCommands
from printhost.mcu.mcu import Mcu
from printhost.mcu.pins import PinSpec
from printhost.mcu.stepencode import encode_step_commands, step_commands_crc

# Width of the step pulse the drivers need (2 us suits the common TMC and A4988 drivers).
STEP_PULSE_S = 0.000002


class McuStepper:
    """One stepper's config on the MCU; its oid is what the step stream addresses."""

    def __init__(self, mcu: Mcu, name: str, step_pin: PinSpec, dir_pin: PinSpec,
                 enable_pin: PinSpec | None = None) -> None:
        self.mcu = mcu
        self.name = name
        self.step_pin = step_pin
        self.dir_pin = dir_pin
        self.enable_pin = enable_pin
        self.oid = mcu.create_oid()
        self.enable_oid = mcu.create_oid() if enable_pin is not None else None
        self.position: int | None = None
        mcu.register_config(self._build_config)
        mcu.register_response("stepper_position", self._on_position, self.oid)

    def _build_config(self) -> None:
        mcu = self.mcu
        mcu.check_format("config_stepper oid=%c step_pin=%c dir_pin=%c invert_step=%c "
                         "step_pulse_ticks=%u")
        mcu.check_format("queue_step oid=%c interval=%u count=%hu add=%hi")
        mcu.check_format("set_next_step_dir oid=%c dir=%c")
        mcu.add_config_cmd("config_stepper", oid=self.oid, step_pin=self.step_pin.name,
                           dir_pin=self.dir_pin.name, invert_step=int(self.step_pin.invert),
                           step_pulse_ticks=int(round(STEP_PULSE_S * mcu.clock_freq)))
        mcu.add_config_cmd("reset_step_clock", oid=self.oid, clock=0)
        if self.enable_pin is not None:
            # The driver is on from configuration until any shutdown, which returns the
            # pin to its default (disabled) so a faulted printer's motors go limp.
            on = 1 ^ int(self.enable_pin.invert)
            mcu.add_config_cmd("config_digital_out", oid=self.enable_oid,
                               pin=self.enable_pin.name, value=on, default_value=1 - on,
                               max_duration=0)

    def query_position(self) -> None:
        self.position = None
        self.mcu.send("stepper_get_position", oid=self.oid)

    def _on_position(self, params: dict[str, Any], _t: float) -> None:
        self.position = int(params["pos"])


class _Queued:
    """Rows waiting for the pool, with the columns the admission loop reads as lists
    (indexing a list is several times cheaper than indexing a numpy array)."""

    __slots__ = ("cmds", "is_step", "starts")

    def __init__(self, cmds: StepCommands) -> None:
        self.cmds = cmds
        step = cmds.kind == QUEUE_STEP
        self.is_step = step.tolist()
        self.starts = np.where(step, cmds.clock - cmds.interval.astype(np.int64), 0).tolist()


class StepSender:
    """Sends step rows to the MCU no faster than its move pool frees up."""

    def __init__(self, mcu: Mcu, steppers: list[McuStepper]) -> None:
        self.mcu = mcu
        # Direction-pin inversion by oid: rows carry the motion's direction, the wire
        # the pin level.
        self._invert = np.zeros(max((s.oid for s in steppers), default=0) + 1, np.int8)
        for s in steppers:
            self._invert[s.oid] = int(s.dir_pin.invert)
        self._pending: deque[_Queued] = deque()
        self._row = 0
        self._move_starts: list[int] = []  # heap of start clocks of the moves in the pool
        self.sent_moves = 0
        self.late_moves = 0
        self.last_clock_sent = 0
        self.stream_crc = 0
        mcu.add_init_step(self._forget_pool)

    def _forget_pool(self) -> None:
        """After (re)configuration the MCU's pool is empty and its clock starts afresh."""
        self._move_starts.clear()
        self.drop_pending()

    def queue(self, commands: StepCommands) -> None:
        if len(commands):
            self._pending.append(_Queued(commands))

    @property
    def backlog(self) -> int:
        return sum(len(q.cmds) for q in self._pending) - self._row

    def flush(self) -> None:
        """Send every row the pool has room for (called each control tick)."""
        if not self._pending:
            return
        mcu = self.mcu
        est_clock = mcu.reached_clock()
        capacity = mcu.step_move_slots
        pool = self._move_starts
        while self._pending:
            queued = self._pending[0]
            first = i = self._row
            n = len(queued.cmds)
            is_step, starts = queued.is_step, queued.starts
            while i < n:
                if is_step[i]:
                    if len(pool) >= capacity:
                        if pool[0] > est_clock:
                            break
                        heapq.heapreplace(pool, starts[i])
                    else:
                        heapq.heappush(pool, starts[i])
                i += 1
            if i > first:
                self._send(queued.cmds, first, i, est_clock)
            if i < n:
                self._row = i
                break
            self._pending.popleft()
            self._row = 0

    def _send(self, cmds: StepCommands, first: int, end: int, est_clock: int) -> None:
        """Encode rows [first, end) together and hand them to the link."""
        rows = cmds.rows(first, end)
        rows = replace(rows, dir=rows.dir ^ self._invert[rows.oid])
        step = rows.kind == QUEUE_STEP
        moves = int(np.count_nonzero(step))
        if moves:
            clocks = rows.clock[step]
            self.late_moves += int(np.count_nonzero(clocks < est_clock))
            self.last_clock_sent = max(self.last_clock_sent, int(clocks.max()))
            self.sent_moves += moves
        self.stream_crc = step_commands_crc(self.stream_crc, rows)
        encoded = encode_step_commands(self.mcu.dictionary, rows)
        data = encoded.data.tobytes()
        out: list[bytes] = []
        pos = 0
        for length in encoded.lengths.tolist():
            out.append(data[pos:pos + length])
            pos += length
        self.mcu.send_encoded(out)

    def drop_pending(self) -> int:
        """Forget rows not sent yet (after an MCU shutdown); returns how many."""
        n = self.backlog
        self._pending.clear()
        self._row = 0
        return n


def stepper_rows_by_oid(commands: StepCommands) -> dict[int, int]:
    """Rows per oid (for logs and tests)."""
    oids, counts = np.unique(commands.oid, return_counts=True)
    return {int(o): int(c) for o, c in zip(oids, counts)}
