"""`tools/bench motion`, run as a user runs it, on a tiny file: the report's shape, not its numbers.

The script is started through its own `#!/usr/bin/env python3` line with the test's
virtual environment announced in VIRTUAL_ENV, so the way it finds an interpreter
with numba is part of what runs. Timings are never compared with anything: only
that every figure is there, has the right type and is positive.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "tools" / "bench"

TINY = "G28\nM83\nG1 X30 Y10 F12000\nG1 X45 Y10 E0.8\nG1 X45 Y25 E0.8\n"


def run_bench(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PRINTHOST_CONFIG"}
    env["VIRTUAL_ENV"] = sys.prefix
    return subprocess.run([str(BENCH), "motion", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def positive_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def test_motion_report_has_every_figure(tmp_path):
    gcode = tmp_path / "tiny.gcode"
    gcode.write_text(TINY)
    out = tmp_path / "result.json"
    proc = run_bench(tmp_path, "--runs", "1", "--gcode", str(gcode), "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())

    assert report["benchmark"] == "motion"
    assert report["runs_per_file"] == 1 and report["warmup_runs"] == 1
    assert Path(report["executable"]).is_file()
    for key in ("python", "numba", "platform", "config", "created"):
        assert isinstance(report[key], str) and report[key]
    assert isinstance(report["cpu_count"], int) and report["cpu_count"] >= 1

    compile_times = report["compile"]
    for key in ("cold_s", "cached_s", "import_cold_s", "import_cached_s",
                "process_cpu_cold_s", "process_cpu_cached_s"):
        assert positive_number(compile_times[key]), key
    assert isinstance(compile_times["cache_files"], int) and compile_times["cache_files"] > 0

    assert len(report["files"]) == 1
    entry = report["files"][0]
    assert entry["gcode"] == str(gcode)
    assert entry["lines"] == TINY.count("\n")
    for key in ("moves", "steps", "messages", "bytes"):
        assert isinstance(entry[key], int) and entry[key] > 0, key
    assert positive_number(entry["print_time_s"])
    assert len(entry["runs"]) == 1
    run = entry["runs"][0]
    for key in ("cpu_s", "user_s", "wall_s", "peak_rss_mib", "print_time_s", "steps",
                "cpu_per_print_s", "steps_per_cpu_s"):
        assert positive_number(run[key]), key
        assert positive_number(entry["median"][key]), key
    assert isinstance(run["sys_s"], (int, float)) and run["sys_s"] >= 0
    assert run["steps"] == entry["steps"]
    assert isinstance(run["timings"], dict) and run["timings"]

    # The table names the file and shows one row per run plus the median.
    assert str(gcode) in proc.stdout
    assert "median" in proc.stdout and "cold (empty numba cache)" in proc.stdout
    assert not (tmp_path / "bench-motion.json").exists()


def test_motion_judges_its_targets_and_reads_a_peer(tmp_path):
    gcode = tmp_path / "tiny.gcode"
    gcode.write_text(TINY)
    peer = tmp_path / "peer.json"
    peer.write_text(json.dumps({"name": "other host", "files": {
        "tiny.gcode": {"cpu_s": 2.0, "peak_rss_mib": 50.0}}}))
    out = tmp_path / "result.json"
    proc = run_bench(tmp_path, "--runs", "1", "--warmup", "0", "--gcode", str(gcode),
                     "--gcode", str(gcode), "--peer", str(peer), "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["peer"] == "other host"
    assert report["targets"]["peak_rss_mib"] == 100.0 and report["targets"]["cpu_vs_peer"] == 0.5
    assert len(report["files"]) == 2          # --gcode repeats
    targets = report["files"][0]["targets"]
    median = report["files"][0]["median"]
    assert targets["peak_rss_met"] == (median["peak_rss_mib"] <= 100.0)
    assert targets["cpu_vs_peer"] == median["cpu_s"] / 2.0
    assert targets["rss_vs_peer"] == median["peak_rss_mib"] / 50.0
    # Seconds of print time, not an hour: the CPU target is not judged on it.
    assert "cpu_vs_peer_met" not in targets
    assert "under an hour of print time: not judged" in proc.stdout
    assert "target: peak RSS" in proc.stdout


def test_a_peer_file_that_cannot_be_read_is_one_line(tmp_path):
    gcode = tmp_path / "tiny.gcode"
    gcode.write_text(TINY)
    peer = tmp_path / "peer.json"
    peer.write_text('{"files": {"tiny.gcode": {"cpu_s": "fast"}}}')
    proc = run_bench(tmp_path, "--runs", "1", "--gcode", str(gcode), "--peer", str(peer))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tools/bench: {peer}: expected")
    assert not (tmp_path / "bench-motion.json").exists()


def test_failing_batch_is_reported_not_timed(tmp_path):
    gcode = tmp_path / "broken.gcode"
    gcode.write_text("G28\nG1 X1,5\n")
    proc = run_bench(tmp_path, "--runs", "1", "--warmup", "0", "--gcode", str(gcode))
    assert proc.returncode == 2
    assert "line 2" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "bench-motion.json").exists()


def test_link_report_has_every_figure(tmp_path):
    # A tiny count keeps this quick; the numbers themselves are not judged.
    out = tmp_path / "link.json"
    env = {k: v for k, v in os.environ.items() if k != "PRINTHOST_CONFIG"}
    env["VIRTUAL_ENV"] = sys.prefix
    proc = subprocess.run([str(BENCH), "link", "--count", "150", "--json", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["benchmark"] == "link" and report["commands"] == 150
    labels = [s["label"] for s in report["scenarios"]]
    assert labels == ["clean", "corrupt 1%", "corrupt 5%", "drop 1%", "drop 5%"]
    for scenario in report["scenarios"]:
        for key in ("commands_per_s", "payload_bytes_per_s", "blocks", "wall_s"):
            assert positive_number(scenario[key]), key
        assert isinstance(scenario["retransmits"], int) and scenario["retransmits"] >= 0
        assert scenario["mcu"]["blocks_accepted"] >= scenario["blocks"]
        assert label_line(proc.stdout, scenario["label"])
    assert not (tmp_path / "bench-link.json").exists()


def label_line(table: str, label: str) -> bool:
    return any(line.strip().startswith(label) for line in table.splitlines())


def test_live_refuses_a_missing_file_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PRINTHOST_CONFIG"}
    env["VIRTUAL_ENV"] = sys.prefix
    proc = subprocess.run([str(BENCH), "live", "--gcode", str(tmp_path / "nope.gcode")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"tools/bench: {tmp_path / 'nope.gcode'}: "
                                                "no such file"]
    assert not (tmp_path / "bench-live.json").exists()


def test_service_rig_reads_processes_and_the_control_pid(tmp_path):
    # What `tools/bench live` and `tools/load-acceptance` read of a running service:
    # CPU seconds from /proc, children by parent pid, the control pid from the log.
    import importlib.util
    spec = importlib.util.spec_from_file_location("servicerig", REPO / "tools" / "servicerig.py")
    rig = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rig)
    before = rig.cpu_seconds(os.getpid())
    sum(i * i for i in range(3_000_000))
    assert rig.cpu_seconds(os.getpid()) > before
    assert "python" in rig.command_line(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        svc = rig.Service(tmp_path, 1.0)
        svc.proc = type("P", (), {"pid": os.getpid()})()
        assert child.pid in svc.children()
    finally:
        child.kill()
        child.wait()
    assert svc.control_pid() is None
    svc.log_path.write_text("... printhost.control: control process ready (pid 4242, backend "
                            "simulated)\n... control process ready (pid 4343, backend mcu)\n")
    assert svc.control_pid() == 4343
    assert 'port = ' in svc.config.read_text() and "time_factor = 1.0" in svc.config.read_text()
