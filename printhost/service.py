"""The supervisor: starts and watches everything, and stops it in a safe order.

Start: state dir, store, secrets, the control process, the API, the mDNS advertisement;
READY goes to systemd only when both the API listens and the control process answers.

Stop (SIGTERM/SIGINT): the very first thing is a SHUTDOWN command to the control
process, sent from the signal handler itself, so heaters go off before the HTTP
server drains its connections. Then the API stops, the control process is stopped
(SIGTERM, SIGKILL if it must), and the advertisement is withdrawn, all within 2 s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import uvicorn

from printhost import __version__, sdnotify
from printhost.api.app import create_app
from printhost.api.auth.backends import create_backend
from printhost.realtime import drop_realtime_rights
from printhost.api.auth.secrets import token_service_for
from printhost.config import Settings, with_overrides
from printhost.ipc.link import ControlLink
from printhost.store.db import Store
from printhost.store.files import GCodeFiles
from printhost.store.jobs import JobHistory

log = logging.getLogger("printhost.supervisor")

MONITOR_PERIOD_S = 0.2
# A control process frozen this long is killed, so it can never wake up and act on
# stale state (a real MCU has already switched its heaters off by then).
FROZEN_KILL_S = 5.0


class _Server(uvicorn.Server):
    """uvicorn's server, with heaters switched off as the first reaction to a signal."""

    def __init__(self, config: uvicorn.Config, on_signal) -> None:
        super().__init__(config)
        self._on_signal = on_signal

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._on_signal()
        super().handle_exit(sig, frame)


def prepare_state_dir(path: Path) -> Path:
    path = path.expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def instance_uuid(state_dir: Path) -> str:
    """A stable id for this printer, advertised over mDNS so apps can tell printers apart."""
    path = state_dir / "instance_id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        value = str(uuid.uuid4())
        path.write_text(value + "\n")
        return value


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_dir = prepare_state_dir(settings.state_path())
        self.link = ControlLink(settings)
        self.advertiser: Any = None
        self.sim_mcu: Any = None
        self._recorded: dict[str, tuple[Any, float]] = {}

    async def run(self) -> int:
        s = self.settings
        loop = asyncio.get_running_loop()
        store = Store(self.state_dir)
        tokens = token_service_for(s, self.state_dir)
        create_backend(s, store)   # a bad users file or token file stops here, before any process
        jobs = JobHistory(store)
        stale = await asyncio.to_thread(jobs.mark_unfinished_interrupted,
                                        "printhost stopped during the print")
        if stale:
            log.warning("%d job(s) left unfinished by an earlier run marked interrupted", stale)
        files = GCodeFiles(self.state_dir)

        if s.control.backend == "simulated":
            # The simulated board comes up first, like a board that is powered with the Pi.
            from printhost.sim.mcu.launcher import SimMcuProcess
            self.sim_mcu = SimMcuProcess(s, self.state_dir)
            await asyncio.to_thread(self.sim_mcu.start)
            self.link.settings = with_overrides(s, mcu={"serial": str(self.sim_mcu.tty_path)})
        self.link.start(loop)
        # The control process has what it needs; the API in this process never may.
        drop_realtime_rights()
        app = create_app(s, link=self.link, store=store, tokens=tokens, files=files, jobs=jobs)
        # No users yet: log the first-boot setup code (docs/security.md).
        await app.state.auth.ensure_setup_code()
        config = uvicorn.Config(app, host=s.server.host, port=s.server.port,
                                log_level=s.server.log_level, lifespan="off",
                                timeout_graceful_shutdown=1, access_log=False,
                                server_header=False)
        server = _Server(config, self.link.request_heaters_off)
        # Signals that uvicorn captures are re-raised after it stops; these harmless
        # handlers keep that re-raise from killing the process before cleanup.
        signal.signal(signal.SIGTERM, lambda *_: None)
        signal.signal(signal.SIGINT, lambda *_: None)
        monitor = asyncio.create_task(self._monitor(jobs))
        ready = asyncio.create_task(self._announce_when_ready(server))
        try:
            await server.serve()
        finally:
            started = time.monotonic()
            ready.cancel()
            await self.link.stop()
            if self.sim_mcu is not None:
                await asyncio.to_thread(self.sim_mcu.stop)
            monitor.cancel()
            await self._record_jobs(jobs)
            if self.advertiser is not None:
                try:
                    await asyncio.wait_for(self.advertiser.stop(), 0.5)
                except Exception:
                    log.warning("mDNS unregistration did not finish")
            sdnotify.notify("STOPPING=1")
            log.info("stopped in %.2f s", time.monotonic() - started)
        return 0 if server.started else 1

    async def _announce_when_ready(self, server: uvicorn.Server) -> None:
        while not server.started:
            await asyncio.sleep(0.02)
        try:
            await self.link.wait_ready()
        except Exception as exc:
            log.error("control process did not become ready: %s", exc)
            return
        s = self.settings
        port = s.server.port
        for srv in server.servers:
            for sock in srv.sockets:
                port = sock.getsockname()[1]
        sdnotify.notify("READY=1")
        if s.discovery.enabled:
            # After READY: mDNS probing takes a second or two and is not needed to print.
            from printhost.discovery import Advertiser
            name = s.discovery.display_name()
            # Listening on one address: advertise that address, on that interface only
            # (a service bound to loopback must not announce itself on the LAN).
            wildcard = s.server.host in ("0.0.0.0", "::", "")
            extra = {} if wildcard else {"addresses": [s.server.host],
                                         "interfaces": [s.server.host]}
            self.advertiser = Advertiser(name, port, instance_uuid(self.state_dir), __version__,
                                         **extra)
            await self.advertiser.start()
        log.info("printhost %s ready on http://%s:%d (state in %s)", __version__,
                 s.server.host, port, self.state_dir)

    async def _monitor(self, jobs: JobHistory) -> None:
        """Copy job changes into the store; kill a control process that stays frozen."""
        frozen_since: float | None = None
        while True:
            await asyncio.sleep(MONITOR_PERIOD_S)
            try:
                await self._record_jobs(jobs)
                reason = self.link.unavailable_reason()
                if reason == "control process not responding":
                    frozen_since = frozen_since or time.monotonic()
                    proc = self.link.process
                    if time.monotonic() - frozen_since > FROZEN_KILL_S and proc and proc.is_alive():
                        log.error("control process frozen for %.0f s: killing it", FROZEN_KILL_S)
                        proc.kill()
                else:
                    frozen_since = None
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("supervisor monitor failed")

    async def _record_jobs(self, jobs: JobHistory) -> None:
        """Persist a job's state changes, and its progress in steps of 5 %."""
        job = self.link.status().get("job")
        if not job or not job.get("id"):
            return
        state = job.get("state")
        progress = float(job.get("progress") or 0.0)
        last = self._recorded.get(job["id"])
        if last is not None and last[0] == state and abs(progress - last[1]) < 0.05:
            return
        await asyncio.to_thread(jobs.update, job)
        self._recorded[job["id"]] = (state, progress)


def serve(settings: Settings) -> int:
    logging.basicConfig(level=settings.server.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(Service(settings).run())
