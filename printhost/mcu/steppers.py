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
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any

import numpy as np

from printhost.control.stepstream import QUEUE_STEP, StepCommands
from printhost.mcu.digest import step_stream_crc
from printhost.mcu.mcu import Mcu
from printhost.mcu.pins import PinSpec

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


class StepSender:
    """Sends step rows to the MCU no faster than its move pool frees up."""

    def __init__(self, mcu: Mcu, steppers: list[McuStepper]) -> None:
        self.mcu = mcu
        self._invert = {s.oid: int(s.dir_pin.invert) for s in steppers}
        self._pending: deque[StepCommands] = deque()
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
            self._pending.append(commands)

    @property
    def backlog(self) -> int:
        return sum(len(c) for c in self._pending) - self._row

    def flush(self) -> None:
        """Send every row the pool has room for (called each control tick)."""
        if not self._pending:
            return
        mcu = self.mcu
        est_clock = mcu.reached_clock()
        capacity = mcu.step_move_slots
        out: list[bytes] = []
        encode = mcu.codec.encode
        while self._pending:
            cmds = self._pending[0]
            i = self._row
            if i >= len(cmds):
                self._pending.popleft()
                self._row = 0
                continue
            oid = int(cmds.oid[i])
            first = int(cmds.clock[i])
            if cmds.kind[i] == QUEUE_STEP:
                start = first - int(cmds.interval[i])
                if len(self._move_starts) >= capacity:
                    if self._move_starts[0] > est_clock:
                        break
                    heapq.heapreplace(self._move_starts, start)
                else:
                    heapq.heappush(self._move_starts, start)
                if first < est_clock:
                    self.late_moves += 1
                interval, count, add = int(cmds.interval[i]), int(cmds.count[i]), int(cmds.add[i])
                out.append(encode("queue_step", oid=oid, interval=interval, count=count, add=add))
                self.stream_crc = step_stream_crc(self.stream_crc, "queue_step", oid,
                                                  interval, count, add)
                self.sent_moves += 1
                self.last_clock_sent = max(self.last_clock_sent, first)
            else:
                direction = int(cmds.dir[i]) ^ self._invert.get(oid, 0)
                out.append(encode("set_next_step_dir", oid=oid, dir=direction))
                self.stream_crc = step_stream_crc(self.stream_crc, "set_next_step_dir", oid,
                                                  direction)
            self._row = i + 1
        if out:
            mcu.send_encoded(out)

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
