"""What `GET /api/v1/health` reports: each part of the service, ok, degraded or down.

The printer's parts are judged from the status snapshot the control process publishes
(each part's own `get_status()`: the MCU link, the heaters with their faults and stale
readings) and from the control link itself; the supervisor's own parts (the store and
the free disk space of the state directory) are probed here, at most once a second,
in a worker thread. The printer cannot print, and health answers 503, when the control
process, the MCU or a heater is down or the printer is latched in `error`; any other
problem makes the service `degraded` (200).
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from starlette.concurrency import run_in_threadpool

OK, DEGRADED, DOWN = "ok", "degraded", "down"
# The printer cannot print while one of these is down.
PRINTER_PARTS = ("control", "mcu", "heaters")
# Below this the state directory cannot take even a job record.
DISK_DOWN_BYTES = 1024 * 1024
# The store and disk probes are repeated at most this often, however often health is
# asked for (it needs no credentials).
PROBE_PERIOD_S = 1.0


def _part(status: str = OK, reason: str | None = None) -> dict[str, Any]:
    return {"status": status, "reason": reason}


def mcu_part(snapshot: dict[str, Any], control_reason: str | None) -> dict[str, Any]:
    if control_reason is not None:
        return _part(DOWN, f"unknown: {control_reason}")
    printer = snapshot.get("printer")
    if not printer:
        return _part(DOWN, snapshot.get("error") or "no printer")
    mcu = printer.get("mcu")
    if mcu is None:
        return _part()  # the in-process simulation has no MCU
    if mcu.get("lost_reason"):
        return _part(DOWN, mcu["lost_reason"])
    if mcu.get("shutdown_reason"):
        return _part(DOWN, f"MCU shutdown: {mcu['shutdown_reason']}")
    if not mcu.get("connected"):
        return _part(DOWN, "MCU not connected")
    return _part()


def heaters_part(snapshot: dict[str, Any], control_reason: str | None,
                 mcu: dict[str, Any]) -> dict[str, Any]:
    if control_reason is not None:
        return _part(DOWN, f"unknown: {control_reason}")
    printer = snapshot.get("printer")
    if not printer:
        return _part(DOWN, snapshot.get("error") or "no printer")
    heaters = printer.get("heaters") or {}
    faults = [f"{name}: {h['fault']}" for name, h in heaters.items() if h.get("fault")]
    if faults:
        return _part(DOWN, "; ".join(faults))
    stale = [f"{name}: {h['unavailable']}" for name, h in heaters.items()
             if h.get("unavailable")]
    if stale:
        # Without its MCU no heater can work; a late reading on a live MCU is worth a look.
        return _part(DOWN if mcu["status"] == DOWN else DEGRADED, "; ".join(stale))
    return _part()


def store_part(store: Any) -> dict[str, Any]:
    try:
        store.table_snapshot("users")
    except Exception as exc:
        return _part(DOWN, f"the store cannot be read ({type(exc).__name__})")
    if not os.access(store.state_dir, os.W_OK):
        return _part(DOWN, "the state directory is not writable")
    return _part()


def disk_part(path: Any, low_mb: int) -> dict[str, Any]:
    try:
        free = shutil.disk_usage(path).free
    except OSError as exc:
        return _part(DOWN, f"free space unknown ({exc.strerror or type(exc).__name__})")
    free_mb = free / (1024 * 1024)
    if free < DISK_DOWN_BYTES:
        return _part(DOWN, f"no space left in the state directory ({free_mb:.1f} MiB free)")
    if free_mb < low_mb:
        return _part(DEGRADED, f"{free_mb:.0f} MiB free in the state directory, below "
                               f"{low_mb} MiB")
    return _part()


class HealthProbe:
    """The supervisor's own checks, cached for PROBE_PERIOD_S."""

    def __init__(self, store: Any, state_dir: Any, low_mb: int) -> None:
        self.store = store
        self.state_dir = state_dir
        self.low_mb = low_mb
        self._at = -PROBE_PERIOD_S
        self._parts: dict[str, dict[str, Any]] = {}

    def _probe(self) -> dict[str, dict[str, Any]]:
        return {"store": store_part(self.store), "disk": disk_part(self.state_dir, self.low_mb)}

    async def parts(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        if now - self._at >= PROBE_PERIOD_S or not self._parts:
            self._at = now
            self._parts = await run_in_threadpool(self._probe)
        return self._parts


async def assess(link: Any, probe: HealthProbe) -> tuple[dict[str, Any], bool]:
    """The health document's members (without version) and whether the printer can print."""
    control_reason = link.unavailable_reason()
    snapshot = link.status()
    control = _part() if control_reason is None else _part(DOWN, control_reason)
    mcu = mcu_part(snapshot, control_reason)
    parts = {"control": control, "mcu": mcu,
             "heaters": heaters_part(snapshot, control_reason, mcu), **(await probe.parts())}
    state = snapshot.get("state") or "error"
    down = [name for name in PRINTER_PARTS if parts[name]["status"] == DOWN]
    can_print = state != "error" and not down
    if not can_print:
        overall = DOWN
    elif any(p["status"] != OK for p in parts.values()):
        overall = DEGRADED
    else:
        overall = OK
    body: dict[str, Any] = {"status": overall, "state": state,
                            "control": "running" if control_reason is None else control_reason,
                            "components": parts}
    if not can_print:
        reason = snapshot.get("error") or (parts[down[0]]["reason"] if down else state)
        body["error"] = f"Printer not ready: {reason}"
    return body, can_print
