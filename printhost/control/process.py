"""Entry point and main loop of the control process.

The loop runs at a fixed wall-clock period. Each pass it answers commands (polled
without waiting), ticks the printer (heaters, motion, job) and publishes the status
block at `status_hz`. Nothing in it waits on the API: if the supervisor vanishes the
channel reports EOF, and the loop turns the heaters off and exits.

Signals: SIGINT is ignored (Ctrl-C in a terminal reaches the whole process group; the
supervisor coordinates the stop). SIGTERM means "stop now": heaters off, then exit.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from multiprocessing.connection import Connection

from printhost.config import Settings
from printhost.control.printer import Printer
from printhost.ipc.channel import CommandServer
from printhost.ipc.status import StatusBlock

log = logging.getLogger("printhost.control")

LOOP_PERIOD_S = 0.004


def _try_realtime() -> None:
    """Ask for SCHED_FIFO when allowed (on the Pi under systemd); harmless otherwise."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        log.info("running with SCHED_FIFO priority 10")
    except (AttributeError, PermissionError, OSError):
        pass


def run_control_loop(printer: Printer, server: CommandServer, status: StatusBlock,
                     status_hz: float, should_stop) -> None:
    status_period = 1.0 / status_hz
    next_status = 0.0
    while True:
        replies = [printer.handle(req) for req in server.poll()]
        if replies:
            # Publish before replying, so a client that reads status right after a
            # command's reply already sees its effect (e.g. heater targets 0 on cancel).
            status.write(printer.get_status())
            for reply in replies:
                server.reply(reply)
        if server.closed:
            log.error("supervisor channel closed: stopping with heaters off")
            printer.stop()
        if should_stop():
            printer.stop()
        printer.tick()
        wall = time.monotonic()
        if wall >= next_status or printer.stopping:
            status.write(printer.get_status())
            next_status = wall + status_period
        if printer.stopping:
            return
        time.sleep(LOOP_PERIOD_S)


def control_main(settings: Settings, conn: Connection, status_name: str) -> None:
    """Target of the spawned control process."""
    logging.basicConfig(level=settings.server.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s control %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop_requested = False

    def on_term(signum, frame) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, on_term)
    if settings.control.backend != "simulated":
        _try_realtime()
    status = StatusBlock.attach(status_name)
    server = CommandServer(conn)
    # Compiled kernels are cached under the state directory (the installed package may
    # be read-only) and loaded, or compiled, before the printer exists: nothing can
    # heat until they are ready.
    from printhost.control.kernels import configure_cache
    configure_cache(settings.state_path() / "numba-cache")
    started = time.monotonic()
    from printhost.control.kernels import stepcompress, stepgen
    stepgen.warm_up()
    stepcompress.warm_up()
    printer = Printer.simulated(settings)
    log.info("step kernels ready in %.2f s", time.monotonic() - started)
    status.write(printer.get_status())
    log.info("control process ready (pid %d, time factor %g)", os.getpid(),
             settings.simulation.time_factor)
    try:
        run_control_loop(printer, server, status, settings.control.status_hz,
                         lambda: stop_requested)
    except BaseException:
        log.exception("control loop crashed")
        printer.heaters.all_off()
        raise
    finally:
        printer.heaters.all_off()
        status.close()
        log.info("control process stopped")
