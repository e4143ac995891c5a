"""Time inside the simulated MCU: 32-bit wire clocks, timers and shutdown requests.

The real firmware counts time in a free-running 32-bit register and compares two
instants by the sign of their 32-bit difference, so any clock a command carries means
"the instant within +-2**31 ticks of now that has these low bits". The simulator keeps
one unbounded 64-bit clock instead (easier to reason about, never ambiguous) and
converts at the edges: `extend32` reads a command's clock, `low32` writes a response's.

`Scheduler` plays the firmware's timer list. Each timer keeps the instant it asked for
(`waketime`), which its callback uses for arithmetic exactly as the firmware's timers
do, while the heap orders it by the instant it can actually run: never before the
present, because a timer armed for the past runs at once on a real chip too.

A shutdown inside a command or timer stops that code on the spot (the firmware
long-jumps out of it); `FirmwareShutdown` gives the same control flow in Python.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

MASK32 = 0xFFFFFFFF
HALF32 = 0x80000000


def low32(clock: int) -> int:
    """The low 32 bits of a clock: what goes into a `%u` clock field of a response."""
    return clock & MASK32


def signed32(value: int) -> int:
    """`value` modulo 2**32 read as a signed 32-bit number (the firmware's time deltas)."""
    value &= MASK32
    return value - (1 << 32) if value & HALF32 else value


def extend32(clock32: int, now: int) -> int:
    """The 64-bit clock a command's 32-bit `clock32` names, seen from `now`.

    The firmware decides "past or future" by the sign of the 32-bit difference, so the
    answer always lies in [now - 2**31, now + 2**31).
    """
    return now + signed32(clock32 - now)


def u8(value: Any) -> int:
    return int(value) & 0xFF


def s8(value: Any) -> int:
    value = int(value) & 0xFF
    return value - 0x100 if value & 0x80 else value


def u16(value: Any) -> int:
    return int(value) & 0xFFFF


def s16(value: Any) -> int:
    value = int(value) & 0xFFFF
    return value - 0x10000 if value & 0x8000 else value


def u32(value: Any) -> int:
    return int(value) & MASK32


class FirmwareShutdown(Exception):
    """Raised where the firmware would call shutdown(): abandons the running code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: A timer callback gets the timer and returns its next waketime, or None when done.
TimerFunc = Callable[["Timer"], "int | None"]


class Timer:
    """One scheduled callback, re-armed by returning the next waketime."""

    __slots__ = ("func", "waketime", "_token", "name")

    def __init__(self, func: TimerFunc, name: str = "") -> None:
        self.func = func
        self.waketime = 0
        self._token = 0  # 0: not scheduled; otherwise the live heap entry's id
        self.name = name

    @property
    def scheduled(self) -> bool:
        return self._token != 0


class Scheduler:
    """The firmware's timer list as a heap of (run clock, insertion order, timer).

    Timers due at the same clock run in the order they were armed, as the firmware
    inserts a timer after every other timer with the same waketime. Deleting a timer
    only invalidates its heap entry, so deletion is O(1) and the heap never needs
    searching.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Timer]] = []
        self._counter = 0

    def add(self, timer: Timer, waketime: int, now: int) -> None:
        self._counter += 1
        timer.waketime = waketime
        timer._token = self._counter
        heapq.heappush(self._heap, (max(waketime, now), self._counter, timer))

    def delete(self, timer: Timer) -> None:
        timer._token = 0

    def reset(self) -> None:
        """Drop every timer (the firmware's shutdown clears its whole timer list)."""
        for _, _, timer in self._heap:
            timer._token = 0
        self._heap.clear()

    def next_clock(self) -> int | None:
        heap = self._heap
        while heap and heap[0][2]._token != heap[0][1]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, clock: int) -> tuple[int, Timer] | None:
        """The next live timer due at or before `clock` (removed), or None."""
        heap = self._heap
        while heap:
            run_at, token, timer = heap[0]
            if timer._token != token:
                heapq.heappop(heap)
                continue
            if run_at > clock:
                return None
            heapq.heappop(heap)
            timer._token = 0
            return run_at, timer
        return None
