"""Endstops on the MCU, and the trigger synchronisation ("trsync") that stops steppers.

Homing must stop the motors the moment a switch closes, which the host cannot do over a
serial line. So the firmware does it: an endstop is sampled on the MCU, and when it
reads triggered it fires a trsync object that halts every stepper registered with it.
The trsync also expires unless the host keeps extending its deadline; a host that dies
mid-homing therefore stops the motors too, instead of grinding them into the frame.
"""

from __future__ import annotations

import time
from typing import Any

from printhost.mcu.mcu import MAX_SCHEDULE_AHEAD_S, Mcu
from printhost.mcu.pins import PinSpec
from printhost.mcu.steppers import McuStepper

# The firmware's trsync reasons (Klipper's numbering, which its firmware reports back).
REASON_ENDSTOP_HIT = 1
REASON_HOST_REQUEST = 2
REASON_PAST_END_TIME = 3
REASON_COMMS_TIMEOUT = 4
# Klipper's endstop sampling: 4 samples 15 us apart must all read triggered.
SAMPLE_TIME_S = 0.000015
SAMPLE_COUNT = 4
# Time between sampling bursts while homing, by default; callers pass the time one
# step takes at the homing speed, so the switch is seen within one step of closing.
REST_TIME_S = 0.0005
# The trsync deadline: at least this much print time, and this much host time (the
# simulated MCU's clock can run faster than the host's); reports come 3x as often.
EXPIRE_PRINT_S = 0.25
EXPIRE_WALL_S = 0.5
# The host extends the deadline at least this often by itself (host time), whatever
# the reports do.
KEEP_ALIVE_S = 0.1


class McuEndstop:
    """One endstop pin and its trsync, stopping `steppers` when it triggers."""

    def __init__(self, mcu: Mcu, pin: PinSpec, steppers: list[McuStepper]) -> None:
        self.mcu = mcu
        self.pin = pin
        self.steppers = steppers
        self.oid = mcu.create_oid()
        self.trsync_oid = mcu.create_oid()
        self.armed = False
        self.trigger_reason: int | None = None
        self.trigger_clock: int | None = None
        self._expire_ticks = 0
        self._extended_at = 0.0
        mcu.register_config(self._build_config)
        mcu.register_response("trsync_state", self._on_trsync_state, self.trsync_oid)

    def _build_config(self) -> None:
        mcu = self.mcu
        for fmt in ("config_endstop oid=%c pin=%c pull_up=%c", "config_trsync oid=%c",
                    "trsync_start oid=%c report_clock=%u report_ticks=%u expire_reason=%c",
                    "trsync_set_timeout oid=%c clock=%u", "trsync_trigger oid=%c reason=%c",
                    "stepper_stop_on_trigger oid=%c trsync_oid=%c",
                    "endstop_home oid=%c clock=%u sample_ticks=%u sample_count=%c "
                    "rest_ticks=%u pin_value=%c trsync_oid=%c trigger_reason=%c"):
            mcu.check_format(fmt)
        mcu.add_config_cmd("config_endstop", oid=self.oid, pin=self.pin.name,
                           pull_up=int(self.pin.pullup > 0))
        mcu.add_config_cmd("config_trsync", oid=self.trsync_oid)

    def arm(self, start_print_time: float, rest_time_s: float = REST_TIME_S) -> None:
        """Start sampling at `start_print_time` (the homing move's start), a burst of
        samples every `rest_time_s`."""
        mcu = self.mcu
        freq = mcu.clock_freq
        clock = mcu.clock_of(start_print_time)
        expire_s = min(MAX_SCHEDULE_AHEAD_S,
                       max(EXPIRE_PRINT_S, mcu.wall_to_print_s(EXPIRE_WALL_S)))
        self._expire_ticks = int(expire_s * freq)
        report_ticks = max(1, int(self._expire_ticks * 0.3))
        self.trigger_reason = None
        self.trigger_clock = None
        self.armed = True
        mcu.send("trsync_start", oid=self.trsync_oid, report_clock=clock & 0xFFFFFFFF,
                 report_ticks=report_ticks, expire_reason=REASON_COMMS_TIMEOUT)
        # Steppers register after trsync_start, which clears earlier registrations.
        for stepper in self.steppers:
            mcu.send("stepper_stop_on_trigger", oid=stepper.oid, trsync_oid=self.trsync_oid)
        mcu.send("trsync_set_timeout", oid=self.trsync_oid,
                 clock=(clock + self._expire_ticks) & 0xFFFFFFFF)
        self._extended_at = time.monotonic()
        mcu.send("endstop_home", oid=self.oid, clock=clock & 0xFFFFFFFF,
                 sample_ticks=max(1, int(SAMPLE_TIME_S * freq)), sample_count=SAMPLE_COUNT,
                 rest_ticks=max(1, int(rest_time_s * freq)),
                 pin_value=1 ^ int(self.pin.invert), trsync_oid=self.trsync_oid,
                 trigger_reason=REASON_ENDSTOP_HIT)

    def _on_trsync_state(self, params: dict[str, Any], _t: float) -> None:
        if not self.armed:
            return
        if not params["can_trigger"]:
            if self.trigger_reason is None:
                self.trigger_reason = int(params["trigger_reason"])
                self.trigger_clock = self.mcu.clocksync.extend(int(params["clock"])) \
                    if self.mcu.clocksync is not None else int(params["clock"])
            return
        # Still waiting for the switch: push the deadline out again.
        self._extend()

    def _extend(self) -> None:
        now_clock = self.mcu.clock_of(self.mcu.print_time())
        self.mcu.send("trsync_set_timeout", oid=self.trsync_oid,
                      clock=(now_clock + self._expire_ticks) & 0xFFFFFFFF)
        self._extended_at = time.monotonic()

    def keep_alive(self) -> None:
        """Extend the deadline on the host's own clock too (called every control pass):
        the MCU does not resend a report the line lost, and a noisy line can lose two in
        a row (0.3 s without an extension, plus the extension's own retransmissions),
        which would end a homing move the host is still watching. The deadline keeps
        its purpose: a host that stops running stops extending it."""
        if (self.armed and self.trigger_reason is None
                and time.monotonic() - self._extended_at >= KEEP_ALIVE_S):
            self._extend()

    def request_end(self, reason: int) -> None:
        """Ask the MCU to end the trsync now with `reason`; its `trsync_state` answer
        says what ended it, which may be an endstop trigger that came first."""
        if self.armed and self.trigger_reason is None:
            self.mcu.send("trsync_trigger", oid=self.trsync_oid, reason=reason)

    @property
    def triggered(self) -> bool:
        return self.trigger_reason is not None

    def disarm(self) -> None:
        """Stop sampling and release the trsync (also after a trigger)."""
        if not self.armed:
            return
        self.armed = False
        mcu = self.mcu
        mcu.send("endstop_home", oid=self.oid, clock=0, sample_ticks=0, sample_count=0,
                 rest_ticks=0, pin_value=0, trsync_oid=self.trsync_oid, trigger_reason=0)
        mcu.send("trsync_trigger", oid=self.trsync_oid, reason=REASON_HOST_REQUEST)
