"""Digital and PWM outputs on the MCU: heaters, fans, stepper enables.

Heater pins carry a `max_duration`: the firmware itself turns the pin back to its
default (off) and shuts down when the host has not renewed a non-default value within
that time. So a host that dies, freezes or loses the link cannot leave a heater on.

Queued updates (`queue_digital_out`) take an entry of the firmware's move pool, which
steps share. Each output reserves `Mcu.pending_updates_limit` entries (20 on a board's pool) and never has more updates
than that waiting on the MCU: beyond them, a new value waits until the oldest has been
applied (by the clock estimate), only the latest value is kept, and `flush()` (every
control tick) sends it when its turn comes. That is what lets the step sender fill the
rest of the pool without ever overflowing it. Klipper keeps one per pin; a heater's
value follows every reading (0.3 s of print time apart) and is scheduled a margin
ahead, so more than one may be waiting whenever the margin exceeds the reading
interval (in a simulation faster than real time), and one entry would make each update
wait for the previous: a dead time that varies from one update to the next.
"""

from __future__ import annotations

from collections import deque

from printhost.mcu.mcu import MIN_SCHEDULE_AHEAD_S, Mcu
from printhost.mcu.pins import PinSpec

# Klipper's limit for heater pins: the host must renew the value at least this often.
HEATER_MAX_DURATION_S = 3.0
# The firmware refuses ("Scheduled digital out event will exceed max_duration") an update
# due more than max_duration after the one before it while that one is on. An update is
# scheduled a margin ahead, and the margin widens on a noisy line (up to 5 s of print
# time at a high time factor): a widening between two updates would open such a gap. So
# an update after an "on" one is due at most this fraction of max_duration after it, the
# margin growing over a few updates instead of in one step; never sooner than the clean
# line's margin.
MAX_DURATION_GAP_FRACTION = 0.75



class McuPwmOutput:
    """A software-PWM pin (`config_digital_out` + `set_digital_out_pwm_cycle`).

    Values are duty cycles 0..1 at a print time; an inverted pin (`!`) is driven with the
    complement, so callers always think in "on" terms. Off is the default and shutdown
    value.
    """

    def __init__(self, mcu: Mcu, pin: PinSpec, cycle_time_s: float,
                 max_duration_s: float = 0.0) -> None:
        self.mcu = mcu
        self.pin = pin
        self.cycle_time_s = cycle_time_s
        self.max_duration_s = max_duration_s
        self.oid = mcu.create_oid()
        self.cycle_ticks = 0
        self.value = 0.0
        self.last_time = 0.0
        # Clocks of the updates sent and perhaps not applied yet, oldest first, and the
        # value waiting for its turn.
        self._sent_clocks: deque[int] = deque()
        self._held: tuple[float, float] | None = None
        mcu.reserve_move_slot()
        mcu.register_config(self._build_config)
        mcu.add_init_step(self._forget_updates)

    def _forget_updates(self) -> None:
        """After (re)configuration the MCU's clock and queues start afresh."""
        self._sent_clocks.clear()
        self.last_time = 0.0
        self.value = 0.0
        self._held = None

    def _build_config(self) -> None:
        mcu = self.mcu
        mcu.check_format("config_digital_out oid=%c pin=%u value=%c default_value=%c "
                         "max_duration=%u")
        mcu.check_format("set_digital_out_pwm_cycle oid=%c cycle_ticks=%u")
        mcu.check_format("queue_digital_out oid=%c clock=%u on_ticks=%u")
        off = int(self.pin.invert)
        self.cycle_ticks = max(1, int(self.cycle_time_s * mcu.clock_freq))
        mcu.add_config_cmd("config_digital_out", oid=self.oid, pin=self.pin.name, value=off,
                           default_value=off,
                           max_duration=int(self.max_duration_s * mcu.clock_freq))
        mcu.add_config_cmd("set_digital_out_pwm_cycle", oid=self.oid,
                           cycle_ticks=self.cycle_ticks)

    def set(self, print_time: float, duty: float) -> float | None:
        """Schedule `duty` at `print_time` (moved later if that is too soon or before the
        previous update). Returns the print time it was scheduled for, or None when
        `Mcu.pending_updates_limit` updates are still waiting on the MCU: the value is then sent by a
        later `flush()`, replacing any value held before it."""
        self._held = (print_time, min(1.0, max(0.0, float(duty))))
        return self.flush()

    @property
    def pending(self) -> bool:
        """A value is held until an earlier update has been applied."""
        return self._held is not None

    def flush(self) -> float | None:
        """Send the held value if fewer than `Mcu.pending_updates_limit` updates wait."""
        if self._held is None:
            return None
        mcu = self.mcu
        sent = self._sent_clocks
        limit = mcu.pending_updates_limit
        if len(sent) >= limit:
            reached = mcu.reached_clock()
            while sent and sent[0] <= reached:
                sent.popleft()
            if len(sent) >= limit:
                return None
        print_time, duty = self._held
        self._held = None
        when = max(print_time, mcu.earliest_schedule_time(), self.last_time + 1e-6)
        if self.max_duration_s and self.value != 0.0:
            latest = self.last_time + MAX_DURATION_GAP_FRACTION * self.max_duration_s
            when = max(min(when, latest), mcu.print_time() + MIN_SCHEDULE_AHEAD_S,
                       self.last_time + 1e-6)
        on_ticks = int(round(duty * self.cycle_ticks))
        if self.pin.invert:
            on_ticks = self.cycle_ticks - on_ticks
        clock = mcu.clock_of(when)
        # Due a schedule margin from now: ahead of any queued burst of step commands.
        mcu.send("queue_digital_out", urgent=True, oid=self.oid, clock=clock & 0xFFFFFFFF,
                 on_ticks=on_ticks)
        mcu.note_scheduled(f"queue_digital_out oid={self.oid}", when)
        self.value = duty
        self.last_time = when
        sent.append(clock)
        return when
