"""The simulated Klipper MCU's firmware: commands in, responses and pin changes out.

printhost's host code is tested against this simulator and must then work unchanged
against unmodified Klipper firmware on a real board, so this module reproduces what a
host can observe of that firmware: the replies and their timing, the order in which
errors win, the exact step clocks, and above all the shutdowns - which command or
timer ends up in which shutdown reason, what a shut-down MCU still answers, and that
it puts every output back to its default value.

It is pure logic without I/O or wall-clock time. The caller owns the clock: it hands
each decoded command to `handle` with the 64-bit MCU clock at which it arrived, calls
`advance` so timers due by then run, and delivers whatever `send` is called with.
The physical world (ADC readings, endstop levels, what outputs drive) is a `BoardModel`.
Things the firmware does on its own - stepping, sampling, trigger reports, statistics -
happen in `advance`; steppers are computed per move, so `stepper_positions` is exact at
any clock without a timer per step.

The object commands live in `fw_commands`; the objects in `fw_steppers`,
`fw_triggers`, `fw_adc` and `fw_gpio`; timers and clock arithmetic in `fw_clock`.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, Protocol, TypeVar

from printhost.mcu.dictionary import expand_enumerations
from printhost.mcu.sim_dictionary import sim_dictionary, sim_dictionary_bytes
from printhost.sim.mcu.fw_adc import AnalogIn
from printhost.sim.mcu.fw_base import BASE_COMMANDS
from printhost.sim.mcu.fw_clock import FirmwareShutdown, Scheduler, Timer, low32, u8, u32
from printhost.sim.mcu.fw_commands import OBJECT_COMMANDS
from printhost.sim.mcu.fw_gpio import DigitalOut, PwmOut
from printhost.sim.mcu.fw_steppers import Stepper
from printhost.sim.mcu.fw_triggers import Endstop, Trsync

__all__ = ["BoardModel", "DEFAULT_MOVE_COUNT", "IN_SHUTDOWN_COMMANDS", "SimFirmware"]

#: Queue entries a finalized configuration gets (queue_step and queued output changes
#: share them). Klipper allocates as many as RAM allows, up to 1024.
DEFAULT_MOVE_COUNT = 500

#: Commands a shut-down MCU still executes; any other is answered with `is_shutdown`.
IN_SHUTDOWN_COMMANDS = frozenset({
    "identify", "get_config", "get_clock", "get_uptime", "emergency_stop",
    "clear_shutdown", "reset", "debug_read", "debug_write", "debug_ping", "debug_nop"})

#: Step history kept for position queries in the past, in seconds of MCU clock.
HISTORY_S = 1.0
STATS_INTERVAL_US = 5_000_000
#: Nominal main-loop cost reported in `stats` for every command or timer handled.
LOOP_COST_US = 2

T = TypeVar("T")


class BoardModel(Protocol):
    """The physical world around the MCU."""

    def adc_sample(self, pin: str, clock: int) -> int:
        """One ADC conversion of `pin` at `clock`, 0..ADC_MAX."""
        ...

    def set_output(self, pin: str, duty: float, clock: int) -> None:
        """`pin` drives `duty` (0..1; digital outputs 0 or 1) from `clock` on."""
        ...

    def endstop_level(self, pin: str, clock: int, positions: Mapping[str, int]) -> int:
        """The raw level (0/1) of input `pin` at `clock`; `positions` are the step
        counts of every stepper, by step pin name, at that clock."""
        ...

    def endstop_gradient(self, pin: str) -> dict[str, float]:
        """How the coordinate endstop `pin` watches changes per step of each motor (by
        step pin), when its level is a threshold on a coordinate linear in the motor
        positions; empty when it is not, and the endstop then samples every time."""
        ...


class SimFirmware:
    """One simulated Klipper MCU. See the module docstring for how to drive it."""

    def __init__(self, board: BoardModel, send: Callable[[str, dict[str, Any]], None],
                 dictionary: dict | None = None, *, move_count: int = DEFAULT_MOVE_COUNT,
                 on_reboot: Callable[[], None] | None = None, stats: bool = True) -> None:
        self.board = board
        self._send = send
        self._on_reboot = on_reboot
        self._stats_enabled = stats
        self.move_count_limit = int(move_count)
        if dictionary is None:
            self.dictionary = sim_dictionary()
            self.identify_data = sim_dictionary_bytes()
        else:
            self.dictionary = dict(dictionary)
            text = json.dumps(self.dictionary, separators=(",", ":"), sort_keys=True)
            self.identify_data = zlib.compress(text.encode("utf-8"), 9)
        enums = expand_enumerations(self.dictionary.get("enumerations", {}))
        self._pins: dict[str, int] = enums.get("pin", {})
        self._pin_names = {number: name for name, number in self._pins.items()}
        self._reason_ids: dict[str, int] = enums.get("static_string_id", {})
        config = self.dictionary.get("config", {})
        self.clock_freq = int(config.get("CLOCK_FREQ", 72_000_000))
        self.ticks_per_us = self.clock_freq // 1_000_000
        self.pwm_max = int(config.get("PWM_MAX", 255))
        self._command_names = {fmt.split()[0] for fmt in self.dictionary.get("commands", {})}
        self._handlers: dict[str, Callable[[SimFirmware, Mapping[str, Any]], None]] = {
            **BASE_COMMANDS, **OBJECT_COMMANDS}
        self.sched = Scheduler()
        self.now = 0
        # What was running when the MCU last shut down (for the simulator's log).
        self.shutdown_context = ""
        # While the owner hands over commands it read at this clock, having last looked
        # at its input at `now` (it was scheduled late), whatever favours a later arrival
        # uses this clock: the move pool (entries freed by then were free when the
        # command arrived) and clock reports (an answer is never older than its
        # question). None: everything happens at `now`.
        self.read_clock: int | None = None
        self.commands_handled = 0
        self._stats_timer = Timer(self._stats_event, "stats")
        self._power_on()

    def _power_on(self) -> None:
        self.sched.reset()
        self.is_shutdown = False
        self.shutdown_reason: str | None = None
        self.shutdown_clock: int | None = None   # when the first reason was latched
        self._reported_reason = ""
        self.finalized = False
        self.config_crc = 0
        self._oids: list[Any] | None = None
        self._steppers: list[Stepper] = []
        self._queues: list[DigitalOut | PwmOut] = []
        self._by_type: dict[type, list[Any]] = {}
        self._tasks: dict[Callable[[], None], None] = {}
        self._outputs: dict[str, float] = {}
        self.debug_memory: dict[int, int] = {}
        self._loops = 0
        self.max_queued_moves = 0   # the most pool entries ever in use at once
        self._stats_sent_at = self.now
        if self._stats_enabled:
            self.sched.add(self._stats_timer, self.now + self._stats_ticks(), self.now)

    # --- driving the firmware ---

    def handle(self, name: str, params: Mapping[str, Any], clock: int) -> None:
        """Execute one decoded command that arrived at `clock` (64-bit MCU clock)."""
        if clock > self.now:
            self.advance(clock)
        self.commands_handled += 1
        self._loops += 1
        try:
            handler = self._handlers.get(name) if name in self._command_names else None
            if handler is None:
                self.shutdown("Invalid command")
            if self.is_shutdown and name not in IN_SHUTDOWN_COMMANDS:
                self.send("is_shutdown", {"static_string_id": self._reported_reason})
            else:
                handler(self, params)
        except FirmwareShutdown as exc:
            self.shutdown_context = f"command {name} {dict(params)} at clock {self.now}"
            self._run_shutdown(exc.reason)
        self._run_tasks()

    def advance(self, clock: int) -> None:
        """Run every timer due at or before `clock`; the present becomes `clock`."""
        while True:
            due = self.sched.pop_due(clock)
            if due is None:
                break
            self.now, timer = due
            self._loops += 1
            try:
                waketime = timer.func(timer)
                if waketime is not None:
                    self.sched.add(timer, waketime, self.now)
            except FirmwareShutdown as exc:
                self.shutdown_context = (f"timer {timer.name or '?'} due at {timer.waketime}, "
                                         f"run at clock {self.now}")
                self._run_shutdown(exc.reason)
            self._run_tasks()
        if clock > self.now:
            self.now = clock
        horizon = self.now - int(HISTORY_S * self.clock_freq)
        for stepper in self._steppers:
            stepper.pending(self.now)
            stepper.forget_before(horizon)

    def next_event_clock(self) -> int | None:
        """When `advance` next has work (None when nothing is scheduled)."""
        return self.sched.next_clock()

    def reboot(self) -> None:
        """Back to the power-on state and announce it with `starting`, as the firmware
        does on every boot. Every pin it drove is released, which on a printer board
        means off (gate pull-downs), so the board model hears 0 for each of them."""
        released = [pin for pin, duty in self._outputs.items() if duty]
        for pin in released:
            self.board.set_output(pin, 0.0, self.now)
        self._power_on()
        self.send("starting", {})

    # --- configuration and shutdown state (used by the basic commands) ---

    def allocate_oids(self, count: int) -> None:
        if self._oids is not None:
            self.shutdown("oids already allocated")
        self._oids = [None] * count

    def finalize(self, crc: int) -> None:
        if self.finalized:
            self.shutdown("Already finalized")
        self.finalized = True
        self.config_crc = crc

    def clear_shutdown(self) -> None:
        if not self.is_shutdown:
            self.shutdown("Shutdown cleared when not shutdown")
        self.is_shutdown = False
        self.shutdown_reason = None
        self.shutdown_clock = None

    def reset_command(self) -> None:
        """The host's `reset`: tell the owner (so it can reset the line), then reboot."""
        if self._on_reboot is not None:
            self._on_reboot()
        self.reboot()

    # --- what the firmware's objects use ---

    def send(self, name: str, params: dict[str, Any]) -> None:
        self._send(name, params)

    def shutdown(self, reason: str) -> NoReturn:
        """Abandon the running command or timer and shut down (firmware code only;
        from outside use `force_shutdown`)."""
        raise FirmwareShutdown(reason)

    def force_shutdown(self, reason: str) -> None:
        """Shut down now, from outside any command or timer (fault injection)."""
        self._run_shutdown(reason)
        self._run_tasks()

    def try_shutdown(self, reason: str) -> None:
        """Shut down unless already shut down (then carry on, as the firmware does)."""
        if not self.is_shutdown:
            raise FirmwareShutdown(reason)

    def check_timer(self, waketime: int) -> None:
        if waketime < self.now:
            self.try_shutdown("Timer too close")

    def add_timer(self, timer: Timer, waketime: int) -> None:
        """Arm `timer`; a waketime already past is the firmware's "Timer too close"."""
        self.check_timer(waketime)
        self.sched.add(timer, waketime, self.now)

    def wake_task(self, task: Callable[[], None]) -> None:
        self._tasks[task] = None

    def move_alloc(self) -> None:
        """Take one entry of the shared move queue (or shut down when none is free)."""
        queued = self.queued_moves(self.latest_arrival())
        if queued >= self.move_count:
            self.shutdown("Move queue overflow")
        self.max_queued_moves = max(self.max_queued_moves, queued + 1)

    def latest_arrival(self) -> int:
        """The latest clock the command being handled can have arrived at."""
        return self.now if self.read_clock is None else max(self.now, self.read_clock)

    def queued_moves(self, at: int | None = None) -> int:
        """Entries of the move pool in use at `at` (default: now)."""
        at = self.now if at is None else at
        return (sum(s.pending(at) for s in self._steppers)
                + sum(q.pending(at) for q in self._queues))

    @property
    def move_count(self) -> int:
        return self.move_count_limit if self.finalized else 0

    def alloc(self, oid: int, obj: Any) -> None:
        oids = self._oids
        if oids is None or oid >= len(oids) or oids[oid] is not None or self.finalized:
            self.shutdown("Can't assign oid")
        oids[oid] = obj
        self._by_type.setdefault(type(obj), []).append(obj)
        if isinstance(obj, Stepper):
            self._steppers.append(obj)
        elif isinstance(obj, (DigitalOut, PwmOut)):
            self._queues.append(obj)

    def lookup(self, oid: int, kind: type[T]) -> T:
        oids = self._oids
        oid = u8(oid)
        if oids is None or oid >= len(oids) or type(oids[oid]) is not kind:
            self.shutdown("Invalid oid type")
        return oids[oid]

    def pin(self, value: Any, error: str) -> str:
        """A pin parameter as its name ("PA3"), whether decoded as a name or a number."""
        if isinstance(value, str):
            if value in self._pins:
                return value
        elif isinstance(value, int) and u32(value) in self._pin_names:
            return self._pin_names[u32(value)]
        self.shutdown(error)

    def pwm_duty(self, value: int) -> float:
        return min(value, self.pwm_max) / self.pwm_max

    def set_output(self, pin: str, duty: float) -> None:
        self._outputs[pin] = duty
        self.board.set_output(pin, duty, self.now)

    # --- inspection ---

    @property
    def steppers(self) -> list[Stepper]:
        return self._steppers

    def recheck_endstops(self) -> None:
        """A move was queued or the board changed: endstops that skipped samples they
        judged unable to match (see `Endstop`) look again from their next sample due."""
        for endstop in self._by_type.get(Endstop, ()):
            endstop.motion_changed()

    def stepper_positions(self, clock: int) -> dict[str, int]:
        """Steps executed at or before `clock` (net, dir=1 counting up), by step pin."""
        return {s.step_pin: s.position(clock) for s in self._steppers}

    def step_clocks(self, step_pin: str, start: int, end: int) -> list[tuple[int, int]]:
        """(clock, +1/-1) of each step of that stepper with start <= clock < end, from
        the retained history (HISTORY_S back) and the queued future."""
        for stepper in self._steppers:
            if stepper.step_pin == step_pin:
                return stepper.step_clocks(start, end)
        raise KeyError(step_pin)

    @property
    def outputs(self) -> dict[str, float]:
        return dict(self._outputs)

    def snapshot(self, clock: int) -> dict[str, Any]:
        """JSON-ready state: positions at `clock`, everything else as of now."""
        return {
            "clock": clock,
            "shutdown": self.is_shutdown,
            "reason": self.shutdown_reason,
            "shutdown_clock": self.shutdown_clock,
            "is_config": self.finalized,
            "config_crc": self.config_crc,
            "move_count": self.move_count,
            "queued_moves": self.queued_moves(),
            "max_queued_moves": self.max_queued_moves,
            "positions": self.stepper_positions(clock),
            "outputs": dict(self._outputs),
            "commands_handled": self.commands_handled,
        }

    # --- internals ---

    def _run_tasks(self) -> None:
        while self._tasks:
            tasks = list(self._tasks)
            self._tasks.clear()
            for task in tasks:
                task()

    def _run_shutdown(self, reason: str) -> None:
        # As the firmware: the first reason sticks until cleared; every shutdown (even
        # a repeated one) drops all timers, stops motion, restores outputs and reports.
        if not self.is_shutdown:
            self.shutdown_reason = reason
            self.shutdown_clock = self.now
            # Responses name the reason by its enumeration entry, which is what the
            # codec encodes. The few firmware reasons the dictionary lacks (bad pins,
            # which the host's encoder cannot even produce) go out as a parser error.
            self._reported_reason = (reason if reason in self._reason_ids
                                     else "Command parser error")
        self.is_shutdown = True
        self.sched.reset()
        self._tasks.clear()
        for stepper in self._steppers:
            stepper.stop(self.now)
        for trsync in self._by_type.get(Trsync, []):
            trsync.clear()
        for obj in self._by_type.get(AnalogIn, []):
            obj.on_shutdown()
        for queue in self._queues:
            queue.on_shutdown()
        if self._stats_enabled:
            self.sched.add(self._stats_timer,
                           self._stats_sent_at + self._stats_ticks(), self.now)
        self.send("shutdown", {"clock": low32(self.now),
                               "static_string_id": self._reported_reason})

    def _stats_ticks(self) -> int:
        return STATS_INTERVAL_US * self.ticks_per_us

    def _stats_event(self, timer: Timer) -> int | None:
        count = max(1, self._loops)
        cost = LOOP_COST_US * self.ticks_per_us
        sumsq = min(0xFFFFFFFF, count * -(-cost * cost // 256))
        self.send("stats", {"count": u32(count), "sum": u32(count * cost), "sumsq": sumsq})
        self._loops = 0
        self._stats_sent_at = timer.waketime
        return timer.waketime + self._stats_ticks()
