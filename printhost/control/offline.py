"""The printer when its MCU cannot be used at start-up.

The control process still runs, publishes status and answers the API, so a user sees
*why* nothing works ("cannot open /dev/ttyACM0", "holds a different configuration")
instead of a service that does not start. Nothing here can heat or move: there is no
hardware behind it.
"""

from __future__ import annotations

import os
from typing import Any

from printhost.control.heaters import HeaterBank
from printhost.ipc.channel import Command, ErrorKind, Reply, Request


class OfflinePrinter:
    """`restartable`: a firmware restart may fix what is wrong (the MCU could not be
    used); not so when the control process itself cannot drive a printer (kernels)."""

    def __init__(self, reason: str, *, restartable: bool = True,
                 last_job: dict[str, Any] | None = None) -> None:
        self.error = reason
        self.restartable = restartable
        self.last_job = last_job
        self.stopping = False
        self.heaters = HeaterBank()
        self.devices: Any = None

    def restart_refusal(self) -> str | None:
        return None

    def tick(self) -> None:
        pass

    def stop(self) -> None:
        self.stopping = True

    def handle(self, req: Request) -> Reply:
        if req.command == Command.PING:
            return Reply(req.id, True, {"pid": os.getpid()})
        if req.command == Command.SHUTDOWN:
            self.stop()
            return Reply(req.id, True, {})
        if req.command == Command.EMERGENCY_STOP:
            # Nothing here heats or moves; the printer is already in error.
            return Reply(req.id, True, {})
        if req.command == Command.SET_TARGET and req.args.get("target") == 0:
            # Turning a heater off is always accepted; nothing here heats anyway.
            return Reply(req.id, True, {"heater": req.args.get("heater"), "target": 0.0})
        if req.command in (Command.PRINT, Command.SET_TARGET, Command.PID_TUNE):
            # Nothing here can heat: say why rather than pretend the target was set.
            return Reply(req.id, False, {}, ErrorKind.NOT_READY, f"Printer not ready: {self.error}")
        return Reply(req.id, False, {}, ErrorKind.CONFLICT, "No job")

    def get_status(self) -> dict[str, Any]:
        return {"state": "error", "job": self.last_job, "printer": None, "error": self.error}
