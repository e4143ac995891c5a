"""Client of the simulated MCU's control socket (for tests and diagnostics)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from printhost.sim.control_socket import request


class SimMcuClient:
    """Talk to the simulated board of a service whose state directory is known."""

    def __init__(self, state_dir: Path | str, timeout_s: float = 5.0) -> None:
        self.dir = Path(state_dir) / "sim-mcu"
        self.timeout_s = timeout_s

    @property
    def pid(self) -> int:
        return int((self.dir / "pid").read_text())

    def request(self, **payload: Any) -> dict[str, Any]:
        return request(self.dir / "control", payload, self.timeout_s, "simulated MCU")

    def state(self) -> dict[str, Any]:
        return self.request(cmd="state")
