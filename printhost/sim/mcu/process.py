"""The simulated Klipper MCU as its own OS process, behind a pseudo-terminal.

The supervisor starts it before the control process, which then opens the pty's slave
side through pyserial exactly as it would open a board's /dev/ttyACM0. Being a separate
process matters: like a real board, it keeps running (and keeps enforcing its heaters'
`max_duration`) when the control process is killed or frozen.

Its clock is the host's monotonic clock scaled by the simulation's time factor, so a
20x simulation runs a 72 MHz MCU clock 20x faster and the host's clock sync sees that.

A real MCU handles a command microseconds after it arrives; this process may be
scheduled late on a busy machine and find bytes that arrived while it was not running.
It knows only that they arrived after it last looked at its input and before it read
them, and it must not turn its own lateness into a fault a board would never raise:

* each command is handled at the time the board last looked (its present then), so a
  deadline the host met (a step or heater update scheduled ahead, a max_duration
  renewal) is met here too, and the timers that fell due meanwhile run after it;
* the move pool is judged at the time the bytes were read, since entries the board
  would have freed meanwhile were free when the command really arrived; and a clock
  query is answered with the clock when it was read, never one from before the host
  asked.

A command that was late even for the earliest possible arrival still fails exactly as
on hardware ("Timer too close", "Stepper too far in past"). Where the system allows, the
process runs at SCHED_FIFO priority, below the control process but above every ordinary
process (`printhost.realtime`), so the window it cannot see into stays a few
milliseconds wide; `state` reports the widest one so far (`late_ms_max`).

A small control socket (JSON lines, Linux abstract namespace, name written next to the
pty link) lets tests and `printhost sim` inspect the MCU (step positions, outputs,
temperatures) and inject faults: line corruption and drops, delays, a hung link, an
unplugged cable, a reset, and hardware faults of the board.
"""

from __future__ import annotations

import logging
import os
import select
import time
import tty
from pathlib import Path
from typing import Any

from printhost.childproc import setup_child
from printhost.config import Settings
from printhost.mcu.codec import MessageCodec
from printhost.mcu.errors import ProtocolError
from printhost.mcu.digest import step_command_crc
from printhost.mcu.sim_dictionary import SIM_CLOCK_FREQ, SIM_CONFIG, sim_dictionary
from printhost.realtime import SIM_BOARD_PRIORITY, settle_realtime
from printhost.sim.control_socket import ControlServer
from printhost.sim.mcu.board import SimBoard
from printhost.sim.mcu.firmware import SimFirmware
from printhost.sim.mcu.wire import McuWire, WireFaults

log = logging.getLogger("printhost.sim_mcu")

# The loop never sleeps longer than this, so timers and the control socket stay prompt.
MAX_SLEEP_S = 0.002


class SimMcu:
    """Wire + firmware + board, stepped by `run_once()`."""

    def __init__(self, settings: Settings, master_fd: int,
                 time_source=time.monotonic, move_count: int | None = None) -> None:
        self.settings = settings
        self._time = time_source
        self.time_factor = settings.simulation.time_factor
        self._t0 = time_source()
        self.codec = MessageCodec(sim_dictionary(), mcu_form=True)
        self.faults = WireFaults()
        self.wire = McuWire(master_fd, receive_window=int(SIM_CONFIG["RECEIVE_WINDOW"]),
                            faults=self.faults, time_source=time_source)
        self.board = SimBoard(settings, SIM_CLOCK_FREQ, int(SIM_CONFIG["ADC_MAX"]))
        # A `reset` command reboots the chip: its receiver starts over before it says
        # "starting", as the real firmware's does.
        extra = {} if move_count is None else {"move_count": move_count}
        self.firmware = SimFirmware(self.board, self._send, on_reboot=self.wire.reset, **extra)
        self.unplugged = False
        self.frozen = False
        self.commands = 0
        # Clock when input was last read: bytes read later arrived after it.
        self._looked = self.clock()
        self.late_ticks_max = 0
        self.realtime: dict[str, Any] | None = None
        # CRC of every step command handled, in order (compare with the host's).
        self.step_stream_crc = 0
        self.step_commands = 0

    def clock(self) -> int:
        return int((self._time() - self._t0) * self.time_factor * SIM_CLOCK_FREQ)

    def _send(self, name: str, params: dict[str, Any]) -> None:
        self.wire.send(self.codec.encode(name, **params))

    def run_once(self) -> None:
        looked, self._looked = self._looked, self.clock()
        if self.frozen:
            return
        if self.unplugged:
            # The board keeps running on its own supply: its timers (max_duration of the
            # heaters among them) still act.
            self.firmware.advance(self.clock())
            return
        payloads = self.wire.read_available()
        read_at = self.clock()
        if payloads:
            # Everything read now arrived after `looked` (see the module docstring).
            self.late_ticks_max = max(self.late_ticks_max, read_at - looked)
            self.firmware.read_clock = read_at
        for payload in payloads:
            try:
                messages = self.codec.decode(payload)
            except ProtocolError as exc:
                log.warning("undecodable command block: %s", exc)
                self.firmware.force_shutdown("Command parser error")
                continue
            was_shutdown = self.firmware.is_shutdown
            for name, params in messages:
                if self.firmware.is_shutdown and not was_shutdown:
                    break  # the firmware drops the rest of a block that shut it down
                self.commands += 1
                if name == "queue_step":
                    self.step_commands += 1
                    self.step_stream_crc = step_command_crc(
                        self.step_stream_crc, name, params["oid"], params["interval"],
                        params["count"], params["add"])
                elif name == "set_next_step_dir":
                    self.step_stream_crc = step_command_crc(self.step_stream_crc, name,
                                                            params["oid"], params["dir"])
                self.firmware.handle(name, params, looked)
                if self.firmware.is_shutdown and not was_shutdown:
                    self._log_shutdown(looked, read_at)
        self.firmware.read_clock = None
        was_shutdown = self.firmware.is_shutdown
        self.firmware.advance(self.clock())
        if self.firmware.is_shutdown and not was_shutdown:
            log.warning("shut down: %s (%s)", self.firmware.shutdown_reason,
                        self.firmware.shutdown_context)
        self.wire.flush()

    def _log_shutdown(self, looked: int, read_at: int) -> None:
        ticks_ms = SIM_CLOCK_FREQ * self.time_factor / 1000.0
        log.warning("shut down: %s (%s; the command arrived %.1f to %.1f ms ago)",
                    self.firmware.shutdown_reason, self.firmware.shutdown_context,
                    (self.clock() - read_at) / ticks_ms, (self.clock() - looked) / ticks_ms)

    def sleep_s(self) -> float:
        nxt = self.firmware.next_event_clock()
        wake = self.wire.next_wakeup()
        delay = MAX_SLEEP_S
        if nxt is not None:
            delay = min(delay, max(0.0, (nxt - self.clock()) / (SIM_CLOCK_FREQ * self.time_factor)))
        if wake is not None:
            delay = min(delay, max(0.0, wake - self._time()))
        return delay

    # ------------------------------------------------------------------ control
    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """One control-socket request; see docs/mcu.md for the commands."""
        cmd = request.get("cmd")
        clock = self.clock()
        if cmd == "state":
            fw = self.firmware.snapshot(clock)
            positions = self.firmware.stepper_positions(clock)
            return {"ok": True, "clock": clock, "firmware": fw, "board": self.board.snapshot(),
                    "toolhead": list(self.board.toolhead(positions)),
                    "wire": self._wire_stats(), "commands": self.commands,
                    "step_commands": self.step_commands,
                    "step_stream_crc": self.step_stream_crc,
                    "unplugged": self.unplugged, "frozen": self.frozen,
                    "late_ms_max": round(self.late_ticks_max * 1000.0
                                         / (SIM_CLOCK_FREQ * self.time_factor), 3),
                    "realtime": self.realtime}
        if cmd == "link":
            for key in ("corrupt_rate", "drop_rate", "delay_s"):
                if key in request:
                    setattr(self.faults, key, float(request[key]))
            if "hung" in request:
                self.faults.hung = bool(request["hung"])
            return {"ok": True}
        if cmd == "unplug":
            self.unplugged = True
            self.wire.unplug()
            return {"ok": True}
        if cmd == "reset":
            # A spontaneous reboot (brown-out, watchdog): pins fall back to off, the
            # receiver starts over, then the firmware announces itself.
            self.board.rebooted(self.firmware.stepper_positions(clock))
            self.firmware.reboot()
            return {"ok": True}
        if cmd == "shutdown":
            # The firmware shuts itself down, as on "Timer too close" or "ADC out of
            # range": outputs to their defaults, motion stopped, the host told why.
            self.firmware.force_shutdown(str(request.get("reason") or "Timer too close"))
            return {"ok": True}
        if cmd == "freeze":
            # The firmware stops dead (a crashed MCU without a watchdog): nothing runs.
            self.frozen = bool(request.get("on", True))
            return {"ok": True}
        if cmd == "board":
            faults = self.board.faults
            kind = str(request.get("fault", ""))
            heater = str(request.get("heater", ""))
            target = getattr(faults, kind, None)
            names = ("x", "y", "z") if kind == "endstop_broken" else self.board.heaters
            if not isinstance(target, set) or heater not in names:
                return {"ok": False, "error": "unknown fault or heater"}
            (target.add if request.get("on", True) else target.discard)(heater)
            self.firmware.recheck_endstops()
            # The board's clock when the fault took effect: reaction times are measured
            # from it, not from when a (possibly late) client asked.
            return {"ok": True, "clock": clock}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def _wire_stats(self) -> dict[str, Any]:
        stats = getattr(self.wire, "stats", None)
        return stats() if callable(stats) else {}


def sim_mcu_main(settings: Settings, tty_link: str, control_name: str) -> None:
    """Process entry point: make the pty, publish its path, serve until SIGTERM."""
    stop_requested = setup_child(settings, "sim-mcu")
    # The control socket is listening before the pty appears, so whoever sees the pty
    # can steer the board at once.
    server = ControlServer(control_name)
    master, slave = os.openpty()
    tty.setraw(slave)
    # Keeping our own handle on the slave side means the pty survives the host closing
    # and reopening it (a restarted control process), as a USB device would.
    link = Path(tty_link)
    tmp = link.with_name(link.name + ".tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(os.ttyname(slave), tmp)
    mcu = SimMcu(settings, master)
    # No busy process may delay the board: real-time priority where allowed.
    rt = settle_realtime(SIM_BOARD_PRIORITY, lock=False)
    mcu.realtime = rt.as_dict()
    os.replace(tmp, link)
    log.info("simulated MCU on %s (clock %d Hz x %g; %s)", os.ttyname(slave), SIM_CLOCK_FREQ,
             mcu.time_factor, rt.describe())
    try:
        while not stop_requested():
            fds: list[Any] = server.fds()
            if not mcu.unplugged:
                fds.append(mcu.wire.fileno())
            try:
                readable, _, _ = select.select(fds, [], [], mcu.sleep_s())
            except (OSError, ValueError):
                readable = []
            mcu.run_once()
            server.service([r for r in readable if not isinstance(r, int)], mcu.control)
    finally:
        link.unlink(missing_ok=True)
        log.info("simulated MCU stopped")
