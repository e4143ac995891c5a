"""The printer on a real board never loads the simulation (`printhost.sim`).

Two checks. The first runs the real path end to end in a fresh interpreter: the
control process's `build_printer` and `attach_pi_devices` with `control.backend =
"mcu"`, against a board on a serial port (the simulated MCU, started by this test in
its own process, stands in for the board exactly as a real one would: the interpreter
under test only sees a pty), plus every module the service imports; then no
`printhost.sim` module may be loaded there. The second reads the source: an import of
`printhost.sim` outside `printhost/sim/` may only sit in the functions listed here,
each of which runs only for a simulated backend or an offline tool, so a new one
cannot creep into the real path unnoticed.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from printhost.config import parse_settings
from printhost.sim.mcu.launcher import SimMcuProcess

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "printhost"

REAL_PATH = r"""
import json, sys, time
import tomllib
from printhost.config import parse_settings
settings = parse_settings(tomllib.loads(open(sys.argv[1]).read()), sys.argv[1])
from printhost.control import process
printer = process.build_printer(settings)
closers = process.attach_pi_devices(settings, printer)
deadline = time.monotonic() + 0.3
while time.monotonic() < deadline:
    printer.tick()
    time.sleep(0.004)
status = printer.get_status()
# Everything else the service runs on a printer (supervisor, API, IPC, the Pi's devices).
import printhost.service, printhost.api.app, printhost.hw.devices, printhost.hw.gpio  # noqa
import printhost.sensors.i2c, printhost.control.homing, printhost.control.autotune  # noqa
printer.stop()
process._close_hardware(printer)
print(json.dumps({
    "printer": type(printer).__name__,
    "error": getattr(printer, "error", None) or getattr(printer, "reason", None),
    "connected": status["printer"]["mcu"]["connected"],
    "position": status["printer"]["position"],
    "sim": sorted(m for m in sys.modules if m == "printhost.sim" or m.startswith("printhost.sim.")),
}))
"""


def test_the_real_printer_path_loads_no_simulation(tmp_path):
    board_settings = parse_settings({"server": {"state_dir": str(tmp_path)}})
    board = SimMcuProcess(board_settings, tmp_path)
    board.start()
    try:
        config = tmp_path / "printer.toml"
        config.write_text(f'[control]\nbackend = "mcu"\n[server]\nstate_dir = "{tmp_path}"\n'
                          f'[mcu]\nserial = "{board.tty_path}"\n'
                          "[printer]\npower_on_position = [12.0, 34.0, 5.0]\n")
        env = {k: v for k, v in os.environ.items() if k != "PRINTHOST_CONFIG"}
        proc = subprocess.run([sys.executable, "-c", REAL_PATH, str(config)], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=120)
    finally:
        board.stop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["printer"] == "Printer", result["error"]
    assert result["connected"] is True
    # Before homing the host believes the configured power-on position.
    assert result["position"] == [12.0, 34.0, 5.0]
    assert result["sim"] == []


# Where printhost.sim may be imported from outside printhost/sim/, and why that is not the
# real printer's path. Keys: (file, enclosing function; "<module>" for the top level).
ALLOWED = {
    ("printhost/service.py", "_start"): "control.backend = \"simulated\": start the simulated MCU",
    ("printhost/control/process.py", "attach_pi_devices"): "devices.backend = \"simulated\"",
    ("printhost/control/printer.py", "simulated"): "the in-process simulated printer (tests)",
    ("printhost/cli.py", "cmd_pid_tune"): "PID tuning on the thermal model",
    ("printhost/batch.py", "<module>"): "printhost batch: nothing to heat, simulated heaters",
    ("printhost/control/kernels/plan.py", "_replay_error"): "batch's reference replay",
    ("printhost/control/kernels/plan.py", "_new_interpreter"):
        "commands a plan lends to the interpreter: heater targets checked, nothing heats",
}


def _sim_imports(path: Path) -> list[tuple[str, int]]:
    """(enclosing function or "<module>", line) of each import of printhost.sim."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = where
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = child.name
            modules: list[str] = []
            if isinstance(child, ast.ImportFrom) and child.module:
                modules = [child.module] + [f"{child.module}.{a.name}" for a in child.names]
            elif isinstance(child, ast.Import):
                modules = [a.name for a in child.names]
            if any(m == "printhost.sim" or m.startswith("printhost.sim.") for m in modules):
                found.append((where, child.lineno))
            visit(child, name)

    visit(tree, "<module>")
    return found


def test_simulation_imports_outside_sim_are_only_where_a_simulated_backend_runs():
    seen: dict[tuple[str, str], int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("printhost/sim/"):
            continue
        for where, line in _sim_imports(path):
            key = (rel, where)
            assert key in ALLOWED, f"{rel}:{line} imports printhost.sim in {where}"
            seen[key] = line
    # The table stays true: an entry whose import is gone is removed with it.
    assert set(seen) == set(ALLOWED)


def test_the_supervisor_leaves_numpy_and_numba_to_the_control_process():
    """The supervisor (API, job queue, live status) never needs the compiled kernels:
    importing what it runs must not load numpy, numba or llvmlite (tens of MiB of
    resident memory on a Pi; tools/bench api reports it)."""
    code = ("import sys, printhost.service, printhost.cli, printhost.api.app; "
            "print([m for m in ('numpy', 'numba', 'llvmlite') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
