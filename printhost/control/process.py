"""Entry point and main loop of the control process.

The loop runs to deadlines: a pass is due every `loop_period_s` of wall-clock time,
and after each one the loop waits until the next is due (not a fixed interval after
the work, which would stretch the period). `LoopTiming` counts overruns and keeps the
tick time and latency histograms that `status.printer.control` reports. Each pass
answers commands, ticks the printer (MCU, heaters, motion, job) and publishes the
status block at `status_hz`. Between passes the loop waits on the command channel, so
a command is answered as soon as it arrives (its effect published first) rather than
at the next pass. Nothing in it waits on the API: if the supervisor vanishes the
channel reports EOF, and the loop turns the heaters off and exits.

The period is print time, as the printer's margins are: a pass every 20 ms of print
time, and never more often than every 4 ms of host time. On a printer (time factor 1)
that is 50 passes a second; the deadlines it serves are far longer (motion is queued
1 s ahead, heater updates 0.25 s, the job keeps 0.5 s buffered), and every pass
costs the same bookkeeping whether or not anything is due: printing cube.gcode on the
simulated board (`tools/bench live`), 250 passes a second cost the control process
about 60 CPU-ms per print-second, 50 passes about 31, and 26 once status was cheaper
to publish (orjson, 10 Hz) and MCU heaters ran once per reading. A simulation at 5x or faster
runs at the 4 ms floor, where its print-time margins are shortest in host time.

Once start-up is done (kernels loaded, MCU connected) the process freezes its start-up
heap, locks its memory and takes SCHED_FIFO where the system allows
(`printhost.realtime`), and says in its log and in status what it got.

Signals: SIGINT is ignored (Ctrl-C in a terminal reaches the whole process group; the
supervisor coordinates the stop). SIGTERM means "stop now": heaters off, then exit.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from printhost.childproc import setup_child
from printhost.config import Settings
from printhost.control.looptiming import LoopTiming
from printhost.control.restart import ControlHost, build_printer
from printhost.control.wakeup import Wakeup
from printhost.ipc.channel import CommandServer
from printhost.ipc.status import StatusBlock
from printhost.realtime import CONTROL_PRIORITY, settle_realtime

if TYPE_CHECKING:
    # Not at run time: the supervisor imports this module for `control_main` (the
    # spawned process's entry point), and the printer brings numpy and numba, which
    # only the control process needs (tens of MiB in the supervisor otherwise).
    from printhost.control.printer import Printer

log = logging.getLogger("printhost.control")

#: A pass is due every this much print time ...
LOOP_PERIOD_PRINT_S = 0.02
#: ... but never more often than every this much host time.
LOOP_PERIOD_MIN_S = 0.004


def loop_period_s(settings: Settings) -> float:
    """The loop's period in host time: LOOP_PERIOD_PRINT_S of print time on the board
    this process drives (the simulated one runs at the simulation's time factor), at
    least LOOP_PERIOD_MIN_S."""
    factor = (settings.simulation.time_factor if settings.control.backend == "simulated"
              else 1.0)
    return max(LOOP_PERIOD_MIN_S, LOOP_PERIOD_PRINT_S / factor)


def _status(printer: Any, timing: LoopTiming) -> dict[str, Any]:
    """The printer's snapshot with the loop's own (`printer.control`)."""
    doc = printer.get_status()
    if isinstance(doc.get("printer"), dict):
        doc["printer"]["control"] = timing.get_status()
    return doc


def _answer(printer: Any, server: CommandServer, status: StatusBlock, timing: LoopTiming,
            take_replies) -> None:
    """Handle the requests that arrived and reply to them.

    A request is answered when it is read, except a firmware restart (None here),
    answered by `take_replies` once it has ended. The status is published before the
    replies, so a client that reads status right after a command's reply already sees
    its effect (e.g. heater targets 0 on cancel)."""
    replies = [r for r in (printer.handle(req) for req in server.poll()) if r is not None]
    replies += take_replies()
    if replies:
        status.write(_status(printer, timing))
        for reply in replies:
            server.reply(reply)


def run_control_loop(printer: Printer, server: CommandServer, status: StatusBlock,
                     status_hz: float, should_stop, timing: LoopTiming | None = None,
                     wakeup: Wakeup | None = None) -> None:
    timing = timing or LoopTiming(LOOP_PERIOD_MIN_S)
    take_replies = getattr(printer, "take_replies", list)
    status_period = 1.0 / status_hz
    next_status = 0.0
    timing.restart()
    while True:
        timing.start_pass()
        _answer(printer, server, status, timing, take_replies)
        if server.closed:
            log.error("supervisor channel closed: stopping with heaters off")
            printer.stop()
        if should_stop():
            printer.stop()
        timing.mark("commands")
        printer.tick()
        timing.mark("the printer's tick (MCU, heaters, motion, job)")
        wall = time.monotonic()
        if wall >= next_status or printer.stopping:
            status.write(_status(printer, timing))
            next_status = wall + status_period
            timing.mark("publishing status")
        if printer.stopping:
            return
        # Until the next pass is due, answer each command as it arrives; an input that
        # must act at once (the e-stop button) sets `wakeup`, and a pass runs now.
        deadline = time.monotonic() + timing.end_pass()
        others = () if wakeup is None else (wakeup,)
        while ready := server.wait(deadline - time.monotonic(), *others):
            if wakeup is not None and wakeup in ready:
                wakeup.clear()
                break
            _answer(printer, server, status, timing, take_replies)
            if server.closed or printer.stopping:
                break


def control_main(settings: Settings, conn: Connection, status_name: str) -> None:
    """Target of the spawned control process."""
    stop_requested = setup_child(settings, "control")
    status = StatusBlock.attach(status_name)
    server = CommandServer(conn)
    # Compiled kernels are cached under the state directory (the installed package may
    # be read-only), loaded or compiled and self-tested before the printer exists:
    # nothing can heat or move until they pass (kernels/loader.py).
    started = time.monotonic()
    from printhost.control.kernels.loader import load_kernels
    kernels = load_kernels(settings.state_path(), stop_requested)
    log.info("kernels %s in %.2f s", "ready" if kernels.ok else "refused",
             time.monotonic() - started)
    # Real-time from here on: the compile is over, and connecting to the MCU already
    # measures its clock, which a descheduled link thread would skew.
    timing = LoopTiming(loop_period_s(settings))
    rt = settle_realtime(CONTROL_PRIORITY)
    timing.realtime = rt.as_dict()
    (log.info if rt.realtime else log.warning)("control loop: %s", rt.describe())
    built = build_printer(settings) if kernels.ok else _refused_printer(kernels.reason)
    wakeup = Wakeup()
    closers = attach_pi_devices(settings, built, wakeup)
    # The printer the loop drives; a firmware restart replaces it (control/restart.py).
    printer = ControlHost(settings, built, close_hardware=_close_hardware)
    gc.freeze()   # the printer's own long-lived objects join the start-up heap
    status.write(_status(printer, timing))
    log.info("control process ready (pid %d, backend %s)", os.getpid(), settings.control.backend)
    try:
        run_control_loop(printer, server, status, settings.control.status_hz,
                         stop_requested, timing, wakeup)
    except BaseException:
        log.exception("control loop crashed")
        printer.heaters.all_off()
        raise
    finally:
        printer.heaters.all_off()
        _close_hardware(printer)
        for close in closers:
            try:
                close()
            except Exception:
                log.exception("closing the Pi's devices failed")
        status.close()
        wakeup.close()
        log.info("control process stopped")


# How long a stopping control process waits for its last commands (heaters off) to be
# acknowledged by the MCU before it closes the port.
FINAL_FLUSH_S = 0.5


def _refused_printer(reason: str | None) -> Any:
    from printhost.control.offline import OfflinePrinter
    return OfflinePrinter(f"kernels unusable: {reason}", restartable=False)


def attach_pi_devices(settings: Settings, printer: Any,
                      wakeup: Wakeup | None = None) -> list[Any]:
    """Build the Pi's devices (real pins, or the simulated Pi) and hand them to the
    printer; returns what must be closed at exit, outputs first. An input event (e-stop,
    runout) sets `wakeup`, so the loop acts on it at once rather than a period later.

    A device that cannot be set up (a pin in use, I2C not enabled) is a fault: the
    printer is shut down with the reason, because a configured e-stop or chamber
    sensor that does not work must not be silently missing.
    """
    from printhost.hw.devices import PiDevices, any_configured, simulated_on_real_printer
    if not any_configured(settings) or not hasattr(printer, "attach_devices"):
        return []
    warning = simulated_on_real_printer(settings)
    if warning is not None:
        log.warning("%s", warning)
    closers: list[Any] = []
    try:
        if settings.devices.backend == "simulated":
            from printhost.sim.pi import SimPi
            sim = SimPi(settings, settings.state_path())
            closers.append(sim.close)
            factory, bus = sim.factory, sim.bus
        else:
            factory = None              # gpiozero's default: lgpio on a Pi
            bus = None
            if settings.chamber.sensor != "none":
                from printhost.sensors.i2c import SMBusI2C
                bus = SMBusI2C(settings.devices.i2c_bus)
                closers.append(bus.close)
        devices = PiDevices(settings, pin_factory=factory, bus=bus,
                            on_event=None if wakeup is None else wakeup.set)
    except Exception as exc:
        log.error("Pi devices unavailable: %s", exc)
        for close in reversed(closers):
            close()
        printer.devices_error = f"Pi devices unavailable: {exc}"
        printer.shutdown(printer.devices_error)
        return []
    printer.attach_devices(devices)
    closers.insert(0, devices.close)
    return closers


def _close_hardware(printer: Any) -> None:
    hw = getattr(printer, "hardware", None)
    if hw is None:
        return
    deadline = time.monotonic() + FINAL_FLUSH_S
    while not hw.mcu.link.idle() and time.monotonic() < deadline and not hw.mcu.link.error:
        time.sleep(0.005)
    hw.mcu.close()
