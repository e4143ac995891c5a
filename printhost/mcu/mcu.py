"""One Klipper MCU as the control process sees it: connection, configuration, clock.

`Mcu.connect()` runs once, before the control loop starts, and may block: it opens the
serial link, downloads the data dictionary with `identify`, synchronises the clocks and
loads (or checks) the configuration of the printer objects that registered with it.
From then on the control loop calls `poll()` every tick; it never blocks, dispatches the
MCU's responses to the objects that asked for them, keeps the clock estimate fresh, and
notices a shutdown of the MCU or a lost link.

Every message is encoded from the dictionary the firmware itself sent, and the formats
printhost relies on are checked against it before anything is configured: only the two
bootstrap messages (`identify`, `identify_response`) have ids fixed in our code.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any

from printhost.mcu.clocksync import ClockJump, ClockSync, burst_usable
from printhost.mcu.codec import MessageCodec
from printhost.mcu.dictionary import DataDictionary
from printhost.mcu.errors import LinkError, ProtocolError
from printhost.mcu.link import SerialLink

log = logging.getLogger(__name__)

# The dictionary is downloaded in pieces of this many bytes (what fits a block easily).
IDENTIFY_CHUNK = 40
# Commands scheduled on the MCU clock that `Mcu.timing_report` recalls.
SCHEDULED_KEPT = 6
# Period of clock queries once running. Slightly off a round second, so the queries do
# not beat against other once-a-second activity on the MCU.
CLOCK_QUERY_PERIOD_S = 0.9839
# Clock samples taken at connect time before anything is scheduled, this far apart: the
# rate is estimated too (nothing assumes the nominal rate), and its error shrinks with the
# span of the samples. Ten samples over a quarter second put the rate within a few
# hundredths of a percent, where eight over 40 ms left it a few percent off: tens of
# milliseconds of error a second later, more than a schedule margin at a high time factor.
CONNECT_CLOCK_SAMPLES = 10
CONNECT_CLOCK_SPACING_S = 0.025
# ... and at least this many of them with a round trip near the fastest (more are taken,
# up to three times as many, while stalls on a busy host spoil them).
CONNECT_CLOCK_USABLE = 8
# Until this many samples entered the estimate, the clock is queried this often.
YOUNG_CLOCK_SAMPLES = 40
YOUNG_CLOCK_QUERY_PERIOD_S = 0.1
# With no progress on the link for this long the MCU is considered lost. Clock queries
# keep traffic going about once a second, so silence this long is never normal.
LOST_TIMEOUT_S = 4.0
# Commands scheduled on the MCU clock are placed at least this far ahead of the
# estimated MCU time, in print seconds, as Klipper places its heater and fan updates
# (PIN_MIN_TIME and the sensor's report time): the same on a real board and in a
# simulation at any time factor.
MIN_SCHEDULE_AHEAD_S = 0.25
# Queued updates one output may have waiting on the MCU: enough for a heater's value
# after every reading (0.3 s of print time apart) over the largest margin (5 s).
MAX_PENDING_UPDATES = 20
# The link's own latency is host time: a retransmission costs a retransmission timeout
# of the host's clock whatever the MCU's clock rate. On a line that needed a
# retransmission in the last NOISY_LINE_S of host time, the margin also covers this many
# timeouts (converted to print time); a clean line keeps the print-time margin alone.
SCHEDULE_RTOS = 4.0
NOISY_LINE_S = 30.0
# ...but never more than this far ahead in print time: the firmware reads 32-bit clock
# values as lying within 2**31 ticks of now (29.8 s at 72 MHz), and a fast simulation
# would otherwise turn a host-time margin into a clock value it reads as the past.
MAX_SCHEDULE_AHEAD_S = 5.0
# The host's estimate of the MCU clock can run a few milliseconds ahead of the board when
# the host is busy (a clock sample whose round trip was stretched just below the filter's
# limit). Whatever must already have happened on the MCU (a move-pool entry freed, a
# queued output loaded) is trusted only this long after the estimate says so, in host
# time. 25 ms held under two CPU-bound processes on two cores; 10 ms did not.
REACHED_GUARD_WALL_S = 0.025


class McuError(Exception):
    """The MCU cannot be used: the message says why and what to do."""


ResponseHandler = Callable[[dict[str, Any], float], None]


class Mcu:
    def __init__(self, port: str, baud: int = 250000, *, name: str = "mcu",
                 time_source: Callable[[], float] = time.monotonic,
                 restart_method: str = "command") -> None:
        self.name = name
        self.port = port
        self.baud = baud
        self.restart_method = restart_method
        self._time = time_source
        self.link = SerialLink(port, baud, time_source=time_source)
        self.codec = MessageCodec()
        self.dictionary = DataDictionary()
        self.clock_freq = 0.0
        self.clocksync: ClockSync | None = None
        # The latest commands scheduled on the MCU clock: (what, due print time, host time
        # sent, print time estimated then), for the diagnosis of a "Timer too close".
        self._scheduled: deque[tuple[str, float, float, float]] = deque(maxlen=SCHEDULED_KEPT)
        self.move_count = 0
        # Outputs that queue pin updates; each may have `pending_updates_limit` of them
        # waiting on the MCU, in entries of the move pool kept for them.
        self.queued_outputs = 0
        self.reserve_for_outputs = True
        self.shutdown_reason: str | None = None
        self.lost_reason: str | None = None
        self.on_fault: Callable[[str], None] | None = None
        self._handlers: dict[tuple[str, int | None], ResponseHandler] = {}
        self._oid_count = 0
        self._config_cmds: list[tuple[str, dict[str, Any]]] = []
        self._config_builders: list[Callable[[], None]] = []
        self._init_cmds: list[Callable[[], None]] = []
        self._clock_sent_s: float | None = None
        self._next_clock_query_s = 0.0
        self.config_crc = 0
        self.reused_config = False
        self.configured = False
        self._stop_expected = False

    @property
    def connected(self) -> bool:
        """Configured, not shut down and not lost: commands sent now will act."""
        return self.configured and self.shutdown_reason is None and self.lost_reason is None

    # ------------------------------------------------------------------ objects
    def create_oid(self) -> int:
        oid = self._oid_count
        self._oid_count += 1
        return oid

    def register_config(self, builder: Callable[[], None]) -> None:
        """`builder()` runs when the dictionary is known (pin names, clock rate) and adds
        the object's config commands with `add_config_cmd`."""
        self._config_builders.append(builder)

    def add_config_cmd(self, name: str, **params: Any) -> None:
        """A command of the configuration (sent once, before finalize_config)."""
        self._config_cmds.append((name, params))

    def reserve_move_slot(self) -> None:
        """Keep entries of the firmware's move pool for an object that queues commands
        (`queue_digital_out`) and never has more than `pending_updates_limit` of them
        waiting on the MCU.

        The firmware's pool is shared by steps and queued pin updates, and a command
        that finds it full shuts the MCU down ("Move queue overflow"): so the step sender
        is only given `move_count - reserved_move_slots` entries, as Klipper's host
        reserves a slot for each of its output pins."""
        self.queued_outputs += 1

    @property
    def pending_updates_limit(self) -> int:
        """Updates one output may have waiting: MAX_PENDING_UPDATES, or fewer on a small
        pool (the outputs together take at most half of it)."""
        share = self.move_count // (2 * max(1, self.queued_outputs))
        return max(1, min(MAX_PENDING_UPDATES, share))

    @property
    def reserved_move_slots(self) -> int:
        if not self.reserve_for_outputs:
            return 0
        return self.queued_outputs * self.pending_updates_limit

    @property
    def step_move_slots(self) -> int:
        """Pool entries the step sender may fill (at least one)."""
        return max(1, self.move_count - self.reserved_move_slots)

    def add_init_step(self, step: Callable[[], None]) -> None:
        """Something to do once the MCU is configured and the clock is known (start
        sampling an ADC, say); also run after a host restart that reused the config."""
        self._init_cmds.append(step)

    def register_response(self, name: str, handler: ResponseHandler,
                          oid: int | None = None) -> None:
        """Call `handler(params, receive_time)` for each `name` response (of one oid)."""
        self._handlers[(name, oid)] = handler

    def check_format(self, msgformat: str) -> None:
        """Refuse to run against firmware whose command differs from what we encode."""
        try:
            self.dictionary.lookup_format(msgformat)
        except ProtocolError as exc:
            raise McuError(f"{self.name}: firmware does not support {msgformat.split()[0]!r} "
                           f"as printhost needs it ({exc}); is it Klipper firmware?") from None

    # ------------------------------------------------------------------ connect
    def connect(self, timeout_s: float = 15.0) -> None:
        """Open the link, download the dictionary and synchronise the clocks (blocking)."""
        deadline = self._time() + timeout_s
        try:
            self.link.open()
        except LinkError as exc:
            raise McuError(f"{self.name}: {exc}") from None
        raw = bytearray()
        while True:
            params = self._request("identify", {"offset": len(raw), "count": IDENTIFY_CHUNK},
                                   "identify_response", deadline,
                                   match=lambda p, n=len(raw): p["offset"] == n)
            data = bytes(params["data"])
            if not data:
                break
            raw += data
        try:
            self.dictionary = DataDictionary(zlib.decompress(bytes(raw)))
        except (zlib.error, ProtocolError) as exc:
            raise McuError(f"{self.name}: unreadable data dictionary ({exc})") from None
        self.codec = MessageCodec(self.dictionary)
        self.clock_freq = self.dictionary.constant_float("CLOCK_FREQ")
        self.link.set_receive_window(self.dictionary.constant_int("RECEIVE_WINDOW", 192))
        for fmt in ("get_uptime", "get_clock", "get_config", "allocate_oids count=%c",
                    "finalize_config crc=%u", "emergency_stop"):
            if " " in fmt:
                self.check_format(fmt)
            elif not self.dictionary.has(fmt):
                raise McuError(f"{self.name}: firmware lacks the {fmt!r} command")
        log.info("%s: %s (%s), clock %.0f Hz, dictionary %d bytes", self.name,
                 self.dictionary.version, self.dictionary.app or "?", self.clock_freq, len(raw))
        self._sync_clock(deadline)

    def _sync_clock(self, deadline: float) -> None:
        # Whole 64-bit clocks while the rate is learnt: with no rate yet, a 32-bit
        # clock could only be placed near the previous sample, and a simulation at 20x
        # wraps every 2.98 s (a host stalled that long between two samples put one a
        # wrap off, and the next looked like a restarted MCU).
        # A round trip is timed from just before the request is queued to the moment the
        # link read the answer, and the burst goes on (up to three times as long) until
        # most of its round trips are near its fastest: on a loaded host a stalled one
        # would skew the first rate estimate (ClockSync.add_burst leaves those out).
        samples: list[tuple[int, float, float]] = []
        wanted = 1 + CONNECT_CLOCK_SAMPLES
        while len(samples) < 3 * wanted:
            sent = self._time()
            up, received = self._request_timed("get_uptime", {}, "uptime", deadline)
            samples.append(((int(up["high"]) << 32) | int(up["clock"]), sent, received))
            if len(samples) >= wanted and burst_usable(samples) >= CONNECT_CLOCK_USABLE:
                break
            time.sleep(CONNECT_CLOCK_SPACING_S)
        sync = ClockSync(self.clock_freq)
        used = sync.add_burst(samples)
        if not sync.ready:
            raise McuError(f"{self.name}: cannot learn the MCU clock: {used} of "
                           f"{len(samples)} round trips were usable (the host is too busy)")
        if used < len(samples):
            log.info("%s: clock learnt from %d of %d round trips (the slow ones left out)",
                     self.name, used, len(samples))
        self.clocksync = sync
        self._next_clock_query_s = self._time() + YOUNG_CLOCK_QUERY_PERIOD_S

    def configure(self, timeout_s: float = 10.0) -> None:
        """Load the registered objects' configuration, or verify the one the MCU holds."""
        deadline = self._time() + timeout_s
        self._config_cmds.clear()
        for builder in self._config_builders:
            builder()
        lines = [self.codec.format_text(name, params) for name, params in self._config_cmds]
        self.config_crc = zlib.crc32("\n".join(lines).encode()) & 0xFFFFFFFF
        state = self._request("get_config", {}, "config", deadline)
        if state["is_shutdown"]:
            reason = self.shutdown_reason or "shut down before printhost connected"
            raise McuError(f"{self.name} is shut down ({reason}); a firmware restart is needed")
        if state["is_config"]:
            if int(state["crc"]) != self.config_crc:
                raise McuError(f"{self.name} holds a different configuration (CRC "
                               f"{int(state['crc']):08x}, ours {self.config_crc:08x}); "
                               f"a firmware restart is needed")
            self.reused_config = True
            log.info("%s: configuration already loaded (CRC %08x)", self.name, self.config_crc)
        else:
            self.send("allocate_oids", count=self._oid_count)
            for name, params in self._config_cmds:
                self.send(name, **params)
            self.send("finalize_config", crc=self.config_crc)
            state = self._request("get_config", {}, "config", deadline)
            if not state["is_config"] or int(state["crc"]) != self.config_crc:
                reason = self.shutdown_reason or "it did not accept the configuration"
                raise McuError(f"{self.name}: configuration failed: {reason}")
            log.info("%s: configured %d objects (CRC %08x)", self.name, self._oid_count,
                     self.config_crc)
        self.move_count = int(state["move_count"])
        self.configured = True
        for step in self._init_cmds:
            step()

    def firmware_restart(self, timeout_s: float = 10.0) -> None:
        """Reboot the board with its `reset` command and reconnect (blocking).

        Used at start-up when the MCU is shut down or holds another configuration, and
        on a user's request after a fault; never in the middle of a print.
        """
        if self.restart_method != "command" or not self.dictionary.has("reset"):
            raise McuError(f"{self.name}: cannot restart the firmware by command; "
                           f"power-cycle the board")
        log.warning("%s: restarting the firmware", self.name)
        self.send("reset")
        deadline = self._time() + 1.0
        while not self.link.idle() and self._time() < deadline:
            time.sleep(0.01)
        self.link.close()
        self.configured = False
        time.sleep(0.2)
        self.link = SerialLink(self.port, self.baud, time_source=self._time)
        self.shutdown_reason = None
        self.lost_reason = None
        self.codec = MessageCodec()
        self.dictionary = DataDictionary()
        end = self._time() + timeout_s
        while True:
            try:
                self.connect(max(1.0, end - self._time()))
                return
            except McuError:
                self.link.close()
                if self._time() > end:
                    raise
                self.link = SerialLink(self.port, self.baud, time_source=self._time)
                time.sleep(0.5)

    def _request(self, name: str, params: dict[str, Any], response: str, deadline: float,
                 match: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        """Send a command and wait for its response (connect and configure only)."""
        return self._request_timed(name, params, response, deadline, match)[0]

    def _request_timed(self, name: str, params: dict[str, Any], response: str,
                       deadline: float, match: Callable[[dict[str, Any]], bool] | None = None
                       ) -> tuple[dict[str, Any], float]:
        """`_request`, with the host time at which the link read the response."""
        got: list[tuple[dict[str, Any], float]] = []

        def handler(p: dict[str, Any], received_s: float) -> None:
            if match is None or match(p):
                got.append((p, received_s))

        previous = self._handlers.get((response, None))
        self._handlers[(response, None)] = handler
        try:
            self.send(name, **params)
            resend_at = self._time() + 1.0
            while not got:
                self.poll_messages()
                if self.link.error:
                    raise McuError(f"{self.name}: {self.link.error}")
                now = self._time()
                if now > deadline:
                    raise McuError(f"{self.name}: no answer to {name} from {self.port} "
                                   f"(is a Klipper MCU connected?)")
                if now > resend_at:
                    self.send(name, **params)
                    resend_at = now + 1.0
                time.sleep(0.002)
            return got[0]
        finally:
            if previous is None:
                self._handlers.pop((response, None), None)
            else:
                self._handlers[(response, None)] = previous

    # ------------------------------------------------------------------ running
    def send(self, name: str, urgent: bool = False, **params: Any) -> None:
        """Encode and queue a command; `urgent` ones overtake queued ordinary ones
        (`SerialLink.send`): for commands whose deadline is near."""
        self.link.send(self.codec.encode(name, **params), urgent=urgent)

    def send_encoded(self, messages: bytes | list[bytes]) -> None:
        self.link.send(messages)

    def poll_messages(self) -> None:
        """Dispatch everything received so far; never blocks."""
        for received_s, payload in self.link.poll():
            try:
                messages = self.codec.decode(payload)
            except ProtocolError as exc:
                # Before identify finishes, the board's periodic messages (stats) cannot
                # be decoded yet; afterwards an undecodable block is worth a warning.
                level = logging.WARNING if self.clock_freq else logging.DEBUG
                log.log(level, "%s: undecodable message block (%s)", self.name, exc)
                continue
            for name, params in messages:
                self._dispatch(name, params, received_s)

    def _dispatch(self, name: str, params: dict[str, Any], received_s: float) -> None:
        if name in ("shutdown", "is_shutdown"):
            self._on_shutdown(str(params.get("static_string_id", "?")))
            return
        if name == "starting" and self.configured:
            # Sent by the firmware as it boots: the board restarted under us.
            self._fault(f"MCU {self.name} restarted on its own (it reported starting)")
            return
        if name == "clock" and self._clock_sent_s is not None and self.clocksync is not None:
            try:
                self.clocksync.add_sample(int(params["clock"]), self._clock_sent_s, received_s)
            except ClockJump as exc:
                self._fault(f"MCU {self.name} restarted or its clock jumped ({exc})")
            self._clock_sent_s = None
        handler = self._handlers.get((name, params.get("oid"))) or self._handlers.get((name, None))
        if handler is not None:
            handler(params, received_s)
        elif name == "#output":
            log.info("%s says: %s", self.name, params.get("#msg"))

    def poll(self) -> None:
        """One control-loop tick: responses, clock queries and link health."""
        self.poll_messages()
        now = self._time()
        if self.lost_reason is None:
            if self.link.error:
                self._fault(f"lost communication with {self.name}: {self.link.error}")
            elif now - self.link.last_progress_s > LOST_TIMEOUT_S:
                self._fault(f"lost communication with {self.name} (no answer for "
                            f"{now - self.link.last_progress_s:.1f} s)")
        if now >= self._next_clock_query_s and self.lost_reason is None:
            if self._clock_sent_s is None or now - self._clock_sent_s > 2 * CLOCK_QUERY_PERIOD_S:
                self._clock_sent_s = now
                self.send("get_clock", urgent=True)   # not delayed behind queued steps
            young = self.clocksync is not None and self.clocksync.used < YOUNG_CLOCK_SAMPLES
            self._next_clock_query_s = now + (YOUNG_CLOCK_QUERY_PERIOD_S if young
                                              else CLOCK_QUERY_PERIOD_S)

    def note_scheduled(self, what: str, due_print_time: float) -> None:
        """Remember a command just sent for a clock of the MCU (`timing_report`)."""
        now = self._time()
        estimate = self.print_time(now) if self.clocksync is not None else math.nan
        self._scheduled.append((what, due_print_time, now, estimate))

    def timing_report(self) -> str:
        """What the host believed when it scheduled its latest commands, and how well it
        knew the MCU's clock: logged with a "Timer too close" shutdown, so a late command
        can be told from a wrong clock estimate."""
        now = self._time()
        parts = []
        sync = self.clocksync
        if sync is not None:
            min_rtt = sync.min_rtt_s
            parts.append(f"clock {sync.freq_hz / 1e6:.4f} MHz from {sync.used} of "
                         f"{sync.samples} samples ({sync.rejected} slow), fastest recent round "
                         f"trip {'-' if min_rtt is None else f'{min_rtt * 1e3:.2f} ms'}")
        cause = self.link.urgent_wait_cause
        parts.append(f"longest urgent wait in the link "
                     f"{self.link.urgent_wait_max_s * 1e3:.1f} ms"
                     + (f" (held by {cause})" if cause else ""))
        for what, due, sent_s, estimate in self._scheduled:
            parts.append(f"{what} due {due:.4f} sent {now - sent_s:.3f} s ago with "
                         f"{due - estimate:+.4f} s of print time to go")
        return "; ".join(parts)

    def _on_shutdown(self, reason: str) -> None:
        if self.shutdown_reason is None:
            self.shutdown_reason = reason
            level = (logging.INFO if self._stop_expected and reason == "Command request"
                     else logging.ERROR)
            log.log(level, "%s shut down: %s", self.name, reason)
            if reason == "Timer too close":
                log.error("%s: the host's view: %s", self.name, self.timing_report())
            if self.on_fault is not None:
                self.on_fault(f"MCU shutdown: {reason}")

    def _fault(self, reason: str) -> None:
        if self.lost_reason is None:
            self.lost_reason = reason
            log.error("%s", reason)
            if self.on_fault is not None:
                self.on_fault(reason)

    def emergency_stop(self, expected: bool = False) -> None:
        """M112 and every host-side fault: the MCU stops everything and latches.

        `expected` marks a deliberate stop (the service stopping), whose shutdown report
        is then logged as information rather than as an error."""
        self._stop_expected = expected
        try:
            self.send("emergency_stop", urgent=True)
        except Exception:
            log.exception("%s: could not send emergency_stop", self.name)

    def close(self) -> None:
        self.link.close()

    # ------------------------------------------------------------------ time
    def _sync(self) -> ClockSync:
        if self.clocksync is None:
            raise McuError(f"{self.name}: not connected")
        return self.clocksync

    def print_time(self, host_s: float | None = None) -> float:
        """Estimated MCU print time (MCU clock / CLOCK_FREQ) at a host time (now)."""
        return self._sync().print_time_at(self._time() if host_s is None else host_s)

    def clock_of(self, print_time_s: float) -> int:
        return self._sync().clock_of(print_time_s)

    def print_time_of_clock32(self, clock32: int) -> float:
        sync = self._sync()
        return sync.print_time_of(sync.extend(clock32))

    def wall_to_print_s(self, wall_s: float) -> float:
        """Print seconds that pass on the MCU in `wall_s` host seconds (differs from 1:1
        on the simulated MCU, whose clock runs at the simulation's time factor)."""
        return wall_s * self._sync().freq_hz / self.clock_freq

    def schedule_margin_s(self) -> float:
        """How far ahead of the MCU's present (print seconds) a scheduled command goes.

        MIN_SCHEDULE_AHEAD_S of print time, whatever the time factor; more on a noisy
        line, where a block may need several retransmissions (SCHEDULE_RTOS timeouts of
        host time), so the line gets room instead of a "Timer too close" shutdown of the
        MCU."""
        if self._time() - self.link.last_retransmit_s > NOISY_LINE_S:
            return MIN_SCHEDULE_AHEAD_S
        link = self.wall_to_print_s(min(2.0, SCHEDULE_RTOS * self.link.rto_s))
        return min(MAX_SCHEDULE_AHEAD_S, max(MIN_SCHEDULE_AHEAD_S, link))

    def earliest_schedule_time(self) -> float:
        """The soonest print time a command may be scheduled for and still arrive early."""
        return self.print_time() + self.schedule_margin_s()

    def reached_clock(self) -> int:
        """A clock the MCU has certainly reached by now (the estimate, less a guard of
        REACHED_GUARD_WALL_S of host time): what the host may take as done on the MCU."""
        return self.clock_of(self.print_time() - self.wall_to_print_s(REACHED_GUARD_WALL_S))

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.link.stats())
        if self.clocksync is not None:
            out["freq_hz"] = self.clocksync.freq_hz
        out["move_count"] = self.move_count
        return out


class McuClock:
    """The printer's clock when an MCU is attached: print time is the MCU's time.

    Moves and heater commands are scheduled in print time, so the clock the control
    process reads must be the MCU's (as estimated by clock sync), not the host's.
    """

    def __init__(self, mcu: Mcu) -> None:
        self.mcu = mcu

    def now(self) -> float:
        return self.mcu.print_time()

    def wall_seconds(self, sim_seconds: float) -> float:
        return sim_seconds / max(1e-9, self.mcu.wall_to_print_s(1.0))
