"""A motion executor that moves a model toolhead along planned moves in simulated time.

It stands in for the MCU: moves are placed on a timeline of print time a little ahead
of "now" (the lead time a real host needs to get steps to the MCU before they are
due), and the toolhead position at any instant is read off the move running then.
Abort behaves like the hardware will: a move already executing cannot be cut short
without losing track of the position, so it finishes and only later moves are dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from printhost.control.motion import PlannedMove, Vec4


class _Clock(Protocol):
    def now(self) -> float: ...


class SimulatedMotionExecutor:
    """`MotionExecutor` over a `SimClock`/`ManualClock`.

    `on_move_started(start_time, move)` is called from `update()` (and the other
    methods that advance to `now()`) once for each move whose start time has been
    reached, in order; moves dropped by `abort()` before starting are never reported.
    Tests use it to record what the printer actually did.
    """

    def __init__(self, clock: _Clock, lead_time_s: float = 0.1,
                 start_position: Vec4 = (0.0, 0.0, 0.0, 0.0),
                 on_move_started: Callable[[float, PlannedMove], None] | None = None) -> None:
        if lead_time_s < 0.0:
            raise ValueError("lead_time_s must not be negative")
        self._clock = clock
        self.lead_time_s = lead_time_s
        self.on_move_started = on_move_started
        self._moves: deque[tuple[float, PlannedMove]] = deque()
        self._front_announced = False   # on_move_started already called for _moves[0]
        self._position: Vec4 = tuple(float(c) for c in start_position)  # type: ignore[assignment]
        self._end_time = clock.now()

    def now(self) -> float:
        return self._clock.now()

    def schedule(self, move: PlannedMove) -> None:
        start = max(self._end_time, self._clock.now() + self.lead_time_s)
        self._moves.append((start, move))
        self._end_time = start + move.duration

    def queue_end_time(self) -> float:
        return self._end_time

    def update(self) -> None:
        now = self._clock.now()
        moves = self._moves
        while moves:
            start, move = moves[0]
            if start > now:
                break
            # Only the front move can be running: the next starts when it ends.
            if not self._front_announced:
                self._front_announced = True
                if self.on_move_started is not None:
                    self.on_move_started(start, move)
            if start + move.duration > now:
                self._position = move.position_at(now - start)
                break
            moves.popleft()
            self._front_announced = False
            self._position = move.end

    def position(self) -> Vec4:
        self.update()
        return self._position

    def is_idle(self) -> bool:
        self.update()
        return not self._moves

    def set_position(self, pos: Vec4) -> None:
        if not self.is_idle():
            raise RuntimeError("set_position while moves are still scheduled")
        self._position = tuple(float(c) for c in pos)  # type: ignore[assignment]

    def abort(self) -> Vec4:
        """Drop every move that has not started; return where the running one will end."""
        self.update()
        now = self._clock.now()
        if self._moves and self._moves[0][0] <= now:
            running = self._moves.popleft()
            self._moves.clear()
            self._moves.append(running)
            self._end_time = running[0] + running[1].duration
            return running[1].end
        self._moves.clear()
        self._front_announced = False
        self._end_time = min(self._end_time, now)
        return self._position
