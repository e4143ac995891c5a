"""Starting and stopping the simulated MCU process from the supervisor."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
import uuid
from pathlib import Path

from printhost.config import Settings
from printhost.sim.mcu.process import sim_mcu_main

log = logging.getLogger(__name__)


class SimMcuProcess:
    """The simulated board: `tty_path` is what the control process opens.

    Files in `<state_dir>/sim-mcu/`: `tty` (a link to the pty), `control` (the name of
    the control socket) and `pid`, so tests and tools can find and steer the board.
    """

    def __init__(self, settings: Settings, state_dir: Path) -> None:
        self.settings = settings
        self.dir = state_dir / "sim-mcu"
        self.dir.mkdir(mode=0o700, exist_ok=True)
        self.tty_path = self.dir / "tty"
        self.control_name = f"printhost-sim-mcu-{uuid.uuid4().hex[:16]}"
        self.process: multiprocessing.process.BaseProcess | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        self.tty_path.unlink(missing_ok=True)
        ctx = multiprocessing.get_context("spawn")
        self.process = ctx.Process(target=sim_mcu_main, name="printhost-sim-mcu",
                                   args=(self.settings, str(self.tty_path), self.control_name),
                                   daemon=True)
        self.process.start()
        (self.dir / "pid").write_text(f"{self.process.pid}\n")
        deadline = time.monotonic() + timeout_s
        while not self.tty_path.exists():
            if not self.process.is_alive():
                raise RuntimeError(f"simulated MCU exited during start-up "
                                   f"(code {self.process.exitcode})")
            if time.monotonic() > deadline:
                raise RuntimeError("simulated MCU did not start")
            time.sleep(0.01)
        # Published once the board answers (its socket listens before the pty exists).
        (self.dir / "control").write_text(self.control_name + "\n")
        log.info("simulated MCU running (pid %d, %s)", self.process.pid,
                 os.path.realpath(self.tty_path))

    def stop(self, timeout_s: float = 1.0) -> None:
        proc = self.process
        if proc is None or not proc.is_alive():
            return
        proc.terminate()
        proc.join(timeout_s)
        if proc.is_alive():
            proc.kill()
            proc.join(1.0)
