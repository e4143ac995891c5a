"""The supervisor's handle on the control process: spawn, watch, talk, stop.

Death is noticed at once through the process sentinel (a file descriptor that becomes
readable when the process exits), registered on the event loop. A frozen process
(SIGSTOP, a livelock) is noticed because the status block's sequence stops advancing
for `heartbeat_timeout_s`. Either way `unavailable_reason()` says why, status shows
`error` with that reason, and control requests get 503.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from typing import Any

from printhost.childproc import signal_name
from printhost.config import Settings
from printhost.control.process import control_main
from printhost.ipc.channel import ChannelClosed, Command, CommandClient, CommandTimeout, Reply
from printhost.ipc.status import StatusBlock, StatusBlockError

log = logging.getLogger("printhost.supervisor")


# Status members that only a running control process can know.
UNKNOWN_WHEN_UNAVAILABLE = frozenset({
    "hotend_temp", "target_hotend_temp", "hotend_power", "bed_temp", "target_bed_temp",
    "bed_power", "fan_speed", "live_position"})


def _unknown_printer(printer: dict[str, Any], reason: str) -> dict[str, Any]:
    """The last published printer values with those nobody measures any more set to
    null, each with `reason` in `unavailable` (and the heaters' readings likewise)."""
    out = {k: (None if k in UNKNOWN_WHEN_UNAVAILABLE else v) for k, v in printer.items()}
    unavailable = dict(printer.get("unavailable") or {})
    unavailable.update({k: reason for k in UNKNOWN_WHEN_UNAVAILABLE if k in printer})
    out["unavailable"] = unavailable
    heaters = printer.get("heaters")
    if isinstance(heaters, dict):
        out["heaters"] = {name: dict(h, temperature=None, target=None, power=None,
                                     unavailable=reason)
                          for name, h in heaters.items() if isinstance(h, dict)}
    return out


class PrinterUnavailable(Exception):
    """The control process cannot take requests; the message is the reason."""


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "control process exited"
    if code < 0:
        return f"control process was killed by {signal_name(-code)}"
    return f"control process exited with code {code}"


class ControlLink:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ctx = multiprocessing.get_context("spawn")
        self.process: multiprocessing.process.BaseProcess | None = None
        self.status_block: StatusBlock | None = None
        self.client: CommandClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dead_reason: str | None = None
        self._last_seq = -1
        self._last_change = time.monotonic()
        self._last_snapshot: dict[str, Any] | None = None
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # Recorded in the state directory, so a start after a kill -9 reclaims it.
        self.status_block = StatusBlock.create(registry=self.settings.state_path() / "run")
        parent, child = self._ctx.Pipe(duplex=True)
        self.process = self._ctx.Process(
            target=control_main, args=(self.settings, child, self.status_block.name),
            name="printhost-control", daemon=False)
        self.process.start()
        child.close()
        self.client = CommandClient(parent)
        self.client.start(loop)
        self._last_change = time.monotonic()
        loop.add_reader(self.process.sentinel, self._on_exit)
        log.info("control process started (pid %s)", self.process.pid)

    def _on_exit(self) -> None:
        assert self._loop is not None and self.process is not None
        self._loop.remove_reader(self.process.sentinel)
        # Keep the snapshot the process published last (a clean stop writes one with
        # its job marked interrupted and an end time).
        self._refresh()
        if self.client is not None:
            self.client.close()
        self._report_exit(attempts=50)

    def _report_exit(self, attempts: int) -> None:
        """Record why the process ended, once the OS has its exit status.

        The sentinel can become readable a moment before the process can be reaped;
        retrying briefly keeps "killed by SIGKILL" from turning into a vague "exited".
        """
        assert self._loop is not None and self.process is not None
        self.process.join(0)
        if self.process.exitcode is None and attempts > 0:
            self._loop.call_later(0.01, self._report_exit, attempts - 1)
            return
        reason = _describe_exit(self.process.exitcode)
        if self.settings.devices.backend == "pi":
            # A Pi GPIO (unlike an MCU pin with its max_duration) keeps its level after
            # the process that drove it is gone; switch the outputs off from here.
            from printhost.hw.devices import force_outputs_off
            self._loop.run_in_executor(None, force_outputs_off, self.settings)
        if self._stopping:
            log.info("%s", reason)
        else:
            self._dead_reason = reason
            log.error("%s", reason)

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until the control process answers a ping (it has built its printer)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                await self.request(Command.PING, timeout_s=1.0)
                return
            except PrinterUnavailable:
                if self._dead_reason is not None or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.05)

    def request_heaters_off(self) -> None:
        """From a signal handler: ask for a stop without waiting (heaters go off first)."""
        self._stopping = True
        if self.client is not None:
            self.client.send_nowait(Command.SHUTDOWN)

    async def stop(self, timeout_s: float = 1.2) -> None:
        """Stop the control process: SHUTDOWN, then SIGTERM, then SIGKILL."""
        self._stopping = True
        proc = self.process
        if proc is None:
            return
        if proc.is_alive() and self.client is not None and not self.client.closed:
            self.client.send_nowait(Command.SHUTDOWN)
        deadline = time.monotonic() + timeout_s
        while proc.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if proc.is_alive():
            log.warning("control process did not stop in time; terminating")
            proc.terminate()
            await asyncio.sleep(0.2)
        if proc.is_alive():
            proc.kill()
        proc.join(1.0)
        if self._loop is not None:
            try:
                self._loop.remove_reader(proc.sentinel)
            except (ValueError, OSError):
                pass
        if self.client is not None:
            self.client.close()
        if self.status_block is not None:
            self.status_block.close()
            self.status_block = None

    # ------------------------------------------------------------------ health
    def unavailable_reason(self) -> str | None:
        if self._dead_reason is not None:
            return self._dead_reason
        if self.process is None or self.status_block is None:
            return "control process not started"
        self._refresh()
        if self._last_seq <= 0:
            if time.monotonic() - self._last_change > 30.0:
                return "control process did not start"
            return "control process starting"
        if time.monotonic() - self._last_change > self.settings.control.heartbeat_timeout_s:
            return "control process not responding"
        return None

    def _refresh(self) -> None:
        if self.status_block is None:
            return
        try:
            seq, snapshot = self.status_block.read()
        except StatusBlockError:
            return
        if seq != self._last_seq:
            self._last_seq = seq
            self._last_change = time.monotonic()
            if snapshot is not None:
                self._last_snapshot = snapshot

    def status(self) -> dict[str, Any]:
        """The latest snapshot, with state `error` when the control process is unavailable."""
        reason = self.unavailable_reason()
        snap = dict(self._last_snapshot) if self._last_snapshot else {
            "state": "error", "job": None, "printer": None, "error": None}
        if reason is not None:
            snap["state"] = "error"
            snap["error"] = reason
            job = snap.get("job")
            if job and self._dead_reason is not None and job.get("state") in (
                    "printing", "pausing", "paused", "cancelling"):
                snap["job"] = dict(job, state="interrupted", error=reason)
            if snap.get("printer"):
                # Nobody is measuring any more: live values are unknown, not "as before".
                snap["printer"] = _unknown_printer(snap["printer"], reason)
        return snap

    # ------------------------------------------------------------------ requests
    async def request(self, command: Command, args: dict[str, Any] | None = None,
                      timeout_s: float | None = None) -> Reply:
        if self._dead_reason is not None:
            raise PrinterUnavailable(self._dead_reason)
        if self.client is None:
            raise PrinterUnavailable("control process not started")
        if command != Command.PING:
            reason = self.unavailable_reason()
            if reason is not None:
                raise PrinterUnavailable(reason)
        try:
            return await self.client.request(
                command, args, timeout_s or self.settings.control.command_timeout_s)
        except ChannelClosed:
            raise PrinterUnavailable(self._dead_reason or "control process channel closed") from None
        except CommandTimeout:
            raise PrinterUnavailable("control process did not answer in time") from None
