"""The supervisor: starts and watches everything, and stops it in a safe order.

Start: the state directory and the API port are checked before anything starts
(preflight.py); then store, secrets, the API (answering 503 "starting: <phase>"), the
simulated MCU, the control process, the mDNS advertisement. READY goes to systemd, the
API opens and `ready` is logged only once all of them are up.

Stop (SIGTERM/SIGINT): the very first thing is a SHUTDOWN command to the control
process, sent from the signal handler itself, so heaters go off before the HTTP
server drains its connections. Then the API stops, the control process is stopped
(SIGTERM, SIGKILL if it must), and the advertisement is withdrawn, all within 2 s.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import uvicorn

from printhost import __version__, sdnotify
from printhost.api.app import create_app
from printhost.api.connections import ConnectionGuard, guarded_protocol
from printhost.api.auth.backends import create_backend
from printhost.realtime import drop_realtime_rights
from printhost.api.auth.secrets import token_service_for
from printhost.childproc import configure_logging
from printhost.config import Settings, with_overrides
from printhost.ipc.link import ControlLink
from printhost.preflight import bind_api_socket, prepare_state_dir
from printhost.store.db import Store
from printhost.store.files import GCodeFiles
from printhost.store.jobs import JobHistory

log = logging.getLogger("printhost.supervisor")

MONITOR_PERIOD_S = 0.2
# A control process frozen this long is killed, so it can never wake up and act on
# stale state (a real MCU has already switched its heaters off by then).
FROZEN_KILL_S = 5.0
# How long the control process may take to answer its first ping: a first compile of
# the kernels on a Pi, with the loader's probe timeout as the bound.
READY_TIMEOUT_S = 1900.0
# While starting, systemd's start timeout is pushed this far ahead, again and again.
EXTEND_TIMEOUT_US = 30_000_000
MDNS_START_TIMEOUT_S = 10.0


class _Server(uvicorn.Server):
    """uvicorn's server, with heaters switched off as the first reaction to a signal."""

    def __init__(self, config: uvicorn.Config, on_signal) -> None:
        super().__init__(config)
        self._on_signal = on_signal

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._on_signal()
        super().handle_exit(sig, frame)


# Descriptors the service needs besides client connections: the store, uploads being
# written, the control process's pipes and shared memory, the MCU's serial port, mDNS.
FD_RESERVE = 256


# The largest WebSocket message a client may send (they send nothing that matters).
WS_MAX_MESSAGE_BYTES = 4096

# The listen queue, and also how many connections asyncio accepts in one go before any
# of them reaches the connection limit's check: kept small, so that a burst of
# connections cannot take more descriptors than max_connections plus a little.
ACCEPT_BACKLOG = 64
LISTEN_QUEUE = 1024


def ensure_fd_limit(max_connections: int) -> None:
    """Raise the soft descriptor limit to what max_connections needs (up to the hard
    limit); warn when even the hard limit is too low (the unit sets LimitNOFILE)."""
    import resource
    needed = max_connections + 2 * ACCEPT_BACKLOG + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning("the descriptor limit (%d) is below server.max_connections (%d) plus "
                    "%d for the service itself; lower max_connections or raise LimitNOFILE",
                    soft, max_connections, needed - max_connections)


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
    def __init__(self, settings: Settings, sock: socket.socket | None = None) -> None:
        self.settings = settings
        self.state_dir = prepare_state_dir(settings.state_path(), log.warning)
        # The API's socket, bound before anything starts (`serve`); bound here if not.
        self.sock = sock or bind_api_socket(settings.server.host, settings.server.port)
        self.link = ControlLink(settings)
        self.advertiser: Any = None
        self.sim_mcu: Any = None
        self.gate: Any = None
        self.exit_code = 0
        self._recorded: dict[str, tuple[Any, float]] = {}
        self.checkpoints: Any = None  # store/checkpoints.py, once the app is made
        self._checkpoint_at = 0.0
        self._checkpoint_key: tuple[Any, ...] | None = None
        #: Seconds the last checkpoint save took (status of the supervisor, the note).
        self.checkpoint_save_s: float | None = None
        self.queue: Any = None  # the job queue (api/jobqueue.py), once the app is made

    async def run(self) -> int:
        s = self.settings
        store = Store(self.state_dir)
        tokens = token_service_for(s, self.state_dir)
        create_backend(s, store)   # a bad users file or token file stops here, before any process
        jobs = JobHistory(store)
        stale = await asyncio.to_thread(jobs.mark_unfinished_interrupted,
                                        "printhost stopped during the print")
        if stale:
            log.warning("%d job(s) left unfinished by an earlier run marked interrupted", stale)
        files = GCodeFiles(self.state_dir)
        app = create_app(s, link=self.link, store=store, tokens=tokens, files=files, jobs=jobs,
                         starting="starting")
        self.gate = app.state.startup
        self.queue = app.state.queue
        self.checkpoints = app.state.checkpoints
        # No users yet: log the first-boot setup code (docs/security.md).
        await app.state.auth.ensure_setup_code()
        # Connection limits and timeouts (printhost/api/connections.py); the descriptor
        # limit is checked against max_connections first.
        ensure_fd_limit(s.server.max_connections)
        self.connections = ConnectionGuard(s.server.max_connections, s.server.header_timeout_s,
                                           s.server.body_idle_timeout_s)
        # Our log format for uvicorn's own lines too (log_config=None: no handlers of its own).
        config = uvicorn.Config(app, host=s.server.host, port=s.server.port, log_config=None,
                                log_level=s.server.log_level, lifespan="off",
                                timeout_graceful_shutdown=1, access_log=False,
                                server_header=False, http=guarded_protocol(self.connections),
                                timeout_keep_alive=s.server.keep_alive_timeout_s,  # type: ignore[arg-type]
                                backlog=ACCEPT_BACKLOG,
                                # WebSocket clients send nothing that matters (/api/v1/ws):
                                # small frames only; pings find dead peers; no compression
                                # (CPU on a Pi, and a patch is a few hundred bytes).
                                ws="websockets-sansio", ws_max_size=WS_MAX_MESSAGE_BYTES,
                                ws_ping_interval=20.0, ws_ping_timeout=20.0,
                                ws_per_message_deflate=False)
        server = _Server(config, self.link.request_heaters_off)
        # Signals that uvicorn captures are re-raised after it stops; these harmless
        # handlers keep that re-raise from killing the process before cleanup.
        signal.signal(signal.SIGTERM, lambda *_: None)
        signal.signal(signal.SIGINT, lambda *_: None)
        monitor = asyncio.create_task(self._monitor(jobs))
        live = asyncio.create_task(app.state.live.run())
        # The API answers from the start (503 "starting: <phase>" until ready), while
        # the simulated MCU and the control process come up.
        serving = asyncio.create_task(server.serve(sockets=[self.sock]))
        starting = asyncio.create_task(self._start(server, serving))
        try:
            await serving
        finally:
            started = time.monotonic()
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            await self.link.stop()
            if self.sim_mcu is not None:
                await asyncio.to_thread(self.sim_mcu.stop)
            monitor.cancel()
            live.cancel()
            await self._record_jobs(jobs)
            if self.advertiser is not None:
                try:
                    await asyncio.wait_for(self.advertiser.stop(), 0.5)
                except Exception:
                    log.warning("mDNS unregistration did not finish")
            sdnotify.notify("STOPPING=1")
            log.info("stopped in %.2f s", time.monotonic() - started)
        if self.exit_code:
            return self.exit_code
        return 0 if server.started else 1

    def _phase(self, phase: str) -> None:
        """What start-up is doing now: in the API's 503 answers and in systemd's status."""
        self.gate.phase = phase
        sdnotify.notify(f"STATUS=starting: {phase}\nEXTEND_TIMEOUT_USEC={EXTEND_TIMEOUT_US}")

    async def _start(self, server: uvicorn.Server, serving: asyncio.Task) -> None:
        """Everything after the API listens: the simulated MCU, the control process
        (kernels, MCU), mDNS; then READY and the `ready` log line."""
        s = self.settings
        loop = asyncio.get_running_loop()
        while not server.started:
            if serving.done():
                return
            await asyncio.sleep(0.02)
        # A long listen queue (waiting connections use no descriptor of ours), while
        # asyncio still takes ACCEPT_BACKLOG connections at a time from it.
        self.sock.listen(LISTEN_QUEUE)
        port = self.sock.getsockname()[1]
        log.info("API listening on http://%s:%d; it answers 503 until the printer is ready",
                 s.server.host, port)
        if s.control.backend == "simulated":
            # The simulated board comes up first, like a board that is powered with the Pi.
            from printhost.sim.mcu.launcher import SimMcuProcess
            self._phase("starting the simulated MCU")
            self.sim_mcu = SimMcuProcess(s, self.state_dir)
            try:
                await asyncio.to_thread(self.sim_mcu.start)
            except RuntimeError as exc:
                log.error("%s; see the lines above for its error", exc)
                self.exit_code = 2
                server.should_exit = True
                return
            self.link.settings = with_overrides(s, mcu={"serial": str(self.sim_mcu.tty_path)})
        from printhost.control.kernels.loader import compile_expected, verified_stamp
        compiling = await asyncio.to_thread(compile_expected, self.state_dir)
        stamp = verified_stamp(self.state_dir)
        self._phase("compiling motion kernels (first start)" if compiling
                    else "loading motion kernels")
        self.link.start(loop)
        # The control process has what it needs; the API in this process never may.
        drop_realtime_rights()
        ready = asyncio.create_task(self.link.wait_ready(timeout_s=READY_TIMEOUT_S))
        try:
            extended = time.monotonic()
            kernels_done = False
            while not ready.done():
                await asyncio.wait({ready}, timeout=0.25)
                if not kernels_done and verified_stamp(self.state_dir) != stamp:
                    # The loader marks the cache checked once the kernels passed.
                    kernels_done = True
                    self._phase("connecting to the MCU")
                if time.monotonic() - extended > EXTEND_TIMEOUT_US / 2e6:
                    # A first compile on a Pi can outlast systemd's start timeout.
                    sdnotify.notify(f"EXTEND_TIMEOUT_USEC={EXTEND_TIMEOUT_US}")
                    extended = time.monotonic()
            ready.result()
        except asyncio.CancelledError:
            ready.cancel()
            raise
        except Exception as exc:
            # The API reports the printer's error from here on (status, health 503).
            log.error("control process did not become ready: %s", exc)
            self.gate.phase = None
            return
        if s.discovery.enabled:
            self._phase("announcing the printer on the network (mDNS)")
            from printhost.discovery import Advertiser
            name = s.discovery.display_name()
            # Listening on one address: advertise that address, on that interface only
            # (a service bound to loopback must not announce itself on the LAN).
            wildcard = s.server.host in ("0.0.0.0", "::", "")
            extra = {} if wildcard else {"addresses": [s.server.host],
                                         "interfaces": [s.server.host]}
            self.advertiser = Advertiser(name, port, instance_uuid(self.state_dir), __version__,
                                         **extra)
            try:
                # About two seconds; a network without multicast is reported, not waited for.
                await asyncio.wait_for(self.advertiser.start(), MDNS_START_TIMEOUT_S)
            except asyncio.TimeoutError:
                log.warning("mDNS announcement not done after %.0f s; continuing without "
                            "waiting for it", MDNS_START_TIMEOUT_S)
        # In this order, with nothing in between: no request is answered before the
        # log says ready.
        log.info("printhost %s ready on http://%s:%d (state in %s)", __version__,
                 s.server.host, port, self.state_dir)
        self.gate.phase = None
        sdnotify.notify("READY=1\nSTATUS=ready")

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
        await self._save_checkpoint(job)
        state = job.get("state")
        progress = float(job.get("progress") or 0.0)
        last = self._recorded.get(job["id"])
        if last is not None and last[0] == state and abs(progress - last[1]) < 0.05:
            return
        previous = await asyncio.to_thread(jobs.update, job)
        self._recorded[job["id"]] = (state, progress)
        if previous is not None and self.queue is not None:
            # After a completed job, with jobs.auto_start, the next queued one starts.
            await self.queue.job_changed(job, previous)


    async def _save_checkpoint(self, job: dict[str, Any]) -> None:
        """Keep the running job's checkpoint on disk (store/checkpoints.py): saved every
        `jobs.checkpoint_interval_s` while it changes, removed when the job completes or is
        cancelled, kept after an error or an interruption (a person may resume it)."""
        if self.checkpoints is None:
            return
        state, point = job.get("state"), job.get("resume_point")
        if state in ("completed", "cancelled"):
            if self._checkpoint_key is not None:
                await asyncio.to_thread(self.checkpoints.clear, job["id"])
                self._checkpoint_key = None
            return
        if not point or state not in ("printing", "pausing", "paused"):
            return
        key = (job["id"], point.get("count"), job.get("line"))
        now = time.monotonic()
        if (key == self._checkpoint_key
                or now - self._checkpoint_at < self.settings.jobs.checkpoint_interval_s):
            return
        doc = {"job_id": job["id"], "file": job.get("file"),
               "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "line": job.get("line"), "progress": job.get("progress"),
               "filament_used_mm": job.get("filament_used_mm"),
               "print_duration": job.get("print_duration"), "resume_point": point}
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self.checkpoints.save, doc)
        except OSError as exc:
            log.error("checkpoint of job %s not saved: %s", job["id"], exc)
            return
        self.checkpoint_save_s = time.perf_counter() - started
        self._checkpoint_at, self._checkpoint_key = now, key


def serve(settings: Settings) -> int:
    """Run the service until a signal stops it.

    The state directory and the API port are checked first, before any process starts:
    a problem with either raises StartupError (one line with a hint, exit 2)."""
    configure_logging(settings.server.log_level, "supervisor")
    sock = bind_api_socket(settings.server.host, settings.server.port)
    try:
        prepare_state_dir(settings.state_path(), log.warning)
        return asyncio.run(Service(settings, sock).run())
    finally:
        sock.close()
