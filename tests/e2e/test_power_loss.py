"""Power loss mid-print (docs/safety.md row 11): the whole service killed with SIGKILL
while it prints, started again, and the job resumed from its checkpoint.

After the restart the heaters are off and the job is `interrupted`, with the
checkpoint the service saved while it printed; a person resumes it, the printer heats
first, homes X and Y (never Z), returns onto the resume point and completes the print:
it ends where an uninterrupted print ends, having fed the file's filament (the moves
printed twice are at most one layer's)."""

from __future__ import annotations

import time

import pytest

from conftest import Api, Service
from printhost.store.checkpoints import FILENAME

pytestmark = pytest.mark.e2e

LAYERS = 10
LAYER_MM = 0.2
SIDE_E = 1.5


def layered_print() -> tuple[str, float, tuple[float, float, float]]:
    """A small layered part as slicers write it (heat and wait, home, relative E, a lift
    and travel at each layer change); its text, filament and end position."""
    lines = ["M140 S40", "M104 S150", "M190 S40", "M109 S150", "G28", "G90", "M83",
             "G92 E0", "G1 Z0.3 F600"]
    for layer in range(LAYERS):
        z = round(0.3 + LAYER_MM * layer, 3)
        lines += [f"G1 Z{z + 0.4:.3f} F600", "G1 X60 Y60 F6000", f"G1 Z{z:.3f} F600"]
        for x, y in ((120, 60), (120, 120), (60, 120), (60, 60)):
            lines.append(f"G1 X{x} Y{y} E{SIDE_E} F900")
    top = round(0.3 + LAYER_MM * (LAYERS - 1) + 10.0, 3)
    lines += [f"G1 Z{top:.3f} F600", "G1 X0 Y200 F6000", "M104 S0", "M140 S0"]
    return "\n".join(lines) + "\n", LAYERS * 4 * SIDE_E, (0.0, 200.0, top)


def test_a_killed_service_resumes_the_print_from_its_checkpoint(service_factory, api_for,
                                                                  tmp_path):
    text, filament, end = layered_print()
    svc: Service = service_factory(time_factor=20.0,
                                   extra_config="\n[jobs]\ncheckpoint_interval_s = 0.5\n").start()
    api: Api = api_for(svc)
    job_id = api.print_text(tmp_path, "layers.gcode", text)
    checkpoint = svc.state_dir / FILENAME
    # Printing, with a checkpoint saved (every 0.5 s here), not yet near the end.
    api.wait_for(lambda s: checkpoint.exists() and (s["job"] or {}).get("line", 0) > 30,
                 timeout_s=120, what="a saved checkpoint")
    st = api.status()
    assert st["job"]["state"] == "printing" and st["job"]["progress"] < 0.8, st["job"]
    svc.kill_all()                      # the power goes: supervisor, control, board
    svc.reclaim_status_block()

    svc.start()
    api = api_for(svc)
    st = api.status()
    assert st["state"] == "idle"
    assert st["printer"]["target_hotend_temp"] == 0 and st["printer"]["target_bed_temp"] == 0
    job = api.get(f"/api/v1/jobs/{job_id}").json()
    assert job["state"] == "interrupted" and job["checkpoint"] is not None, job
    assert 0 < job["checkpoint"]["resume_line"] <= job["checkpoint"]["line"]

    assert api.post(f"/api/v1/jobs/{job_id}/resume", role="viewer").status_code == 403
    r = api.post(f"/api/v1/jobs/{job_id}/resume")
    assert r.status_code == 200, r.text
    assert api.post(f"/api/v1/jobs/{job_id}/resume").status_code == 409   # printing now
    # The temperatures come back before anything moves.
    api.wait_for(lambda s: s["printer"]["target_bed_temp"] == 40.0, 10, "the bed's target")
    done = api.wait_for(lambda s: (s["job"] or {}).get("state") in ("completed", "error"),
                        timeout_s=180, what="the resumed print's end")
    assert done["job"]["state"] == "completed", done["job"]
    assert done["printer"]["position"] == list(end)
    one_layer = 4 * SIDE_E
    assert abs(done["job"]["filament_used_mm"] - filament) <= one_layer, done["job"]
    deadline = time.monotonic() + 5      # the supervisor records the end within 0.2 s
    while True:
        record = api.get(f"/api/v1/jobs/{job_id}").json()
        if record["state"] == "completed" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    events = [e["event"] for e in record["events"]]
    assert "interrupted" in events and "resumed from checkpoint" in events
    assert events[-1] == "completed" and record["state"] == "completed"
    # A completed job leaves no checkpoint behind; a second resume has nothing to use.
    api.wait_for(lambda s: not checkpoint.exists(), 5, "the checkpoint removed")
    assert api.post(f"/api/v1/jobs/{job_id}/resume").status_code == 409
