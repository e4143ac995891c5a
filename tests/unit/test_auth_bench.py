"""`tools/bench login`, run as a user runs it: the report's shape, not its numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "tools" / "bench"


def test_login_report_has_every_figure(tmp_path):
    config = tmp_path / "light.toml"
    config.write_text("[auth]\npassword_scrypt_log2_n = 10\n")
    out = tmp_path / "login.json"
    env = {k: v for k, v in os.environ.items() if k != "PRINTHOST_CONFIG"}
    env["VIRTUAL_ENV"] = sys.prefix
    proc = subprocess.run([str(BENCH), "login", "--runs", "3", "--sweep", "--config",
                           str(config), "--json", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "whole login (AuthService.login)" in proc.stdout
    assert "Raspberry Pi 4 estimate" in proc.stdout
    report = json.loads(out.read_text())
    assert report["benchmark"] == "login" and report["runs"] == 3
    assert report["pi4_factors"] == [3.0, 5.0] and report["pi4_budget_s"] == 0.25
    result = report["result"]
    assert result["params"] == {"n": 1024, "r": 8, "p": 1, "memory_mib": 1.0}
    for key in ("hash", "verify_ok", "verify_wrong", "unknown_user", "login"):
        t = result[key]
        assert t["runs"] == 3
        assert 0 < t["min_s"] <= t["median_s"] <= t["max_s"], key
        assert t["min_s"] <= t["p90_s"] <= t["max_s"], key
    low, high = result["pi4_estimate_s"]
    assert low == result["login"]["median_s"] * 3 and high == result["login"]["median_s"] * 5
    assert result["pi4_within_budget"] is (high <= 0.25)
    assert [row["log2_n"] for row in result["sweep"]] == [12, 13, 14, 15, 16]
    assert all(row["median_s"] > 0 for row in result["sweep"])
