"""The firmware restart: the printer the control loop drives, and its replacement.

A firmware restart (`Command.FIRMWARE_RESTART`, Klipper's FIRMWARE_RESTART) clears an
MCU shutdown or a fault latch the only way that is safe: the board is rebooted with its
`reset` command, configured from scratch, and the printer objects are built anew on it,
as at start-up. Connecting takes a second or more (the dictionary, a quarter second of
clock samples), and the control loop must keep publishing status and answering
commands meanwhile, or the supervisor would take it for frozen. So `ControlHost` hands
the work to a helper thread and, until it ends, drives an `OfflinePrinter` that says
"firmware restart in progress"; the loop's next pass after the thread ends puts the new
printer in place and answers the request (the only request not answered in the pass
that read it). Nothing can heat or move during the restart: the old printer's heaters
are off before its MCU is closed, and the new one starts with every output off.

Refused (409) while a job is active, a PID tune runs or the e-stop button is pressed,
and (503) when the control process cannot drive a printer at all (kernels refused).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from printhost.config import Settings
from printhost.control.offline import OfflinePrinter
from printhost.ipc.channel import Command, ErrorKind, Reply, Request

log = logging.getLogger("printhost.control")

IN_PROGRESS = "firmware restart in progress"


def build_printer(settings: Settings, *, reboot: bool = False) -> Any:
    """The printer on its MCU, or an OfflinePrinter that explains what is wrong.

    At start-up (`reboot` False) a board is only restarted when it cannot take the
    configuration (shut down, or holding an older one), as Klipper does; a firmware
    restart (`reboot` True) always reboots it, so whatever it still holds (queued steps,
    a latched shutdown, an old configuration) is gone. Nothing heats yet either way."""
    from printhost.control.mcu_hardware import McuHardware
    from printhost.control.printer import Printer
    from printhost.mcu.mcu import Mcu, McuError
    port = settings.mcu.serial
    if not port:
        return OfflinePrinter("no MCU configured: set [mcu] serial")
    mcu = Mcu(port, settings.mcu.baud, restart_method=settings.mcu.restart_method)
    by_command = settings.mcu.restart_method == "command"
    try:
        hardware = McuHardware(settings, mcu)
        mcu.connect()
        if reboot and by_command:
            mcu.firmware_restart()
        try:
            mcu.configure()
        except McuError as exc:
            if reboot or not by_command:
                raise
            log.warning("%s: restarting the firmware", exc)
            mcu.firmware_restart()
            mcu.configure()
        return Printer.on_mcu(settings, hardware)
    except (McuError, ValueError) as exc:
        log.error("%s: %s", "firmware restart failed" if reboot else "MCU unavailable", exc)
        mcu.close()
        return OfflinePrinter(str(exc))


def restart_printer(settings: Settings) -> Any:
    """A new printer on a freshly rebooted MCU, or an OfflinePrinter saying why not."""
    return build_printer(settings, reboot=True)


class ControlHost:
    """What the control loop drives: the current printer, replaced by a firmware restart.

    It answers to the loop as the printer does (`handle`, `tick`, `get_status`, `stop`,
    `stopping`, `heaters`, `hardware`); `take_replies()` gives the answers to requests
    that ended after the pass that read them.
    """

    def __init__(self, settings: Settings, printer: Any,
                 rebuild: Callable[[Settings], Any] = restart_printer,
                 close_hardware: Callable[[Any], None] | None = None) -> None:
        self.settings = settings
        self.printer = printer
        self._rebuild = rebuild
        self._close_hardware = close_hardware
        self._devices = getattr(printer, "devices", None)
        self._devices_error: str | None = getattr(printer, "devices_error", None)
        self._thread: threading.Thread | None = None
        self._built: Any = None
        self._request: Request | None = None
        self._estop: str | None = None
        self._replies: list[Reply] = []

    # ------------------------------------------------------------------ as a printer
    @property
    def stopping(self) -> bool:
        return self.printer.stopping

    @property
    def heaters(self) -> Any:
        return self.printer.heaters

    @property
    def hardware(self) -> Any:
        return getattr(self.printer, "hardware", None)

    @property
    def restarting(self) -> bool:
        return self._thread is not None

    def stop(self) -> None:
        self.printer.stop()

    def get_status(self) -> dict[str, Any]:
        return self.printer.get_status()

    def tick(self) -> None:
        if self._thread is not None and not self._thread.is_alive():
            self._finish()
        self.printer.tick()

    def handle(self, req: Request) -> Reply | None:
        if req.command == Command.FIRMWARE_RESTART:
            return self._start(req)
        if self._thread is not None and req.command == Command.EMERGENCY_STOP:
            # Nothing heats or moves now; the new printer is shut down as it comes up.
            who = str(req.args.get("by") or "").strip()[:64]
            self._estop = "emergency stop" + (f" requested by {who}" if who else "")
            return Reply(req.id, True, {})
        return self.printer.handle(req)

    def take_replies(self) -> list[Reply]:
        replies, self._replies = self._replies, []
        return replies

    # ------------------------------------------------------------------ restart
    def _start(self, req: Request) -> Reply | None:
        printer = self.printer
        if self._thread is not None:
            return Reply(req.id, False, {}, ErrorKind.CONFLICT,
                         "A firmware restart is already in progress")
        if printer.stopping:
            return Reply(req.id, False, {}, ErrorKind.NOT_READY,
                         "Printer not ready: printhost is stopping")
        if not getattr(printer, "restartable", True):
            return Reply(req.id, False, {}, ErrorKind.NOT_READY,
                         f"Printer not ready: {printer.error}")
        if getattr(printer, "hardware", None) is None and not isinstance(printer, OfflinePrinter):
            return Reply(req.id, False, {}, ErrorKind.CONFLICT,
                         "This printer has no MCU to restart")
        refusal = printer.restart_refusal()
        if refusal is None and self._devices is not None and \
                self._devices.get_status().get("estop_pressed"):
            refusal = "The emergency stop button is pressed; release it first"
        if refusal is not None:
            return Reply(req.id, False, {}, ErrorKind.CONFLICT, refusal)
        log.warning("firmware restart requested%s",
                    f" (printer in error: {printer.error})" if printer.error else "")
        printer.heaters.all_off()
        last_job = printer.get_status().get("job")
        self.printer = OfflinePrinter(IN_PROGRESS, last_job=last_job)
        self._request = req
        self._built = None
        self._estop = None
        self._thread = threading.Thread(target=self._run, args=(printer,),
                                        name="firmware-restart", daemon=True)
        self._thread.start()
        return None

    def _run(self, old: Any) -> None:
        try:
            if self._close_hardware is not None:
                self._close_hardware(old)
            self._built = self._rebuild(self.settings)
        except Exception as exc:  # the thread must always leave a printer behind
            log.exception("firmware restart failed")
            self._built = OfflinePrinter(f"firmware restart failed: {exc}")

    def _finish(self) -> None:
        self._thread = None
        placeholder, new = self.printer, self._built
        self._built = None
        new.last_job = placeholder.last_job
        if placeholder.stopping:
            new.stop()
        if hasattr(new, "attach_devices"):
            if self._devices is not None:
                new.attach_devices(self._devices)
            elif self._devices_error is not None:
                new.shutdown(self._devices_error)
            if self._estop is not None:
                new.shutdown(self._estop, emergency=True)
        self.printer = new
        req, self._request = self._request, None
        if req is None:
            return
        if new.error is None:
            log.warning("firmware restart done: printer ready")
            self._replies.append(Reply(req.id, True, {"state": new.state()}))
        else:
            self._replies.append(Reply(req.id, False, {}, ErrorKind.NOT_READY,
                                       f"Printer not ready: {new.error}"))
